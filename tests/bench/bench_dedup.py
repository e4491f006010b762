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
import hashlib
import json
import random
import resource
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench import record, size
from tests.conftest import CACHE, SHARED_CORPUS, book_paragraphs, json_texts
from tests.near_dups import (
    SOURCE,
    dedup_config,
    make_doc,
    near_duplicate_set,
    precision_recall,
    run_dedup_job,
    true_duplicates,
    write_jsonl,
)

ROOT = Path(__file__).resolve().parents[2]
GOAL_QUALITY = 0.95
GOAL_RSS_GROWTH = 1.2
PAIRS = size(900, 60)  # edited pairs (recall at the threshold)
REPEATS = size(3, 1)


# ---- real text ---------------------------------------------------------------------------


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
    from pipeline.dedup.minhash import shingles

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


# ---- MinHash references ------------------------------------------------------------------


def numpy_reference(texts: list[str], num_perm: int, ngram: int, seed: int) -> np.ndarray:
    """A straightforward vectorised numpy MinHash, one document at a time: the
    shingle set hashed with datasketch's default sha1_hash32 (SHA-1, first 4
    bytes), fmix32, then `(h[:, None] * a + b).min(axis=0)` (datasketch "affine32")."""
    from pipeline.dedup.minhash import EMPTY_VALUE, fmix32, permutations, shingles

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

    from pipeline.dedup.minhash import SCHEME, shingles

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

    from pipeline.dedup.minhash import signatures
    from pipeline.dedup.near import NearDedup

    cfg = dedup_config()
    mh = cfg.clean.near_dedup.web
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
        b, r = NearDedup(mh, []).b, NearDedup(mh, []).r
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
