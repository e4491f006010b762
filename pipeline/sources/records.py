"""Record iteration shared by the readers of line- and table-shaped inputs
(C4 and Dolma JSON lines, GitHub table exports).

Every function here yields either `(line_number, row)` or a `DeadLetter`; a bad
line never raises and never disappears (a record that cannot be parsed goes to
the dead-letter output with its reason).

Spans: a large file is read in pieces by several workers (a source's `split`,
see `pipeline.sources.base`) where its format allows it: an uncompressed
line file by line ranges (`line_spans`, `SpanLines`), Parquet by row groups
(`parquet_spans`), a multi-member gzip file by members (`gzip_member_spans`,
`GzipMembers(stop=...)`). Every span read gives exactly the records, line
numbers and offsets that the whole read gives for its part of the file.
"""

from __future__ import annotations

import functools
import json
import logging
import posixpath
import zlib
from collections.abc import Callable
from typing import IO, Any, Iterator, Self

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.core import io as pio
from pipeline.sources.base import DeadLetter

# Errors a damaged compressed stream raises while being read: from
# `pipeline.core.io.open_input`, EOFError (truncated) or OSError (corrupt: a bad
# CRC, a corrupt bzip2/xz block), after every byte decoded before the damage.
# The rest of the file cannot be trusted.
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


def iter_json_lines(
    path: str, source: str, span: tuple[int, int, int] | None = None
) -> Iterator[tuple[int, dict[str, Any]] | DeadLetter]:
    """Yield `(line_number, object)` for each JSON-lines row of `path` (1-based).

    Plain, gzip (multi-member too), bzip2 or xz by magic bytes. Blank lines are
    not records and are passed over. With a `span` of `line_spans` (a plain
    file only), just the lines it owns, numbered as in the whole file.

    Yields a DeadLetter (record = "line N") for a line that is not UTF-8, not
    JSON, or not a JSON object, and carries on with the next line; for a file
    that cannot be opened (record "file") or whose compressed stream breaks
    (truncated gzip: record = the first line not read), after which the file
    ends. Never raises.
    """
    try:
        stream = pio.open_input(path) if span is None else SpanLines(path, span[0], span[1])
    except (OSError, ValueError) as e:
        yield DeadLetter(source, path, "file", f"cannot open: {type(e).__name__}: {e}")
        return
    line = 0 if span is None else span[2] - 1
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
    path: str, source: str, batch_size: int = 1024, span: tuple[int, int] | None = None
) -> Iterator[tuple[int, dict[str, Any]] | DeadLetter]:
    """Yield `(row_number, row)` (1-based) for each row of a Parquet file, or of
    the row groups `span` = (first, last) of `parquet_spans`, numbered as in
    the whole file.

    Read batch by batch, so memory stays flat. A file that cannot be opened or
    decoded yields one DeadLetter (record "file" or "row N") and ends. Never raises.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    row_number = 0
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            table = pq.ParquetFile(f)
            groups = None
            if span is not None:
                groups = list(range(span[0], span[1] + 1))
                row_number = sum(table.metadata.row_group(i).num_rows for i in range(span[0]))
            for batch in table.iter_batches(batch_size=batch_size, row_groups=groups):
                for row in batch.to_pylist():
                    row_number += 1
                    yield row_number, row
    except (OSError, ValueError, pa.ArrowException) as e:
        record = f"row {row_number + 1}" if row_number else "file"
        yield DeadLetter(source, path, record, f"bad Parquet: {type(e).__name__}: {e}")


# --------------------------------------------------------------------------
# Spans of line files and Parquet files

SCAN_BLOCK = 1 << 22  # bytes read at a time while looking for line starts
log = logging.getLogger(__name__)


def read_whole_on_error(spans_of: Callable[..., list]) -> Callable[..., list]:
    """A spans function that gives [] (read whole) where the file cannot be
    read or parsed: the job's split step must not fail, and the reader then
    reports the file as a dead letter."""

    @functools.wraps(spans_of)
    def spans(path: str, *args: Any, **kw: Any) -> list:
        try:
            return spans_of(path, *args, **kw)
        except (OSError, EOFError, ValueError) as e:  # pyarrow's errors are these too
            log.warning("%s: not split, read whole: %s: %s", path, type(e).__name__, e)
            return []

    return spans


@read_whole_on_error
def line_spans(path: str, split_bytes: int) -> list[tuple[int, int, int]]:
    """Spans of about `split_bytes` of a plain (uncompressed) line file:
    (start, end, number of the first line), each cut at a line start; [] when
    the file is one span.

    One sequential read that counts newlines and parses nothing, so each span
    knows the number of its first line: a span read names the same lines (in
    dead letters, in ids of rows that carry none) as the whole read.
    """
    spans: list[tuple[int, int, int]] = []
    start, first = 0, 1  # the current span, and its first line's number
    pos = lines = 0  # offset of the block; newlines before block[i]
    with pio.open_read(path) as f:
        while block := f.read(SCAN_BLOCK):
            i = 0
            while True:  # the next span starts after the first newline at or past start + split_bytes - 1
                nl = block.find(b"\n", max(start + split_bytes - 1 - pos, i))
                if nl < 0:
                    break
                lines += block.count(b"\n", i, nl + 1)
                i = nl + 1
                spans.append((start, pos + i, first))
                start, first = pos + i, lines + 1
            lines += block.count(b"\n", i)
            pos += len(block)
    if start < pos:
        spans.append((start, pos, first))
    return spans if len(spans) > 1 else []


@read_whole_on_error
def json_lines_spans(path: str, split_bytes: int) -> list[tuple[int, int, int]]:
    """`line_spans` of a plain JSON-lines file; [] (read whole) for gzip, bzip2
    or xz, whose bytes cannot be entered in the middle."""
    return [] if pio.is_compressed(path) else line_spans(path, split_bytes)


class SpanLines:
    """The lines of a plain file whose first byte lies in [start, end), with
    `readline()` as a file's (b"" after the last): a line that starts before
    `start` is the previous span's, one that starts before `end` and runs past
    it is this span's. A context manager; any filesystem."""

    def __init__(self, path: str, start: int, end: int):
        self.stream = pio.open_range(path, max(start - 1, 0))
        self.pos, self.end = start, end
        # the byte before `start` says whether a line starts there
        if start > 0 and self.stream.read(1) not in (b"\n", b""):
            self.pos += len(self.stream.readline())  # the rest of a line the previous span owns

    def readline(self) -> bytes:
        if self.pos >= self.end:
            return b""
        line = self.stream.readline()
        self.pos += len(line)
        return line

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@read_whole_on_error
def parquet_spans(path: str, split_bytes: int) -> list[tuple[int, int]]:
    """(first, last) row groups of about `split_bytes` (compressed) each, from
    the file's footer; [] when the file is one span."""
    import pyarrow.parquet as pq

    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        meta = pq.ParquetFile(f).metadata
    spans: list[tuple[int, int]] = []
    first, size = 0, 0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        size += sum(group.column(c).total_compressed_size for c in range(group.num_columns))
        if size >= split_bytes:
            spans.append((first, i))
            first, size = i + 1, 0
    if first < meta.num_row_groups:
        spans.append((first, meta.num_row_groups - 1))
    return spans if len(spans) > 1 else []


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
