"""Parquet, batch by batch and by row groups: the reader of table-shaped
inputs (GitHub table exports).

`iter_parquet_rows` yields `(row_number, row)` or a `DeadLetter`, never raises;
a large file is read in pieces by several workers by row groups
(`parquet_spans`), each numbering its rows as the whole read does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipeline.core.io import open_read
from pipeline.formats.errors import DeadLetter, read_whole_on_error


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
        with open_read(path) as f:
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


@read_whole_on_error
def parquet_spans(path: str, split_bytes: int) -> list[tuple[int, int]]:
    """(first, last) row groups of about `split_bytes` (compressed) each, from
    the file's footer; [] when the file is one span."""
    import pyarrow.parquet as pq

    with open_read(path) as f:
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
