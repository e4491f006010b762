"""The local runner's SDK workers, forked from a process that has already
imported Beam's SDK harness and the job's modules.

Beam's local runner (`multi_processing`) starts each SDK worker as a new
`python -m apache_beam.runners.worker.sdk_worker_main`, which spends about two
CPU-seconds importing Beam, pyarrow, numpy and fastText before it can run a
bundle, every worker and every job. Here the launcher starts one fork server
(`python -m pipeline.beam.forkserver SOCKET MODULE...`) while it builds the
job's graph; the server imports those modules once, then listens on a Unix
socket. The runner's worker command is `forkclient.py SOCKET`, a stdlib-only
script: it hands the server its standard streams, environment, working folder
and SIGINT disposition, and exits with the worker's exit code. For each
client the server forks the worker (a copy of itself, modules already
imported), reaps it and sends the client its exit code; a client that goes
away (killed) takes its worker with it. So the runner sees what it always
sees: a command whose process lives as long as the worker and fails when it
fails.

The server is single-threaded and never touches gRPC before forking, so its
children start clean. When its standard input (a pipe from the launcher)
closes, at the end of the job or when the launcher dies, it takes no new
client and exits once its workers have.
This is the local runner's own optimisation: on any other runner the
workers are the runner's.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

SDK_WORKER_MAIN = "apache_beam.runners.worker.sdk_worker_main"
CLIENT = Path(__file__).with_name("forkclient.py")
HEADER = 8  # bytes: the length of the request's JSON, big-endian


def available() -> bool:
    """Whether workers can be forked here (POSIX: fork, Unix sockets, passing
    file descriptors)."""
    return os.name == "posix" and hasattr(socket, "AF_UNIX") and hasattr(socket, "send_fds")


class ForkServer:
    """A running fork server (`serve`) and the worker command that uses it.

    Started with the modules the job's workers need (`modules`); `command` is
    the command line the runner runs for each SDK worker. `close()` ends the
    server (workers already forked run to their end) and removes its socket.
    """

    def __init__(self, modules: tuple[str, ...] = ()):
        self.folder = tempfile.mkdtemp(prefix="llama-forks-")
        self.socket = os.path.join(self.folder, "workers.sock")
        root = str(Path(__file__).resolve().parents[2])  # where `pipeline` is importable from
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__, self.socket, *modules], stdin=subprocess.PIPE, env=env)
        self.command = " ".join(shlex.quote(a) for a in (sys.executable, "-I", "-S", str(CLIENT), self.socket))

    def close(self) -> None:
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()  # the server's lifeline
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def fork_server(modules: tuple[str, ...] = ()) -> Iterator[ForkServer]:
    server = ForkServer(modules)
    try:
        yield server
    finally:
        server.close()


def serve(path: str, modules: list[str]) -> None:
    """Listen on `path`, import Beam's SDK harness and `modules`, then fork a
    worker for each client until standard input closes; send each client its
    worker's exit code, and kill a worker whose client goes away (killed)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)  # clients that come early wait here while the imports run
    for name in (SDK_WORKER_MAIN, *modules):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the worker imports it again and reports it there
            traceback.print_exc()
    gc.collect()
    gc.freeze()  # what is imported stays out of the children's collections: fewer pages copied
    lifeline = sys.stdin.fileno()
    workers: dict[int, tuple[socket.socket, int | None]] = {}  # pid -> (its client, its pidfd)
    while lifeline is not None or workers:
        pidfds = [fd for _, fd in workers.values() if fd is not None]
        watched = [*(c for c, _ in workers.values()), *pidfds] + ([lifeline, listener] if lifeline is not None else [])
        polling = len(pidfds) < len(workers)  # no pidfd (not Linux): poll for exits
        ready, _, _ = select.select(watched, [], [], 0.05 if polling else None)
        if lifeline in ready and not os.read(lifeline, 4096):
            lifeline = None  # the job is over: no new worker; those running end with it
            listener.close()
        if listener in ready and lifeline is not None:
            conn, _ = listener.accept()
            held = [listener.fileno(), *(c.fileno() for c, _ in workers.values()), *pidfds]
            pid = _fork_worker(conn, held)
            if pid:
                workers[pid] = (conn, _pidfd(pid))
        for pid, (conn, pidfd) in list(workers.items()):
            if conn in ready and not conn.recv(1):  # the client was killed: so is its worker
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:  # reaped here, so the worker's CPU time counts in this process's children
                with contextlib.suppress(OSError):
                    conn.sendall(str(os.waitstatus_to_exitcode(status)).encode())
                conn.close()
                if pidfd is not None:
                    os.close(pidfd)
                del workers[pid]


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux >= 5.3
        return None


def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, HEADER, 3)
    while len(data) < HEADER:
        data += conn.recv(HEADER - len(data))
    size, body = int.from_bytes(data, "big"), b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise EOFError("fork client went away mid-request")
        body += chunk
    return json.loads(body), fds


def _fork_worker(conn: socket.socket, held: list[int]) -> int | None:
    """Fork the worker of the client on `conn` (closing there `conn` and the
    server's descriptors `held`: a client sees the end of its answer only once
    no process holds the server's end); its pid, or None when the request
    cannot be read (the client then exits 1)."""
    try:
        request, fds = _recv_request(conn)
    except (OSError, EOFError, ValueError):
        traceback.print_exc()
        conn.close()
        return None
    pid = os.fork()
    if pid == 0:
        for fd in (conn.fileno(), *held):
            os.close(fd)
        _worker(request, fds)  # never returns
    for fd in fds:
        os.close(fd)
    return pid


def _worker(request: dict, fds: list[int]) -> None:
    """Become the client's SDK worker: its streams, environment, folder and
    SIGINT disposition, then Beam's SDK harness; it ends with `os._exit`
    (the server's exit handlers are not its own)."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        signal.signal(signal.SIGINT, signal.SIG_IGN if request["sigint_ignored"] else signal.default_int_handler)
        from apache_beam.runners.worker import sdk_worker_main

        sdk_worker_main.main(sys.argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    except BaseException:  # noqa: BLE001 - as a worker process would, report and fail
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2:])
