"""WARC record framing: a decompressed WARC, WET or WAT stream cut into
records (`WarcFramer`), resynchronising after a bad one, so that one bad
record never loses the rest of a file.

The stream comes in segments: `pipeline.formats.gzip_members.GzipMembers` for
gzip (a damaged member ends a segment, reading resumes at the next member),
`PlainSegments` for a plain, bzip2 or xz stream (one segment). What a record
means (a page, a text) is its reader's business
(`pipeline.sources.commoncrawl`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import IO, Any, NamedTuple

from pipeline.formats.errors import STREAM_ERRORS, DeadLetter

# Record framing limits (`WarcFramer`). Common Crawl truncates payloads at
# 1 MiB (WARC-Truncated: length), so its records stay far below MAX_RECORD_BYTES;
# a larger block (a video in another crawler's WARC) is passed over unread.
MAX_RECORD_BYTES = 1 << 25
MAX_HEADER_BYTES = 1 << 16
_MAX_VERSION_LINE = 32
_READ_SIZE = 1 << 16
_VERSION_RE = re.compile(rb"WARC/\d+\.\d+\r?\n")


class PlainSegments:
    """A decompressed stream (plain, bzip2, xz) as one segment, for `WarcFramer`.

    A bzip2 or xz stream that breaks cannot be re-entered, so there is no next
    segment; the error is kept in `error`. (gzip files use
    `pipeline.formats.gzip_members.GzipMembers`, which resumes at the next member.)
    """

    RESUMES = "the rest of the file is lost"

    def __init__(self, stream: IO[bytes]):
        self.stream = stream
        self.error: str | None = None
        self.error_at: int | None = None  # the decompressed offset: `location` names it
        self.offset = 0

    def read(self, n: int) -> bytes:
        if self.error is not None:
            return b""
        try:
            data = self.stream.read(n)
        except STREAM_ERRORS as e:
            self.error = f"compressed stream broken: {type(e).__name__}: {e}"
            return b""
        self.offset += len(data)
        return data

    def next_segment(self) -> bool:
        return False

    def member_of(self, offset: int) -> None:
        return None


class WarcRecord(NamedTuple):
    """One framed WARC record: where it starts, its headers, and its bytes.

    `raw` is the whole record (header, block and the CRLF CRLF after it) when
    the reader keeps it, else None (a record type that gives no document, or a
    block over MAX_RECORD_BYTES, is skipped without being held in memory).
    """

    offset: int
    headers: dict[str, str]
    raw: bytes | None


class WarcFramer:
    """Cut a decompressed WARC stream into records, resynchronising after a bad one.

    Framing follows the WARC 1.1 spec (ISO 28500, section 4; WARC/1.0 and the
    0.18 draft frame records the same way): a version line `WARC/x.y`, header
    lines up to an empty line, a block of exactly Content-Length bytes, then
    CRLF CRLF. A record is accepted only if what follows its block is blank
    lines and then the next `WARC/` version line or the end of the file, so a
    wrong Content-Length is caught at that record instead of corrupting the
    ones after it. (warcio's own iterator reads through a wrong length and then
    fails on, or silently skips, the records that follow.)

    After a bad record the framer looks for the next line that is a version
    line (`\\nWARC/x.y\\r\\n`), searching from the bad record's block onward
    (a Content-Length too large hides the next records inside the declared
    block), and carries on there. A break in the compressed stream ends the
    current segment; the source's `next_segment()` (gzip: the next member)
    says where reading resumes.

    Yields `WarcRecord`s and `DeadLetter`s (record = `location(offset)`).
    """

    def __init__(self, source: Any, path: str, as_source: str):
        self.src = source
        self.path = path
        self.as_source = as_source  # the dataset its dead letters are counted under
        self.buf = bytearray()
        self.pos = 0  # index in buf of the next unread byte
        self.base = 0  # decompressed offset of buf[0]
        self.seg_end = False

    # -- buffer -----------------------------------------------------------

    def _fill(self, k: int) -> bool:
        """Make at least `k` unread bytes available; False if the segment ends first."""
        while len(self.buf) - self.pos < k:
            if self.seg_end:
                return False
            data = self.src.read(max(k - (len(self.buf) - self.pos), _READ_SIZE))
            if not data:
                self.seg_end = True
                return False
            self.buf += data
        return True

    def _compact(self) -> None:
        if self.pos > _READ_SIZE:
            del self.buf[: self.pos]
            self.base += self.pos
            self.pos = 0

    def tell(self) -> int:
        return self.base + self.pos

    def _readline(self, limit: int) -> bytes:
        """The next line with its LF (at most `limit` bytes; less at a segment end)."""
        start = self.pos
        while True:
            end = self.buf.find(b"\n", start, self.pos + limit)
            if end >= 0:
                line = bytes(self.buf[self.pos : end + 1])
                self.pos = end + 1
                return line
            start = len(self.buf)
            if start - self.pos >= limit or not self._fill(start - self.pos + 1):
                line = bytes(self.buf[self.pos : self.pos + limit])
                self.pos += len(line)
                return line

    def _take(self, n: int, keep: bool) -> tuple[int, bytes]:
        """Consume up to `n` bytes: (how many there were, them if `keep`)."""
        parts: list[bytes] = []
        got = 0
        while got < n:
            if self.pos >= len(self.buf):
                self._compact()
                if not self._fill(1):
                    break
            step = min(n - got, len(self.buf) - self.pos)
            if keep:
                parts.append(bytes(self.buf[self.pos : self.pos + step]))
            self.pos += step
            got += step
            if not keep:
                self._compact()
        return got, b"".join(parts)

    def _skip_blank(self) -> bool:
        """Consume CR and LF bytes; False if the segment ends."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in b"\r\n":
                self.pos += 1
            if self.pos < len(self.buf):
                return True
            self._compact()
            if not self._fill(1):
                return False

    def _ends_cleanly(self) -> bool:
        """Whether the block just read ends where a record must end (nothing is consumed).

        True when the CR/LF bytes after it are followed by the end of the
        segment or a version line, or hold a blank line (CRLF CRLF, or LF LF as
        lenient writers write it) before whatever comes next: then this
        record's length is right, and bytes after it that are not a record are
        the next iteration's dead letter, at their own offset. False otherwise:
        the block stops inside data, so Content-Length is wrong.
        """
        i = self.pos
        while True:
            if i >= len(self.buf) and not self._fill(i - self.pos + 1):
                return True  # end of segment after the block
            if self.buf[i] not in b"\r\n":
                break
            i += 1
        run = bytes(self.buf[self.pos : i])
        if b"\n\r\n" in run or b"\n\n" in run:
            return True
        self._fill(i - self.pos + _MAX_VERSION_LINE)
        line_end = self.buf.find(b"\n", i, i + _MAX_VERSION_LINE)
        if line_end < 0:
            return False
        return _VERSION_RE.fullmatch(bytes(self.buf[i : line_end + 1])) is not None

    def _resync(self, offset: int) -> None:
        """Move to the next version line that starts at or after `offset`, or to
        the segment's end if there is none."""
        self.pos = max(offset - self.base, 0)
        self._compact()
        while True:
            hit = self.buf.find(b"\nWARC/", max(self.pos - 1, 0))
            if hit >= 0:
                start = hit + 1
                self._fill(start - self.pos + _MAX_VERSION_LINE)
                line_end = self.buf.find(b"\n", start, start + _MAX_VERSION_LINE)
                if line_end >= 0 and _VERSION_RE.fullmatch(bytes(self.buf[start : line_end + 1])):
                    self.pos = start
                    return
                if line_end >= 0 or len(self.buf) - start >= _MAX_VERSION_LINE:
                    self.pos = start + 1  # not a version line: search on after it
                    continue
            # keep 5 bytes: "\nWARC" may straddle two reads
            self.pos = max(len(self.buf) - 5, self.pos)
            self._compact()
            if not self._fill(len(self.buf) - self.pos + 1):
                self.pos = len(self.buf)
                return

    # -- records ----------------------------------------------------------

    def location(self, offset: int) -> str:
        """Where a record starts, for a dead letter: "offset N", the byte offset in
        the file as stored; for a gzip file N is the offset of the gzip member
        the record starts in (Common Crawl's index convention), "offset N+k"
        when the record starts k decompressed bytes into that member."""
        member = self.src.member_of(offset)
        if member is None:
            return f"offset {offset}"
        compressed, member_start = member
        inside = offset - member_start
        return f"offset {compressed}" if inside == 0 else f"offset {compressed}+{inside}"

    def dead_letter(self, offset: int, reason: str) -> DeadLetter:
        """The DeadLetter of the record that starts at decompressed `offset`."""
        return DeadLetter(self.as_source, self.path, self.location(offset), reason)

    def _skip_to(self, start: int, resume: int, reason: str) -> DeadLetter:
        """The DeadLetter of the bad record at `start`; reading resumes at the
        next version line at or after `resume`."""
        dead = self.dead_letter(start, reason)
        self._resync(resume)
        return dead

    def _cut_short(self, start: int, what: str, after: str = "") -> DeadLetter:
        """The DeadLetter of the record at `start` that the segment's end cuts
        short (a truncated file, a damaged gzip member)."""
        self._reported = self.src.error is not None
        why = self.src.error or "the file ends inside it"
        return self.dead_letter(start, f"{what} ({why}){after}")

    def records(self, keep: Callable[[dict[str, str]], bool]) -> Iterator[WarcRecord | DeadLetter]:
        """Every record of the file, or a DeadLetter in its place.

        Args:
            keep: given a record's WARC headers (names lower-cased), whether its
                bytes are wanted; other records are checked and passed over.
        """
        self._reported = False  # the current segment's break is already in a dead letter
        while True:
            if not self._skip_blank():
                if self.src.error is not None and not self._reported:
                    where = self.src.error_at
                    yield DeadLetter(
                        self.as_source, self.path,
                        self.location(self.tell()) if where is None else f"offset {where}",
                        f"{self.src.error}; {self.src.RESUMES}",
                    )
                if not self.src.next_segment():
                    return
                self.buf, self.pos, self.base = bytearray(), 0, self.src.offset
                self.seg_end = self._reported = False
                continue
            start = self.tell()
            header = self._header(start)
            yield header if isinstance(header, DeadLetter) else self._block(start, *header, keep)

    def _at_segment_end(self) -> bool:
        return self.seg_end and self.pos >= len(self.buf)

    def _header(self, start: int) -> tuple[bytes, dict[str, str], int] | DeadLetter:
        """The header of the record at `start`, consumed: (its bytes, its fields
        with names lower-cased, its Content-Length), or the DeadLetter that
        stands for the record (reading then resumes where the next one may be)."""
        version = self._readline(_MAX_VERSION_LINE)
        if not version.endswith(b"\n") and self._at_segment_end():
            return self._cut_short(start, "truncated record header")
        if _VERSION_RE.fullmatch(version) is None:
            return self._skip_to(start, start + 1, f"not a WARC record: no version line ({version[:20]!r})")
        header = bytearray(version)
        headers: dict[str, str] = {}
        complete = False
        while len(header) <= MAX_HEADER_BYTES:
            line = self._readline(MAX_HEADER_BYTES)
            if not line:
                break
            header += line
            if not line.strip():
                complete = line.endswith(b"\n")
                break
            name, sep, value = line.decode("utf-8", errors="replace").partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        named = _named(headers)
        if not complete:
            if self._at_segment_end():
                return self._cut_short(start, "truncated record header", named)
            return self._skip_to(start, start + 1, f"record header longer than {MAX_HEADER_BYTES} bytes{named}")
        length_field = headers.get("content-length", "")
        if not length_field.isdigit():
            return self._skip_to(start, start + 1, f"no valid Content-Length ({length_field!r}){named}")
        return bytes(header), headers, int(length_field)

    def _block(
        self, start: int, header: bytes, headers: dict[str, str], length: int,
        keep: Callable[[dict[str, str]], bool],
    ) -> WarcRecord | DeadLetter:
        """The block of `length` bytes after a record's header, consumed: the
        record, or the DeadLetter that stands for it (a block cut short, or a
        Content-Length that does not end the record)."""
        named = _named(headers)
        wanted = keep(headers)
        block_start = self.tell()
        short = f"bytes shorter than its Content-Length {length}"
        if length <= MAX_RECORD_BYTES:
            # held whole, so that a length running past the end can be
            # searched for the records it hides
            self._compact()
            available = length if self._fill(length) else len(self.buf) - self.pos
            if available < length:
                dead = self._cut_short(start, f"record {length - available} {short}",
                                       f"; no part of it is used{named}")
                self._resync(block_start)
                return dead
            block = bytes(self.buf[self.pos : self.pos + length]) if wanted else b""
            self.pos += length
        else:  # too large to hold: passed over (a Skip "too_large" if wanted)
            got, _ = self._take(length, keep=False)
            wanted = False
            if got < length:
                return self._cut_short(start, f"record {length - got} {short}", named)
        if not self._ends_cleanly():
            return self._skip_to(
                start, block_start,
                f"Content-Length {length} does not end the record (data, not CRLF CRLF, "
                f"follows the block): wrong length; skipped to the next record{named}",
            )
        return WarcRecord(start, headers, bytes(header) + block + b"\r\n\r\n" if wanted else None)


def _named(headers: dict[str, str]) -> str:
    """"; WARC-Record-ID <id>" for a dead letter's reason, "" without an id."""
    record_id = headers.get("warc-record-id", "")
    return f"; WARC-Record-ID {record_id}" if record_id else ""
