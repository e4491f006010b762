"""The reference-page classifier's training sample: memory flat as the corpus grows.

Input: a committed clean output of DOCS documents per class (books: positives,
commoncrawl: negatives) in PARTS parts each, every text DOC_CHUNKS real chunks
(`bench_skew_lines.real_chunks`: the demo's Wikipedia, Common Crawl and books,
and the shared corpus's Common Crawl when present) joined in a rotating order;
then the same at 4x the documents.

Each size runs `pipeline.quality_model.draw_sample` (the Beam job, MAX_EXAMPLES
per class, on the demo config's local runner: two multi_processing workers) and
the in-memory reference (every (hash, text) sorted on the launcher, what
quality-train did before: `tests.test_quality_model._select_in_memory`), each in
its own process measured by `tests.proc_tree`. Both must pick the same
lines (else the bench raises and records nothing).

Figures: `quality_sample.rss_4x_vs_1x`: peak RSS of the largest process of the
Beam job (runner or SDK worker) at 4x over 1x; lower is better, `met` when the
growth is at most 1.2x. Context, no goal: `quality_sample.rss_vs_in_memory` and
`quality_sample.seconds_vs_in_memory` at 4x.

`python -m tests.bench.bench_quality_sample --job OUT_DIR {beam,memory}` runs one.
About 2 minutes on two cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.bench import beam_sets, record, size

ROOT = Path(__file__).resolve().parents[2]
DOCS = size(4_000, 200)  # per class at 1x
PARTS = 8
DOC_CHUNKS = 4
MAX_EXAMPLES = 1_000
GOAL_RSS_GROWTH = 1.2
CLASSES = {"books": "positive", "commoncrawl": "negative"}


def write_corpus(out: Path, docs: int) -> None:
    """`docs` documents per class as a committed clean output under `out`."""
    import pyarrow as pa

    from pipeline.core.schema import (
        DOCUMENT_FIELDS,
        DOCUMENT_SCHEMA,
        write_clean_output,
    )
    from pipeline.sources.base import make_document
    from tests.bench.bench_skew_lines import real_chunks

    chunks = real_chunks()
    tables = {}
    for source in CLASSES:
        rows = []
        for n in range(docs):
            text = "\n".join(chunks[(n * DOC_CHUNKS + k) % len(chunks)] for k in range(DOC_CHUNKS))
            rows.append(make_document(source, f"{source}:{n}", text, f"https://example.org/{source}/{n}"))
        tables[source] = [pa.Table.from_pydict({f: [d[f] for d in rows[k::PARTS]] for f in DOCUMENT_FIELDS},
                                               schema=DOCUMENT_SCHEMA) for k in range(PARTS)]
    write_clean_output(str(out), tables)


def _config(out: str):
    from pipeline.core.config import load_config

    return load_config(ROOT / "configs" / "demo.yaml", [
        f"out_dir={out}", f"clean.quality.max_examples={MAX_EXAMPLES}",
        "clean.quality.positive_sources=[books]", "clean.quality.negative_sources=[commoncrawl]",
        *beam_sets(),
    ])


def run_job(out: str, kind: str) -> None:
    """Draw the sample of the clean output under `out` (`kind`: "beam" or the
    in-memory "memory" reference); writes {class: SHA-256 of its lines} to
    `<out>/<kind>.json`."""
    from pipeline.quality_model import NEGATIVE, POSITIVE, draw_sample, example_line

    cfg = _config(out)
    if kind == "beam":
        sample = draw_sample(cfg)
        lines = {"positive": sample[POSITIVE], "negative": sample[NEGATIVE]}
    else:
        from tests.test_quality_model import _select_in_memory

        lines = {c: [example_line(POSITIVE if c == "positive" else NEGATIVE, t)
                     for t in _select_in_memory(Path(out), [s], cfg.seed, MAX_EXAMPLES)]
                 for s, c in CLASSES.items()}
    digests = {c: hashlib.sha256("".join(v).encode()).hexdigest() for c, v in lines.items()}
    Path(out, f"{kind}.json").write_text(json.dumps(digests))


def measure(out: Path, kind: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Run one job under proc_tree; (its measurements, the digests it wrote)."""
    log = out / f"{kind}.log"
    cmd = [sys.executable, "-m", "tests.proc_tree", "--log", str(log), "--",
           sys.executable, "-m", "tests.bench.bench_quality_sample", "--job", str(out), kind]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    if m["returncode"] != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{kind} sample failed ({m['returncode']}), log {log}:\n{tail}")
    return m, json.loads((out / f"{kind}.json").read_text())


def peak(m: dict[str, Any]) -> float:
    """Peak RSS (MiB) of the largest process: the runner or a worker."""
    return max(m["peak_mb_by_role"].values())


def run() -> list[dict[str, Any]]:
    import tempfile

    runs: dict[tuple[int, str], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scale in (1, 4):
            out = Path(tmp) / f"x{scale}"
            write_corpus(out, DOCS * scale)
            (mb, beam_lines), (mm, memory_lines) = measure(out, "beam"), measure(out, "memory")
            if beam_lines != memory_lines:
                raise AssertionError(f"{scale}x: the Beam sample differs from the in-memory selection")
            runs[(scale, "beam")], runs[(scale, "memory")] = mb, mm
    b1, b4, m1, m4 = runs[(1, "beam")], runs[(4, "beam")], runs[(1, "memory")], runs[(4, "memory")]
    print(f"quality sample: Beam {peak(b1):.0f} -> {peak(b4):.0f} MiB ({b1['peak_mb_by_role']} -> "
          f"{b4['peak_mb_by_role']}), {b1['seconds']:.0f} -> {b4['seconds']:.0f} s; in memory "
          f"{peak(m1):.0f} -> {peak(m4):.0f} MiB, {m1['seconds']:.0f} -> {m4['seconds']:.0f} s", file=sys.stderr)
    return [
        record("quality_sample.rss_4x_vs_1x", peak(b4) / peak(b1), "x RSS",
               "goal growth; largest process of the Beam job, 1x corpus", GOAL_RSS_GROWTH, goal=1.0,
               higher_is_better=False),
        record("quality_sample.rss_vs_in_memory", peak(b4), "MiB", "in-memory sort on the launcher, 4x corpus",
               peak(m4), higher_is_better=False),
        record("quality_sample.seconds_vs_in_memory", b4["seconds"], "s", "in-memory sort on the launcher, 4x corpus",
               m4["seconds"], higher_is_better=False),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", nargs=2, metavar=("OUT_DIR", "KIND"), required=True)
    args = parser.parse_args()
    run_job(*args.job)
