"""Skew: one StackExchange `Posts.xml` eight times as large must not need eight
times a worker's memory.

A site's posts come in one file (Stack Overflow's is about 100 GB), and a
question's answers can be anywhere after it. The reader emits every post as a
small keyed piece and the clean job groups them by question
(`pipeline.sources.stackexchange`), so a worker holds one row while reading and
one question's answers while assembling, whatever the file's size.

Input: the real beer sample of the shared corpus (1x), and a file of eight
copies of its rows (8x), copy k with every Id, ParentId and AcceptedAnswerId
shifted by k times a power of ten above the largest Id, so each copy is a
consistent site of its own and the file stays sorted by Id as a dump is. The
copies' texts are the same, so exact dedup drops 7 of 8 documents late in the
job; reading, grouping and assembling see all of them.

Each size runs `python -m pipeline clean` with configs/demo.yaml (only this
file as input: `--set sources.stackexchange.inputs=[file]`, the other sources'
inputs [], no `corpus_dir`, its own `out_dir`), measured by
`tests.proc_tree.measure`. Its `peak_mb_by_role` is sampled from /proc
(RSS every 0.1 s), so it is per run even though the processes are children of
this one.

Figures:

- `skew.stackexchange_rss_8x_vs_1x`: the peak RSS of the largest Beam SDK
  worker (role "worker"; the largest process of another role than "main" if
  no worker was seen), 8x over 1x. Goal: growth <= 1.2 (`record(...,
  higher_is_better=False)`: ratio = 1.2 / growth, met when >= 1).
- context, no goal: `skew.stackexchange_runner_rss_8x_vs_1x`, the same for
  the runner process ("main"; Beam's local FnApiRunner holds every shuffle in
  its memory, the Parts' included, so it grows with the input by design of
  that runner, not of the job); `skew.stackexchange_read_heap_8x_vs_1x`, the
  peak Python heap (`tracemalloc`) of one `read` call over the whole file,
  records dropped as they come, in this process: what a reading DoFn call
  holds; the worker peak in MiB at 8x against 1x; documents read at 8x over
  1x (8.0: every question assembled in every copy).

Why both: at this size the worker's peak is set by other stages of the job
(about 300 MiB), not by the reader. As this landed (same clean job, two busy
cores), the reader that held a whole file's posts until its end: worker 304 ->
303 MiB (0.996x, the goal met all the same), runner 279 -> 281 MiB, read heap
2.45 -> 19.2 MiB (7.8x); the Parts: worker 306 -> 311 MiB (1.02x), runner
280 -> 335 MiB (1.20x: the grouped Parts), read heap 0.09 -> 0.09 MiB.

Run: `python -m tests.bench --only skew_stackexchange` (about 1-2 minutes on
two cores).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from pipeline.core.io import atomic_write, open_input
from tests.bench import BenchSkipped, beam_sets, out_dir, record, size
from tests.conftest import SHARED_CORPUS
from tests.proc_tree import measure

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path("configs") / "demo.yaml"  # relative: the job runs in ROOT
WORK = out_dir().relative_to(ROOT) / "skew_stackexchange"
SAMPLE = "beer.stackexchange.com_2017-03_Posts.xml"
SCALE = size(8, 2)
ROW_EVERY = size(1, 8)  # the sample's rows used: every one, every 8th
GOAL_RSS_GROWTH = 1.2
_ID_ATTR = re.compile(rb'(\s(?:Id|ParentId|AcceptedAnswerId)=")(\d+)(")')


def replicate(src: Path, dst: Path, n: int) -> int:
    """Write `n` copies of the rows (every ROW_EVERY-th) of the Posts.xml `src` to `dst` (one
    `<posts>` element), copy k with its post ids shifted by k * a power of ten
    above the largest Id; returns the number of rows written."""
    with open_input(str(src)) as f:
        lines = f.read().splitlines(keepends=True)
    rows = [line for line in lines if line.lstrip().startswith(b"<row")][::ROW_EVERY]
    top = max(int(m.group(2)) for line in rows for m in _ID_ATTR.finditer(line))
    step = 10 ** len(str(top))
    head = lines[: lines.index(rows[0])]
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dst) as out:
        out.writelines(head)
        for k in range(n):
            def shifted(m: re.Match, shift: int = k * step) -> bytes:
                return m.group(1) + str(int(m.group(2)) + shift).encode() + m.group(3)

            out.writelines(_ID_ATTR.sub(shifted, line) for line in rows)
        out.write(b"</posts>\n")
    return len(rows) * n


def clean_command(posts: Path, out_dir: Path) -> list[str]:
    """`python -m pipeline clean` on `posts` alone, into `out_dir`."""
    from pipeline.core.config import load_config

    sets = [f"out_dir={out_dir}", "corpus_dir=null", *beam_sets()]
    for source in load_config(ROOT / CONFIG).sources:
        files = [str(posts)] if source == "stackexchange" else []
        sets.append(f"sources.{source}.inputs={json.dumps(files)}")
    return [sys.executable, "-m", "pipeline", "clean", "--config", str(CONFIG),
            *(a for s in sets for a in ("--set", s))]


def read_heap_mb(posts: Path) -> float:
    """Peak Python heap (MiB, `tracemalloc`) of one pass of `read` over `posts`,
    each record dropped as it comes: what one reader call holds. A short pass
    first, untraced, so that caches filled once (regexes, the HTML parser) do
    not count."""
    import itertools
    import tracemalloc

    from pipeline.sources import stackexchange

    for _ in itertools.islice(stackexchange.read(str(posts), None), 100):
        pass
    tracemalloc.start()
    try:
        for _ in stackexchange.read(str(posts), None):
            pass
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def run_size(n: int) -> dict[str, Any]:
    """The clean job on n copies of the sample: its measurements and counters."""
    work = ROOT / WORK
    posts = work / "inputs" / SAMPLE.replace("_Posts", f"_{n}x_Posts")
    rows = replicate(SHARED_CORPUS / "stackexchange" / SAMPLE, posts, n)
    out = work / f"run-{n}x"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    log = out / "clean.log"
    with contextlib.chdir(ROOT):  # the config's paths are relative to the repository root
        m = measure(clean_command(posts, out), str(log))
    if m["returncode"] != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"clean failed ({m['returncode']}) on {n}x, log {log}:\n{tail}")
    roles = m["peak_mb_by_role"]
    worker = roles.get("worker") or max((v for r, v in roles.items() if r != "main"), default=float("nan"))
    counters = json.loads((out / "clean" / "manifest.json").read_text())["counters"]["stackexchange"]
    heap = read_heap_mb(posts)
    print(f"skew_stackexchange {n}x: {rows} rows, {posts.stat().st_size / 1e6:.1f} MB, "
          f"{m['seconds']:.0f} s, worker {worker:.0f} MiB, runner {roles.get('main', 0):.0f} MiB, "
          f"read heap {heap:.2f} MiB, {counters}", file=sys.stderr)
    return {"worker_mb": worker, "runner_mb": roles.get("main", float("nan")), "read_heap_mb": heap,
            "docs_read": counters.get("docs_read", 0), "seconds": m["seconds"]}


def run() -> list[dict[str, Any]]:
    if not (SHARED_CORPUS / "stackexchange" / SAMPLE).is_file():
        raise BenchSkipped(f"no shared corpus sample {SAMPLE}")
    one, big = run_size(1), run_size(SCALE)
    x = f"{SCALE}x_vs_1x"
    return [
        record(f"skew.stackexchange_rss_{x}", big["worker_mb"] / one["worker_mb"], "x RSS",
               "goal growth; Beam SDK worker", GOAL_RSS_GROWTH, goal=1.0, higher_is_better=False),
        record(f"skew.stackexchange_runner_rss_{x}", big["runner_mb"] / one["runner_mb"], "x RSS",
               "goal growth; runner (shuffles)", GOAL_RSS_GROWTH, higher_is_better=False),
        record(f"skew.stackexchange_read_heap_{x}", big["read_heap_mb"] / one["read_heap_mb"], "x heap",
               "goal growth; one read() call", GOAL_RSS_GROWTH, higher_is_better=False),
        record(f"skew.stackexchange_worker_mb_{SCALE}x", big["worker_mb"], "MiB", "1x worker peak",
               one["worker_mb"], higher_is_better=False),
        record(f"skew.stackexchange_docs_{x}", big["docs_read"] / one["docs_read"], "x docs",
               "copies of the input", float(SCALE)),
    ]


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    for r in run():
        print(json.dumps(r))
