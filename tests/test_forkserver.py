"""The local runner's forked SDK workers (`pipeline.beam.forkserver`): a
worker is the fork server's child running Beam's harness with its client's
environment, streams and exit code; it dies with its client; the server ends
with its lifeline; a job writes the same bytes as with Beam's own workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.beam.forkserver import CLIENT, ForkServer
from pipeline.clean import run_clean
from tests.conftest import small_demo_config
from tests.proc_tree import tree_sample


def _client(socket_path: str, env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-I", "-S", str(CLIENT), socket_path], env=env, **kw)


def _workers(server_pid: int) -> list[int]:
    return [p for p, (_, _, role) in tree_sample(server_pid).items() if role == "worker"]


# a control service where nothing listens: the worker's harness waits to connect
WAITING = dict(os.environ, CONTROL_API_SERVICE_DESCRIPTOR='url: "localhost:1"')


def _waiting_worker(server) -> tuple[subprocess.Popen, int]:
    """A client of `server` and its worker's pid, once forked."""
    client = _client(server.socket, WAITING, stderr=subprocess.DEVNULL)
    for _ in range(1200):
        if workers := _workers(server.pid):
            return client, workers[0]
        time.sleep(0.05)
    raise AssertionError("no worker forked in 60 s")


def _wait_until(done, seconds: float = 10.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        if done():
            return True
        time.sleep(0.05)
    return done()


# forked from this process (unless it has run a Beam job: then as a new Python), or a new Python
@pytest.mark.parametrize("fork_here", [None, False])
def test_a_worker_runs_the_harness_with_its_clients_environment_and_streams(fork_here):
    # the server's environment has no control descriptor; the client's a bad one,
    # which the harness rejects by name on the client's stderr
    env = dict(os.environ, CONTROL_API_SERVICE_DESCRIPTOR="bogus_field: 1")
    with ForkServer(fork_here=fork_here) as server:
        done = subprocess.run([sys.executable, "-I", "-S", str(CLIENT), server.socket], env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        assert tree_sample(server.pid)[server.pid][2] == "pool"  # by its process name
        folder = Path(server.folder)
    assert done.returncode == 1
    assert 'has no field named "bogus_field"' in done.stderr
    assert "sdk_worker_main.py" in done.stderr  # the harness ran in the worker
    assert server.returncode == 0  # the lifeline closed: the server ended
    assert not folder.exists()


def test_a_worker_dies_with_its_client():
    with ForkServer() as server:
        client, worker = _waiting_worker(server)
        client.kill()
        client.wait()
        assert _wait_until(lambda: not Path(f"/proc/{worker}").exists())  # killed and reaped by the server
        assert server.poll() is None  # the server goes on


def test_forked_and_spawned_workers_write_the_same_bytes(tmp_path, small_demo_run):
    cfg = small_demo_config(tmp_path, small_demo_run["cache"], "beam.local_workers=spawn")
    spawned = run_clean(cfg)
    forked = small_demo_run["clean"]  # the default: forked workers
    assert small_demo_run["cfg"].beam.local_workers == "fork"
    assert spawned["counters"] == forked["counters"]
    assert [(f["file"].split("/", 1)[1], f["sha256"]) for f in spawned["files"]] == \
        [(f["file"].split("/", 1)[1], f["sha256"]) for f in forked["files"]]
    assert len(spawned["files"]) >= 4


def test_a_dead_server_takes_its_workers_and_fails_its_clients():
    import signal

    with ForkServer() as server:
        client, worker = _waiting_worker(server)
        os.kill(server.pid, signal.SIGKILL)
        assert client.wait(timeout=30) == 1  # the runner sees its worker command fail

        def ended() -> bool:  # gone, or a zombie until whoever adopted it reaps it
            try:
                return "zombie" in Path(f"/proc/{worker}/status").read_text()
            except OSError:
                return True

        assert _wait_until(ended)  # killed with its server
        late = subprocess.run([sys.executable, "-I", "-S", str(CLIENT), server.socket], env=WAITING,
                              capture_output=True, text=True, timeout=60, check=False)
        assert late.returncode == 1 and "no fork server at" in late.stderr  # refused: not waited for 120 s


def test_no_socket_means_beams_own_workers_with_a_warning(monkeypatch, caplog):
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.beam import forkserver, runner

    def no_room(*_):
        raise OSError(28, "No space left on device")

    options = PipelineOptions(["--runner=FnApiRunner", "--direct_running_mode=multi_processing"])
    with runner._forked_workers(options, "pipeline.clean") as command:
        assert command.endswith(".sock") and "forkclient.py" in command
    monkeypatch.setattr(forkserver, "ForkServer", no_room)
    with runner._forked_workers(options, "pipeline.clean") as command:
        assert command is None
    assert "not forked: no fork server socket ([Errno 28] No space left on device)" in caplog.text
    spawn = PipelineOptions(["--runner=FnApiRunner", "--direct_running_mode=multi_processing",
                             "--local_workers=spawn"])
    with runner._forked_workers(spawn, "pipeline.clean") as command:
        assert command is None
