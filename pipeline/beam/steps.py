"""The steps every Beam job is made of: a DoFn whose failing record becomes a
dead letter, not a failed job (`GuardedDoFn`, `GuardedBatchDoFn`, `GuardedMap`),
counters under the step's own name (`Counters`), and routing by source."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.beam.packed import Carried, Packed, Packer, SpillError
from pipeline.formats.errors import DeadLetter

_log = logging.getLogger("pipeline")


class RouteBySource(beam.DoFn):
    """Documents of `sources` on the main output, the others on tag `other`
    (with `carried`, `Carried` Documents: `(source, packed)`).

    Not `beam.Partition`: Beam calls a DoFn given extra arguments (the
    partition function) through an invoker that keeps its last element
    referenced until it gets another one, bundles apart, so a huge Document
    could stay in the worker's memory through the stages that follow.
    """

    def __init__(self, sources: frozenset[str], other: str, carried: bool = False):
        self.sources = sources
        self.other = other
        self.carried = carried

    def process(self, doc: Any) -> Iterator[Any]:
        source = doc[0] if self.carried else doc["source"]
        yield doc if source in self.sources else beam.pvalue.TaggedOutput(self.other, doc)


class Counters:
    """Beam counters named `<source>/<name>`, created once per DoFn instance."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, str], object] = {}

    def inc(self, source: str, name: str, n: int = 1) -> None:
        key = (source, name)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = Metrics.counter(source, name)
        counter.inc(n)


# The tagged output of records a stage could not process: {"source", "path",
# "record", "reason"} (`pipeline.sources.base.DeadLetter`), written by the job
DEAD = "dead_letter"
# Failures of the machine, not of a record's content: the runner retries the bundle
NOT_THE_RECORDS = (MemoryError, OSError, SpillError)
MAX_REASON_CHARS = 500  # of an exception's message in a dead letter's reason


class _StagedCounters:
    """Counter increments held until the record they count is done: a record
    that fails (and is retried alone, or dead-lettered) counts nothing twice."""

    def __init__(self, counters: Counters):
        self.committed = counters
        self.pending: dict[tuple[str, str], int] = {}

    def inc(self, source: str, name: str, n: int = 1) -> None:
        key = (source, name)
        self.pending[key] = self.pending.get(key, 0) + n

    def commit(self) -> None:
        for (source, name), n in self.pending.items():
            self.committed.inc(source, name, n)
        self.pending.clear()

    def discard(self) -> None:
        self.pending.clear()


def dead_letter(stage: str, doc: dict[str, Any], error: BaseException) -> dict[str, str]:
    """The dead-letter record of a Document (or the fields known of it) that
    `stage` failed on: its source, url (a file source's path), id, and
    "<stage>: <ExceptionType>: <message>"."""
    message = str(error)
    if len(message) > MAX_REASON_CHARS:
        message = message[:MAX_REASON_CHARS] + "..."
    return DeadLetter(str(doc.get("source", "")), str(doc.get("url", "")), str(doc.get("id", "")),
                      f"{stage}: {type(error).__name__}: {message}")._asdict()


class GuardedDoFn(beam.DoFn):
    """A stage's DoFn in which one record cannot fail the job.

    A subclass names its `STAGE` and does its work in `work(element)` instead of
    `process`. The outputs of an element are emitted once its work is done, and
    the counters it incremented (`self.counters`, made by `setup`) committed;
    an exception instead (other than `NOT_THE_RECORDS`) discards both and
    makes one dead letter per Document of the element (`documents`), tagged
    DEAD, logged and counted as `<source>/dead_letter` and
    `<source>/dead_letter.<STAGE>`. A pipeline applying it must declare DEAD
    among its outputs.
    """

    STAGE = ""

    def setup(self) -> None:
        self.counters = _StagedCounters(Counters())

    def work(self, element: Any) -> Iterable[Any]:
        raise NotImplementedError

    def documents(self, element: Any) -> Iterable[dict[str, Any]]:
        """The Documents an element holds, or the fields known of each (an id),
        for its dead letters: the element itself by default."""
        return [element]

    def process(self, element: Any) -> Iterator[Any]:
        out = self.attempt(element)
        yield from self.dead_letters(element, out) if isinstance(out, Exception) else out

    def attempt(self, element: Any) -> list[Any] | Exception:
        """`work(element)`'s outputs, its counts committed; or what it raised,
        its counts discarded."""
        try:
            out = list(self.work(element))
        except NOT_THE_RECORDS:
            raise
        except Exception as e:  # noqa: BLE001 - whatever a record's content raises
            self.counters.discard()
            return e
        self.counters.commit()
        return out

    def dead_letters(self, element: Any, error: Exception) -> Iterator[beam.pvalue.TaggedOutput]:
        try:
            docs = list(self.documents(element))
        except Exception:  # noqa: BLE001 - too broken to say which documents it held
            docs = [{}]
        for doc in docs:
            record = dead_letter(self.STAGE, doc, error)
            _log.warning("%s failed on %s document %s (%s): %s", self.STAGE, record["source"],
                         record["record"], record["path"], record["reason"], exc_info=error)
            self.counters.committed.inc(record["source"], DEAD)
            self.counters.committed.inc(record["source"], f"{DEAD}.{self.STAGE}")
            yield beam.pvalue.TaggedOutput(DEAD, record)


def unpacked_or_id(packer: Packer, packed: Iterable[Packed], doc_id: str) -> Iterator[dict[str, Any]]:
    """The packed Documents of a group, for its dead letters (`GuardedDoFn.documents`);
    {"id": doc_id} for one that cannot be unpacked."""
    for p in packed:
        try:
            yield packer.unpack(p)
        except Exception:  # noqa: BLE001 - named by its id instead
            yield {"id": doc_id}


def carried_documents(packer: Packer, carried: Iterable[Carried]) -> Iterator[dict[str, Any]]:
    """`Carried` Documents, for their dead letters (`GuardedDoFn.documents`);
    {"source": source} for one that cannot be unpacked."""
    for source, packed in carried:
        try:
            yield packer.unpack(packed)
        except Exception:  # noqa: BLE001 - named by its source instead
            yield {"source": source}


def batches(size: int) -> beam.BatchElements:
    """Elements -> lists of `size` (a bundle's last one shorter). A fixed size:
    Beam's adaptive one fits a regression of time on size after every batch,
    0.4 CPU-s a run of 64 MB through three batching steps, and does not make
    the batches any more even (they end with the bundle either way)."""
    return beam.BatchElements(min_batch_size=size, max_batch_size=size)


class GuardedBatchDoFn(GuardedDoFn):
    """A `GuardedDoFn` over batches of Documents (`batches`): when a
    batch fails, its Documents are retried one by one (each as a batch of one),
    so only those that fail alone are dead-lettered."""

    def documents(self, batch: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
        return batch

    def process(self, batch: list[dict[str, Any]]) -> Iterator[Any]:
        out = self.attempt(batch)
        if not isinstance(out, Exception):
            yield from out
        elif len(batch) == 1:
            yield from self.dead_letters(batch, out)
        else:
            for doc in batch:
                yield from super().process([doc])


class GuardedMap(GuardedDoFn):
    """`beam.Map(fn, *args)` as a `GuardedDoFn` of stage `stage` over Documents."""

    def __init__(self, stage: str, fn: Callable[..., Any], *args: Any):
        self.STAGE = stage
        self.fn = fn
        self.args = args

    def work(self, doc: dict[str, Any]) -> Iterator[Any]:
        yield self.fn(doc, *self.args)
