"""The local runner's SDK workers, forked from the launcher's own imports.

Beam's local runner (`multi_processing`) starts each SDK worker as a new
`python -m apache_beam.runners.worker.sdk_worker_main`, which spends about two
CPU-seconds importing Beam, pyarrow, numpy and fastText before it can run a
bundle, every worker and every job. Here the launcher, which has imported
Beam and the job's modules already, forks one fork server before it builds
the job's graph (no thread, no gRPC yet); the server adds Beam's SDK harness,
then listens on a Unix socket. The runner's worker command is
`forkclient.py SOCKET`, a stdlib-only script: it hands the server its
standard streams, environment, working folder and SIGINT disposition, and
exits with the worker's exit code. For each client the server forks the
worker (a copy of itself, modules already imported), reaps it and sends the
client its exit code; a client that goes away (killed) takes its worker with
it. So the runner sees what it always sees: a command whose process lives as
long as the worker and fails when it fails.

The server is single-threaded and never touches gRPC before forking, so its
children start clean. When its lifeline (a pipe from the launcher) closes, at
the end of the job or when the launcher dies, it takes no new client and
exits once its workers have. Its process name is SERVER_NAME, a worker's
WORKER_NAME (their command lines are the launcher's). This is the local
runner's own optimisation: on any other runner the workers are the runner's.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import logging
import os
import select
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Self

SDK_WORKER_MAIN = "apache_beam.runners.worker.sdk_worker_main"
# Imported by every worker, not by the launcher (`pipeline.__main__.import_beam`):
# pyarrow imports pandas at a process's first `pa.array` of Python values, 0.3 s.
# The server imports it while the launcher builds the graph, on the other core.
WORKER_IMPORTS = ("pandas",)
CLIENT = Path(__file__).with_name("forkclient.py")
HEADER = 8  # bytes: the length of the request's JSON, big-endian
FOLDER_PREFIX = "llama-forks-"  # the socket's folder


def available() -> bool:
    """Whether workers can be forked here (POSIX: fork, Unix sockets, passing
    file descriptors)."""
    return os.name == "posix" and hasattr(socket, "AF_UNIX") and hasattr(socket, "send_fds")


SERVER_NAME = "beam-forkserver"  # the server's process name (Linux `comm`), its workers'
WORKER_NAME = "beam-sdk-worker"


class ForkServer:
    """A fork server (`serve`) forked from this process, and the worker
    command that uses it.

    Forked with what this process has imported (Beam, the job's modules); it
    adds Beam's SDK harness and `modules`. Forked only while this process
    has one thread and has not run gRPC (`run_pipeline` forks first; `ran_grpc`
    notes a job): by default the server is otherwise a new Python, as with
    `fork_here=False`. A context manager (closed at its end). `command` is the command
    line the runner runs for each SDK worker; `close()` ends the server
    (workers already forked run to their end), reaps it and removes its
    socket.
    """

    def __init__(self, modules: tuple[str, ...] = (), fork_here: bool | None = None):
        if fork_here is None:  # only a process with one thread forks safely
            fork_here = not _RAN_GRPC and threading.active_count() == 1
        self.folder = _socket_folder()
        self.socket = os.path.join(self.folder, "workers.sock")
        self.command = " ".join(shlex.quote(a) for a in (sys.executable, "-I", "-S", str(CLIENT), self.socket))
        self.returncode: int | None = None
        # listening before the server exists: a client never waits for it, and a
        # socket that cannot be made fails here, in the launcher
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.socket)
            listener.listen(64)  # clients that come early wait here while the server imports
        except OSError:
            listener.close()
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        read, self._lifeline = os.pipe()
        if fork_here:
            for stream in (sys.stdout, sys.stderr):  # else the child holds a copy of what is buffered
                stream.flush()
            self.pid = os.fork()
            if self.pid == 0:
                os.close(self._lifeline)
                _serve_forked(listener.fileno(), modules, read)  # never returns
        else:  # a new Python running this very copy of the package (not one in its working folder)
            root = str(Path(__file__).resolve().parents[2])
            code = f"import sys; sys.path.insert(0, {root!r}); from {__name__} import main; main(sys.argv[1:])"
            for fd in (read, listener.fileno()):
                os.set_inheritable(fd, True)
            self.pid = os.posix_spawn(sys.executable, [sys.executable, "-c", code, str(listener.fileno()),
                                                       str(read), *modules], os.environ)
        listener.close()
        os.close(read)

    def poll(self) -> int | None:
        if self.returncode is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._lifeline is not None:
            os.close(self._lifeline)  # the server takes no new worker and ends with the last one
            self._lifeline = None
        deadline = time.monotonic() + 10
        while self.poll() is None:
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.01)
        shutil.rmtree(self.folder, ignore_errors=True)


_RAN_GRPC = False  # whether this process has run gRPC (a Beam job): its threads make a fork unsafe


def ran_grpc() -> None:
    """Note that this process runs gRPC from now on: later servers start as a
    new Python, not forked from here."""
    global _RAN_GRPC
    _RAN_GRPC = True


def _socket_folder() -> str:
    """A new private folder for the socket: under the temporary folder, or
    /tmp where that path is too long for a Unix socket (about 100 bytes)."""
    folder = tempfile.mkdtemp(prefix=FOLDER_PREFIX)
    if len(folder) > 80 and os.path.isdir("/tmp"):
        os.rmdir(folder)
        folder = tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir="/tmp")
    return folder


def _serve_forked(listener: int, modules: tuple[str, ...], lifeline: int) -> None:
    """The server's life: its own name, Ctrl-C ignored (the launcher ends
    it), none of the launcher's descriptors but the standard streams (an
    output's lock stays the launcher's), `serve`, then `os._exit`: forked,
    the launcher's code never runs on in this process."""
    code = 1
    try:
        _set_name(SERVER_NAME)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        low, high = sorted((listener, lifeline))
        os.closerange(3, low)
        os.closerange(low + 1, high)
        os.closerange(high + 1, max(high + 2, _max_fd()))
        serve(socket.socket(fileno=listener), modules, lifeline)
        code = 0
    except BaseException:  # noqa: BLE001 - reported; the clients then fail the job
        traceback.print_exc()
    finally:
        os._exit(code)


def _max_fd() -> int:
    try:
        return min(os.sysconf("SC_OPEN_MAX"), 1 << 16)
    except (ValueError, OSError):
        return 1 << 16


def _prctl(option: int, arg: int | bytes) -> None:
    """Linux's prctl(option, arg) on this process; elsewhere nothing."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None).prctl(option, arg, 0, 0, 0)


def _die_with_parent() -> None:
    """SIGKILL this process when its parent dies."""
    _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _set_name(name: str) -> None:
    """This process's name as `ps` and /proc/<pid>/comm show it (its command
    line stays the launcher's)."""
    _prctl(15, name.encode()[:15])  # PR_SET_NAME


def serve(listener: socket.socket, modules: tuple[str, ...], lifeline: int) -> None:
    """Import Beam's SDK harness, `WORKER_IMPORTS` and `modules`, then fork a worker for each
    client of `listener` (a listening Unix socket) until `lifeline` (a pipe's
    end) closes; send each client its worker's exit code, and kill a worker
    whose client goes away (killed)."""
    path = listener.getsockname()
    for name in (SDK_WORKER_MAIN, *WORKER_IMPORTS, *modules):
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - the worker imports it again and reports it there
            if not (isinstance(e, ImportError) and name in WORKER_IMPORTS):
                traceback.print_exc()
    gc.collect()
    gc.freeze()  # what is imported stays out of the children's collections: fewer pages copied
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
            held = [listener.fileno(), lifeline, *(c.fileno() for c, _ in workers.values()), *pidfds]
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
    folder = os.path.dirname(path)
    if os.path.basename(folder).startswith(FOLDER_PREFIX):  # gone with the server, even if the launcher was killed
        shutil.rmtree(folder, ignore_errors=True)


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
        _set_name(WORKER_NAME)
        _die_with_parent()  # a server that dies takes its workers: their clients say so to the runner
        for handler in logging.root.handlers[:]:  # the launcher's; the harness sets up its own
            logging.root.removeHandler(handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        # the launcher's sys streams may not be its descriptors (a test runner's capture)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - for the life of the process
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
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


def main(argv: list[str]) -> None:
    """The server as a new Python (`ForkServer(fork_here=False)`):
    LISTENER_FD LIFELINE_FD MODULE..."""
    _serve_forked(int(argv[0]), tuple(argv[2:]), int(argv[1]))
