"""Training-stream read speed: TokenStream over memory-mapped Arrow shards vs a
flat numpy.memmap of the same tokens read nanoGPT style (figures `loader.vs_memmap*`),
and what reading allocates (`loader.read_peak_alloc*`).

Both sides read the same real token ids (the demo's shards when present, else the
Gutenberg books byte-encoded): the flat file holds the shards' tokens in the
stream's shard order, and the flat reader is handed the stream's window order
(worked out before its clock starts), so both read the same windows of
seq_len + 1 tokens in the same order (checked), in batches of the same size, each
batch one int64 torch tensor cut into (x, y) views. One process, one core, CPU
time. The flat reader slices the memory map as a plain ndarray (np.memmap's
subclass costs ~2 us a slice, which would flatter us): one slice per batch of
consecutive windows, else one fancy index of a sliding-window view, as the stream
does (a copy per window is ~1.5x slower at batch 8).
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from tests.bench import record, size

SEQ_LEN = 2048
MIN_TOKENS = size(1 << 26, 1 << 20)
REPEATS = size(9, 1)
SHARDS = 4
# The trainer's default shuffle_block (4096 windows) scaled from a production shard
# (2^27 tokens, configs/llama-1.4t.yaml) to this bench's: a block is 1/16 of a shard,
# so as few batches span two shards (these are copied window by window).
BLOCK = round(4096 * MIN_TOKENS / SHARDS / 2**27)
# (figure, batch size, shuffle_block): LLaMA's 1 sequence of 2048 per GPU in stream
# order and block-shuffled, and batches of 8 block-shuffled.
CASES = [("loader.vs_memmap", 1, 0), ("loader.vs_memmap_shuffled", 1, BLOCK),
         ("loader.vs_memmap_batch8_shuffled", 8, BLOCK)]


def _tokens(shard_dir: Path) -> np.ndarray:
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    parts = []
    for s in manifest["shards"]:
        if s["split"] == "train":
            with pa.memory_map(str(shard_dir / s["file"])) as f:
                t = pa.ipc.open_file(f).read_all()
            parts.append(t.column("input_ids").combine_chunks().flatten().to_numpy())
    return np.concatenate(parts)


def _write_shards(tokens: np.ndarray, out: Path, docs: int = 4000) -> None:
    """The same tokens as token shards (via the test helper's writer)."""
    from tests.conftest import write_shards

    cuts = np.linspace(0, len(tokens), docs + 1, dtype=np.int64)
    rows = [("books", f"d{i}", tokens[a:b]) for i, (a, b) in enumerate(itertools.pairwise(cuts))]
    per_shard = docs // SHARDS
    write_shards(out, [rows[i : i + per_shard] for i in range(0, docs, per_shard)], rows_per_batch=256)


def _stream(shard_dir: Path, batch: int, block: int):
    from trainer.data import TokenStream

    return TokenStream(shard_dir, "train", SEQ_LEN, batch_size=batch, seed=0, infinite=False,
                       verify=False, shuffle_block=block)


def _flat_file(stream, path: Path) -> None:
    """Write the stream's epoch-0 token stream (its shards in the seeded order) as one
    flat uint16 file."""
    with open(path, "wb") as f:
        for i in stream.shard_order(0):
            with pa.memory_map(str(stream.dir / stream.shards[i]["file"])) as m:
                ids = pa.ipc.open_file(m).read_all().column("input_ids")
                for chunk in ids.chunks:
                    chunk.flatten().to_numpy().tofile(f)


def _starts(stream) -> np.ndarray:
    """The first token of each window of epoch 0 in the stream's read order."""
    return stream.window_order(0) * (SEQ_LEN + 1)


def _memmap_plan(starts: np.ndarray, batch: int) -> list[tuple[bool, int, np.ndarray]]:
    """Per batch, made before timing (the stream works it out while reading): whether
    its windows are consecutive, and their first tokens."""
    span = SEQ_LEN + 1
    return [(bool(np.all(np.diff(starts[i:i + batch]) == span)), int(starts[i]), starts[i:i + batch])
            for i in range(0, len(starts), batch)]


def _memmap_batches(path: Path, plan: list[tuple[bool, int, np.ndarray]]):
    data = np.asarray(np.memmap(path, dtype=np.uint16, mode="r"))  # same mapping, plain ndarray
    span = SEQ_LEN + 1
    windows = np.lib.stride_tricks.sliding_window_view(data, span)
    for run, first, ours in plan:
        if run:  # one slice
            w = data[first:first + len(ours) * span].reshape(len(ours), span).astype(np.int64)
        else:  # one gather
            w = windows[ours].astype(np.int64)
        chunk = torch.from_numpy(w)
        yield chunk[:, :-1], chunk[:, 1:]


def _timed(batches) -> tuple[int, float]:
    """(tokens read, CPU seconds of this process): per core, and steadier than wall
    time on a shared machine (reading is single-threaded here)."""
    t0, n = time.process_time(), 0
    for x, _y in batches:
        n += x.numel() + len(x)  # tokens read: seq_len + 1 per window
    return n, time.process_time() - t0


def _peak_alloc(batches) -> int:
    """Peak bytes allocated while reading: Python/numpy (tracemalloc) + Arrow's pool."""
    arrow = pa.total_allocated_bytes()
    tracemalloc.start()
    most = 0
    for _ in batches:
        most = max(most, pa.total_allocated_bytes() - arrow)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak + most


def run() -> list[dict]:
    torch.set_num_threads(1)
    demo = Path("out/demo/shards")
    tokens = _tokens(demo) if (demo / "manifest.json").is_file() else None
    if tokens is None or len(tokens) == 0:
        text = b"".join(p.read_bytes() for p in sorted(Path(".cache/inputs/books").glob("*.txt")))
        tokens = np.frombuffer(text, dtype=np.uint8).astype(np.uint16) + 3
    tokens = np.tile(tokens, -(-MIN_TOKENS // len(tokens)))[:MIN_TOKENS]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _write_shards(tokens, tmp / "shards")
        _flat_file(_stream(tmp / "shards", 1, 0), tmp / "flat.bin")  # one shard order per seed
        for name, batch, block in CASES:
            plan = _memmap_plan(_starts(_stream(tmp / "shards", batch, block)), batch)
            for a, b in zip(_stream(tmp / "shards", batch, block),
                            _memmap_batches(tmp / "flat.bin", plan), strict=True):
                assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), name  # same windows
            results = {"stream": [], "memmap": []}
            for _ in range(REPEATS):
                n, s = _timed(_stream(tmp / "shards", batch, block))
                results["stream"].append(n / s)
                n, s = _timed(_memmap_batches(tmp / "flat.bin", plan))
                results["memmap"].append(n / s)
            ours, ref = float(np.median(results["stream"])), float(np.median(results["memmap"]))
            out.append(record(name, ours, "tokens/s",
                              f"numpy.memmap, batch {batch}, block {block}", ref, goal=0.8))
            if name == "loader.vs_memmap":
                peak = _peak_alloc(_stream(tmp / "shards", batch, block))
                ref_peak = _peak_alloc(_memmap_batches(tmp / "flat.bin", plan))
        out += [
            # allocations while reading, against the bytes read: ratio > 1 means less is allocated
            record("loader.read_peak_alloc", float(peak), "bytes", "bytes of tokens read",
                   len(tokens) * 2, higher_is_better=False),
            record("loader.read_peak_alloc_vs_memmap", float(peak), "bytes",
                   "numpy.memmap reader's peak", float(ref_peak), higher_is_better=False),
        ]
    return out
