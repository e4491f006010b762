"""Run one command and measure its whole process tree (Linux): time and peak memory.

`python -m tests.proc_tree --log FILE -- CMD [ARG ...]` runs CMD with its
output to FILE and prints one JSON line:

- `seconds`: wall seconds from start to exit (of CMD itself).
- `cpu_seconds`: user + system CPU seconds of CMD and every descendant it waited
  for (`getrusage(RUSAGE_CHILDREN)` of this wrapper). The wrapper is the child
  subreaper of the tree, so a process that outlives its parent (a forkserver
  orphaned by its pool, a daemon) is re-parented to it, reaped and counted too
  (`orphans`: how many; they get `--orphan-timeout` seconds after CMD exits,
  then SIGKILL, counted in `orphans_killed`).
- `max_process_mb`: `RUSAGE_CHILDREN.ru_maxrss`: the largest peak RSS (MiB) of
  any one process of the tree that was waited for, the kernel's exact
  high-water mark. Not a sum. Beam's multi_processing workers count: the runner
  starts each as an `sh -c` child and waits for it.
- `tree_peak_mb`: the largest sum of the resident sets (`/proc/<pid>/statm`) of
  CMD and all its live descendants, sampled every `--interval` seconds: the
  memory the stage needs of a machine. It can miss a peak shorter than the
  interval; pages shared between processes (libraries) count once per process.
- `largest_sampled`: the command line, sampled peak and role of the process
  whose RSS was the highest seen (which process `max_process_mb` most likely is).
- `cpu_by_role`: CPU seconds per kind of process (`process_role`: "main" the
  command itself, "worker" a Beam SDK worker, "shell" the `sh -c` that starts
  one, "pool" a Beam worker pool), from the last sample of each process: where
  the time goes, short by what a process did after its last sample.
- `processes_by_role`: how many processes of each role were seen.
- `peak_mb_by_role`: {role: the highest sampled RSS (MiB) of any one process
  of that role}: under Beam's local runner "main" is the runner, which holds
  every PCollection between fused stages (its in-memory shuffle), and
  "worker" is the SDK harness running the job's own DoFns. Sampled, so it can
  miss a peak shorter than the interval.
- `returncode`.

Roles come from how Beam starts its SDK workers, read from the process tree
at every sample (a process forked by the runner shows the runner's command line
until it execs, so a role is never fixed at first sight):

- FnApiRunner, `direct_running_mode=multi_processing`: the runner starts each
  worker as `<python> -m apache_beam.runners.worker.sdk_worker_main` through
  `subprocess.Popen(..., shell=True)` (`local_job_service.SubprocessSdkWorker`):
  a child `sh -c`, which execs the worker (dash, bash) or forks it. The same
  entry module is what an SDK container's boot program execs on a cluster.
- The portable runner's external worker pool (`-m
  apache_beam.runners.worker.worker_pool_main`) starts each worker as its child:
  `python -c "...SdkHarness(...).run()"`, or its `--container_executable`,
  which boots and execs `sdk_worker_main`; by default (no process) a worker is
  a thread of the pool.
- This project's local runner with forked workers (`pipeline.beam.forkserver`,
  the default): the launcher forks a server named `beam-forkserver` (its
  command line stays the launcher's), which forks each worker as its child;
  the runner's `sh -c` starts `forkclient.py`, which waits for its worker (a
  "shell": it does no work).

So a process is a "worker" when its Python entry module is `sdk_worker_main`,
or when its parent is a worker pool or a worker (what a worker starts is the
worker's); a worker pool or fork server (by its name) is "pool"; a `sh -c` not yet replaced
by its command, or a fork client, is "shell"; anything else (the runner, the
launcher) is "main".

Why a wrapper process: `RUSAGE_CHILDREN` accumulates over all children of a
process, so only a fresh parent per stage gives per-stage figures; and Linux
carries a parent's high-water mark into a child that it forks (vfork) and that
then execs, so the parent must be small (this module imports nothing heavy),
not the benchmark process that has loaded Beam or torch. psutil is not a
dependency of the project; /proc gives the same numbers here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def _processes() -> tuple[dict[int, list[int]], dict[int, float]]:
    """({pid: child pids}, {pid: user + system CPU seconds so far}) of every
    process visible in /proc."""
    children: dict[int, list[int]] = defaultdict(list)
    cpu: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # exited meanwhile
            continue
        # "pid (comm) state ppid ... utime stime" (fields 14, 15): comm may hold
        # spaces and parentheses, so the fields are counted after its last ")"
        fields = stat[stat.rindex(b")") + 2 :].split()
        children[int(fields[1])].append(int(entry.name))
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    return children, cpu


def tree_sample(root: int | list[int]) -> dict[int, tuple[int, float, str]]:
    """{pid: (resident set bytes, CPU seconds so far, role)} of `root` (a pid,
    or several) and all their live descendants; roles by `tree_roles`."""
    children, cpu = _processes()
    roles = tree_roles(root, children)
    out = {}
    for pid, r in roles.items():
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                out[pid] = (int(f.read().split()[1]) * PAGE, cpu.get(pid, 0.0), r)
        except (OSError, IndexError, ValueError):  # exited meanwhile
            pass
    return out


SDK_WORKER_MAIN = "apache_beam.runners.worker.sdk_worker_main"  # the SDK harness's entry module
WORKER_POOL_MAIN = "apache_beam.runners.worker.worker_pool_main"
FORK_SERVER_NAME = "beam-forkserver"  # process name of the local runner's forked workers' parent
FORK_CLIENT = "forkclient.py"  # what the local runner starts for each forked worker
_SHELLS = {"sh", "bash", "dash"}
_PYTHON = re.compile(r"python[0-9.]*\Z")
_PYTHON_OPTION_ARGS = {"-W", "-X", "--check-hash-based-pycs"}  # options that take a value


def python_entry(argv: list[str]) -> tuple[str, str] | None:
    """What a Python command line runs: ("module", name) for `-m name`,
    ("command", code) for `-c code`, ("script", path); None for a command that
    is not a Python interpreter or runs nothing (the REPL)."""
    if not argv or not _PYTHON.match(os.path.basename(argv[0])):
        return None
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in ("-m", "-c"):
            return ("module" if arg == "-m" else "command", argv[i + 1] if i + 1 < len(argv) else "")
        if arg.startswith(("-m", "-c")) and len(arg) > 2:  # -mpkg.mod
            return ("module" if arg[1] == "m" else "command", arg[2:])
        if arg in _PYTHON_OPTION_ARGS:
            i += 2
        elif arg.startswith("-") and arg != "-":
            i += 1
        else:
            return "script", arg
    return None


def process_role(argv: list[str], parent_role: str = "main", name: str = "") -> str:
    """The role of a process from its command line, its parent's role and its
    process name (`comm`; see the module doc): "worker", "pool", "shell" or
    "main"."""
    if parent_role in ("worker", "pool"):
        return "worker"
    entry = python_entry(argv)
    if entry == ("module", SDK_WORKER_MAIN):
        return "worker"
    if entry == ("module", WORKER_POOL_MAIN) or name == FORK_SERVER_NAME:
        return "pool"
    if entry and entry[0] == "script" and os.path.basename(entry[1]) == FORK_CLIENT:
        return "shell"
    if len(argv) >= 2 and os.path.basename(argv[0]) in _SHELLS and argv[1] == "-c":
        return "shell"
    return "main"


def role(cmdline: str | list[str]) -> str:
    """`process_role` of one command line (argv, or a space-joined string) alone,
    its parent unknown."""
    return process_role(cmdline.split() if isinstance(cmdline, str) else cmdline)


def tree_roles(root: int | list[int], children: dict[int, list[int]]) -> dict[int, str]:
    """{pid: role} of `root` (a pid, or several) and its live descendants, each
    from its command line now and its parent's role (`process_role`); "" for
    a process that is exiting (no command line left to read)."""
    out, todo = {}, [(pid, "main") for pid in ([root] if isinstance(root, int) else root)]
    while todo:
        pid, parent_role = todo.pop()
        argv = _argv(pid)
        # no arguments: exiting (a zombie's are gone); "" = the role it had
        out[pid] = process_role(argv, parent_role, _name(pid)) if argv else ""
        todo.extend((child, out[pid]) for child in children.get(pid, ()))
    return out


def _argv(pid: int) -> list[str]:
    """The process's arguments ([] once it has exited)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _name(pid: int) -> str:
    """The process's name (`comm`; "" once it has exited)."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


def _cmdline(pid: int, limit: int | None = None) -> str:
    """The process's command line, space-joined; whole by default (a deep
    checkout's venv path can push the module name past any fixed cut)."""
    return " ".join(_argv(pid)).strip()[:limit]


def _adopt_orphans() -> bool:
    """Make this process the child subreaper of its descendants (Linux
    PR_SET_CHILD_SUBREAPER): a process whose parent exits is re-parented here,
    not to init, so it stays in the tree and its CPU time is counted when it
    is reaped. Returns whether the kernel agreed."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _reap() -> None:
    """Reap every child of this process that has exited (its CPU time then
    counts in RUSAGE_CHILDREN)."""
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:  # no child left
            return


def measure(cmd: list[str], log_path: str, interval: float = 0.1,
            adopt_orphans: bool = False, orphan_timeout: float = 30.0) -> dict[str, Any]:
    """Run `cmd` (stdout and stderr to `log_path`) and measure it; see the module doc.

    With `adopt_orphans` (only in a process started for this, such as `main`'s:
    it changes the process for good), descendants that outlive their parent
    (a forkserver, a daemon) are re-parented to this process and measured too;
    after `cmd` exits they get `orphan_timeout` seconds to exit, then SIGKILL.
    `seconds` is the wall time of `cmd` itself.

    Returns: {"seconds", "cpu_seconds", "max_process_mb", "tree_peak_mb",
    "largest_sampled": {"cmdline", "mb", "role"} of the process with the
    highest sampled RSS, "cpu_by_role": {role: CPU seconds}, "peak_mb_by_role":
    {role: MiB}, "processes_by_role": {role: count}, "orphans": processes
    adopted, "orphans_killed", "returncode"}.
    """
    import signal

    adopted = adopt_orphans and _adopt_orphans()
    me = os.getpid()
    peak, largest, name, largest_role = 0, (0, -1), "", ""
    cpu_seen: dict[int, tuple[float, str]] = {}  # pid: (CPU seconds, role) at its last sample
    rss_peak: dict[tuple[int, str], int] = defaultdict(int)  # (pid, role): highest sampled RSS bytes
    orphans: set[int] = set()
    seconds, killed = None, 0
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        while True:
            if seconds is None and proc.poll() is not None:
                seconds = time.perf_counter() - t0
            if seconds is not None and adopted:
                _reap()  # only once Popen has reaped `cmd` itself
            roots = [proc.pid] if seconds is None else []
            if adopted:
                mine = [pid for pid in _processes()[0].get(me, ()) if pid != proc.pid]
                orphans.update(mine)
                roots += mine
            if not roots:
                break
            if seconds is not None and time.perf_counter() - t0 - seconds > orphan_timeout:
                killed = len(roots)
                while roots:  # what a killed orphan leaves is re-parented here in turn
                    for pid in roots:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    time.sleep(interval)
                    _reap()
                    roots = list(_processes()[0].get(me, ()))
                break
            sample = tree_sample(roots)
            peak = max(peak, sum(n for n, _, _ in sample.values()))
            for pid, (n, cpu, r) in sample.items():
                r = r or cpu_seen.get(pid, (0.0, "main"))[1]
                if (n, pid) > largest:  # read now: the command line changes at exec
                    largest, name, largest_role = (n, pid), _cmdline(pid, 120) or name, r
                cpu_seen[pid] = cpu, r
                rss_peak[(pid, r)] = max(rss_peak[(pid, r)], n)
            time.sleep(interval)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    by_role: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for cpu, r in cpu_seen.values():
        by_role[r] += cpu
        count[r] += 1
    peak_by_role: dict[str, float] = defaultdict(float)
    for (_, r), n in rss_peak.items():
        peak_by_role[r] = max(peak_by_role[r], n / 2**20)
    return {
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "max_process_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "tree_peak_mb": peak / 2**20,
        "largest_sampled": {"cmdline": name, "mb": largest[0] / 2**20, "role": largest_role},
        "cpu_by_role": by_role,
        "peak_mb_by_role": peak_by_role,
        "processes_by_role": count,
        "orphans": len(orphans),
        "orphans_killed": killed,
        "returncode": proc.returncode,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", required=True, help="file for the command's output")
    parser.add_argument("--interval", type=float, default=0.1, help="RSS sampling seconds")
    parser.add_argument("--orphan-timeout", type=float, default=30.0,
                        help="seconds the processes that outlive CMD get to exit (then SIGKILL)")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARG ...]")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given")
    # this process exists for the measurement: it adopts what CMD leaves behind
    print(json.dumps(measure(cmd, args.log, args.interval, adopt_orphans=True,
                             orphan_timeout=args.orphan_timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
