"""CCNet line dedup under key skew: worker memory with hot lines against without.

Input: DOCS Common Crawl documents of real text, cut into chunks of CHUNK_LINES
lines from the demo's English Wikipedia articles, its Common Crawl page, its two
books and, when present, the shared corpus's Common Crawl (Dolma) text, repeated
with fresh ids and seeded word swaps (`tests.bench.scaled_inputs.swap_words`)
until there are DOCS of them. The skewed input is the same documents with
ALL_LINE inserted into every one and HOT_LINE (with varying numbers, which
normalise alike) HOT_TOTAL times in total, HOT_TOTAL / DOCS per document, at
seeded places.

Each input runs `pipeline.dedup.lines.LineDedup` (scope "run", Documents spilled
as in the clean job on the local runner) in its own process: JSON lines ->
LineDedup -> (id, SHA-1 of the text) lines, on Beam's FnApiRunner with two
multi_processing workers, measured by `tests.proc_tree`.

Figure `skew.line_dedup_rss`: peak RSS of the largest Beam SDK worker on the
skewed input over the same without the skewed lines; lower is better, so
`record(..., higher_is_better=False)` gives ratio = 1.2 / growth, `met` when
the growth is at most 1.2x (as in bench_dedup). Where proc_tree classifies no
process as "worker", the largest process other than the runner stands in (the
reference column says so). The survivors of both runs must equal an in-memory
reference (first occurrence by (doc id, line index) kept); otherwise the bench
raises and records nothing. Context, no goal: the runner's peak RSS growth and
the wall-time ratio.

`python -m tests.bench.bench_skew_lines --job IN_DIR OUT_DIR` runs one job alone.
About 1-2 minutes on two cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.bench import beam_sets, record, size
from tests.conftest import CACHE, SHARED_CORPUS

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "commoncrawl"
DOCS = size(10_000, 400)
HOT_TOTAL = size(1_000_000, 20_000)
CHUNK_LINES = 12
INPUT_FILES = 8
ALL_LINE = "This website uses cookies to ensure you get the best experience on our website."
HOT_LINE = "Share on Facebook - {:07d} shares"  # digits normalise to 0: one key
GOAL_RSS_GROWTH = 1.2


def real_chunks() -> list[str]:
    """Texts of CHUNK_LINES non-blank real lines each, in reading order."""
    from pipeline.fetch import fetch_demo_inputs
    from pipeline.sources import commoncrawl, wikipedia

    demo = fetch_demo_inputs(CACHE)
    docs = [d for d in wikipedia.read(str(demo[
        "inputs/wikipedia/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"]))
        if isinstance(d, dict)]
    docs += [d for d in commoncrawl.read(str(demo["inputs/commoncrawl/at.warc.gz"]), None) if isinstance(d, dict)]
    if SHARED_CORPUS.is_dir():
        dolma = SHARED_CORPUS / "commoncrawl" / "CC-MAIN-20190717121559-20190717143559-00140.dolma.jsonl.gz"
        docs += [d for d in commoncrawl.read(str(dolma), None) if isinstance(d, dict)]
    texts = [d["text"] for d in docs]
    for name in ("inputs/books/alice29.txt", "inputs/books/plrabn12.txt"):
        texts.append(demo[name].read_text(encoding="latin-1"))
    chunks = []
    for text in texts:
        lines = [line for line in text.split("\n") if line.strip()]
        chunks += ["\n".join(lines[i:i + CHUNK_LINES]) for i in range(0, len(lines), CHUNK_LINES)]
    return chunks


def base_documents() -> list[dict[str, Any]]:
    """DOCS Documents of real text: the chunks, then seeded rewrites of them."""
    from pipeline.sources.base import make_document
    from tests.bench.scaled_inputs import swap_words

    chunks = real_chunks()
    docs = []
    for n in range(DOCS):
        copy, i = divmod(n, len(chunks))
        text = chunks[i] if copy == 0 else swap_words(chunks[i], random.Random(f"{copy}:{i}"))
        docs.append(make_document(SOURCE, f"skew:{n}", text, f"https://example.org/{n}",
                                  meta={"warc_file": f"skew-{n % INPUT_FILES}.warc.gz"}))
    return docs


def skewed(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The documents with ALL_LINE in each and HOT_LINE HOT_TOTAL times in all."""
    rng = random.Random(0)
    per_doc = HOT_TOTAL // len(docs)
    out = []
    for n, doc in enumerate(docs):
        lines = doc["text"].split("\n")
        lines.insert(rng.randrange(len(lines) + 1), ALL_LINE)
        for k in range(per_doc):
            lines.insert(rng.randrange(len(lines) + 1), HOT_LINE.format(n * per_doc + k))
        out.append({**doc, "text": "\n".join(lines)})
    return out


def reference(docs: list[dict[str, Any]]) -> dict[str, str]:
    """{doc id: SHA-1 of the text} after line dedup, in memory (the tests'
    plain reference: one group for the run, an emptied document dropped)."""
    from tests.test_line_dedup import reference as plain

    texts, _ = plain(docs, lambda _doc: "run")
    return {k: hashlib.sha1(t.encode()).hexdigest() for k, t in texts.items()}


def write_inputs(docs: list[dict[str, Any]], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(INPUT_FILES):
        with open(folder / f"docs-{i}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs[i::INPUT_FILES])


def run_job(in_dir: str, out_dir: str) -> None:
    """JSON lines under `in_dir` -> LineDedup -> `<out_dir>/survivors*` lines
    `[id, SHA-1 of text]`, on the demo config's local runner (two workers)."""
    import apache_beam as beam

    from pipeline.beam.runner import pipeline_options, quiet_beam_logging, run_pipeline
    from pipeline.core.config import load_config
    from pipeline.dedup.lines import LineDedup
    from pipeline.beam.packed import Packer

    quiet_beam_logging()
    options = pipeline_options(load_config(ROOT / "configs" / "demo.yaml", beam_sets()))

    def build(p, spill):
        (p
         | beam.io.ReadFromText(str(Path(in_dir) / "docs-*.jsonl"))
         | beam.Map(json.loads)
         | LineDedup([SOURCE], Packer(spill))
         | beam.Map(lambda d: json.dumps([d["id"], hashlib.sha1(d["text"].encode()).hexdigest()]))
         | beam.io.WriteToText(str(Path(out_dir) / "survivors")))

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    run_pipeline(options, out_dir, build)


def measure(in_dir: Path, out_dir: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Run the job under proc_tree; (its measurements, {id: text SHA-1} it wrote)."""
    log = out_dir.with_suffix(".log")
    cmd = [sys.executable, "-m", "tests.proc_tree", "--log", str(log), "--",
           sys.executable, "-m", "tests.bench.bench_skew_lines", "--job", str(in_dir), str(out_dir)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    if m["returncode"] != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"line dedup job failed ({m['returncode']}), log {log}:\n{tail}")
    survivors = {}
    for part in sorted(out_dir.glob("survivors*")):
        for line in part.read_text().splitlines():
            doc_id, digest = json.loads(line)
            survivors[doc_id] = digest
    return m, survivors


def worker_peak(m: dict[str, Any]) -> tuple[float, bool]:
    """(peak RSS MiB of the largest SDK worker, whether proc_tree named one);
    without a "worker" role, the largest process other than the runner."""
    by_role = m["peak_mb_by_role"]
    if "worker" in by_role:
        return by_role["worker"], True
    return max((v for r, v in by_role.items() if r != "main"), default=float("nan")), False


def run() -> list[dict[str, Any]]:
    import tempfile

    base = base_documents()
    skew = skewed(base)
    results: dict[str, tuple[dict[str, Any], dict[str, str]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, docs in (("base", base), ("skew", skew)):
            write_inputs(docs, Path(tmp) / f"{name}-in")
            m, survivors = measure(Path(tmp) / f"{name}-in", Path(tmp) / f"{name}-out")
            expected = reference(docs)
            if survivors != expected:
                wrong = sum(survivors.get(k) != v for k, v in expected.items())
                raise AssertionError(f"{name}: {wrong} of {len(expected)} documents differ from the "
                                     f"in-memory reference ({len(survivors)} written)")
            results[name] = (m, survivors)
    (mb, _), (ms, _) = results["base"], results["skew"]
    (w_base, named), (w_skew, _) = worker_peak(mb), worker_peak(ms)
    print(f"skew lines: worker {w_base:.0f} -> {w_skew:.0f} MiB, runner {mb['peak_mb_by_role']['main']:.0f} -> "
          f"{ms['peak_mb_by_role']['main']:.0f} MiB, {mb['seconds']:.0f} -> {ms['seconds']:.0f} s",
          file=sys.stderr)
    who = "Beam SDK worker" if named else "largest non-runner process (no worker role found)"
    return [
        record("skew.line_dedup_rss", w_skew / w_base, "x RSS",
               f"goal growth; {who}, without the hot lines", GOAL_RSS_GROWTH, goal=1.0, higher_is_better=False),
        record("skew.line_dedup_runner_rss", ms["peak_mb_by_role"]["main"] / mb["peak_mb_by_role"]["main"],
               "x RSS", "goal growth; Beam runner", GOAL_RSS_GROWTH, higher_is_better=False),
        record("skew.line_dedup_seconds", ms["seconds"], "s", "without the hot lines", mb["seconds"],
               higher_is_better=False),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", nargs=2, metavar=("IN_DIR", "OUT_DIR"), required=True)
    args = parser.parse_args()
    run_job(*args.job)
