"""CCNet line-level deduplication as a Beam transform (Wenzek et al. 2020, 3.1).

Every non-blank line of a document of the chosen sources is keyed by
(source, 8-byte SHA-1 of its normalised form); a `GroupByKey` on that key finds
the line's first occurrence (smallest (document id, line index)), and every
other occurrence is removed from its document. The whole run is the shard group.
No process holds more than one key's occurrences, so memory stays flat.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import apache_beam as beam

from pipeline.beam_util import Counters
from pipeline.filters.ccnet import line_hash, remove_lines
from pipeline.packed import INLINE, MergeDocuments, Packer


def line_keys(doc: dict[str, Any]) -> Iterator[tuple[tuple[str, bytes], tuple[str, int]]]:
    """((source, line hash), (doc id, line index)) for every non-blank line."""
    for i, line in enumerate(doc["text"].split("\n")):
        h = line_hash(line)
        if h is not None:
            yield (doc["source"], h), (doc["id"], i)


def repeated_occurrences(item: tuple[Any, Iterable[tuple[str, int]]]) -> Iterator[tuple[str, int]]:
    """All occurrences of one line but the first: (doc id, line index) to remove."""
    _, occurrences = item
    occurrences = sorted(occurrences)
    yield from occurrences[1:]


class RemoveLines(beam.DoFn):
    """(doc id, {"doc": [packed doc], "drop": [line indices]}) -> the document without them."""

    def __init__(self, packer: Packer = INLINE):
        self.packer = packer

    def setup(self) -> None:
        self.counters = Counters()

    def process(self, item):
        _, joined = item
        drop = set(joined["drop"])
        for doc in map(self.packer.unpack, joined["doc"]):
            if drop:
                self.counters.inc(doc["source"], "line_dedup.lines_removed", len(drop))
                doc = {**doc, "text": remove_lines(doc["text"], drop).strip("\n")}
            yield doc


class LineDedup(beam.PTransform):
    """Documents -> documents, CCNet line dedup applied to those of `sources`."""

    def __init__(self, sources: list[str], packer: Packer = INLINE):
        super().__init__()
        self.sources = frozenset(sources)
        self.packer = packer

    def expand(self, docs):
        sources, packer = self.sources, self.packer
        scoped, others = docs | "Scope" >> beam.Partition(
            lambda d, _: 0 if d["source"] in sources else 1, 2
        )
        drops = (
            scoped
            | "LineKeys" >> beam.FlatMap(line_keys)
            | "GroupLines" >> beam.GroupByKey()
            | "Repeats" >> beam.FlatMap(repeated_occurrences)
        )
        by_id = scoped | "KeyDocs" >> beam.Map(lambda d: (d["id"], packer.pack(d)))
        cleaned = (
            {"doc": by_id, "drop": drops}
            | "Join" >> beam.CoGroupByKey()
            | "RemoveLines" >> beam.ParDo(RemoveLines(packer))
        )
        return (cleaned, others) | "Merge" >> MergeDocuments(packer)
