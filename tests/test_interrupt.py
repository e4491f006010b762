"""Ctrl-C: a Beam job on the local runner stops with one line, its worker
processes end quietly and its temporary run folder goes; the trainer stopped
while it imports torch prints one line too. The local runner's workers print
nothing of their start-up, even where Beam's import-time apitools warning fires.

Ctrl-C is sent as a terminal sends it: SIGINT to the command's whole process
group (the command runs in a session of its own)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.beam.runner import descendants
from tests.proc_tree import tree_sample

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _start(argv: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def _wait_for(proc: subprocess.Popen, ready, what: str) -> None:
    for _ in range(3000):
        if ready():
            return
        assert proc.poll() is None, f"exited before {what}: {proc.communicate()[1][-3000:]}"
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no {what} after 150 s")


def test_ctrl_c_stops_a_beam_job_with_one_line(tmp_path, lid_model):
    out = tmp_path / "out"
    web = lid_model.parents[1] / "inputs" / "commoncrawl" / "*.warc.gz"  # not the 1,162 saved pages: a faster start
    proc = _start(["pipeline", "clean", "--config", str(DEMO), "--set", f"out_dir={out}",
                   "--set", f"langid.model={lid_model}", "--set", "clean.c4.badwords=null",
                   "--set", f"sources.commoncrawl.inputs=[{web}]"])

    def workers() -> list[int]:  # forked by the fork server (the default), or Beam's own
        return [p for p, (_, _, role) in tree_sample(proc.pid).items() if role == "worker"]

    _wait_for(proc, lambda: len(workers()) == 2, "two SDK workers")
    started = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.splitlines() == [
        ("interrupted: clean stopped; its earlier output is untouched (jobs write to a run folder that only their "
         "manifest, written last, makes visible): run the same command again")]
    time.sleep(0.5)
    assert [p for p in started if _cmdline(p)] == []  # the workers, their shells and the sentinel: gone
    assert sorted(p.name for p in out.iterdir()) == ["clean.lock"]  # no run folder, no empty clean/


def test_local_workers_print_nothing_of_their_start_up(tmp_path, lid_model, demo_inputs):
    """Where the GCP client cannot load, Beam warns "apitools not found" at import
    on the root logger, which gives each worker a stderr handler: then also
    three start-up lines a worker. A stand-in `apitools` that fails to import
    makes it so here."""
    shim = tmp_path / "shim" / "apitools"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('apitools left out for this test')\n")
    env = {**os.environ, "PYTHONPATH": str(shim.parent)}
    probe = subprocess.run([sys.executable, "-c", "import apache_beam.io.gcp.internal.clients.bigquery"],
                           env=env, capture_output=True, text=True, check=False)
    assert "apitools not found" in probe.stderr  # the stand-in works: Beam warns
    (tmp_path / "corpus" / "books").mkdir(parents=True)
    shutil.copy(demo_inputs["inputs/books/alice29.txt"], tmp_path / "corpus" / "books")
    proc = _start(["pipeline", "clean", "--config", str(DEMO), "--set", f"out_dir={tmp_path}/out",
                   "--set", f"corpus_dir={tmp_path}/corpus", "--set", "corpus_only=true",
                   "--set", f"langid.model={lid_model}", "--set", "clean.c4.badwords=null"], env=env)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert out.startswith("clean: 1 files in ")
    assert err == ""


def test_ctrl_c_while_the_trainer_imports_torch_is_one_line(tmp_path):
    # A signal can land in an import that swallows it (a bare `except`), or just after
    # the import: then the run goes on to its missing shards. Either way one line;
    # of three tries, one at least is stopped by the Ctrl-C.
    outcomes = []
    for attempt in range(3):
        proc = _start(["trainer", "--config", str(DEMO), "--set", f"out_dir={tmp_path / str(attempt)}"])
        _wait_for(proc, lambda p=proc: b"libtorch" in Path(f"/proc/{p.pid}/maps").read_bytes(), "torch loading")
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        outcomes.append(proc.returncode)
        if proc.returncode == 130:
            assert err.splitlines() == [("interrupted: python -m trainer stopped; checkpoints are written whole "
                                         "or not at all: run the same command again")]
            break
        assert proc.returncode == 1 and len(err.splitlines()) == 1 and "cannot read the shard manifest" in err, err
    assert outcomes[-1] == 130, outcomes
