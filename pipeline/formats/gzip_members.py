"""Multi-member gzip, member by member, resynchronising after a damaged
member (`GzipMembers`), and its spans: a large file read in pieces by several
workers, each from a member start (`gzip_member_spans`), giving exactly the
members, records and offsets that the whole read gives for its part.
"""

from __future__ import annotations

import zlib
from typing import IO, Any

from pipeline.core import io as pio
from pipeline.formats.errors import read_whole_on_error

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

    A span of `gzip_member_spans`: `raw` opened at the span's start `base`
    (offsets stay those of the file) and `stop` its end: the file ends, for
    this reader, at the first member that starts at or after `stop`.

    Raises: nothing from damaged data; OSError from the underlying file read is
    reported as a segment error ("unreadable input").
    """

    RESUMES = "reading resumes at the next gzip member, if any"  # for messages

    def __init__(self, raw: Any, base: int = 0, stop: int | None = None):
        self.raw = raw
        self.stop = stop
        self.error: str | None = None
        self.error_at: int | None = None  # file offset of the member (or bytes) that broke
        self._win = bytearray()  # compressed bytes, _win[0] at file offset _win_off
        self._win_off = base
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
                if self._past_stop(0):
                    self._ended = True  # the next span's first member
                    return b""
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
                if self._past_stop(pos):
                    return False
                self._trim(pos)
                self._feed = 0
                self._d = None
                self._ended = False
                self.error = self.error_at = None
                return True
            search_from = pos + 1

    def _past_stop(self, pos: int) -> bool:
        """Whether a member at window index `pos` is beyond this reader's span."""
        return self.stop is not None and self._win_off + pos >= self.stop

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


# Searched past a span boundary for the next member before the boundary is
# given up (Common Crawl's members are one record each, < 2 MiB).
MAX_MEMBER_SEARCH = 1 << 24


def _member_end(f: IO[bytes], start: int, prefix: bytes) -> int | None:
    """The offset just past the gzip member at `start`, when it inflates to its
    end, its trailer's CRC-32 and length agree (zlib checks them) and its data
    starts with `prefix`; None for bytes that only look like a member."""
    f.seek(start)
    d = zlib.decompressobj(31)
    head, pending, fed = b"", b"", 0
    while not d.eof:
        if not pending:
            if fed > MAX_MEMBER_HISTORY:
                return None
            pending = f.read(_RAW_CHUNK)
            if not pending:
                return None
            fed += len(pending)
        try:
            out = d.decompress(pending, _RAW_CHUNK)
        except zlib.error:
            return None
        head += out[: len(prefix) - len(head)]
        pending = d.unconsumed_tail
    return start + fed - len(d.unused_data) if head == prefix else None


def find_member(f: IO[bytes], offset: int, size: int, prefix: bytes = b"") -> int | None:
    """The first offset at or after `offset` (and within MAX_MEMBER_SEARCH of it)
    where a whole gzip member starts (`_member_end`) that is followed by the end
    of the file, zero padding or the next member's magic bytes; None if none."""
    pos, limit = offset, min(size, offset + MAX_MEMBER_SEARCH)
    while pos < limit:
        f.seek(pos)
        window = f.read(_RAW_CHUNK + len(GZIP_MAGIC) - 1)
        hit = window.find(GZIP_MAGIC)
        while 0 <= hit < _RAW_CHUNK:
            end = _member_end(f, pos + hit, prefix)
            if end is not None:
                f.seek(end)
                after = f.read(len(GZIP_MAGIC))
                if after in (b"", GZIP_MAGIC) or not after.strip(b"\x00"):
                    return pos + hit
            hit = window.find(GZIP_MAGIC, hit + 1)
        pos += _RAW_CHUNK
    return None


@read_whole_on_error
def gzip_member_spans(path: str, split_bytes: int, prefix: bytes = b"") -> list[tuple[int, int]]:
    """Spans of about `split_bytes` of a multi-member gzip file: (start, end)
    byte offsets, each start a member's (checked whole by `find_member`, its
    data starting with `prefix`); read with `GzipMembers(raw, start, end)`, a
    span owns the members that start in [start, end). [] for a file that is not
    gzip, or whose first member runs to its end (one member: no split).

    Only the bytes around each boundary are read (up to MAX_MEMBER_SEARCH
    each); a boundary with no member near it is moved to the next one.
    """
    with pio.open_read(path) as f:
        size = f.seek(0, 2)
        f.seek(0)
        if f.read(len(GZIP_MAGIC)) != GZIP_MAGIC:
            return []
        first = _member_end(f, 0, prefix)
        if first is None or first >= size:
            return []
        starts = [0]
        target = split_bytes
        while target < size:
            found = find_member(f, target, size, prefix)
            if found is None:
                target += split_bytes
                continue
            starts.append(found)
            target = found + split_bytes
    return list(zip(starts, [*starts[1:], size])) if len(starts) > 1 else []
