"""Record iteration shared by the readers of line- and table-shaped inputs
(C4 and Dolma JSON lines, GitHub table exports).

Every function here yields either `(line_number, row)` or a `DeadLetter`; a bad
line never raises and never disappears (DESIGN.md, "a record that cannot be
parsed goes to a dead-letter output with its reason").
"""

from __future__ import annotations

import json
import posixpath
import zlib
from typing import Any, Iterator

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline import io as pio
from pipeline.sources.base import DeadLetter

# Errors a damaged compressed stream raises while being read (truncated gzip,
# bad CRC, corrupt bzip2/xz block): the rest of the file cannot be trusted.
STREAM_ERRORS = (OSError, EOFError, zlib.error, ValueError)


def file_name(path: str) -> str:
    """The last component of a local or `gs://`/`s3://` path (machine independent)."""
    return posixpath.basename(path.rstrip("/"))


def line_id(path: str, line: int) -> str:
    """`<file name>:<line>`: a native id for rows that carry none of their own.

    Only the file name is used, so the id (and the document id hashed from it)
    does not depend on where the file lies on a given machine.
    """
    return f"{file_name(path)}:{line}"


def iter_json_lines(path: str, source: str) -> Iterator[tuple[int, dict[str, Any]] | DeadLetter]:
    """Yield `(line_number, object)` for each JSON-lines row of `path` (1-based).

    Plain, gzip (multi-member too), bzip2 or xz by magic bytes. Blank lines are
    not records and are passed over.

    Yields a DeadLetter (record = "line N") for a line that is not UTF-8, not
    JSON, or not a JSON object, and carries on with the next line; for a file
    that cannot be opened (record "file") or whose compressed stream breaks
    (truncated gzip: record = the first line not read), after which the file
    ends. Never raises.
    """
    try:
        stream = pio.open_input(path)
    except (OSError, ValueError) as e:
        yield DeadLetter(source, path, "file", f"cannot open: {type(e).__name__}: {e}")
        return
    line = 0
    with stream:
        while True:
            try:
                raw = stream.readline()
            except STREAM_ERRORS as e:
                yield DeadLetter(
                    source, path, f"line {line + 1}",
                    f"unreadable input, rest of file lost: {type(e).__name__}: {e}",
                )
                return
            if not raw:
                return
            line += 1
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
                yield DeadLetter(source, path, f"line {line}", f"bad JSON: {e}")
                continue
            if not isinstance(row, dict):
                yield DeadLetter(
                    source, path, f"line {line}", f"not a JSON object: {type(row).__name__}"
                )
                continue
            yield line, row


def iter_parquet_rows(
    path: str, source: str, batch_size: int = 1024
) -> Iterator[tuple[int, dict[str, Any]] | DeadLetter]:
    """Yield `(row_number, row)` (1-based) for each row of a Parquet file.

    Read batch by batch, so memory stays flat. A file that cannot be opened or
    decoded yields one DeadLetter (record "file" or "row N") and ends. Never raises.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    row_number = 0
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_size):
                for row in batch.to_pylist():
                    row_number += 1
                    yield row_number, row
    except (OSError, ValueError, pa.ArrowException) as e:
        record = f"row {row_number + 1}" if row_number else "file"
        yield DeadLetter(source, path, record, f"bad Parquet: {type(e).__name__}: {e}")


# --------------------------------------------------------------------------
# Multi-member gzip, member by member, resynchronising after a damaged member

GZIP_MAGIC = b"\x1f\x8b\x08"  # ID1 ID2 and CM=8 (deflate), RFC 1952 section 2.3.1
_RAW_CHUNK = 1 << 18
# A candidate member found while resynchronising must inflate this much of its
# input without a zlib error (random bytes that happen to start with the magic
# fail within a few bytes).
_TRIAL_BYTES = 1 << 14
# Compressed bytes of the current member kept for a rescan when it breaks: a
# member cut short can be followed, inside what zlib already consumed, by the
# next member (a writer that crashed and resumed). Common Crawl's members are
# one record each (< 2 MiB); beyond this the rescan starts where reading stopped.
MAX_MEMBER_HISTORY = 1 << 24


class GzipMembers:
    """The decompressed bytes of a multi-member gzip file, in segments.

    Common Crawl, wget and most WARC writers compress each record as its own
    gzip member (RFC 1952 allows any number of members in one file), so a
    damaged member need not cost the rest of the file. `gzip.GzipFile` stops at
    the first error; this reader ends the current *segment* there instead, with
    the reason in `error`, and `next_segment()` finds the next member (the
    next `1f 8b 08` whose deflate stream inflates) and carries on.

    Interface used by a record framer:
      - `read(n)`: up to `n` decompressed bytes of the current segment; b"" at
        the segment's end (then `error` says why, or is None at a clean end of
        file, and `error_at` is the file offset of the member that broke);
      - `next_segment()`: True if reading resumed at a later member;
      - `member_of(offset)`: (compressed offset of the member that holds the
        decompressed byte `offset`, the decompressed offset where that member
        starts), for dead-letter messages; offsets of the decompressed stream
        count every byte read, across segments.

    Raises: nothing from damaged data; OSError from the underlying file read is
    reported as a segment error ("unreadable input").
    """

    RESUMES = "reading resumes at the next gzip member, if any"  # for messages

    def __init__(self, raw: Any):
        self.raw = raw
        self.error: str | None = None
        self.error_at: int | None = None  # file offset of the member (or bytes) that broke
        self._win = bytearray()  # compressed bytes, _win[0] at file offset _win_off
        self._win_off = 0
        self._feed = 0  # index in _win of the next byte for the decompressor
        self._raw_eof = False
        self._d: Any = None  # zlib decompressor of the current member, None between members
        self._member_index = 0  # index in _win where the current member starts
        self._dec_offset = 0  # decompressed bytes produced so far
        self._members: list[tuple[int, int]] = []  # (decompressed start, compressed offset)
        self._ended = False

    # -- raw input ---------------------------------------------------------

    def _more(self) -> bool:
        """Append a chunk of the compressed file to the window; False at its end."""
        if self._raw_eof:
            return False
        try:
            chunk = self.raw.read(_RAW_CHUNK)
        except OSError as e:
            self._raw_eof = True
            self._break(f"unreadable input: {type(e).__name__}: {e}")
            return False
        if not chunk:
            self._raw_eof = True
            return False
        self._win += chunk
        return True

    def _trim(self, keep_from: int) -> None:
        """Drop window bytes before index `keep_from` (indices shift accordingly)."""
        if keep_from <= 0:
            return
        del self._win[:keep_from]
        self._win_off += keep_from
        self._feed -= keep_from
        self._member_index -= keep_from

    # -- segments ----------------------------------------------------------

    def _break(self, reason: str) -> None:
        if not self._ended:
            self._ended = True
            self.error = reason
            self.error_at = self._win_off + max(self._member_index, 0)

    def read(self, n: int) -> bytes:
        while not self._ended:
            if self._d is None:  # at a member boundary
                self._trim(self._feed)
                while len(self._win) < len(GZIP_MAGIC) and self._more():
                    pass
                if not self._win:
                    self._ended = True  # clean end of file
                    return b""
                if not self._win.startswith(GZIP_MAGIC):
                    if not self._win.strip(b"\x00"):  # zero padding after the last member
                        self._feed = len(self._win)
                        if not self._more():
                            self._ended = True
                            return b""
                        continue
                    self._member_index = 0
                    self._break("not a gzip member")
                    return b""
                self._d = zlib.decompressobj(31)  # 31: gzip header and trailer
                self._member_index = self._feed
                self._members.append((self._dec_offset, self._win_off + self._feed))
                if len(self._members) > 4096:
                    del self._members[:2048]
            data = bytes(self._win[self._feed : self._feed + _RAW_CHUNK])
            if not data:
                if self._more():
                    continue
                if self._ended:  # the file could not be read
                    return b""
                # end of file inside a member; zlib may still hold output
            try:
                out = self._d.decompress(data, n)
            except zlib.error as e:
                self._break(f"corrupt gzip member: {e}")
                return b""
            rest = self._d.unused_data if self._d.eof else self._d.unconsumed_tail
            self._feed += len(data) - len(rest)
            if self._d.eof:
                self._d = None
            if out:
                self._dec_offset += len(out)
                return out
            if not data and self._d is not None:
                self._break("gzip member truncated (the file ends inside it)")
                return b""
            if self._feed - self._member_index > MAX_MEMBER_HISTORY:
                self._trim(self._feed - MAX_MEMBER_HISTORY)
        return b""

    def next_segment(self) -> bool:
        """After a segment ended with an error: resume at the next gzip member
        after the start of the damaged one. False when there is none."""
        if not self._ended or self.error is None:
            return False
        search_from = self._member_index + 1
        while True:
            pos = self._win.find(GZIP_MAGIC, max(search_from, 0))
            if pos < 0:
                self._trim(len(self._win) - len(GZIP_MAGIC) + 1)
                search_from = 0
                if not self._more():
                    return False
                continue
            if self._inflates(pos):
                self._trim(pos)
                self._feed = 0
                self._d = None
                self._ended = False
                self.error = self.error_at = None
                return True
            search_from = pos + 1

    def _inflates(self, pos: int) -> bool:
        """Whether a gzip member starting at window index `pos` inflates without error."""
        while len(self._win) - pos < _TRIAL_BYTES and self._more():
            pass
        trial = zlib.decompressobj(31)
        try:
            trial.decompress(bytes(self._win[pos : pos + _TRIAL_BYTES]), 1 << 16)
        except zlib.error:
            return False
        return True

    @property
    def offset(self) -> int:
        """Decompressed bytes produced so far."""
        return self._dec_offset

    def member_of(self, offset: int) -> tuple[int, int] | None:
        """(compressed offset of the member holding decompressed byte `offset`,
        decompressed offset of that member's start), or None if unknown."""
        found = None
        for dec_start, comp in self._members:
            if dec_start > offset:
                break
            found = (comp, dec_start)
        return found
