"""Near-duplicate sets with their exact ground truth, and the near-dedup Beam job
alone: what the near-dedup tests and benchmark both run."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

SOURCE = "c4"  # the near-duplicate sets are labelled C4, a near-deduplicated source


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


# ---- the near-duplicate set and its ground truth ---------------------------------------


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


def true_duplicates(docs: list[dict[str, Any]], ngram: int, threshold: float) -> set[str]:
    """Ids that exact dedup at `threshold` drops: documents that are not the lowest id
    of their connected component in the graph "true Jaccard of shingle sets >=
    threshold" (within a source). Exact: shared shingles are counted through an
    inverted index, so only pairs with a common shingle are compared."""
    from pipeline.dedup.minhash import shingles

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

    from pipeline.beam.runner import (
        collect_counters,
        pipeline_options,
        quiet_beam_logging,
    )
    from pipeline.beam.packed import INLINE
    from pipeline.core.config import SOURCES
    from pipeline.dedup.near import NearDedup

    quiet_beam_logging()
    out_dir.mkdir(parents=True, exist_ok=True)
    p = beam.Pipeline(options=pipeline_options(cfg))
    (
        p
        | "Read" >> beam.io.ReadFromText(str(input_path))
        | "Parse" >> beam.Map(lambda line: INLINE.carry(json.loads(line)))
        | "NearDedup" >> NearDedup(cfg.clean.near_dedup.web, cfg.sources_with("near_dedup", "web"))
        | "Dump" >> beam.MapTuple(lambda _, packed: json.dumps(INLINE.unpack(packed), ensure_ascii=False))
        | "Write" >> beam.io.WriteToText(str(out_dir / "survivors"), file_name_suffix=".jsonl")
    )
    result = p.run()
    result.wait_until_finish()
    survivors = []
    for path in sorted(out_dir.glob("survivors*.jsonl")):
        with open(path, encoding="utf-8") as f:
            survivors += [json.loads(line) for line in f if line.strip()]
    return survivors, collect_counters(result, SOURCES)
