"""Run Beam jobs the way a Flink/Spark cluster runs them, fully offline.

Two services, each its own process group, both torn down on close (even on a
failed start):

* `S3Server`: moto's S3-compatible server (`python -m moto.server`) on
  127.0.0.1 and a free port, with fake credentials. Beam reaches it only
  through the `--s3_*` pipeline options of `S3Server.beam_args()`.
* `WorkerPool`: Beam's worker pool (`worker_pool_main`), which starts one SDK
  worker process per worker the runner asks for, through
  `tests/portable_boot.py` (the container's boot contract: provision info ->
  pipeline options -> `sdk_worker_main`). Its cwd is an empty directory of its
  own, its TMPDIR and HOME are private directories, PYTHONPATH is the repository
  root (the package "installed in the worker image"), and no AWS_*/S3
  variable is in its environment: S3 settings reach workers only through the
  pipeline options.

`portable_args(server, pool)` gives the options of a job run through the
portable runner (the embedded job service, as Flink/Spark's job server would)
on the pool's workers, reading and writing the S3 server.

Fixtures `s3_server` and `worker_pool` (module scope) are defined here; a test
module gets them by importing them by name:
`from tests.cluster import s3_server, worker_pool  # noqa: F401` (and `# noqa:
F811` on the test taking them). `pytest_plugins = ("tests.cluster",)` works too,
but warns (PytestAssertRewriteWarning) if the module also imports tests.cluster.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOT = Path(__file__).resolve().with_name("portable_boot.py")

# Never given to the worker pool: S3 settings must come from pipeline options.
_WORKER_ENV_DROP_PREFIXES = ("AWS_", "BOTO_", "BOTOCORE_", "MOTO_", "S3_")
_WORKER_ENV_DROP_EXACT = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PIPELINE_OPTIONS",
                          "PIPELINE_OPTIONS_FILE", "SEMI_PERSISTENT_DIRECTORY", "WORKER_ID",
                          "CONTROL_API_SERVICE_DESCRIPTOR", "LOGGING_API_SERVICE_DESCRIPTOR",
                          "STATUS_API_SERVICE_DESCRIPTOR", "RUNNER_CAPABILITIES"}


# Runs `python -m MODULE ARGS...` so that it cannot outlive the launcher: it
# asks the kernel for SIGTERM when its parent (thread) dies, and, with
# group_kill, answers SIGTERM by SIGKILLing its own process group (the service
# and every worker it started), so a launcher killed without running its
# finalizers (SIGTERM/SIGKILL from a CI timeout) leaks nothing either.
_PRELUDE = r"""
import ctypes, os, runpy, signal, sys
parent, group_kill, module = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]
if group_kill:
    signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))
try:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
except Exception:
    pass
if os.getppid() != parent:
    sys.exit("the launcher is gone")
sys.argv = [module] + sys.argv[4:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def _module_cmd(module: str, *args: str, group_kill: bool = False) -> list[str]:
    # the code's first line names the service in `ps`
    return [sys.executable, "-c", f"# {module}{_PRELUDE}", str(os.getpid()), "1" if group_kill else "0", module, *args]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the caller retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _no_proxy(env: dict[str, str]) -> None:
    """Keep an HTTP(S)_PROXY in the environment from catching loopback traffic."""
    for key in ("NO_PROXY", "no_proxy"):
        parts = [p for p in env.get(key, "").split(",") if p]
        env[key] = ",".join(parts + [h for h in ("127.0.0.1", "localhost") if h not in parts])


class _Service:
    """One subprocess in its own process group, logging to a file in a private
    temporary root; `close()` kills the whole group and removes the root."""

    name = "service"

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"beam-{self.name}-"))
        self.log_path = self.root / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None
        self._log = None

    # -- process management -------------------------------------------------
    def _spawn(self, cmd: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - open for the service's lifetime
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def _wait_ready(self, probe: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{what} exited with status {self.proc.returncode} before it answered; "
                                   f"log tail:\n{self.log_tail()}")
            if probe():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not answer within {timeout:.0f}s; log tail:\n{self.log_tail()}")
            time.sleep(0.1)

    def _start(self, command: Callable[[int], list[str]], *, host: str, cwd: Path, env: dict[str, str],
               timeout: float, attempts: int, what: Callable[[], str]) -> None:
        """Spawn `command(port)` on a free port until it answers; another port when
        it dies first (most likely the port was taken meanwhile)."""
        for attempt in range(attempts):
            self.port = free_port(host)
            self._spawn(command(self.port), cwd=cwd, env=env)
            try:
                self._wait_ready(self._answers, timeout, what())
                return
            except RuntimeError:
                self._stop_proc()
                if attempt == attempts - 1:
                    raise

    def _stop_proc(self, grace: float = 5.0) -> None:
        """SIGTERM to the whole process group (the service and any worker it
        started), then SIGKILL to what is left of the group. The leader is only
        reaped at the end, so its pid (the group id) cannot be reused meanwhile."""
        proc, self.proc = self.proc, None
        if proc is not None:
            pgid = proc.pid  # start_new_session: the leader's pid is the group id
            _signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and not _exited(proc):
                time.sleep(0.05)
            _signal_group(pgid, signal.SIGKILL)  # stragglers, e.g. SDK workers of a dead pool
            proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 6000) -> str:
        try:
            text = self.log_path.read_bytes()[-chars:].decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return text or "(empty log)"

    def close(self) -> None:
        try:
            self._stop_proc()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # last resort; close() is the contract
        with contextlib.suppress(Exception):
            if self.proc is not None:
                self.close()


def _exited(proc: subprocess.Popen) -> bool:
    """Whether the child has exited, without reaping it (it stays a zombie)."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class S3Server(_Service):
    """moto's S3 server on 127.0.0.1:<free port>, started on construction."""

    name = "s3"
    access_key_id = "testing"
    secret_access_key = "testing"
    region = "us-east-1"

    def __init__(self, *, host: str = "127.0.0.1", start_timeout: float = 60.0, attempts: int = 3) -> None:
        super().__init__()
        self.host = host
        self.port = 0
        try:
            (self.root / "cwd").mkdir(exist_ok=True)
            env = {k: v for k, v in os.environ.items() if not k.startswith(_WORKER_ENV_DROP_PREFIXES)}
            _no_proxy(env)
            self._start(lambda port: _module_cmd("moto.server", "-H", host, "-p", str(port)),
                        host=host, cwd=self.root / "cwd", env=env, timeout=start_timeout, attempts=attempts,
                        what=lambda: f"moto server on {self.endpoint_url}")
        except BaseException:
            self.close()
            raise

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _answers(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(self.endpoint_url + "/", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer means it is up
        except (urllib.error.URLError, OSError):
            return False

    # -- boto3 ---------------------------------------------------------------
    def client(self):
        """A boto3 S3 client on this server (its own session; no env credentials used)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region,
            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}))

    @staticmethod
    def split(url: str) -> tuple[str, str]:
        """'s3://bucket/some/key' -> ('bucket', 'some/key'); 'bucket/key' works too."""
        rest = url.removeprefix("s3://")
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise ValueError(f"no bucket in {url!r}")
        return bucket, key

    def make_bucket(self, name: str) -> str:
        """Creates the bucket (if missing); returns 's3://name'."""
        c = self.client()
        try:
            c.create_bucket(Bucket=name)
        except c.exceptions.BucketAlreadyOwnedByYou:
            pass
        return f"s3://{name}"

    def upload_tree(self, local_dir: str | os.PathLike, url: str, pattern: str = "**/*") -> list[str]:
        """Uploads every file under local_dir (that `pattern` matches) to
        url/<relative path>; returns the sorted s3:// URLs written."""
        bucket, prefix = self.split(url)
        prefix = prefix.strip("/")
        c, out = self.client(), []
        base = Path(local_dir)
        for path in sorted(p for p in base.glob(pattern) if p.is_file()):
            key = "/".join(filter(None, [prefix, path.relative_to(base).as_posix()]))
            c.upload_file(str(path), bucket, key)
            out.append(f"s3://{bucket}/{key}")
        return out

    def list(self, prefix: str) -> list[str]:
        """Sorted keys (without the bucket) under 's3://bucket/prefix'."""
        bucket, key_prefix = self.split(prefix)
        keys = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix):
            keys.extend(o["Key"] for o in page.get("Contents", []))
        return sorted(keys)

    def read(self, url: str) -> bytes:
        bucket, key = self.split(url)
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def beam_args(self) -> list[str]:
        """Pipeline options for Beam's S3 filesystem (apache_beam.io.aws).

        No --s3_verify: it is a string option, and any non-empty value (even
        "False") is passed to boto3 as a CA bundle path; over http it is unused.
        --s3_disable_ssl only matters without a scheme in the endpoint; it is
        given so the intent is explicit."""
        return [
            f"--s3_endpoint_url={self.endpoint_url}",
            f"--s3_access_key_id={self.access_key_id}",
            f"--s3_secret_access_key={self.secret_access_key}",
            f"--s3_region_name={self.region}",
            "--s3_disable_ssl",
        ]


class WorkerPool(_Service):
    """Beam's external worker pool, started on construction: SDK workers are
    subprocesses booted by tests/portable_boot.py, as a Beam container would."""

    name = "pool"

    def __init__(self, *, start_timeout: float = 60.0, attempts: int = 3, isolate_home: bool = True,
                 extra_env: dict[str, str] | None = None) -> None:
        super().__init__()
        self.port = 0
        try:
            self.cwd = self.root / "cwd"      # stays empty: nothing may write here
            self.tmp = self.root / "tmp"      # the workers' TMPDIR (semi-persistent dirs)
            self.home = self.root / "home"
            for d in (self.cwd, self.tmp, self.home):
                d.mkdir()
            self.boot = self.root / "boot"
            self.boot.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(BOOT))} "$@"\n')
            self.boot.chmod(0o755)
            self.env = self._worker_env(isolate_home, extra_env or {})
            self._start(lambda port: _module_cmd("apache_beam.runners.worker.worker_pool_main",
                                                 f"--service_port={port}", f"--container_executable={self.boot}",
                                                 group_kill=True),
                        host="127.0.0.1", cwd=self.cwd, env=self.env, timeout=start_timeout, attempts=attempts,
                        what=lambda: f"worker pool on {self.endpoint}")
        except BaseException:
            self.close()
            raise

    def _worker_env(self, isolate_home: bool, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(_WORKER_ENV_DROP_PREFIXES) and k not in _WORKER_ENV_DROP_EXACT}
        env.update(extra)
        env["PYTHONPATH"] = str(ROOT)  # stands for the package installed in the worker image
        env["PYTHONUNBUFFERED"] = "1"
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        for key in ("TMPDIR", "TEMP", "TMP"):
            env[key] = str(self.tmp)
        if isolate_home:  # no ~/.aws (or any other per-user config) on the workers
            env["HOME"] = str(self.home)
        _no_proxy(env)
        leaked = sorted(k for k in env if k.startswith(_WORKER_ENV_DROP_PREFIXES))
        if leaked:
            raise ValueError(f"S3/AWS variables must not reach the workers: {leaked}")
        return env

    @property
    def endpoint(self) -> str:
        return f"localhost:{self.port}"

    def _answers(self) -> bool:
        import grpc

        channel = grpc.insecure_channel(self.endpoint)
        try:
            grpc.channel_ready_future(channel).result(timeout=1.0)
            return True
        except grpc.FutureTimeoutError:
            return False
        finally:
            channel.close()

    def cwd_entries(self) -> list[str]:
        """What was written in the workers' cwd (should stay [])."""
        return sorted(p.relative_to(self.cwd).as_posix() for p in self.cwd.rglob("*"))

    def beam_args(self, *, stage_submission_env: bool = False) -> list[str]:
        """Portable runner with the embedded job service, SDK workers from this
        pool (an EXTERNAL environment, as a Flink/Spark job would use it).

        stage_submission_env: let the launcher stage
        submission_environment_dependencies.txt, as Beam does by default (it
        runs `pip freeze` at each submission, 1-2 s, and leaves a tmp dir with
        the file in the launcher's temp dir); the boot fetches it into the
        worker's staged dir. Off, the job has no artifacts."""
        args = [
            "--runner=PortableRunner",
            "--job_endpoint=embed",
            "--environment_type=EXTERNAL",
            f"--environment_config={self.endpoint}",
        ]
        if not stage_submission_env:
            args.append("--experiments=disable_logging_submission_environment")
        return args


@contextlib.contextmanager
def launcher_filesystems(options):
    """Lets the launcher process use the job's filesystem options (e.g. to list
    s3:// inputs before building the graph, or to check outputs), restoring
    FileSystems' previous, process-wide options afterwards."""
    from apache_beam.io.filesystems import FileSystems

    previous = FileSystems._pipeline_options
    FileSystems.set_options(options)
    try:
        yield options
    finally:
        FileSystems.set_options(previous)


def portable_args(server: S3Server, pool: WorkerPool) -> list[str]:
    """Pipeline options of a job on the pool's workers that uses the S3 server."""
    return pool.beam_args() + server.beam_args()


@pytest.fixture(scope="module")
def s3_server():
    with S3Server() as server:
        yield server


@pytest.fixture(scope="module")
def worker_pool():
    with WorkerPool() as pool:
        yield pool
