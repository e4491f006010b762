"""Under `torchrun --nproc_per_node 2` on CPU (gloo, FSDP2), training equals a
single-process run with the same global batch; sharded checkpoints resume exactly."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from tests import test_trainer, test_trainer_val
from tests.conftest import ROOT
from tests.test_trainer import config, read_log
from trainer.checkpoint import check_dcp_metadata, list_checkpoints, load_model_weights
from trainer.train import train

# Fixtures of the other trainer tests (pytest finds fixtures among module attributes).
alice, two_source_shards = test_trainer.alice, test_trainer_val.two_source_shards

# Run by each of the 2 processes: the command line twice in one process group; between
# the runs, the newest checkpoint and what followed it are lost, as in a crash.
DRIVER = """
import shutil, sys
import torch.distributed as dist
from trainer.__main__ import main
dist.init_process_group("gloo")
argv = sys.argv[1:]
assert main(argv) == 0
dist.barrier()
if dist.get_rank() == 0:
    out = [a.split("=", 1)[1] for a in argv if a.startswith("trainer.out=")][0]
    shutil.copy(out + "/log.jsonl", out + "/full.jsonl")
    shutil.rmtree(out + "/checkpoints/step-000020")
dist.barrier()
assert main(argv) == 0
dist.destroy_process_group()
"""

TRAINER = dict(steps=20, seq_len=32, log_every=1, ckpt_every=10, keep_checkpoints=3,
               val_every=10, val_batches=2, lr=3e-3, warmup_steps=10)


def test_fsdp2_two_ranks_equal_one_process(two_source_shards, tmp_path):
    """2 ranks x 4 sequences vs 1 process x 8: the same windows per step (in step s
    rank r reads windows 8s + 4r to 8s + 4r + 3), so the same losses within 1e-5
    over 20 steps."""
    out = tmp_path / "fsdp"
    settings = {"shards.out": two_source_shards, "trainer.out": out,
                **{f"trainer.{k}": v for k, v in {**TRAINER, "batch_size": 4,
                                                  "num_threads": 1}.items()}}
    argv = ["--config", str(ROOT / "configs" / "demo.yaml")]
    for key, value in settings.items():
        argv += ["--set", f"{key}={value}"]
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(tmp_path / "driver.py"), *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    single = train(config(two_source_shards, tmp_path / "single", batch_size=8, **TRAINER))
    full = [json.loads(line) for line in (out / "full.jsonl").read_text().splitlines()]
    resumed, one = read_log(out), read_log(tmp_path / "single")
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
