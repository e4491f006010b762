"""Near-duplicate removal in Beam: MinHash LSH buckets, connected components,
one survivor (the lowest id) per cluster.

LLaMA (2023, Section 2.1) removes near-duplicate documents from CommonCrawl (and
C4); the method here is chosen so that no machine needs the corpus in
memory:

1. **Signatures** (`pipeline.dedup.minhash`): documents of the configured
   sources are batched (`pipeline.beam.steps.batches`) and MinHashed with numpy, exactly
   as `datasketch.MinHash(num_perm, seed, hashfunc=shingle_hash32,
   scheme="affine32")` over word n-gram shingles (the manifest records the
   scheme and hash function). A document with no word has no shingle and is
   dropped (`<source>/drop.no_shingles`). A batch that fails is retried one
   document at a time, and a document that fails alone is a dead letter of
   stage "near_dedup" (`GuardedBatchDoFn`), gathered in `NearDedup.dead_letters`.
2. **LSH buckets**: each signature is cut into the `b` bands of `r` values that
   `datasketch.MinHashLSH(threshold, num_perm, weights)` would use (`lsh_params`:
   weights that favour recall, `pipeline.dedup.minhash.LSH_WEIGHTS`); each document emits
   `((source, band, band_hash), node)` and a `GroupByKey` forms the buckets.
   A bucket with k > 1 nodes gives k - 1 *star* edges from its smallest node to
   each other node (linear in k, and connected exactly as the bucket's clique).
3. **Connected components**: alternating Large-Star and Small-Star rounds
   (Kiveris et al., "Connected Components in MapReduce and Beyond", SoCC 2014),
   each a `GroupByKey` on the node, `components_rounds` rounds (a round = one
   Large-Star and one Small-Star). Edges are kept as `(child, parent)` with
   `parent < child`. When the rounds have converged, every component is a star
   around its minimum node.
4. **Survivors**: a node survives iff no edge gives it a smaller parent; its
   documents are joined back with a `CoGroupByKey`.
   Every dropped document is counted under `<source>/drop.near_duplicate`.

Documents come in and go out packed (`pipeline.beam.packed.Carried`): each is
unpacked once, for its signature, and the bytes that came in are the bytes that
go out; only copies of one node are unpacked again, to choose among them.

Nodes. A node is `node_key(doc) = (source, id, sha1(text))`, so within a source
the lowest id survives; two documents with the same id and the same text are one
node (the copy whose sorted-keys JSON is smallest survives, the other copies are
counted as near duplicates: their Jaccard similarity is 1), and two documents
with the same id but different texts are two nodes, deduplicated like any other
pair. `pipeline.dedup.exact.KeepOnePerId` normally removes repeated ids before this.

At the bound. The minimum node of a component never gets a parent, so whatever
the number of rounds, every cluster keeps at least one document; rounds that
stop before convergence can only keep *more* documents than the exact answer
(a non-minimum node with no smaller neighbour left). Such nodes are detected
(a node with two parents, or with both a parent and children, means the graph
is not yet a set of stars) and counted under `<source>/near_dedup.unconverged_nodes`;
0 means the survivors are exactly one per component. Large-Star/Small-Star
converges in O(log^2 n) rounds in the worst case and in a few rounds on
near-duplicate clusters, whose star edges from the bucket minimum are shallow.

Memory. Signatures are computed per batch; every other step is a `GroupByKey`
whose group is one bucket or one node's neighbourhood. The only groups that can
grow with the corpus are a single huge bucket or cluster (a page repeated a
million times: its bucket and its minimum node's neighbourhood hold a million
nodes, in one worker); the count of a node's children is combined, not listed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np

from pipeline.beam.packed import INLINE, Carried, Packer
from pipeline.beam.steps import (
    DEAD,
    Counters,
    GuardedBatchDoFn,
    RouteBySource,
    batches,
    carried_documents,
)
from pipeline.core.config import NearDedupConfig
from pipeline.dedup.minhash import band_hashes, lsh_params, signatures

BANDS = "bands"
PASS = "pass"  # documents of sources not deduplicated here
BATCH_SIZE = 256  # documents per MinHash batch

Node = tuple[str, str, str]  # (source, id, hex sha1 of the text)
Edge = tuple[Node, Node]  # (child, parent), parent < child


def node_key(doc: dict[str, Any]) -> Node:
    """The graph node of a document: `(source, id, hex SHA-1 of the UTF-8 text)`.

    Ordered as tuples, so within a source the smallest id comes first.
    """
    text = doc["text"].encode("utf-8", "surrogatepass")
    return doc["source"], doc["id"], hashlib.sha1(text).hexdigest()


def copy_order(doc: dict[str, Any]) -> str:
    """Sort key among documents with the same `node_key` (same source, id and text):
    the document's JSON with sorted keys; the smallest survives."""
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, default=str)


class MinHashBands(GuardedBatchDoFn):
    """Batches of `Carried` Documents -> (node, packed doc) on the main output
    (the packed bytes as they came) and ((source, band, band_hash), node) on
    `BANDS`; documents with no shingle dropped and counted (`drop.no_shingles`)."""

    STAGE = "near_dedup"

    def __init__(self, num_perm: int, ngram: int, seed: int, b: int, r: int, packer: Packer = INLINE):
        self.num_perm, self.ngram, self.seed, self.b, self.r = num_perm, ngram, seed, b, r
        self.packer = packer

    def documents(self, batch: list[Carried]) -> Iterator[dict[str, Any]]:
        return carried_documents(self.packer, batch)

    def work(self, batch: list[Carried]) -> Iterator[Any]:
        docs = [self.packer.unpack(packed) for _, packed in batch]
        sigs, has_shingles = signatures(
            [d["text"] for d in docs], self.num_perm, self.ngram, self.seed
        )
        # int64 view: Beam's coder writes a varint for 64-bit ints, pickles larger ones
        keys = band_hashes(sigs[has_shingles], self.b, self.r).view(np.int64).tolist()
        rows = iter(keys)
        for doc, (_, packed), ok in zip(docs, batch, has_shingles.tolist()):
            if not ok:
                self.counters.inc(doc["source"], "drop.no_shingles")
                continue
            node = node_key(doc)
            yield node, packed
            for band, band_hash in enumerate(next(rows)):
                yield beam.pvalue.TaggedOutput(BANDS, ((doc["source"], band, band_hash), node))


def bucket_edges(item: tuple[Any, Iterable[Node]]) -> Iterator[Edge]:
    """((source, band, band_hash), nodes) -> star edges (node, smallest node).

    Two passes over the group (Beam's grouped values are re-iterable); a node
    listed twice gives a repeated edge, which the next round's sets absorb.
    """
    _, nodes = item
    parent = min(nodes)
    for node in nodes:
        if node != parent:
            yield node, parent


def _both_directions(edge: Edge) -> Iterator[Edge]:
    u, v = edge
    yield u, v
    yield v, u


def _large_star(item: tuple[Node, Iterable[Node]]) -> Iterator[Edge]:
    """Large-Star at node u: every larger neighbour v gets the edge (v, m), with m
    the smallest of u and its neighbours (Kiveris et al. 2014, Algorithm 1)."""
    u, neighbours = item
    neighbours = set(neighbours)
    m = min(min(neighbours), u)
    for v in neighbours:
        if v > u:
            yield v, m


def _small_star(item: tuple[Node, Iterable[Node]]) -> Iterator[Edge]:
    """Small-Star at node u, given its smaller neighbours N: u and every v in N
    get the edge (., m), m = min(N) (Kiveris et al. 2014, Algorithm 2)."""
    u, smaller = item
    smaller = set(smaller)
    m = min(smaller)
    yield u, m
    for v in smaller:
        if v != m:
            yield v, m


class StarContraction(beam.PTransform):
    """`rounds` of Large-Star then Small-Star over a PCollection of edges
    (child, parent), parent < child; returns edges of the same form spanning
    the same components (stars around each component minimum once converged)."""

    def __init__(self, rounds: int):
        super().__init__()
        self.rounds = rounds

    def expand(self, edges):
        for i in range(self.rounds):
            edges = (
                edges
                | f"LargeStarEmit{i}" >> beam.FlatMap(_both_directions)
                | f"LargeStarGroup{i}" >> beam.GroupByKey()
                | f"LargeStar{i}" >> beam.FlatMap(_large_star)
                # every edge is (child, parent) with parent < child: key by the child
                | f"SmallStarGroup{i}" >> beam.GroupByKey()
                | f"SmallStar{i}" >> beam.FlatMap(_small_star)
            )
        return edges


class KeepSurvivors(beam.DoFn):
    """(node, {"docs": packed docs, "parents", "children"}) -> the node's
    surviving document, still packed (`Carried`).

    A node with a parent is a near duplicate of a smaller node: all its documents
    are dropped. Otherwise one document survives (`copy_order`), the other copies
    of the same node are dropped. Each drop is counted (`drop.near_duplicate`);
    a node that shows the rounds did not converge is counted
    (`near_dedup.unconverged_nodes`)."""

    def __init__(self, packer: Packer = INLINE):
        self.packer = packer

    def setup(self) -> None:
        self.counters = Counters()

    def process(self, item: tuple[Node, dict[str, Iterable[Any]]]) -> Iterator[dict[str, Any]]:
        node, groups = item
        source = node[0]
        docs = list(groups["docs"])
        parents = set(groups["parents"])
        has_children = any(n > 0 for n in groups["children"])
        if len(parents) > 1 or (parents and has_children):
            self.counters.inc(source, "near_dedup.unconverged_nodes")
        if not docs:
            return
        if parents:
            self.counters.inc(source, "drop.near_duplicate", len(docs))
            return
        if len(docs) > 1:  # copy_order serialises a document: only when there is a choice
            docs.sort(key=lambda packed: copy_order(self.packer.unpack(packed)))
            self.counters.inc(source, "drop.near_duplicate", len(docs) - 1)
        yield source, docs[0]


class NearDedup(beam.PTransform):
    """`Carried` Documents -> those without near duplicates, for one group of
    `clean.near_dedup` (`Config.near_dedup_groups`).

    Only documents of `sources` are deduplicated, each source on its own; the
    others pass through untouched. Within a deduplicated source, documents
    whose shingle sets collide in at least one LSH band (b, r from
    `lsh_params(threshold, num_perm)`) are linked, and each connected
    component keeps only its lowest `node_key` (the lowest id). Output order
    is unspecified. Counters: `<source>/drop.no_shingles`,
    `<source>/drop.near_duplicate`, `<source>/near_dedup.unconverged_nodes`.

    Args:
        settings: the group's MinHash settings (num_perm, ngram, threshold,
            seed, components_rounds).
        sources: the sources deduplicated (those whose `near_dedup` names the group).
        packer: how the Documents came packed (`pipeline.beam.packed`).
    Attributes:
        b, r: the LSH bands and rows per band in use (for the manifest).
        dead_letters: once applied, the PCollection of its dead letters.
    Raises:
        ValueError (at construction): a threshold/num_perm for which datasketch
            would pick fewer than two bands (see `lsh_params`).
    """

    def __init__(self, settings: NearDedupConfig, sources: Iterable[str], packer: Packer = INLINE):
        super().__init__()
        self.packer = packer
        self.mh = settings.model_copy()
        self.sources = frozenset(sources)
        self.b, self.r = lsh_params(settings.threshold, settings.num_perm)

    def expand(self, docs):
        mh, sources = self.mh, self.sources
        routed = docs | "Route" >> beam.ParDo(RouteBySource(sources, PASS, carried=True)).with_outputs(
            PASS, main="todo")
        todo, passthrough = routed.todo, routed[PASS]
        signed = (
            todo
            | "Batch" >> batches(BATCH_SIZE)
            | "MinHash" >> beam.ParDo(
                MinHashBands(mh.num_perm, mh.ngram, mh.seed, self.b, self.r, self.packer)
            ).with_outputs(BANDS, DEAD, main="docs")
        )
        self.dead_letters = signed[DEAD]
        edges = (
            signed[BANDS]
            | "GroupBuckets" >> beam.GroupByKey()
            | "BucketEdges" >> beam.FlatMap(bucket_edges)
            | "Components" >> StarContraction(mh.components_rounds)
        )
        parents = edges  # (child, parent)
        children = (
            edges
            | "Parents" >> beam.Map(lambda edge: edge[1])
            | "CountChildren" >> beam.combiners.Count.PerElement()
        )
        survivors = (
            {"docs": signed.docs, "parents": parents, "children": children}
            | "JoinNodes" >> beam.CoGroupByKey()
            | "KeepSurvivors" >> beam.ParDo(KeepSurvivors(self.packer))
        )
        return (survivors, passthrough) | "Merge" >> beam.Flatten()
