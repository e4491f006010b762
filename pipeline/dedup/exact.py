"""Exact deduplication in Beam: one document per id, then one per content.

The same record can arrive twice (a Wikipedia page in two dumps, a paper as a
`.tex` and inside a `.tar.gz`): `KeepOnePerId` keeps the newest. Documents of
one source with the same normalised text (`exact_keys.content_hash`) are then
grouped by that hash and the smallest id is kept (`KeepFirstOfDuplicates`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from operator import itemgetter
from typing import Any

from pipeline.beam.packed import INLINE, Packed, Packer
from pipeline.beam.steps import GuardedDoFn, unpacked_or_id
from pipeline.dedup.exact_keys import content_hash


def _newest_first(doc: dict[str, Any]) -> tuple[str, str, str, str]:
    """Sort key among documents sharing an id: newest `meta.timestamp` first, then
    the smallest content hash, then url and meta (the same paper as a `.tex` and
    inside a `.tar.gz`), so the choice never depends on arrival order."""
    stamp = str(json.loads(doc["meta"]).get("timestamp", ""))
    inverted = "".join(chr(0x10FFFF - ord(ch)) for ch in stamp)
    return inverted, content_hash(doc["text"]), doc["url"], doc["meta"]


class KeepOnePerId(GuardedDoFn):
    """(id, packed docs) -> one document. The same record can come twice (a
    Wikipedia page in two dumps, at two revisions): keep the newest, count the rest."""

    STAGE = "one_per_id"

    def __init__(self, packer: Packer = INLINE):
        self.packer = packer

    def documents(self, item: tuple[str, Iterable[Packed]]) -> Iterator[dict[str, Any]]:
        return unpacked_or_id(self.packer, item[1], item[0])

    def work(self, item: tuple[str, Iterable[Packed]]):
        _, packed = item
        docs = list(map(self.packer.unpack, packed))
        if len(docs) > 1:  # the sort key hashes the text: only when there is a choice
            docs.sort(key=_newest_first)
            self.counters.inc(docs[0]["source"], "drop.duplicate_id", len(docs) - 1)
        yield docs[0]


def key_by_content(doc: dict[str, Any], packer: Packer) -> tuple[tuple[str, str], tuple[str, Packed]]:
    """A Document -> ((source, `content_hash`), (id, packed Document)): its exact-duplicate key."""
    return (doc["source"], content_hash(doc["text"])), (doc["id"], packer.pack(doc))


class KeepFirstOfDuplicates(GuardedDoFn):
    """((source, hash), (id, packed doc)s) -> the document with the smallest id,
    still packed (`Carried`: the near-dedup steps and the writer unpack it
    where they read it); the rest counted."""

    STAGE = "exact_dedup"

    def __init__(self, packer: Packer = INLINE):
        self.packer = packer

    def documents(self, item: tuple[tuple[str, str], Iterable[tuple[str, Packed]]]) -> Iterator[dict[str, Any]]:
        (source, _), docs = item
        for doc_id, packed in docs:
            yield {"source": source, **next(unpacked_or_id(self.packer, [packed], doc_id))}

    def work(self, item: tuple[tuple[str, str], Iterable[tuple[str, Packed]]]):
        (source, _), docs = item
        docs = sorted(docs, key=itemgetter(0))  # ids are unique here (KeepOnePerId)
        if len(docs) > 1:
            self.counters.inc(source, "drop.exact_duplicate", len(docs) - 1)
        yield source, docs[0][1]
