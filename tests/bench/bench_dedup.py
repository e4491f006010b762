"""Near-duplicate dedup benchmarks: MinHash speed, LSH quality, job memory.

Figures, all on one core and on real text (the shared corpus's C4 and Common
Crawl documents when present, plus the demo's Gutenberg paragraphs):

- `minhash.vs_datasketch`: our batched signatures vs datasketch's per-document
  `MinHash.update` loop over the same shingles (goal 10x).
- `minhash.vs_numpy`: vs a straightforward vectorised numpy MinHash written
  here (`numpy_reference`, one document at a time; goal 0.8x).
  Both in MB of text per CPU second of this process (one core), medians of 3
  runs alternated with the reference's. The hash functions differ, each side
  running what its user runs: ours is `shingle_hash32` (words hashed once, for
  the whole batch, and combined into shingle hashes); both references hash each
  shingle's bytes with SHA-1 (datasketch's default `sha1_hash32`, which a
  datasketch user gets, and which is faster in datasketch's loop than our
  pure-Python reference of `shingle_hash32`). Same shingles, permutations and
  signature size on both sides.
- `dedup.recall`, `dedup.precision`: the Beam job on a near-duplicate set built
  from real documents (`near_duplicate_set`), against the ground truth of true
  shingle Jaccard >= threshold (goal 0.95 each; the ratio is value / 0.95).
- `dedup.recall_j80` (goal 0.95): recall at the threshold, on pairs of a real
  document and a copy with 1%, 3% or 5% of its words replaced (`edited_pairs`):
  of the pairs whose true Jaccard is >= 0.8 (mostly the 1% copies, Jaccard
  about 0.8-0.95), the share merged. Context: `dedup.recall_j80_90`, the
  pairs of true Jaccard 0.8-0.9 alone, and `dedup.precision_j80`, the share of
  merged pairs that are true duplicates (the 3% and 5% copies, Jaccard 0.6-0.8,
  are the negatives right below the threshold that LSH alone, with no
  verification of its candidates, cannot tell apart). Merged and total pairs
  per true-Jaccard bin are printed.
- `dedup.rss_4x_vs_1x`: peak RSS of the dedup Beam job (its own process, the
  direct runner in one process) on 4x the documents vs 1x. Lower is better, so
  `record(..., higher_is_better=False)` gives ratio = 1.2 / (RSS4x / RSS1x):
  ratio >= 1 means the growth stayed within the 1.2x goal. The job runs on
  Beam's FnApiRunner in one process, whose shuffles are in memory: what grows
  there is the runner's buffers, which a distributed runner keeps on disk.

`python -m tests.bench.bench_dedup --job IN.jsonl OUT_DIR` runs the job alone
(the RSS measurement runs it in a child process this way).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import re
import resource
import statistics
import struct
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench import record, size
from tests.conftest import CACHE, SHARED_CORPUS

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "c4"  # the near-duplicate sets are labelled C4, a near-deduplicated source
GOAL_QUALITY = 0.95
GOAL_RSS_GROWTH = 1.2
MIN_WORDS = 40  # paragraphs and documents shorter than this are not used
PAIRS = size(900, 60)  # edited pairs (recall at the threshold)
REPEATS = size(3, 1)


# ---- real text ---------------------------------------------------------------------------


def book_paragraphs(path: Path, min_words: int = MIN_WORDS) -> list[str]:
    """Paragraphs (blank-line separated) of a plain-text book with >= min_words words."""
    text = path.read_bytes().decode("latin-1").replace("\r\n", "\n")
    return [p.strip() for p in re.split(r"\n\s*\n", text) if len(p.split()) >= min_words]


def json_texts(path: Path, min_words: int = MIN_WORDS) -> list[str]:
    """`text` of every JSON line (gzip) with >= min_words words."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        texts = [json.loads(line).get("text") or "" for line in f if line.strip()]
    return [t for t in texts if len(t.split()) >= min_words]


def real_texts(shared: Path | None = None) -> list[str]:
    """Real documents: shared C4 sample, shared Common Crawl (Dolma) texts, then the
    demo books' paragraphs (alice29, plrabn12), deduplicated, in that order."""
    from pipeline.fetch import fetch_demo_inputs

    texts: list[str] = []
    shared = shared if shared is not None else (SHARED_CORPUS if SHARED_CORPUS.is_dir() else None)
    if shared is not None:
        texts += json_texts(shared / "c4" / "c4-en-sample.00000-of-00001.json.gz")
        texts += json_texts(
            shared / "commoncrawl" / "CC-MAIN-20190717121559-20190717143559-00140.dolma.jsonl.gz"
        )
    demo = fetch_demo_inputs(CACHE)
    for name in ("inputs/books/alice29.txt", "inputs/books/plrabn12.txt"):
        texts += book_paragraphs(demo[name])
    return list(dict.fromkeys(texts))


def make_doc(source: str, native_id: str, text: str) -> dict[str, Any]:
    """A Document dict (pipeline.core.schema fields) for a benchmark or test text."""
    from pipeline.core.schema import doc_id

    return {
        "id": doc_id(source, native_id),
        "source": source,
        "text": text,
        "url": "",
        "lang": "en",
        "lang_score": 1.0,
        "meta": json.dumps({"native_id": native_id}),
    }


# ---- the near-duplicate set --------------------------------------------------------------


def _reformat(word: str, rng: random.Random) -> str:
    """The same word as another rendering of the page could write it: other case, or
    punctuation added/removed around it (normalize_words absorbs both)."""
    choice = rng.randrange(4)
    if choice == 0:
        return word.upper()
    if choice == 1:
        return word.capitalize() if not word[:1].isupper() else word.lower()
    if choice == 2:
        return word + rng.choice([",", ";", ".", "!", "\u2019"])
    return word.strip(".,;:!?\"'`()") or word + ","


def near_duplicate_set(
    originals: list[str], seed: int, source: str = SOURCE
) -> list[dict[str, Any]]:
    """Documents: every original, plus seeded copies of two kinds.

    - A third of the originals get a *near copy*: 5-10% of the words re-formatted
      (case, adjacent punctuation), and one word in 200 replaced by a word from the
      set's vocabulary (none under 200 words). True Jaccard about 0.95-1.0.
    - Another third get an *edited copy*: 5-10% of the words replaced (by
      vocabulary words). With 5-word shingles a replaced word breaks up to 5 shingles, so
      these copies have true Jaccard about 0.35-0.65: below 0.8, they are hard
      negatives that must survive.
    - The last third have no copy.
    Ground truth is never assumed from the construction: it is the true Jaccard.
    """
    rng = random.Random(seed)
    vocab = sorted({w for t in originals for w in t.split()})
    docs = [make_doc(source, f"original-{i}", t) for i, t in enumerate(originals)]
    third = len(originals) // 3
    for i, text in enumerate(originals[: 2 * third]):
        words = text.split()
        n = len(words)
        k = max(1, round(rng.uniform(0.05, 0.10) * n))
        if i < third:
            for j in rng.sample(range(n), k):
                words[j] = _reformat(words[j], rng)
            for j in rng.sample(range(n), n // 200):
                words[j] = rng.choice(vocab)
            kind = "near"
        else:
            for j in rng.sample(range(n), k):
                words[j] = rng.choice(vocab)
            kind = "edited"
        docs.append(make_doc(source, f"{kind}-copy-{i}", " ".join(words)))
    return docs


EDIT_RATES = (0.01, 0.03, 0.05)  # words replaced in the edited pairs' copies
JACCARD_EDGES = (0.6, 0.7, 0.8, 0.9)  # true-Jaccard bins of the per-bin report
PAIR_MIN_WORDS = 150  # a 1% edit of a shorter document changes a whole word or none


def edited_pairs(
    originals: list[str], seed: int, rates: tuple[float, ...] = EDIT_RATES, source: str = SOURCE
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Documents and (original id, copy id) pairs: original i gets one copy with
    `rates[i % len(rates)]` of its words (at least one) replaced by words of the
    set's vocabulary. With 5-word shingles a 1% edit gives a true Jaccard of
    about 0.8-0.9, the band around the 0.8 threshold where LSH misses pairs; 3%
    and 5% fall below it (negatives). Ground truth is the true Jaccard of each
    pair, never the rate."""
    rng = random.Random(seed)
    vocab = sorted({w for t in originals for w in t.split()})
    docs, pairs = [], []
    for i, text in enumerate(originals):
        words = text.split()
        k = max(1, round(rates[i % len(rates)] * len(words)))
        for j in rng.sample(range(len(words)), k):
            words[j] = rng.choice(vocab)
        original = make_doc(source, f"pair-original-{i}", text)
        copy = make_doc(source, f"pair-copy-{i}", " ".join(words))
        docs += [original, copy]
        pairs.append((original["id"], copy["id"]))
    return docs, pairs


def jaccard(a: str, b: str, ngram: int) -> float:
    """True Jaccard similarity of two texts' shingle sets (`shingles`)."""
    from pipeline.filters.minhash import shingles

    x, y = set(shingles(a, ngram)), set(shingles(b, ngram))
    return len(x & y) / len(x | y) if x | y else 1.0


def pair_report(docs: list[dict[str, Any]], pairs: list[tuple[str, str]], survivors: set[str],
                ngram: int, threshold: float) -> dict[str, Any]:
    """Per true-Jaccard bin: pairs, and pairs merged (not both kept); recall and
    precision over the pairs (a pair is a duplicate iff its true Jaccard >=
    `threshold`, merged iff one of its two documents was dropped)."""
    text = {d["id"]: d["text"] for d in docs}
    edges = (0.0, *JACCARD_EDGES, 1.0)
    bins = {f"{lo:.1f}-{hi:.1f}": [0, 0] for lo, hi in zip(edges, edges[1:])}  # noqa: RUF007
    tp = fp = fn = 0
    for a, b in pairs:
        j = jaccard(text[a], text[b], ngram)
        merged = not (a in survivors and b in survivors)
        k = sum(j >= e for e in JACCARD_EDGES)  # the bin: [edges[k], edges[k + 1])
        cell = bins[f"{edges[k]:.1f}-{edges[k + 1]:.1f}"]
        cell[0] += 1
        cell[1] += merged
        duplicate = j >= threshold
        tp += merged and duplicate
        fp += merged and not duplicate
        fn += duplicate and not merged
    return {"bins": bins, "recall": tp / (tp + fn) if tp + fn else float("nan"),
            "precision": tp / (tp + fp) if tp + fp else 1.0, "duplicates": tp + fn}


def true_duplicates(docs: list[dict[str, Any]], ngram: int, threshold: float) -> set[str]:
    """Ids that exact dedup at `threshold` drops: documents that are not the lowest id
    of their connected component in the graph "true Jaccard of shingle sets >=
    threshold" (within a source). Exact: shared shingles are counted through an
    inverted index, so only pairs with a common shingle are compared."""
    from pipeline.filters.minhash import shingles

    sets = [set(shingles(d["text"], ngram)) for d in docs]
    postings: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, (d, s) in enumerate(zip(docs, sets)):
        for sh in s:
            postings[(d["source"], sh)].append(i)
    shared: dict[tuple[int, int], int] = defaultdict(int)
    for ids in postings.values():
        for x in range(len(ids)):
            for y in range(x + 1, len(ids)):
                shared[(ids[x], ids[y])] += 1
    parent = list(range(len(docs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for (i, j), inter in shared.items():
        if inter / (len(sets[i]) + len(sets[j]) - inter) >= threshold:
            parent[find(i)] = find(j)
    lowest: dict[int, str] = {}
    for i, d in enumerate(docs):
        if sets[i]:
            root = find(i)
            lowest[root] = min(lowest.get(root, d["id"]), d["id"])
    return {d["id"] for i, d in enumerate(docs) if sets[i] and lowest[find(i)] != d["id"]}


def precision_recall(dropped: set[str], truth: set[str]) -> tuple[float, float]:
    """(precision, recall) of the dropped ids against the ids that should be dropped
    (1.0 for an empty denominator)."""
    hit = len(dropped & truth)
    return (hit / len(dropped) if dropped else 1.0, hit / len(truth) if truth else 1.0)


# ---- the Beam job ------------------------------------------------------------------------


def dedup_config(*overrides: str):
    """The demo config, run in one process by Beam's FnApiRunner, `overrides` applied.

    FnApiRunner is what Beam 2.77's `DirectRunner` (SwitchingDirectRunner) runs a
    batch pipeline on, after it has first tried PrismRunner, which downloads a
    binary; naming it skips that attempt."""
    from pipeline.core.config import load_config

    return load_config(
        ROOT / "configs" / "demo.yaml",
        [
            "beam.runner=FnApiRunner",
            "beam.direct_running_mode=in_memory",
            "beam.direct_num_workers=1",
            *overrides,
        ],
    )


def write_jsonl(docs: Iterable[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
    return path


def run_dedup_job(cfg, input_path: Path, out_dir: Path) -> tuple[list[dict[str, Any]], dict]:
    """Read Documents (JSON lines) -> NearDedup -> JSON lines under out_dir.

    Returns (surviving documents, {source: {counter: value}}).
    """
    import apache_beam as beam

    from pipeline.beam_util import (
        collect_counters,
        pipeline_options,
        quiet_beam_logging,
    )
    from pipeline.core.config import SOURCES
    from pipeline.near_dedup import NearDedup

    quiet_beam_logging()
    out_dir.mkdir(parents=True, exist_ok=True)
    p = beam.Pipeline(options=pipeline_options(cfg))
    (
        p
        | "Read" >> beam.io.ReadFromText(str(input_path))
        | "Parse" >> beam.Map(json.loads)
        | "NearDedup" >> NearDedup(cfg)
        | "Dump" >> beam.Map(lambda d: json.dumps(d, ensure_ascii=False))
        | "Write" >> beam.io.WriteToText(str(out_dir / "survivors"), file_name_suffix=".jsonl")
    )
    result = p.run()
    result.wait_until_finish()
    survivors = []
    for path in sorted(out_dir.glob("survivors*.jsonl")):
        with open(path, encoding="utf-8") as f:
            survivors += [json.loads(line) for line in f if line.strip()]
    return survivors, collect_counters(result, SOURCES)


# ---- MinHash references ------------------------------------------------------------------


def numpy_reference(texts: list[str], num_perm: int, ngram: int, seed: int) -> np.ndarray:
    """A straightforward vectorised numpy MinHash, one document at a time: the
    shingle set hashed with datasketch's default sha1_hash32 (SHA-1, first 4
    bytes), fmix32, then `(h[:, None] * a + b).min(axis=0)` (datasketch "affine32")."""
    from pipeline.filters.minhash import EMPTY_VALUE, fmix32, permutations, shingles

    a, b = permutations(num_perm, seed)
    out = np.full((len(texts), num_perm), EMPTY_VALUE, dtype=np.uint32)
    for i, text in enumerate(texts):
        sh = set(shingles(text, ngram))
        if sh:
            h = np.array(
                [struct.unpack("<I", hashlib.sha1(s.encode("utf-8")).digest()[:4])[0] for s in sh],
                dtype=np.uint32,
            )
            out[i] = (fmix32(h)[:, None] * a + b).min(axis=0)
    return out


def datasketch_update_loop(texts: list[str], num_perm: int, ngram: int, seed: int) -> list:
    """datasketch's per-document loop: one MinHash per document, `update` per shingle,
    with datasketch's default hash function (`sha1_hash32`), as its users run it."""
    from datasketch import MinHash
    from datasketch.hashfunc import sha1_hash32

    from pipeline.filters.minhash import SCHEME, shingles

    out = []
    for text in texts:
        m = MinHash(num_perm=num_perm, seed=seed, hashfunc=sha1_hash32, scheme=SCHEME)
        for s in shingles(text, ngram):
            m.update(s.encode("utf-8"))
        out.append(m)
    return out


# ---- run ---------------------------------------------------------------------------------


def _cpu_seconds(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def _alternate(ours, reference, repeats: int = REPEATS) -> tuple[float, float]:
    """Median CPU seconds of this process for `ours()` and `reference()`, run
    alternately. Both are single-threaded (numpy's element-wise ufuncs run on one
    core), so CPU time is the per-core cost, and time spent waiting for a core
    that other processes hold on a shared machine is not counted."""
    ours()
    t_ours, t_ref = [], []
    for _ in range(repeats):
        t_ours.append(_cpu_seconds(ours))
        t_ref.append(_cpu_seconds(reference))
    return statistics.median(t_ours), statistics.median(t_ref)


def _rss_job(docs: list[dict[str, Any]], work: Path, name: str) -> dict[str, Any]:
    """Run the dedup job on `docs` in a child process; its peak RSS and time."""
    input_path = write_jsonl(docs, work / f"{name}.jsonl")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.bench_dedup", "--job", str(input_path),
         str(work / name)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run() -> list[dict[str, Any]]:
    import tempfile

    from pipeline.filters.minhash import signatures
    from pipeline.near_dedup import NearDedup

    cfg = dedup_config()
    mh = cfg.clean.minhash
    texts = real_texts()
    texts = random.Random(0).sample(texts, k=len(texts))  # sources mixed
    n_bytes = sum(len(t.encode()) for t in texts)
    print(f"dedup bench: {len(texts)} real documents, {n_bytes / 1e6:.2f} MB", file=sys.stderr)
    results = []

    # MinHash speed, one core, the same documents for both sides of each ratio,
    # timed alternately so that load from other processes hits both sides alike;
    # datasketch's loop is slow (several us a shingle): fewer documents
    sub, docs_np = texts[: size(200, 20)], texts[: size(800, 40)]
    signatures(sub[:4], mh.num_perm, mh.ngram, mh.seed)  # warm the punctuation table
    t_ours_sub, t_ds = _alternate(
        lambda: signatures(sub, mh.num_perm, mh.ngram, mh.seed),
        lambda: datasketch_update_loop(sub, mh.num_perm, mh.ngram, mh.seed),
    )
    t_ours, t_np = _alternate(
        lambda: signatures(docs_np, mh.num_perm, mh.ngram, mh.seed),
        lambda: numpy_reference(docs_np, mh.num_perm, mh.ngram, mh.seed),
    )
    mb_sub = sum(len(t.encode()) for t in sub) / 1e6
    mb_np = sum(len(t.encode()) for t in docs_np) / 1e6
    # ours hashes with shingle_hash32; both references with SHA-1 per shingle (sha1_hash32)
    results.append(record("minhash.vs_datasketch", mb_sub / t_ours_sub, "MB/s",
                          "datasketch MinHash.update loop (sha1_hash32)", mb_sub / t_ds, goal=10.0))
    results.append(record("minhash.vs_numpy", mb_np / t_ours, "MB/s",
                          "per-document numpy MinHash (sha1_hash32)", mb_np / t_np, goal=0.8))

    # LSH quality on a near-duplicate set built from real documents
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        docs = near_duplicate_set(texts[: size(600, 60)], seed=4)
        truth = true_duplicates(docs, mh.ngram, mh.threshold)
        survivors, _ = run_dedup_job(cfg, write_jsonl(docs, work / "set.jsonl"), work / "set")
        dropped = {d["id"] for d in docs} - {d["id"] for d in survivors}
        precision, recall = precision_recall(dropped, truth)
        print(f"near-duplicate set: {len(docs)} documents, {len(truth)} to drop, "
              f"{len(dropped)} dropped", file=sys.stderr)
        for name, value in (("dedup.recall", recall), ("dedup.precision", precision)):
            results.append(record(name, value, "fraction", "goal", GOAL_QUALITY, goal=1.0))

        # recall at the threshold: pairs with 1%, 3% and 5% of their words replaced
        long = [t for t in texts if len(t.split()) >= PAIR_MIN_WORDS][:PAIRS]
        docs, pairs = edited_pairs(long, seed=5)
        survivors, _ = run_dedup_job(cfg, write_jsonl(docs, work / "pairs.jsonl"), work / "pairs")
        report = pair_report(docs, pairs, {d["id"] for d in survivors}, mh.ngram, mh.threshold)
        b, r = NearDedup(cfg).b, NearDedup(cfg).r
        print(f"edited pairs ({len(pairs)}, bands {b} x {r}), true Jaccard bin: merged/pairs "
              + ", ".join(f"{k}: {m}/{n}" for k, (n, m) in report["bins"].items() if n), file=sys.stderr)
        results.append(record("dedup.recall_j80", report["recall"], "fraction",
                              f"goal; {report['duplicates']} pairs of true Jaccard >= {mh.threshold}, "
                              f"{b} x {r} bands", GOAL_QUALITY, goal=1.0))
        results.append(record("dedup.precision_j80", report["precision"], "fraction",
                              "merged pairs (1/3/5% of words replaced)", GOAL_QUALITY))
        n, merged = report["bins"]["0.8-0.9"]
        results.append(record("dedup.recall_j80_90", merged / n if n else float("nan"), "fraction",
                              f"{n} pairs of true Jaccard 0.8-0.9", GOAL_QUALITY))

        # peak RSS on 1x vs 4x distinct real documents
        quarter = size(len(texts), 80) // 4
        one = [make_doc(SOURCE, f"rss-{i}", t) for i, t in enumerate(texts[:quarter])]
        four = [make_doc(SOURCE, f"rss-{i}", t) for i, t in enumerate(texts[: 4 * quarter])]
        r1 = _rss_job(one, work, "rss1x")
        r4 = _rss_job(four, work, "rss4x")
        for label, part, r in (("1x", one, r1), ("4x", four, r4)):
            mb = sum(len(d["text"].encode()) for d in part) / 1e6
            print(f"dedup job {label}: {len(part)} docs, {mb:.2f} MB of text, "
                  f"peak RSS {r['maxrss_mb']:.0f} MB, {r['seconds']:.1f} s", file=sys.stderr)
        growth = r4["maxrss_mb"] / r1["maxrss_mb"]
        results.append(record("dedup.rss_4x_vs_1x", growth, "x RSS", "goal growth",
                              GOAL_RSS_GROWTH, goal=1.0, higher_is_better=False))
    return results


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB: `VmHWM` of /proc/self/status.

    Not `getrusage(RUSAGE_SELF).ru_maxrss`: on Linux that keeps the high-water mark
    of the process that forked us (a forked child shares its parent's pages until
    exec), so a child started by a large benchmark process would report the
    parent's size."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _job_main(input_path: str, out_dir: str) -> None:
    t0 = time.perf_counter()
    survivors, counters = run_dedup_job(dedup_config(), Path(input_path), Path(out_dir))
    print(json.dumps({
        "maxrss_mb": peak_rss_mb(),
        "seconds": time.perf_counter() - t0,
        "survivors": len(survivors),
        "counters": counters,
    }))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", nargs=2, metavar=("IN_JSONL", "OUT_DIR"), required=True)
    args = parser.parse_args()
    _job_main(*args.job)
