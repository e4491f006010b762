"""Training-stream read speed: TokenStream over memory-mapped Arrow shards vs a
flat numpy.memmap of the same tokens read nanoGPT style (figure `loader.vs_memmap`).

Both read the same real token ids (the demo's shards when present, else the
Gutenberg books byte-encoded) as consecutive (x, y) windows of seq_len + 1 and
turn them into int64 torch tensors, one process, one core.
"""

from __future__ import annotations

import json
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from tests.bench import record

SEQ_LEN = 2048
MIN_TOKENS = 20_000_000


def _tokens(shard_dir: Path) -> np.ndarray:
    import pyarrow as pa

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
    from tests.test_data import write_shards

    cuts = np.linspace(0, len(tokens), docs + 1, dtype=np.int64)
    rows = [("books", f"d{i}", tokens[a:b]) for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:]))]
    per_shard = docs // 4
    write_shards(out, [rows[i : i + per_shard] for i in range(0, docs, per_shard)], rows_per_batch=256)


def _read_stream(shard_dir: Path) -> tuple[int, float]:
    from trainer.data import TokenStream

    stream = TokenStream(shard_dir, "train", SEQ_LEN, seed=0, infinite=False, verify=False)
    t0, n = time.perf_counter(), 0
    for x, y in stream:
        n += x.numel() + 1
    return n, time.perf_counter() - t0


def _read_memmap(path: Path, count: int) -> tuple[int, float]:
    data = np.memmap(path, dtype=np.uint16, mode="r")
    span = SEQ_LEN + 1
    t0, n = time.perf_counter(), 0
    for w in range(count // span):
        chunk = torch.from_numpy(data[w * span : (w + 1) * span].astype(np.int64))
        x, _y = chunk[:-1], chunk[1:]  # both views, as the stream yields
        n += x.numel() + 1
    return n, time.perf_counter() - t0


def run() -> list[dict]:
    torch.set_num_threads(1)
    demo = Path("out/demo/shards")
    tokens = _tokens(demo) if (demo / "manifest.json").is_file() else None
    if tokens is None or len(tokens) == 0:
        text = b"".join(p.read_bytes() for p in sorted(Path(".cache/inputs/books").glob("*.txt")))
        tokens = np.frombuffer(text, dtype=np.uint8).astype(np.uint16) + 3
    tokens = np.tile(tokens, -(-MIN_TOKENS // len(tokens)))[:MIN_TOKENS]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _write_shards(tokens, tmp / "shards")
        tokens.tofile(tmp / "flat.bin")
        results = {"stream": [], "memmap": []}
        for _ in range(3):
            n, s = _read_stream(tmp / "shards")
            results["stream"].append(n / s)
            n, s = _read_memmap(tmp / "flat.bin", len(tokens))
            results["memmap"].append(n / s)
        tracemalloc.start()
        _read_stream(tmp / "shards")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    ours, ref = float(np.median(results["stream"])), float(np.median(results["memmap"]))
    return [
        record("loader.vs_memmap", ours, "tokens/s", "numpy.memmap windows", ref, goal=0.8),
        # allocations while reading, against the bytes read: ratio > 1 means less is allocated
        record("loader.read_peak_alloc", float(peak), "bytes", "bytes of tokens read", 20e6 * 2, higher_is_better=False),
    ]
