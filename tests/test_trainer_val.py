"""Validation loss per source on the manifest's "val" shards: the right windows of
each source, the right numbers in log.jsonl and the summary, training undisturbed."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from tests import test_trainer
from tests.conftest import CACHE
from tests.test_data import write_shards
from tests.test_trainer import config, read_log
from trainer.checkpoint import load_checkpoint
from trainer.data import load_manifest, source_windows, split_sources
from trainer.model import ModelArgs, Transformer
from trainer.train import train

# Fixtures of the trainer tests (pytest finds fixtures among a module's attributes).
alice, book_shards = test_trainer.alice, test_trainer.book_shards

MILTON = "inputs/books/plrabn12.txt"


@pytest.fixture(scope="module")
def two_source_shards(alice, request, tmp_path_factory) -> Path:
    """Train and val shards of two sources, byte-level ids (UTF-8 byte + 3; BOS 1, EOS 2):
    "books" = the chapters of Alice in Wonderland, "poetry" = Paradise Lost in ~6 kB
    pieces. Val holds Alice's last 3 chapters and the last 6 pieces of Milton, spread
    over two shards of 2-row record batches, the sources interleaved."""
    path = CACHE / MILTON
    if not path.exists():
        path = request.getfixturevalue("demo_inputs")[MILTON]
    milton = path.read_bytes()[:120_000]
    chapters = [c for c in re.split(rb"(?<=\n)(?= *CHAPTER [IVX]+\r?\n)", alice) if c.strip()]
    pieces = [milton[i:i + 6000] for i in range(0, len(milton), 6000)]

    def doc(source, i, text):
        return (source, f"{source}-{i}", [1] + [b + 3 for b in text] + [2])

    books = [doc("books", i, c) for i, c in enumerate(chapters)]
    poetry = [doc("poetry", i, p) for i, p in enumerate(pieces)]
    train_docs = books[:10] + poetry[:14]
    val_docs = [d for pair in zip(poetry[14:], books[10:] + [None] * 3) for d in pair if d]
    shard_dir = tmp_path_factory.mktemp("two-sources") / "shards"
    write_shards(shard_dir, [train_docs[0::2], train_docs[1::2]],
                 val=[val_docs[:5], val_docs[5:]], vocab_size=259, rows_per_batch=2)
    return shard_dir


def _independent_windows(shard_dir: Path, source: str, seq_len: int) -> np.ndarray:
    """Every window of a source's val tokens, read with plain pyarrow (not trainer.data)."""
    ids = []
    for entry in load_manifest(shard_dir)["shards"]:
        if entry["split"] == "val":
            table = pa.ipc.open_file(str(shard_dir / entry["file"])).read_all().to_pylist()
            ids += [t for row in table if row["source"] == source for t in row["input_ids"]]
    n = len(ids) // (seq_len + 1)
    return np.asarray(ids[:n * (seq_len + 1)], dtype=np.int64).reshape(n, seq_len + 1)


def test_source_windows_reads_each_source_alone(two_source_shards, book_shards):
    assert list(split_sources(two_source_shards)) == ["books", "poetry"]  # sorted
    everything = source_windows(two_source_shards, seq_len=31, max_windows=10**6)
    for source in ("books", "poetry"):
        expected = _independent_windows(two_source_shards, source, 31)
        assert len(expected) == split_sources(two_source_shards)[source] // 32 > 100
        assert np.array_equal(everything[source].numpy(), expected)
    first = source_windows(two_source_shards, seq_len=31, max_windows=5)
    assert {s: w.shape for s, w in first.items()} == {"books": (5, 32), "poetry": (5, 32)}
    assert torch.equal(first["books"], everything["books"][:5])
    assert first["books"].dtype == torch.int64
    assert source_windows(book_shards, seq_len=31, max_windows=5) == {}  # no val shard


def test_validation_loss_per_source_in_log_and_summary(two_source_shards, tmp_path):
    cfg = config(two_source_shards, tmp_path / "val3", steps=6, seq_len=32, batch_size=4,
                 val_every=3, val_batches=2, log_every=1)
    summary = train(cfg)
    log = read_log(tmp_path / "val3")
    val = [r for r in log if "val_loss" in r]
    assert [r["step"] for r in val] == [3, 6]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert summary["val"] == val and summary["val_loss"] == val[-1]["val_loss"]
    assert val[-1]["val_tokens"] == {"books": 2 * 4 * 32, "poetry": 2 * 4 * 32}

    # The same numbers from the final weights and independently read windows.
    state = load_checkpoint(summary["checkpoint"])
    model = Transformer(ModelArgs(**state["model_args"]))
    model.load_state_dict(state["model"])
    for source in ("books", "poetry"):
        w = torch.from_numpy(_independent_windows(two_source_shards, source, 32)[:8])
        with torch.no_grad():
            _, loss = model(w[:, :-1], w[:, 1:])
        assert val[-1]["val_loss"][source] == pytest.approx(loss.item(), abs=1e-6)
        assert val[0]["val_loss"][source] > val[-1]["val_loss"][source]  # it learns
        assert val[0]["val_loss"][source] < math.log(259)
    assert val[-1]["val_loss"]["books"] != pytest.approx(val[-1]["val_loss"]["poetry"], abs=1e-3)

    # Evaluating at step 3 leaves training untouched: the same train records, bitwise.
    only_end = config(two_source_shards, tmp_path / "end", steps=6, seq_len=32, batch_size=4,
                      val_every=0, val_batches=2, log_every=1)
    summary_end = train(only_end)
    log_end = read_log(tmp_path / "end")
    assert [r["step"] for r in log_end if "val_loss" in r] == [6]
    assert ([(r["loss"], r["grad_norm"]) for r in log_end if "loss" in r]
            == [(r["loss"], r["grad_norm"]) for r in log if "loss" in r])
    assert summary_end["val_loss"] == summary["val_loss"]
    assert Path(summary["plot"]).read_bytes()[:4] == b"\x89PNG"
