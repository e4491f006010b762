"""Run one command and measure its whole process tree (Linux): time and peak memory.

`python -m tests.bench.proc_tree --log FILE -- CMD [ARG ...]` runs CMD with its
output to FILE and prints one JSON line:

- `seconds`: wall seconds from start to exit.
- `cpu_seconds`: user + system CPU seconds of CMD and every descendant it waited
  for (`getrusage(RUSAGE_CHILDREN)` of this wrapper).
- `max_process_mb`: `RUSAGE_CHILDREN.ru_maxrss`: the largest peak RSS (MiB) of
  any one process of the tree that was waited for, the kernel's exact
  high-water mark. Not a sum. Beam's multi_processing workers count: the runner
  starts each as an `sh -c` child and waits for it.
- `tree_peak_mb`: the largest sum of the resident sets (`/proc/<pid>/statm`) of
  CMD and all its live descendants, sampled every `--interval` seconds: the
  memory the stage needs of a machine. It can miss a peak shorter than the
  interval; pages shared between processes (libraries) count once per process.
- `largest_sampled`: the command line and sampled peak of the process whose RSS
  was the highest seen (which process `max_process_mb` most likely is).
- `cpu_by_role`: CPU seconds per kind of process ("main": the command itself,
  "worker": Beam SDK workers), from the last sample of each process: where
  the time goes, short by what a process did after its last sample.
- `peak_mb_by_role`: {role: the highest sampled RSS (MiB) of any one process
  of that role}: under Beam's local runner "main" is the runner, which holds
  every PCollection between fused stages (its in-memory shuffle), and
  "worker" is the SDK harness running the job's own DoFns. Sampled, so it can
  miss a peak shorter than the interval.
- `returncode`.

Why a wrapper process: `RUSAGE_CHILDREN` accumulates over all children of a
process, so only a fresh parent per stage gives per-stage figures; and Linux
carries a parent's high-water mark into a child that it forks (vfork) and that
then execs, so the parent must be small (this module imports nothing heavy),
not the benchmark process that has loaded Beam or torch. psutil is not a
dependency of the project; /proc gives the same numbers here.
"""

from __future__ import annotations

import argparse
import json
import os
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


def tree_sample(root: int) -> dict[int, tuple[int, float]]:
    """{pid: (resident set bytes, CPU seconds so far)} of `root` and all its live
    descendants."""
    children, cpu = _processes()
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                out[pid] = (int(f.read().split()[1]) * PAGE, cpu.get(pid, 0.0))
        except (OSError, IndexError, ValueError):  # exited meanwhile
            pass
        todo.extend(children.get(pid, ()))
    return out


def role(cmdline: str) -> str:
    """What a process of a stage's tree is: "worker" (a Beam SDK worker), "shell"
    (the `sh -c` that starts one) or "main" (the stage's own process)."""
    if "sdk_worker" in cmdline and not cmdline.startswith(("sh ", "/bin/sh ")):
        return "worker"
    return "shell" if cmdline.startswith(("sh ", "/bin/sh ")) else "main"


def _cmdline(pid: int, limit: int | None = None) -> str:
    """The process's command line; whole by default (a deep checkout's venv path
    can push the module name past any fixed cut)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:limit]
    except OSError:
        return ""


def measure(cmd: list[str], log_path: str, interval: float = 0.1) -> dict[str, Any]:
    """Run `cmd` (stdout and stderr to `log_path`) and measure it; see the module doc.

    Returns: {"seconds", "cpu_seconds", "max_process_mb", "tree_peak_mb",
    "largest_sampled": {"cmdline", "mb"} of the process with the highest sampled
    RSS, "cpu_by_role": {role: CPU seconds}, "peak_mb_by_role": {role: MiB},
    "returncode"}.
    """
    peak, largest, name = 0, (0, -1), ""
    cpu_seen: dict[int, float] = {}  # pid: CPU seconds at its last sample
    roles: dict[int, str] = {}
    rss_peak: dict[int, int] = defaultdict(int)  # pid: highest sampled RSS bytes
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            sample = tree_sample(proc.pid)
            peak = max(peak, sum(n for n, _ in sample.values()))
            for pid, (n, cpu) in sample.items():
                if (n, pid) > largest:  # read now: the command line changes at exec
                    largest, name = (n, pid), _cmdline(pid, 120) or name
                if pid not in roles or roles[pid] == "shell":  # until the shell execs
                    roles[pid] = role(_cmdline(pid))
                cpu_seen[pid] = cpu
                rss_peak[pid] = max(rss_peak[pid], n)
            time.sleep(interval)
        seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    by_role: dict[str, float] = defaultdict(float)
    for pid, cpu in cpu_seen.items():
        by_role[roles[pid]] += cpu
    peak_by_role: dict[str, float] = defaultdict(float)
    for pid, n in rss_peak.items():
        peak_by_role[roles[pid]] = max(peak_by_role[roles[pid]], n / 2**20)
    return {
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "max_process_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "tree_peak_mb": peak / 2**20,
        "largest_sampled": {"cmdline": name, "mb": largest[0] / 2**20},
        "cpu_by_role": by_role,
        "peak_mb_by_role": peak_by_role,
        "returncode": proc.returncode,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", required=True, help="file for the command's output")
    parser.add_argument("--interval", type=float, default=0.1, help="RSS sampling seconds")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARG ...]")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given")
    print(json.dumps(measure(cmd, args.log, args.interval)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
