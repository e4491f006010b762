"""Sort more (key, value) pairs than fit in memory: sorted runs spilled to the
worker's local temporary folder, then merged.

A writer that must order a part of any size by key (a GroupByKey hands its
values in no order) holds at most `budget_bytes` of them plus one pair per run.
"""

from __future__ import annotations

import heapq
import pickle
import struct
import tempfile
from typing import Any, BinaryIO, Iterable, Iterator

_LEN = struct.Struct("<Q")
RUN_BYTES = 64 << 20  # a sorted run's budget: the most this holds at once, about


def _size(key: str, value: Any) -> int:
    """What one pair costs in memory, about: bytes are counted, anything else
    (a spill reference) as a small constant."""
    n = len(value) if isinstance(value, (bytes, bytearray, memoryview, str)) else 64
    return len(key) + n + 100  # the tuple, the objects' headers


def _write_run(pairs: list[tuple[str, Any]], folder: str) -> BinaryIO:
    f = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 - unlinked: nothing left behind on a crash; the reader closes it
    for pair in pairs:
        blob = pickle.dumps(pair, protocol=pickle.HIGHEST_PROTOCOL)
        f.write(_LEN.pack(len(blob)))
        f.write(blob)
    f.seek(0)
    return f


def _read_run(f: BinaryIO) -> Iterator[tuple[str, Any]]:
    with f:
        while head := f.read(_LEN.size):
            (n,) = _LEN.unpack(head)
            yield pickle.loads(f.read(n))


def sort_pairs(pairs: Iterable[tuple[str, Any]], budget_bytes: int = RUN_BYTES,
               folder: str | None = None) -> Iterator[tuple[str, Any]]:
    """`pairs` in key order (the order of equal keys is unspecified), consumed
    lazily; at most about `budget_bytes` held in memory at once.

    Args:
        pairs: (key, value) with a str key and a picklable value.
        folder: where runs spill (default: the system's temporary folder).
    """
    runs: list[BinaryIO] = []
    buf: list[tuple[str, Any]] = []
    held = 0
    for key, value in pairs:
        buf.append((key, value))
        held += _size(key, value)
        if held >= budget_bytes:
            buf.sort(key=lambda p: p[0])
            runs.append(_write_run(buf, folder or tempfile.gettempdir()))
            buf, held = [], 0
    buf.sort(key=lambda p: p[0])
    if not runs:
        yield from buf
        return
    try:
        yield from heapq.merge(*map(_read_run, runs), iter(buf), key=lambda p: p[0])
    finally:
        for f in runs:
            f.close()
