"""CCNet line-level deduplication as a Beam transform (Wenzek et al. 2020, 3.1).

Every non-blank line of a document of the chosen sources is keyed by (shard
group, 8-byte SHA-1 of its normalised form); the line is kept where it first
occurs, the smallest (document id, line index) of its key, and removed
everywhere else. The shard group is the whole run, one crawl or one input file
(`clean.line_dedup_scope`, `pipeline.dedup.line_keys.line_dedup_group`).

Memory per key is constant whatever the skew (a cookie banner on 10^8 pages):

1. `LineKeys`: each document emits its distinct keys, each with the index of
   its first occurrence in the document (repeats inside a document fold here).
2. `FirstOccurrence`, a combiner: the minimum per key. Runners combine before
   the shuffle (combiner lifting), so no process holds a key's occurrences,
   only one accumulator per key (as TFDS C4 does with `Top.PerKey`).
3. The winners are exactly the lines to keep: each goes to its own document as
   (doc id, line index) and is joined with it by id, so a group is one
   document and at most one index per line of it. A non-blank line whose index
   did not come back lost to an earlier occurrence and is removed.

Joining each occurrence with its key's winner instead would group all the
occurrences of a key again (a `CoGroupByKey` by line key), and emitting a
removal record per repeat would shuffle n - 1 records for a line seen n times;
here the shuffle carries one record per distinct line of a document, one per
key, and each document once, and removals are only counted.

A document left with no text (every line a repeat: the same page in two
files) is dropped here, counted as `drop.line_dedup_empty`, so the drop is
this stage's, not language ID's. A document whose keys or lines fail to
compute is a dead letter of stage "line_dedup" (`GuardedDoFn`), gathered in
the transform's `dead_letters`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from pipeline.beam.steps import DEAD, GuardedDoFn, RouteBySource, unpacked_or_id
from pipeline.dedup.line_keys import SCOPES, keep_first_lines, line_dedup_group, line_hash
from pipeline.beam.packed import INLINE, MergeDocuments, Packer

Occurrence = tuple[str, int]  # (doc id, line index)
DOCS = "docs"  # LineKeys' output of (doc id, packed doc)
STAGE = "line_dedup"


def line_keys(doc: dict[str, Any], group: str) -> Iterator[tuple[tuple[str, bytes], Occurrence]]:
    """((group, line hash), (doc id, line index)) for every distinct non-blank
    line of `doc`, with the index of its first occurrence in the document."""
    first: dict[bytes, int] = {}
    for i, line in enumerate(doc["text"].split("\n")):
        h = line_hash(line)
        if h is not None and h not in first:
            first[h] = i
    for h, i in first.items():
        yield (group, h), (doc["id"], i)


class LineKeys(GuardedDoFn):
    """Document -> `line_keys` in its shard group of `scope`, and (doc id,
    packed doc) on `DOCS` once they are; counts the documents whose group is a
    fallback (`line_dedup_group`)."""

    STAGE = STAGE

    def __init__(self, scope: str, packer: Packer = INLINE):
        self.scope = scope
        self.packer = packer

    def work(self, doc: dict[str, Any]):
        meta = json.loads(doc["meta"]) if self.scope != "run" else {}
        group, resolved = line_dedup_group(doc["source"], meta, self.scope)
        if not resolved:
            self.counters.inc(doc["source"], "line_dedup.scope_fallback")
        yield from line_keys(doc, group)
        yield beam.pvalue.TaggedOutput(DOCS, (doc["id"], self.packer.pack(doc)))


class FirstOccurrence(beam.CombineFn):
    """The smallest (doc id, line index) of a key: one tuple per accumulator."""

    def create_accumulator(self) -> Occurrence | None:
        return None

    def add_input(self, acc: Occurrence | None, occurrence: Occurrence) -> Occurrence:
        return occurrence if acc is None or occurrence < acc else acc

    def merge_accumulators(self, accs) -> Occurrence | None:
        best = None
        for acc in accs:  # iterated once, never held
            if acc is not None and (best is None or acc < best):
                best = acc
        return best

    def extract_output(self, acc: Occurrence | None) -> Occurrence | None:
        return acc


class KeepFirstLines(GuardedDoFn):
    """(doc id, {"doc": [packed doc], "keep": [line indices]}) -> the document
    with only its blank lines and those first occurrences; none when no text
    is left (`drop.line_dedup_empty`)."""

    STAGE = STAGE

    def __init__(self, packer: Packer = INLINE):
        self.packer = packer

    def documents(self, item):
        return unpacked_or_id(self.packer, item[1]["doc"], item[0])

    def work(self, item):
        _, joined = item
        keep = set(joined["keep"])  # at most one per line of this document
        for doc in map(self.packer.unpack, joined["doc"]):
            text, removed = keep_first_lines(doc["text"], keep)
            if removed:
                self.counters.inc(doc["source"], "line_dedup.lines_removed", removed)
                if not text.strip():
                    self.counters.inc(doc["source"], "drop.line_dedup_empty")
                    continue
                doc = {**doc, "text": text}
            yield doc


class LineDedup(beam.PTransform):
    """Documents -> documents, CCNet line dedup applied to those of `sources`
    within shard groups of `scope` ("run", "dump" or "file"; see
    `pipeline.dedup.line_keys.line_dedup_group`).

    Attributes:
        dead_letters: once applied, the PCollection of its dead letters.
    """

    def __init__(self, sources: list[str], packer: Packer = INLINE, scope: str = "run"):
        super().__init__()
        if scope not in SCOPES:  # here, not on a worker
            raise ValueError(f"line dedup scope {scope!r} is not one of {SCOPES}")
        self.sources = frozenset(sources)
        self.packer = packer
        self.scope = scope

    def expand(self, docs):
        sources, packer = self.sources, self.packer
        routed = docs | "Scope" >> beam.ParDo(RouteBySource(sources, "others")).with_outputs("others", main="scoped")
        scoped, others = routed.scoped, routed.others
        keyed = scoped | "LineKeys" >> beam.ParDo(LineKeys(self.scope, packer)).with_outputs(DEAD, DOCS, main="keys")
        keep = (
            keyed.keys
            | "FirstOccurrence" >> beam.CombinePerKey(FirstOccurrence())
            | "ToDocument" >> beam.Values()  # (doc id, line index)
        )
        cleaned = (
            {"doc": keyed[DOCS], "keep": keep}
            | "Join" >> beam.CoGroupByKey()
            | "KeepFirstLines" >> beam.ParDo(KeepFirstLines(packer)).with_outputs(DEAD, main="docs")
        )
        self.dead_letters = (keyed[DEAD], cleaned[DEAD]) | "DeadLetters" >> beam.Flatten()
        return (cleaned.docs, others) | "Merge" >> MergeDocuments(packer)
