"""TensorBoard logging (`trainer.tensorboard`): the same records as log.jsonl, as
scalars at their steps, also across a resume; a clear message without the package."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, read_log
from tests.conftest import trainer_config as config
from trainer.__main__ import main
from trainer.checkpoint import list_checkpoints
from trainer.train import SetupError, tensorboard_dir, tensorboard_scalars, train


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} as TensorBoard reads the folder (purged events left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


def test_scalars_of_a_record():
    assert tensorboard_scalars({"step": 3, "loss": 5.5, "lr": 1e-3, "tokens": 3072}) == [
        ("loss", 5.5), ("lr", 1e-3), ("tokens", 3072.0)]
    assert tensorboard_scalars({"step": 3, "val_loss": {"wiki": 4.0, "books": 3.5},
                                "val_tokens": {"books": 1024}}) == [
        ("val_loss/books", 3.5), ("val_loss/wiki", 4.0), ("val_tokens/books", 1024.0)]
    assert tensorboard_scalars({"step": 9, "eval": {"tasks": {"cloze": {"acc": 0.5, "n": 40}},
                                                    "name": "x", "ids": [1, 2]}}) == [
        ("eval/tasks/cloze/acc", 0.5), ("eval/tasks/cloze/n", 40.0)]


def test_events_equal_the_log_also_after_a_resume(two_source_shards, tmp_path):
    """6 steps, checkpoints at 3 and 6; the step-6 checkpoint is lost as in a crash and
    the run resumes at 3: TensorBoard shows each step once, with the log's values."""
    cfg = config(two_source_shards, tmp_path / "out", steps=6, ckpt_every=3, keep_checkpoints=3,
                 val_every=3, val_batches=1, tensorboard=True)
    train(cfg)
    list_checkpoints(tmp_path / "out" / "checkpoints")[-1].unlink()
    train(cfg)
    log = read_log(tmp_path / "out")
    scalars = _scalars(tmp_path / "out" / "tensorboard")
    assert sorted(scalars) == ["grad_norm", "loss", "lr", "tokens", "tokens_per_s",
                               "val_loss/books", "val_loss/poetry", "val_tokens/books",
                               "val_tokens/poetry"]
    train_records = [r for r in log if "loss" in r]
    assert [s for s, _ in scalars["loss"]] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "lr", "grad_norm", "tokens"):
        assert [v for _, v in scalars[key]] == pytest.approx([r[key] for r in train_records],
                                                             rel=1e-6)
    val = [r for r in log if "val_loss" in r]
    assert [r["step"] for r in val] == [3, 6]
    for source in ("books", "poetry"):
        assert [s for s, _ in scalars[f"val_loss/{source}"]] == [3, 6]
        assert [v for _, v in scalars[f"val_loss/{source}"]] == pytest.approx(
            [r["val_loss"][source] for r in val], rel=1e-6)


def test_folder_and_missing_package(book_shards, tmp_path, monkeypatch, capsys):
    assert tensorboard_dir(str(tmp_path), False) is None
    assert tensorboard_dir(str(tmp_path), True) == tmp_path / "tensorboard"
    assert tensorboard_dir(str(tmp_path), "tb/run1") == Path("tb/run1")
    with pytest.raises(SetupError, match="s3://bucket/tb is on an object store"):
        tensorboard_dir("s3://bucket/out", "s3://bucket/tb")

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    with pytest.raises(SetupError, match="the tensorboard package is not installed"):
        tensorboard_dir(str(tmp_path), True)
    argv = ["--config", str(ROOT / "configs" / "demo.yaml"), "--set", f"shards.out={book_shards}",
            "--set", f"trainer.out={tmp_path / 'out'}", "--set", "trainer.tensorboard=true"]
    assert main(argv) == 1
    assert capsys.readouterr().err == (
        "error: trainer.tensorboard is set, but the tensorboard package is not installed: "
        "pip install tensorboard (requirements-dev.txt pins it), or set trainer.tensorboard=false\n")
    assert not (tmp_path / "out").exists()
