"""JSON lines, row by row: the reader of line-shaped inputs (C4 and Dolma
JSON lines, GitHub table exports, books as rows).

Every reader here yields either `(line_number, row)` or a `DeadLetter`; a bad
line never raises and never disappears (it goes to the dead-letter output with
its reason).

Spans: an uncompressed line file is read in pieces by several workers (a
source's `split`, see `pipeline.sources.base`) by line ranges (`line_spans`,
`SpanLines`); every span read gives exactly the records and line numbers that
the whole read gives for its part of the file.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from typing import Any, Self

from pipeline.core import io as pio
from pipeline.formats.errors import (
    STREAM_ERRORS,
    DeadLetter,
    read_whole_on_error,
    try_open,
)

SCAN_BLOCK = 1 << 22  # bytes read at a time while looking for line starts

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
    if span is None:
        stream = try_open(source, path, pio.open_input)
    else:
        stream = try_open(source, path, SpanLines, span[0], span[1])
    if isinstance(stream, DeadLetter):
        yield stream
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


def iter_text_rows(
    path: str, source: str, no_text: str, span: tuple[int, int, int] | None = None
) -> Iterator[tuple[int, dict[str, Any], str] | DeadLetter]:
    """`iter_json_lines` of rows that each hold one document's text in "text":
    `(line_number, row, text)`, or a DeadLetter (record "line N", reason
    `no_text`) for a row without a string "text"."""
    for item in iter_json_lines(path, source, span):
        if isinstance(item, DeadLetter):
            yield item
            continue
        line, row = item
        text = row.get("text")
        if isinstance(text, str):
            yield line, row, text
        else:
            yield DeadLetter(source, path, f"line {line}", no_text)


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

