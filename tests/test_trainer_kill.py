"""A training process killed with SIGKILL mid-run and restarted from its last
checkpoint logs exactly the losses and LRs of an uninterrupted run (CPU, bitwise)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

STEPS = 30


def _cmd(shards: Path, out: Path) -> list[str]:
    sets = {
        "shards.out": shards, "trainer.out": out, "trainer.model": "demo", "trainer.seq_len": 64,
        "trainer.batch_size": 8, "trainer.steps": STEPS, "trainer.warmup_steps": 5,
        "trainer.log_every": 1, "trainer.ckpt_every": 3, "trainer.keep_checkpoints": 2,
        "trainer.num_threads": 1,
    }
    args = [sys.executable, "-m", "trainer", "--config", str(ROOT / "configs" / "demo.yaml")]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args


def _log(out: Path) -> list[dict]:
    path = out / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def full(book_shards, tmp_path_factory) -> Path:
    """The uninterrupted run both tests compare against."""
    out = tmp_path_factory.mktemp("full")
    subprocess.run(_cmd(book_shards, out), check=True, env=ENV, cwd=ROOT, capture_output=True, timeout=600)
    return out


def test_sigkill_at_a_random_step_then_resume(book_shards, full, tmp_path):
    killed = tmp_path / "killed"

    kill_at = random.Random(os.getpid()).randint(7, STEPS - 5)
    proc = subprocess.Popen(_cmd(book_shards, killed), env=ENV, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        if any(r["step"] >= kill_at for r in _log(killed) if "loss" in r):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before step {kill_at}"

    subprocess.run(_cmd(book_shards, killed), check=True, env=ENV, cwd=ROOT, capture_output=True, timeout=600)
    want = [(r["step"], r["loss"], r["lr"]) for r in _log(full) if "loss" in r]
    got = [(r["step"], r["loss"], r["lr"]) for r in _log(killed) if "loss" in r]
    assert [s for s, _, _ in want] == list(range(1, STEPS + 1))
    assert got == want, f"killed at step {kill_at}"


def test_ctrl_c_checkpoints_the_current_step_then_resume_is_exact(book_shards, full, tmp_path):
    stopped = tmp_path / "stopped"

    proc = subprocess.Popen(_cmd(book_shards, stopped), env=ENV, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        if any(r["step"] >= 8 for r in _log(stopped) if "loss" in r):
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.02)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    step = int(err.split("interrupted after step ")[1].split(";")[0])
    assert step >= 8
    assert (stopped / "checkpoints" / f"step-{step:06d}.pt").is_file()

    subprocess.run(_cmd(book_shards, stopped), check=True, env=ENV, cwd=ROOT, capture_output=True, timeout=600)
    want = [(r["step"], r["loss"], r["lr"]) for r in _log(full) if "loss" in r]
    assert [(r["step"], r["loss"], r["lr"]) for r in _log(stopped) if "loss" in r] == want
