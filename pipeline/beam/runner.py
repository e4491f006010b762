"""Running a Beam job on any runner: options from the config, the local
runner's scratch folder and bounded heap, quiet workers and Ctrl-C, and the
counters collected from the result. The steps the jobs are made of are in
`pipeline.beam.steps`."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.portability import python_urns
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from pipeline.beam import forkserver
from pipeline.core import io
from pipeline.core.config import Config

_log = logging.getLogger("pipeline")
io.reuse_s3_clients()  # workers import this module: Beam's own S3 calls reuse a client too


def remember_dofn_specs() -> None:
    """Make Beam work out a DoFn's state and timer specs once per DoFn.

    `userstate.get_dofn_specs` reads the signature of every method of the DoFn
    (about 30, most of them `beam.DoFn`'s own), and Beam calls it four times
    per ParDo as it builds and translates a graph, again as a worker sets one
    up: 0.2 s of the clean job's start. The specs come from the methods'
    default arguments, fixed once the DoFn exists. Idempotent.
    """
    from apache_beam.transforms import userstate

    real = userstate.get_dofn_specs
    if getattr(real, "remembers", False):
        return
    known: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get_dofn_specs(dofn):
        try:
            states, timers = known[dofn]
        except (KeyError, TypeError):  # TypeError: a DoFn that cannot be weakly referenced
            states, timers = real(dofn)
            with contextlib.suppress(TypeError):
                known[dofn] = states, timers
        return set(states), set(timers)  # callers get sets of their own, as before

    get_dofn_specs.remembers = True
    userstate.get_dofn_specs = get_dofn_specs


remember_dofn_specs()  # the launcher and (importing this module) the workers


class JobOptions(PipelineOptions):
    """`PipelineOptions` whose views are made once per class.

    Beam asks the job's options for a view on every transform it applies
    (type checks, result types), and each new view builds an argument parser
    for its class and parses every flag again: about 1,000 views, 0.4 s, for
    the clean job's graph. A view holds no state of its own (every view reads
    and writes the options' one `_all_options`), so the same one serves again.
    """

    def view_as(self, cls):
        views = self.__dict__.get("_views")
        if views is None:
            views = {}
            object.__setattr__(self, "_views", views)  # Beam's __setattr__ allows option names only
        view = views.get(cls)
        if view is None:
            view = views[cls] = super().view_as(cls)
        return view

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_views", None)  # made again where the options are unpickled
        return state


def pipeline_options(cfg: Config, beam_args: list[str] | None = None) -> PipelineOptions:
    """Beam options from the config's `beam` section, then command-line extras.

    Arguments given on the command line after the job's own (for example
    `--runner=DataflowRunner --project=...`) override the config. With a local
    runner this also calls `bound_local_heap` (this process is then the runner).
    """
    b = cfg.beam
    args = [
        f"--runner={b.runner}",
        f"--direct_num_workers={b.direct_num_workers}",
        f"--direct_running_mode={b.direct_running_mode}",
        f"--local_workers={b.local_workers}",
        "--default_sdk_harness_log_level=WARNING",
        *b.extra_args,
        *(beam_args or []),
    ]
    options = JobOptions(args)
    from apache_beam.io.filesystems import FileSystems

    FileSystems.set_options(options)  # the launcher lists inputs and writes manifests too
    if is_local(options):
        bound_local_heap()
    return options


@contextlib.contextmanager
def local_scratch(options: PipelineOptions, tmp_dir: str | Path) -> Iterator[str | None]:
    """Around a job's run: on a local runner, its spill folder and its SDK
    workers' options, removed and restored however the run ends (an error,
    Ctrl-C); elsewhere nothing (yields None).

    Yields the spill folder (`<tmp_dir>/_spill`, `pipeline.beam.packed`; under the
    system's temporary folder when `tmp_dir` is on an object store), made by
    the workers on first use and deleted at the end. FnApiRunner hands its
    worker processes no pipeline options, so they would log at INFO and know no
    filesystem options (an S3 endpoint); they read `PIPELINE_OPTIONS_FILE` from
    their environment first, so that variable names a file holding the job's
    options while it runs.
    """
    if not is_local(options):
        yield None
        return
    import tempfile

    from pipeline.beam.packed import release_spill

    own_dir = None
    if "://" in str(tmp_dir):
        tmp_dir = own_dir = tempfile.mkdtemp(prefix="llama-spill-")
    spill = Path(tmp_dir) / "_spill"
    workers = options.view_as(WorkerOptions)
    worker_options = options.get_all_options(drop_default=True, retain_unknown_options=False)
    worker_options["default_sdk_harness_log_level"] = workers.default_sdk_harness_log_level or "WARNING"
    options_file = Path(tmp_dir) / "_worker_options.json"
    options_file.touch(mode=0o600)  # it may hold the job's S3 credentials
    options_file.write_text(json.dumps({"options": worker_options}, default=str))
    before = os.environ.get("PIPELINE_OPTIONS_FILE")
    os.environ["PIPELINE_OPTIONS_FILE"] = str(options_file)
    try:
        yield str(spill)
    finally:
        if before is None:
            os.environ.pop("PIPELINE_OPTIONS_FILE", None)
        else:
            os.environ["PIPELINE_OPTIONS_FILE"] = before
        options_file.unlink(missing_ok=True)
        release_spill(str(spill))
        shutil.rmtree(own_dir or spill, ignore_errors=True)


class LocalOptions(PipelineOptions):
    """This project's option for Beam's local runner."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--local_workers", choices=("fork", "spawn"), default="fork",
            help=("multi_processing SDK workers: forked from a process that has imported the job's modules "
                  "(fork, pipeline.beam.forkserver), or each a new Python process (spawn, Beam's own)"))


def forks_workers(options: PipelineOptions) -> bool:
    """Whether the local runner's workers are forked (`pipeline.beam.forkserver`)."""
    return (is_local(options) and options.view_as(DirectOptions).direct_running_mode == "multi_processing"
            and options.view_as(LocalOptions).local_workers == "fork" and forkserver.available())


class ForkedWorkersRunner(FnApiRunner):
    """Beam's local runner, its SDK workers started by `command` (a fork
    server's client) instead of a new `python -m ...sdk_worker_main`."""

    def __init__(self, command: str):
        super().__init__()
        self.command = command

    def run_via_runner_api(self, pipeline_proto, options):
        for env in pipeline_proto.components.environments.values():
            if env.urn == python_urns.SUBPROCESS_SDK:
                env.payload = self.command.encode("utf-8")
        return super().run_via_runner_api(pipeline_proto, options)


def run_pipeline(options: PipelineOptions, tmp: str | Path, build: Callable[[beam.Pipeline, str | None], object]):
    """Build a job with `build(pipeline, spill_dir)` and run it to the end in
    `local_scratch(options, tmp)` (`tmp`: the run's folder, any filesystem);
    returns the PipelineResult. On a local runner, Ctrl-C raises
    KeyboardInterrupt here alone (`ctrl_c_to_launcher`), the workers'
    start-up chatter is not shown (`quiet_worker_stderr`), and the workers are
    forked from a server forked from this process, which has imported the
    module defining `build` (`forks_workers`; from a new Python process when
    this one has run a job before)."""
    local = is_local(options)
    # the fork server first, forked from here before this process starts a thread
    # (unless a job ran here before: its gRPC threads live on, a fork is not safe)
    with (_forked_workers(options, build.__module__) as command,
          ctrl_c_to_launcher() if local else contextlib.nullcontext(),
          quiet_worker_stderr() if local else contextlib.nullcontext(),
          local_scratch(options, tmp) as spill,
          beam.Pipeline(runner=ForkedWorkersRunner(command) if command else None, options=options) as p):
        forkserver.ran_grpc()
        build(p, spill)
    return p.result


@contextlib.contextmanager
def _forked_workers(options: PipelineOptions, module: str) -> Iterator[str | None]:
    """Around a job: the worker command of a fork server that imports
    `module`, or None (Beam's own workers) where `forks_workers` says no or
    the server's socket cannot be made (a warning says why)."""
    if not forks_workers(options):
        yield None
        return
    try:
        server = forkserver.ForkServer((module,))
    except OSError as e:
        _log.warning("local workers start as new processes, not forked: no fork server socket (%s)", e)
        yield None
        return
    with server:
        yield server.command


# What an SDK worker of the local runner prints to the shared stderr before its
# own log level applies, once an import-time warning (Beam's "apitools not found"
# where the GCP client cannot load) has given its root logger a stderr handler:
# that warning, then "INFO:__main__:Logging handler created." and the like (the
# harness's module is `__main__` in a worker of its own, its name in a forked one).
# This process logs "LEVEL name: message", never "LEVEL:", so no line of its own matches.
WORKER_NOISE = re.compile(rb"^(?:WARNING:root:apitools not found|INFO:|DEBUG:|"
                          rb"WARNING:(?:__main__|apache_beam\.runners\.worker\.sdk_worker_main):"
                          rb"No semi_persistent_directory found)")


@contextlib.contextmanager
def quiet_worker_stderr(noise: re.Pattern[bytes] = WORKER_NOISE) -> Iterator[None]:
    """For the block, file descriptor 2 (this process's stderr, which the
    local runner's worker processes inherit) is a pipe that a thread copies
    to the real stderr line by line, leaving out the lines `noise` matches."""
    sys.stderr.flush()
    real = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)

    def copy() -> None:
        with os.fdopen(read, "rb") as lines:
            for line in lines:  # until every process holding the pipe has closed it
                if noise.match(line):
                    continue
                while line:
                    line = line[os.write(real, line):]

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(real, 2)  # the pipe's last writer here: EOF once the workers are gone

    try:
        with io.in_background(copy, "stderr", restore):
            yield
    finally:
        os.close(real)


@contextlib.contextmanager
def ctrl_c_to_launcher() -> Iterator[None]:
    """Ctrl-C stops a job from this process alone: the local runner's SDK
    worker processes, which Beam starts in the terminal's process group, would
    each print a KeyboardInterrupt traceback for every thread; here they start
    with SIGINT ignored (a disposition a process and its shell keep through
    `exec`) and end quietly when the runner closes their control channel.

    For the block, this process ignores SIGINT too, and a sentinel child that
    does not (`_SENTINEL`, in the same process group) dies of Ctrl-C; a thread
    that waits for it then ends the workers (SIGTERM: no traceback; the runner
    would otherwise wait for the bundles they hold) and raises KeyboardInterrupt
    in the main thread (a SIGUSR1 handler, whose signal also ends a blocking
    wait there); what the runner's threads raise or log as their workers
    vanish is not shown. Outside the main thread of a POSIX process nothing changes."""
    if os.name != "posix" or threading.current_thread() is not threading.main_thread():
        yield
        return
    import subprocess

    sentinel = subprocess.Popen([sys.executable, "-S", "-c", _SENTINEL], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    main, done = threading.get_ident(), threading.Event()
    beam_log = logging.getLogger("apache_beam")
    log_level = beam_log.level

    def watch() -> None:
        sentinel.wait()
        if not done.is_set():
            interrupted.set()
            beam_log.setLevel(logging.CRITICAL + 1)  # the runner's errors about the workers it loses
            for pid in descendants(os.getpid()):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
            signal.pthread_kill(main, signal.SIGUSR1)

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    def excepthook(args: threading.ExceptHookArgs) -> None:
        if not interrupted.is_set():
            hook(args)

    interrupted, hook = threading.Event(), threading.excepthook
    threading.excepthook = excepthook
    before = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGUSR1, interrupt)
    watcher = threading.Thread(target=watch, name="ctrl-c", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        sentinel.stdin.close()  # the sentinel's end
        sentinel.wait()
        watcher.join()
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGUSR1, before[1])
        threading.excepthook = hook
        beam_log.setLevel(log_level)


def descendants(pid: int) -> list[int]:
    """The processes under `pid` (children first), from /proc, or `ps` where
    there is none (macOS); [] when neither answers."""
    parents: dict[int, list[int]] = {}
    for child, ppid in _parent_pids():
        parents.setdefault(ppid, []).append(child)
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _parent_pids() -> list[tuple[int, int]]:
    """(pid, parent pid) of every process."""
    if not os.path.isdir("/proc"):
        import subprocess

        try:
            ps = subprocess.run(["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            return []
        return [(int(a), int(b)) for a, b in (line.split() for line in ps.stdout.splitlines() if line.strip())]
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                out.append((int(entry), int(f.read().rsplit(b")", 1)[1].split()[1])))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return out


# the sentinel: dies of SIGINT (default action, no traceback), or exits when its stdin closes
_SENTINEL = "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); sys.stdin.buffer.read()"


def warn_unshared(options: PipelineOptions, **paths: str | None) -> None:
    """On a distributed runner, warn about each local path the workers must
    read or write: they are other machines, so unless every one of them mounts
    that path (a shared filesystem), it belongs on a bucket."""
    if is_local(options):
        return
    local = {k: p for k, p in paths.items() if p and "://" not in str(p)}
    if local:
        logging.getLogger("pipeline").warning(
            "the runner's workers are other machines, but %s %s local: put %s on a bucket (gs://, "
            "s3://) unless every worker mounts %s", ", ".join(f"{k}={p}" for k, p in local.items()),
            "is" if len(local) == 1 else "are", "it" if len(local) == 1 else "them",
            "it" if len(local) == 1 else "them")


def is_local(options: PipelineOptions) -> bool:
    """Whether the job runs inside this process's machine (Beam's local runner,
    the default when no runner is named): its workers then share a disk."""
    return options.view_as(StandardOptions).runner in LOCAL_RUNNERS | {None}


# runners that run the job inside this process (FnApiRunner, or DirectRunner's fallback to it)
LOCAL_RUNNERS = frozenset({"FnApiRunner", "DirectRunner", "SwitchingDirectRunner", "BundleBasedDirectRunner"})
# glibc malloc tunables (glibc manual, "Memory Allocation Tunables"): one arena per
# thread (gRPC's) and a heap that grows but is never trimmed keep freed shuffle
# buffers resident; measured on the demo at 4x: clean runner 874 -> 637 MiB,
# shards worker 574 -> 337 MiB, at the same wall time
MALLOC_ENV = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}
# Arrow's default pool (mimalloc) keeps freed pages for reuse: a worker writing a
# 17 MB Document part held 44 MB more afterwards, glibc's heap (above) none
ARROW_POOL_ENV = {"ARROW_DEFAULT_MEMORY_POOL": "system"}
_MALLOPT = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_MMAP_THRESHOLD_": -3, "MALLOC_ARENA_MAX": -8}  # <malloc.h> M_*


def bound_local_heap() -> bool:
    """Make glibc return freed memory of large buffers to the system, and Arrow
    allocate from that heap, here and in the Beam SDK workers this process starts.

    Beam's local runner holds every PCollection between fused stages in this
    process (`fn_api_runner.execution.ListBuffer`/`GroupingBuffer`, no spill to
    disk) and frees it once consumed; with glibc's defaults the freed heap stays
    resident, so peak RSS counts buffers long dead. Sets the `MALLOC_ENV` and
    `ARROW_POOL_ENV` variables (those already set are kept: the user's choice
    wins) for child processes, and the same with `mallopt` and
    `pyarrow.set_memory_pool` for this one. Idempotent.

    Returns: True when applied; False off Linux or without glibc's `mallopt`
    (nothing changed, no error).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    for name, value in {**MALLOC_ENV, **ARROW_POOL_ENV}.items():
        os.environ.setdefault(name, value)
    if os.environ["ARROW_DEFAULT_MEMORY_POOL"] == "system":
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())
    for name, param in _MALLOPT.items():
        try:
            mallopt(ctypes.c_int(param), ctypes.c_int(int(os.environ[name])))
        except ValueError:  # a user's value glibc would reject too
            pass
    return True


def collect_counters(result, namespaces: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """{namespace: {counter name: committed value}} for the given namespaces, sorted."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for c in result.metrics().query(MetricsFilter())["counters"]:
        ns = c.key.metric.namespace
        if ns in namespaces:
            value = c.committed if c.committed is not None else c.attempted
            out[ns][c.key.metric.name] = out[ns].get(c.key.metric.name, 0) + int(value)
    return {ns: dict(sorted(out[ns].items())) for ns in sorted(out)}


def quiet_beam_logging() -> None:
    """Beam's INFO logging drowns the job's own report; keep warnings."""
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    # the local job service re-logs every worker warning (start-up noise) as its own
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
