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
