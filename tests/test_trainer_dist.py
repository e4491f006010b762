"""Under `torchrun --nproc_per_node 2` on CPU (gloo, FSDP2), training equals a
single-process run with the same global batch; sharded checkpoints resume exactly,
and a checkpoint resumes under another number of ranks (2 -> 1, 1 -> 2)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, read_log
from tests.conftest import trainer_config as config
from trainer.checkpoint import (
    GlobalBatchWarning,
    check_dcp_metadata,
    list_checkpoints,
    load_checkpoint,
    load_model_weights,
    load_rank_state,
)
from trainer.train import train

# Run by each of the 2 processes: the command line twice in one process group; between
# the runs, the newest checkpoint and what followed it are lost, as in a crash. Then
# the same command line once more with trainer.out=UP (the first argument), which
# holds a one-process run's checkpoint: 2 ranks resume it.
DRIVER = """
import shutil, sys
import torch.distributed as dist
from trainer.__main__ import main
dist.init_process_group("gloo")
up, argv = sys.argv[1], sys.argv[2:]
assert main(argv) == 0
dist.barrier()
if dist.get_rank() == 0:
    out = [a.split("=", 1)[1] for a in argv if a.startswith("trainer.out=")][0]
    shutil.copy(out + "/log.jsonl", out + "/full.jsonl")
    shutil.rmtree(out + "/checkpoints/step-000020")
dist.barrier()
assert main(argv) == 0
assert main([a if not a.startswith("trainer.out=") else "trainer.out=" + up for a in argv]) == 0
dist.destroy_process_group()
"""

TRAINER = dict(steps=20, seq_len=32, log_every=1, ckpt_every=10, keep_checkpoints=3,
               val_every=10, val_batches=2, lr=3e-3, warmup_steps=10)


@pytest.fixture(scope="module")
def runs(two_source_shards, tmp_path_factory) -> dict:
    """The runs both tests compare, 20 steps each, checkpoints at 10 and 20:
    "single": one process x 8 sequences (`train`); under torchrun, 2 ranks x 4
    sequences: "fsdp" (log.jsonl of a run resumed at step 10, full.jsonl of the
    uninterrupted one) and "up" (the single run's step-10 checkpoint resumed by 2
    ranks). {name: output folder, "single_summary": `train`'s summary}."""
    tmp = tmp_path_factory.mktemp("dist")
    single = train(config(two_source_shards, tmp / "single", batch_size=8, **TRAINER))
    (tmp / "up" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp / "single" / "checkpoints" / "step-000010.pt", tmp / "up" / "checkpoints")

    out = tmp / "fsdp"
    settings = {"shards.out": two_source_shards, "trainer.out": out,
                **{f"trainer.{k}": v for k, v in {**TRAINER, "batch_size": 4,
                                                  "num_threads": 1}.items()}}
    argv = ["--config", str(ROOT / "configs" / "demo.yaml")]
    for key, value in settings.items():
        argv += ["--set", f"{key}={value}"]
    (tmp / "driver.py").write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(tmp / "driver.py"), str(tmp / "up"), *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return {"single": tmp / "single", "single_summary": single, "fsdp": out, "up": tmp / "up"}


def test_fsdp2_two_ranks_equal_one_process(runs):
    """2 ranks x 4 sequences vs 1 process x 8: the same windows per step (in step s
    rank r reads windows 8s + 4r to 8s + 4r + 3), so the same losses within 1e-5
    over 20 steps."""
    out, single = runs["fsdp"], runs["single_summary"]
    full = [json.loads(line) for line in (out / "full.jsonl").read_text().splitlines()]
    resumed, one = read_log(out), read_log(runs["single"])
    steps = [r["step"] for r in one if "loss" in r]
    assert steps == list(range(1, 21))
    assert [r["step"] for r in full if "loss" in r] == steps
    for a, b in zip([r for r in full if "loss" in r], [r for r in one if "loss" in r]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5), a["step"]
        # The norm amplifies the last-bit differences of summing over 2 ranks.
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3), a["step"]
        assert a["lr"] == b["lr"] and a["tokens"] == b["tokens"] == a["step"] * 8 * 32
    val_full, val_one = ([r for r in log if "val_loss" in r] for log in (full, one))
    assert [r["step"] for r in val_full] == [r["step"] for r in val_one] == [10, 20]
    for a, b in zip(val_full, val_one):
        assert a["val_tokens"] == b["val_tokens"] == {"books": 512, "poetry": 512}
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)

    # Resumed from the sharded checkpoint of step 10: steps 11-20 repeat to the bit.
    def exact(log):  # what is not timing
        return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "mfu")} for r in log]

    assert exact(resumed) == exact(full)
    assert len(resumed) == 20 + 2
    ckpts = list_checkpoints(out / "checkpoints")
    assert [p.name for p in ckpts] == ["step-000010", "step-000020"]
    assert sorted(p.name for p in ckpts[-1].iterdir()) == [
        ".metadata", "__0_0.distcp", "__1_0.distcp", "rank-00000.pt", "rank-00001.pt"]
    # Consolidated on one process, the sharded weights are the single run's.
    sharded, args = load_model_weights(ckpts[-1])
    plain, plain_args = load_model_weights(single["checkpoint"])
    assert args == plain_args and sharded.keys() == plain.keys()
    for name, w in plain.items():
        torch.testing.assert_close(sharded[name], w, rtol=0, atol=1e-5)


def _train_records(log: list[dict], first: int = 1) -> list[dict]:
    """The train records of steps `first`..20, each once, in order."""
    records = [r for r in log if "loss" in r and r["step"] >= first]
    assert [r["step"] for r in records] == list(range(first, 21))
    return records


def test_resume_into_another_number_of_ranks(runs, two_source_shards, tmp_path):
    """2 ranks' sharded checkpoint of step 10 resumed on one process, and the one
    process's file resumed by 2 ranks (in `runs`): steps 11-20 give the losses of
    the uninterrupted run within 1e-5, and the data stream ends where it does."""
    full = [json.loads(line) for line in (runs["fsdp"] / "full.jsonl").read_text().splitlines()]
    final_2 = load_rank_state(runs["fsdp"] / "checkpoints" / "step-000020", 0)
    final_1 = load_checkpoint(runs["single"] / "checkpoints" / "step-000020.pt")
    assert final_2["data"] == final_1["data"]
    assert (final_2["data"]["epoch"], final_2["data"]["window"]) == (0, 20 * 8)  # 160 windows

    # 2 -> 1: the sharded folder of step 10 (DCP reads full tensors), 1 x 8 sequences.
    down = tmp_path / "down"
    shutil.copytree(runs["fsdp"] / "checkpoints" / "step-000010",
                    down / "checkpoints" / "step-000010")
    summary = train(config(two_source_shards, down, batch_size=8, **TRAINER))
    assert summary["steps"] == 20 and summary["tokens"] == 20 * 8 * 32
    assert [r["step"] for r in read_log(down) if "loss" in r] == list(range(11, 21))
    for got, want in zip(_train_records(read_log(down), 11), _train_records(full, 11)):
        assert got["loss"] == pytest.approx(want["loss"], abs=1e-5), got["step"]
        assert got["lr"] == want["lr"] and got["tokens"] == want["tokens"]
    state = load_checkpoint(summary["checkpoint"])
    assert state["data"] == final_2["data"] and state["step"] == 20
    assert state["batch"] == {"batch_size": 8, "grad_accum": 1, "world_size": 1}
    weights, _ = load_model_weights(runs["fsdp"] / "checkpoints" / "step-000020")
    for name, w in weights.items():
        torch.testing.assert_close(state["model"][name], w, rtol=0, atol=1e-5)

    # 1 -> 2: the one-process file of step 10, resumed by 2 ranks x 4 sequences.
    one = read_log(runs["single"])
    assert [r["step"] for r in read_log(runs["up"]) if "loss" in r] == list(range(11, 21))
    for got, want in zip(_train_records(read_log(runs["up"]), 11), _train_records(one, 11)):
        assert got["loss"] == pytest.approx(want["loss"], abs=1e-5), got["step"]
        assert got["lr"] == want["lr"] and got["tokens"] == want["tokens"]
    up_final = load_rank_state(runs["up"] / "checkpoints" / "step-000020", 1)
    assert up_final["data"] == final_1["data"] and up_final["step"] == 20
    assert up_final["batch"] == {"batch_size": 4, "grad_accum": 1, "world_size": 2}

    # Another global batch (1 x 4 after 2 x 4): a warning naming both; the stream
    # continues at the saved window (80) and reads 4 per step from there.
    other = tmp_path / "other"
    shutil.copytree(runs["fsdp"] / "checkpoints" / "step-000010",
                    other / "checkpoints" / "step-000010")
    with pytest.warns(GlobalBatchWarning, match=r"global batch of 8 sequences \(batch_size 4 x "
                      r"grad_accum 1 x 2 rank\(s\)\), this run has 4 sequences"):
        summary = train(config(two_source_shards, other, batch_size=4, **{**TRAINER, "steps": 11}))
    state = load_checkpoint(summary["checkpoint"])
    assert (state["step"], state["data"]["window"]) == (11, 10 * 8 + 4)
    seq_len = TRAINER["seq_len"]  # tokens trained on count from the stream, not step x batch
    assert summary["tokens"] == (10 * 8 + 4) * seq_len


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_dcp_metadata_may_hold_only_dcp_records(tmp_path):
    """DCP unpickles `.metadata` freely; ours is first read with an allow-list."""
    import torch.distributed.checkpoint as dcp

    dcp.save({"model": {"w": torch.ones(3)}}, checkpoint_id=tmp_path / "ok")  # one process
    check_dcp_metadata(tmp_path / "ok")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / ".metadata").write_bytes(pickle.dumps(os.system))
    with pytest.raises(pickle.UnpicklingError, match="system is not allowed"):
        check_dcp_metadata(tmp_path / "bad")
