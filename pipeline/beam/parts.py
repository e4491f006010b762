"""Output files sized by bytes, not counted: the clean job's Document parts and
its dead-letter parts.

Every record carries a group (a source, or the dead letters), a hex key that is
a uniform hash (a document id), a sort key, its size in bytes and its payload.
A group of T bytes gets n = ceil(T / target) parts, and a record goes to part
floor(k * n / 2^32), k being the first 32 bits of its key: the parts are
contiguous key ranges of about T / n bytes each, between half the target and
the target. Parts left empty (a group of a few large records) are left out and
the others numbered 0..m-1 "of m", so no part number is missing. A part is
written from sorted runs (`pipeline.beam.extsort`): its writer holds a bounded
buffer, never the whole part, and computes the file's sha256 as it writes.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, NamedTuple

import apache_beam as beam

from pipeline.beam.extsort import sort_pairs
from pipeline.beam.steps import Counters


class Sized(NamedTuple):
    """One record to write: see the module doc."""

    group: str
    key: str  # hex, uniform: decides the part
    order: str  # the order within the part
    nbytes: int
    payload: Any


def part_count(total_bytes: int, target_bytes: int) -> int:
    """How many parts a group of `total_bytes` gets: at least one."""
    return max(1, -(-total_bytes // target_bytes))


def part_index(key: str, num_parts: int) -> int:
    """The part of a record among `num_parts`: its hex key's first 32 bits,
    scaled (parts are contiguous key ranges)."""
    return (int(key[:8], 16) * num_parts) >> 32


def part_name(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}"


# (group, index, count, payloads in order) -> the file's manifest entry, with "rows"
PartWriter = Callable[[str, int, int, Iterator[Any]], dict[str, Any]]


def _numbering(present: Iterable[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
    """(group, part index) of every non-empty part, once each -> (its number, how many
    the group has)."""
    by_group: dict[str, list[int]] = {}
    for group, index in present:
        by_group.setdefault(group, []).append(index)
    return {(g, i): (rank, len(idx)) for g, idx in by_group.items() for rank, i in enumerate(sorted(idx))}


class _WritePart(beam.DoFn):
    def __init__(self, write: PartWriter, count_as: str | None, uncounted: frozenset[str]):
        self.write = write
        self.count_as = count_as
        self.uncounted = uncounted

    def setup(self) -> None:
        self.counters = Counters()

    def process(self, item: tuple[tuple[str, int], Iterable[tuple[str, Any]]], numbering):
        (group, index), values = item
        number, count = numbering[(group, index)]
        entry = self.write(group, number, count, (payload for _, payload in sort_pairs(values)))
        if self.count_as and group not in self.uncounted:
            self.counters.inc(group, self.count_as, entry["rows"])
        yield entry


class WriteSizedParts(beam.PTransform):
    """`Sized` records -> one file per non-empty part, written by `write`;
    yields the writers' manifest entries.

    Args:
        target_bytes: the bytes a part aims at.
        write: a picklable `PartWriter`.
        count_as: a counter `<group>/<count_as>` incremented by each file's rows,
            but for the groups in `uncounted`.
    """

    def __init__(self, target_bytes: int, write: PartWriter, count_as: str | None = None,
                 uncounted: Iterable[str] = ()):
        super().__init__()
        self.target_bytes = target_bytes
        self.write = write
        self.count_as = count_as
        self.uncounted = frozenset(uncounted)

    def expand(self, records):
        target = self.target_bytes
        totals = (
            records
            | "Sizes" >> beam.Map(lambda r: (r.group, r.nbytes))
            | "TotalPerGroup" >> beam.CombinePerKey(sum)
        )
        keyed = records | "KeyByPart" >> beam.Map(
            lambda r, totals: ((r.group, part_index(r.key, part_count(totals[r.group], target))), (r.order, r.payload)),
            beam.pvalue.AsDict(totals),
        )
        numbering = (
            keyed
            | "PartKeys" >> beam.Keys()
            | "AllParts" >> beam.combiners.ToSet()  # one combine: no Distinct's shuffle first
            | "Number" >> beam.Map(_numbering)
        )
        return (
            keyed
            | "GroupParts" >> beam.GroupByKey()
            | "Write" >> beam.ParDo(_WritePart(self.write, self.count_as, self.uncounted),
                                    beam.pvalue.AsSingleton(numbering))
        )
