"""Validation loss per source on the manifest's "val" shards: the right windows of
each source, the right numbers in log.jsonl and the summary, training undisturbed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.core.contracts import load_shard_manifest
from tests.conftest import read_log
from tests.conftest import trainer_config as config
from trainer.checkpoint import load_checkpoint
from trainer.data import source_windows, split_sources
from trainer.model import ModelArgs, Transformer
from trainer.train import train


def _independent_windows(shard_dir: Path, source: str, seq_len: int) -> np.ndarray:
    """Every window of a source's val tokens, read with plain pyarrow (not trainer.data)."""
    ids = []
    for entry in load_shard_manifest(shard_dir)["shards"]:
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
