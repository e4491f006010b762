"""Near-duplicate removal in Beam (MinHash LSH + star contraction) against the
datasketch oracle (MinHashLSH + union-find, lowest id survives) and against the
true Jaccard similarity of shingle sets, on real documents."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import defaultdict
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from datasketch import MinHash, MinHashLSH

from pipeline.dedup.minhash import LSH_WEIGHTS, shingle_hash32, shingles
from pipeline.dedup.near import StarContraction
from tests.conftest import SHARED_CORPUS, book_paragraphs, json_texts
from tests.near_dups import (
    dedup_config,
    make_doc,
    near_duplicate_set,
    precision_recall,
    run_dedup_job,
    true_duplicates,
    write_jsonl,
)


def _sorted_json(doc: dict) -> str:
    return json.dumps(doc, sort_keys=True, ensure_ascii=False)


class UnionFind:
    def __init__(self, nodes=()):
        self.parent = {n: n for n in nodes}

    def find(self, n):
        self.parent.setdefault(n, n)
        while self.parent[n] != n:
            self.parent[n] = self.parent[self.parent[n]]
            n = self.parent[n]
        return n

    def union(self, a, b):
        self.parent[self.find(a)] = self.find(b)


def oracle_survivors(docs: list[dict], cfg) -> list[dict]:
    """datasketch's answer: per near-deduplicated source, one MinHashLSH over the
    MinHash of each node (source, id, sha1(text)); candidates from `query` are
    unioned; each component keeps its lowest node, and of that node's identical
    copies the one with the smallest sorted-keys JSON. No-shingle documents are
    dropped; other sources pass through."""
    mh = cfg.clean.near_dedup.web
    sources = set(cfg.sources_with("near_dedup", "web"))
    out = [d for d in docs if d["source"] not in sources]
    for source in sorted({d["source"] for d in docs} & sources):
        nodes: dict[tuple, list[dict]] = defaultdict(list)
        for d in docs:
            if d["source"] == source:
                key = (source, d["id"], hashlib.sha1(d["text"].encode("utf-8")).hexdigest())
                nodes[key].append(d)
        lsh = MinHashLSH(threshold=mh.threshold, num_perm=mh.num_perm, weights=LSH_WEIGHTS)
        sketches = {}
        for node in sorted(nodes):
            sh = shingles(nodes[node][0]["text"], mh.ngram)
            if not sh:
                continue
            m = MinHash(
                num_perm=mh.num_perm, seed=mh.seed, hashfunc=shingle_hash32, scheme="affine32"
            )
            m.update_batch([s.encode("utf-8", "surrogatepass") for s in sh])
            lsh.insert(node, m)
            sketches[node] = m
        uf = UnionFind(sketches)
        for node, m in sketches.items():
            for other in lsh.query(m):
                uf.union(node, other)
        lowest: dict = {}
        for node in sketches:
            root = uf.find(node)
            lowest[root] = min(lowest.get(root, node), node)
        for node in sketches:
            if lowest[uf.find(node)] == node:
                out.append(min(nodes[node], key=_sorted_json))
    return out


def _canon(docs: list[dict]) -> list[str]:
    return sorted(json.dumps(d, sort_keys=True) for d in docs)


def _run(cfg, docs: list[dict], tmp_path: Path, name: str):
    return run_dedup_job(cfg, write_jsonl(docs, tmp_path / f"{name}.jsonl"), tmp_path / name)


@pytest.fixture(scope="module")
def originals(demo_inputs) -> list[str]:
    """105 real documents: Gutenberg paragraphs (alice29, plrabn12), then C4 pages
    when the shared corpus is beside the checkout (else more of alice29)."""
    alice = book_paragraphs(demo_inputs["inputs/books/alice29.txt"])
    texts = alice[:45] + book_paragraphs(demo_inputs["inputs/books/plrabn12.txt"])[:15]
    if SHARED_CORPUS.is_dir():
        texts += json_texts(SHARED_CORPUS / "c4" / "c4-en-sample.00000-of-00001.json.gz")[:45]
    else:
        texts += alice[45:90]
    assert len(texts) == 105
    return texts


def block_edited_pairs(originals: list[str], seed: int) -> list[dict]:
    """Each original and a copy with one contiguous run of 5-10% of its words
    replaced: true Jaccard about 0.65-0.85, where the LSH S-curve of (b=12, r=10)
    rises from 0.15 to 0.93, so whether a pair shares a band decides each case:
    the oracle comparison then checks the bands themselves."""
    import random

    rng = random.Random(seed)
    vocab = sorted({w for t in originals for w in t.split()})
    docs = []
    for i, text in enumerate(originals):
        words = text.split()
        k = max(1, round(rng.uniform(0.05, 0.10) * len(words)))
        start = rng.randrange(len(words) - k + 1)
        words[start : start + k] = [rng.choice(vocab) for _ in range(k)]
        docs.append(make_doc("c4", f"zone-{i}", text))
        docs.append(make_doc("c4", f"zone-copy-{i}", " ".join(words)))
    return docs


def test_near_duplicate_set_matches_oracle_and_true_jaccard(originals, tmp_path):
    cfg = dedup_config()
    mh = cfg.clean.near_dedup.web
    assert (mh.num_perm, mh.ngram, mh.threshold) == (128, 5, 0.8)
    docs = near_duplicate_set(originals[:75], seed=11, source="c4")
    zone = block_edited_pairs(originals[75:], seed=12)
    survivors, counters = _run(cfg, docs + zone, tmp_path, "set")

    # the same survivors as datasketch's MinHashLSH + union-find, band for band
    assert _canon(survivors) == _canon(oracle_survivors(docs + zone, cfg))
    zone_dropped = len(zone) - sum(1 for d in survivors if d["id"] in {z["id"] for z in zone})
    assert 0 < zone_dropped < len(zone) // 2  # some pairs share a band, some do not

    # precision and recall against the true Jaccard >= 0.8 (the near-duplicate set)
    truth = true_duplicates(docs, mh.ngram, mh.threshold)
    near = [d for d in docs if "near-copy" in json.loads(d["meta"])["native_id"]]
    edited = [d for d in docs if "edited-copy" in json.loads(d["meta"])["native_id"]]
    assert len(near) == len(edited) == 25
    for copy in edited:  # the hard negatives are really below the threshold
        i = int(json.loads(copy["meta"])["native_id"].rsplit("-", 1)[1])
        a, b = set(shingles(copy["text"], 5)), set(shingles(originals[i], 5))
        assert len(a & b) / len(a | b) < 0.75
    assert len(truth) == len(near)  # one of each (original, near copy) pair
    dropped = {d["id"] for d in docs} - {d["id"] for d in survivors}
    precision, recall = precision_recall(dropped, truth)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    assert counters["c4"]["drop.near_duplicate"] == len(docs) + len(zone) - len(survivors)
    assert counters["c4"].get("near_dedup.unconverged_nodes", 0) == 0


def test_small_inputs_and_repeated_ids(originals, tmp_path):
    cfg = dedup_config()
    paragraph, other, third = originals[0], originals[1], originals[3]
    p, q = make_doc("c4", "p", paragraph), make_doc("c4", "q", paragraph)
    twice = make_doc("c4", "twice", third)
    docs = [
        make_doc("c4", "empty", ""),
        make_doc("c4", "ok", "ok"),
        make_doc("c4", "punctuation", "-- ... !!"),
        p,
        q,  # the same paragraph under another id
        dict(twice, url="http://example.org/a"),  # an id that occurs twice, same text
        twice,
        dict(twice, text=other),  # the same id with another text: another node
    ]
    survivors, counters = _run(cfg, docs, tmp_path, "small")
    assert _canon(survivors) == _canon(oracle_survivors(docs, cfg))
    # "" and "-- ... !!" have no word: dropped, counted as no_shingles. "ok" is one
    # shingle and passes (too short for the quality rules, which run before this).
    # Of p and q the lowest id survives; of the two identical copies of `twice`
    # the one with the smallest JSON (url "") survives; `other` under the same id
    # is no near duplicate of anything and stays.
    assert sorted((d["id"], d["text"], d["url"]) for d in survivors) == sorted(
        [
            (make_doc("c4", "ok", "")["id"], "ok", ""),
            (min(p["id"], q["id"]), paragraph, ""),
            (twice["id"], third, ""),
            (twice["id"], other, ""),
        ]
    )
    assert counters["c4"]["drop.no_shingles"] == 2
    assert counters["c4"]["drop.near_duplicate"] == 2


def test_only_configured_sources_each_on_its_own(originals, tmp_path):
    cfg = dedup_config("sources.c4.near_dedup=web", "sources.commoncrawl.near_dedup=web")
    text = originals[2]
    docs = [
        make_doc("c4", "a", text),
        make_doc("c4", "b", text.upper()),  # same words after normalisation
        make_doc("commoncrawl", "a", text),  # another source: not a duplicate of c4's
        make_doc("books", "a", text),  # books: not near-deduplicated, passes untouched
        make_doc("books", "b", text),
        make_doc("books", "empty", ""),
    ]
    survivors, counters = _run(cfg, docs, tmp_path, "sources")
    assert _canon(survivors) == _canon(oracle_survivors(docs, cfg))
    assert sorted((d["source"], d["id"]) for d in survivors) == sorted(
        [("c4", min(docs[0]["id"], docs[1]["id"]))]
        + [(d["source"], d["id"]) for d in docs[2:]]
    )
    assert counters == {"c4": {"drop.near_duplicate": 1}}

    off = dedup_config("sources.c4.near_dedup=null", "sources.commoncrawl.near_dedup=null")
    survivors, _ = _run(off, docs, tmp_path, "off")
    assert _canon(survivors) == _canon(docs)


def _component_minimum(edges: list[tuple]) -> dict:
    uf = UnionFind()
    for u, v in edges:
        uf.union(u, v)
    nodes = list(uf.parent)
    return {n: min(m for m in nodes if uf.find(m) == uf.find(n)) for n in nodes}


@pytest.mark.parametrize("rounds", [1, 10])
def test_star_contraction_on_a_long_path(rounds):
    # a path of 40 nodes in shuffled id order plus a star and a pair: the worst
    # shape for label propagation; edges as the buckets give them, (child, parent)
    import random

    rng = random.Random(3)
    ids = [("c4", f"{i:04d}", "h") for i in rng.sample(range(1000), 48)]
    path = [(max(a, b), min(a, b)) for a, b in itertools.pairwise(ids[:40])]
    star = [(ids[41 + k], ids[40]) for k in range(5)]
    pair = [(max(ids[46], ids[47]), min(ids[46], ids[47]))]
    edges = path + star + pair
    minimum = _component_minimum(edges)
    with BeamTestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create(edges) | StarContraction(rounds)
        children = out | "Child" >> beam.Map(lambda e: e[0]) | "Children" >> beam.Distinct()
        if rounds == 10:
            # converged: every edge is (node, its component minimum)
            expected = sorted({(n, minimum[n]) for n in minimum if n != minimum[n]})
            assert_that(out | "Edges" >> beam.Distinct(), equal_to(expected), label="Stars")
            assert_that(children, equal_to([n for n in minimum if n != minimum[n]]), label="Drop")
        else:
            # at the bound: only non-minimum nodes are ever dropped (every
            # component keeps its minimum; some keep more than one node)
            non_minimum = {n for n in minimum if n != minimum[n]}

            def subset_and_short(got):
                assert set(got) <= non_minimum and len(got) < len(non_minimum)

            assert_that(children, subset_and_short, label="Drop")


def test_keep_survivors_counts_drops_and_unconverged_nodes():
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.beam.runner import collect_counters
    from pipeline.dedup.near import KeepSurvivors
    from pipeline.beam.packed import pack, unpack

    a, b, c = (("c4", i, "h") for i in ("a", "b", "c"))
    doc = make_doc("c4", "x", "some text")
    groups = [
        (c, {"docs": [pack(doc)], "parents": [a, b], "children": []}),  # two parents: unconverged
        (b, {"docs": [pack(doc)], "parents": [a], "children": [1]}),  # parent and child: unconverged
        (a, {"docs": [pack(dict(doc, url="z")), pack(doc)], "parents": [], "children": [2]}),  # a survivor
    ]
    p = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    out = p | beam.Create(groups) | beam.ParDo(KeepSurvivors()) | beam.MapTuple(lambda s, packed: (s, unpack(packed)))
    assert_that(out, equal_to([("c4", doc)]))
    result = p.run()
    result.wait_until_finish()
    assert collect_counters(result, ("c4",)) == {
        "c4": {"drop.near_duplicate": 3, "near_dedup.unconverged_nodes": 2}
    }
