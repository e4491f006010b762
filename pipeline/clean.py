"""The clean job (Beam): read every source in its native format, clean it,
identify language, apply quality rules, drop exact duplicates, and write
Document Arrow files per source, a dead-letter file and a stats file.

Input patterns are expanded on the workers. On the local runner, Documents spill
between stages to `<run>/_spill/` (`pipeline.beam.packed`), deleted when the job ends.

Output (`<out_dir>/clean/`, on any Beam filesystem; `pipeline.core.io.Run`):
    run-<id>/<source>/part-<i>-of-<n>.arrow   Arrow IPC files, DOCUMENT_SCHEMA, sorted by id
    run-<id>/dead_letter/part-<i>-of-<n>.jsonl  records that could not be parsed, and
                                         documents a stage raised on ("<stage>: <error>"),
                                         with reasons (none: no file)
    manifest.json                        written last, the commit: files, rows, bytes,
                                         sha256; counters per source; the input files'
                                         fingerprint and those no reader takes
                                         (`unread_inputs`, `pipeline.inputs`)

Parts are sized by bytes (`clean.part_bytes`; `pipeline.beam.parts`), each a
contiguous range of ids, written from sorted runs by the worker that hashes it.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import pickle
import posixpath
import time
from collections.abc import Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa

from pipeline.beam.packed import INLINE, Carried, Packed, Packer
from pipeline.beam.parts import Sized, WriteSizedParts, part_name
from pipeline.beam.runner import (
    collect_counters,
    pipeline_options,
    quiet_beam_logging,
    run_pipeline,
    warn_unshared,
)
from pipeline.beam.steps import (
    DEAD,
    NOT_THE_RECORDS,
    Counters,
    GuardedBatchDoFn,
    GuardedDoFn,
    GuardedMap,
    batches,
    carried_documents,
    dead_letter,
)
from pipeline.core import io
from pipeline.core.config import SOURCES, Config, PipelineError
from pipeline.core.schema import (
    CLEAN_FORMAT,
    DOCUMENT_FIELDS,
    DOCUMENT_SCHEMA,
    ContractError,
    check_listed,
    clean_dir,
    clean_files,
    load_clean_manifest,
    write_arrow,
)
from pipeline.dedup.exact import KeepFirstOfDuplicates, KeepOnePerId, key_by_content
from pipeline.dedup.lines import LineDedup
from pipeline.dedup.minhash import HASHFUNC, LSH_WEIGHTS, SCHEME, lsh_params
from pipeline.dedup.near import NearDedup
from pipeline.filters.c4 import C4_VARIANTS, clean_c4_page, load_badwords
from pipeline.filters.quality import language_rejected, too_large, too_short
from pipeline.filters.text import clean_document, replacement_rejected
from pipeline.inputs import (
    combine_keys,
    discover,
    file_key,
    fingerprint,
    listing,
    source_patterns,
)
from pipeline.sources import get_reader, source_hook
from pipeline.sources.base import Count, DeadLetter, Part, Skip

log = logging.getLogger(__name__)
PIECES = "pieces"  # pieces of documents grouped by key before their source assembles them
INPUTS = "inputs"  # counter namespace: files and bytes matched per source
FILES_LIST = "_files.json"  # a run's written parts, for the launcher's manifest
INPUTS_LIST = "_inputs.json"  # the run's input fingerprint and unread files, for the manifest
MAX_UNREAD_LISTED = 1000  # unread files named in the manifest (all are counted)


def _dead(source: str, path: str, record: str, reason: str) -> dict[str, str]:
    return DeadLetter(source, path, record, reason)._asdict()


def expand_inputs(item: tuple[str, str]) -> Iterator[tuple[Any, ...]]:
    """(source, pattern) -> (source, path, bytes) for every record it matches,
    listed on the worker (`pipeline.inputs.discover`), and (source, path,
    bytes, reason) for every file no reader takes (an unread file)."""
    source, pattern = item
    found = discover(source, pattern)
    for path, nbytes in found.records:
        yield source, path, nbytes
    for path, nbytes, reason in found.unread:
        yield source, path, nbytes, reason


class CountInputs(beam.DoFn):
    """`expand_inputs`' files, each once: records (source, path, bytes) counted as
    `inputs/<source>.files` and `.bytes` and passed on; unread files counted as
    `inputs/<source>.unread_files` and `.unread_bytes`."""

    def setup(self) -> None:
        self.counters = Counters()

    def process(self, item: tuple[Any, ...]) -> Iterator[tuple[str, str, int]]:
        source, _, nbytes = item[:3]
        read = len(item) == 3
        prefix = "" if read else "unread_"
        self.counters.inc(INPUTS, f"{source}.{prefix}files")
        self.counters.inc(INPUTS, f"{source}.{prefix}bytes", nbytes)
        if read:
            yield item


class InputsList(beam.CombineFn):
    """`expand_inputs`' files, each once -> (`combine_keys` of their `file_key`s,
    the first MAX_UNREAD_LISTED unread files in order): `write_inputs_list`'s
    arguments, in one combine."""

    def create_accumulator(self) -> tuple[int, list[tuple[str, str, int, str]]]:
        return 0, []

    def add_input(self, acc, item: tuple[Any, ...]):
        key, unread = acc
        if len(item) == 4:
            unread.append(item)
            if len(unread) > 2 * MAX_UNREAD_LISTED:
                unread = heapq.nsmallest(MAX_UNREAD_LISTED, unread)
        return combine_keys([key, file_key(*item[:3])]), unread

    def merge_accumulators(self, accs):
        accs = list(accs)
        unread = heapq.nsmallest(MAX_UNREAD_LISTED, itertools.chain.from_iterable(u for _, u in accs))
        return combine_keys(k for k, _ in accs), unread

    def extract_output(self, acc):
        key, unread = acc
        return key, heapq.nsmallest(MAX_UNREAD_LISTED, unread)


def write_inputs_list(out_dir: str, key: int, unread: list[tuple[str, str, int, str]]) -> None:
    """`<out_dir>/_inputs.json`: the fingerprint of the input files (every one,
    read or not; `pipeline.inputs.fingerprint`) and the first MAX_UNREAD_LISTED
    unread ones."""
    io.write_json(io.join(out_dir, INPUTS_LIST), {
        "fingerprint": f"{key:016x}",
        "unread": [{"source": s, "path": p, "bytes": n, "reason": r} for s, p, n, r in unread]})


class SplitInputs(beam.DoFn):
    """(source, path, bytes) -> (source, path, span): an input over
    `clean.split_bytes` whose source can split it (`split` in its module) becomes
    its spans, read by any worker; any other input is one span, None."""

    def __init__(self, cfg_json: str):
        self.cfg_json = cfg_json

    def setup(self) -> None:
        self.cfg = Config.model_validate_json(self.cfg_json)
        self.counters = Counters()

    def process(self, item: tuple[str, str, int]) -> Iterator[tuple[str, str, tuple[int, ...] | None]]:
        source, path, nbytes = item
        split = source_hook(source, "split") if nbytes > self.cfg.clean.split_bytes else None
        spans = split(path, nbytes, self.cfg) if split else None
        if not spans:
            yield source, path, None
            return
        self.counters.inc(INPUTS, f"{source}.splits", len(spans))
        for span in spans:
            yield source, path, tuple(span)


def admit_document(doc: dict[str, Any], max_doc_bytes: int) -> tuple[dict[str, Any], str | None, dict[str, int]]:
    """A Document as it leaves its reader -> (the Document without lone
    surrogates or control characters, `pipeline.filters.text.clean_document`;
    its drop reason or None: "too_large" over `max_doc_bytes`, decided first,
    or "replacement_ratio"; what the text hygiene changed, {name: count})."""
    if too_large(doc, max_doc_bytes):
        return doc, "too_large", {}
    doc, fixed = clean_document(doc)
    return doc, replacement_rejected(doc), fixed


class _Records(beam.DoFn):
    """What a reader or an assembler yields, routed: Documents out, each through
    `admit_document` (its drop counted as `drop.<reason>`, its repairs as
    `text.<name>`; a Document that fails there is a dead letter of stage
    "read"), Skips counted by reason, Counts counted, DeadLetters tagged DEAD,
    Parts tagged PIECES keyed by (source, key), their values pickled and packed
    (`pipeline.beam.packed`: spilled on the local runner)."""

    def __init__(self, cfg_json: str, packer: Packer = INLINE):
        self.cfg_json = cfg_json
        self.packer = packer

    def setup(self) -> None:
        self.cfg = Config.model_validate_json(self.cfg_json)
        self.counters = Counters()

    def route(self, source: str, where: str, records: Iterable[Any]) -> Iterator[Any]:
        n = 0
        try:
            for rec in records:
                n += 1
                if isinstance(rec, Skip):
                    self.counters.inc(source, f"skip.{rec.reason}")
                elif isinstance(rec, DeadLetter):
                    self.counters.inc(source, "dead_letter")
                    yield beam.pvalue.TaggedOutput(DEAD, rec._asdict())
                elif isinstance(rec, Count):
                    self.counters.inc(rec.source, rec.name, rec.n)
                elif isinstance(rec, Part):
                    value = self.packer.put(pickle.dumps(rec.value, protocol=pickle.HIGHEST_PROTOCOL))
                    yield beam.pvalue.TaggedOutput(PIECES, ((rec.source, rec.key), value))
                else:
                    try:
                        doc, reason, fixed = admit_document(rec, self.cfg.sources[source].max_doc_bytes)
                    except NOT_THE_RECORDS:
                        raise
                    except Exception as e:  # noqa: BLE001 - this record only: the reader goes on
                        self.counters.inc(source, "dead_letter")
                        yield beam.pvalue.TaggedOutput(
                            DEAD, dead_letter("read", {**(rec if isinstance(rec, dict) else {}), "source": source}, e)
                        )
                        continue
                    self.counters.inc(source, "docs_read")
                    for name, k in fixed.items():
                        self.counters.inc(source, f"text.{name}", k)
                    if reason:
                        self.counters.inc(source, f"drop.{reason}")
                    else:
                        yield doc
        except Exception as e:  # a reader bug must not kill the job: dead-letter the rest
            log.exception("reading %s failed on %s", source, where)
            self.counters.inc(source, "dead_letter")
            yield beam.pvalue.TaggedOutput(
                DEAD, _dead(source, where, f"after record {n}", f"{type(e).__name__}: {e}")
            )


class ReadSource(_Records):
    """(source, path, span) -> Documents (and Parts, Skips, DeadLetters: `_Records`)."""

    def process(self, item: tuple[str, str, tuple[int, ...] | None]) -> Iterator[Any]:
        source, path, span = item
        reader = get_reader(source)
        if reader is None:
            self.counters.inc(source, "dead_letter")
            yield beam.pvalue.TaggedOutput(
                DEAD, _dead(source, path, "", "no reader for this source yet")
            )
            return
        records = reader(path, self.cfg) if span is None else reader(path, self.cfg, span)
        where = path if span is None else f"{path} span {list(span)}"
        yield from self.route(source, where, records)


class AssembleSource(_Records):
    """((source, key), values) -> what the source's `assemble` builds of one group."""

    def process(self, item: tuple[tuple[str, str], Iterable[Any]]) -> Iterator[Any]:
        (source, key), values = item
        assemble = source_hook(source, "assemble")
        values = (pickle.loads(self.packer.get(v)) for v in values)
        yield from self.route(source, f"{source} key {key}", assemble(key, values, self.cfg))


class IdentifyLanguage(GuardedBatchDoFn):
    """Batches of Documents -> Documents with `lang`/`lang_score`; the source's keep
    policy applied (drop reason "lang"). The model loads once per worker."""

    STAGE = "language_id"

    def __init__(self, cfg_json: str):
        self.cfg_json = cfg_json

    def setup(self) -> None:
        from pipeline.filters.langid import LanguageIdentifier

        super().setup()
        self.cfg = Config.model_validate_json(self.cfg_json)
        self.lid = LanguageIdentifier(io.local_copy(self.cfg.langid.model))

    def work(self, batch: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        todo = [i for i, d in enumerate(batch) if not d["lang"]]  # Wikipedia's comes from the dump
        batch = list(batch)  # Beam inputs are immutable: annotated copies go downstream
        for i, (lang, score) in zip(todo, self.lid.predict([batch[i]["text"] for i in todo])):
            batch[i] = {**batch[i], "lang": lang, "lang_score": score}
        for doc in batch:
            src = self.cfg.sources[doc["source"]]
            reason = language_rejected(doc, src.langs, src.min_lang_score)
            if reason:
                self.counters.inc(doc["source"], f"drop.{reason}")
            else:
                yield doc


class C4Rules(GuardedDoFn):
    """The C4 page heuristics on the configured sources: removed lines counted as
    `c4.line.<reason>`, a dropped page as `drop.c4_<reason>`."""

    STAGE = "c4_rules"

    def __init__(self, cfg_json: str):
        self.cfg_json = cfg_json

    def setup(self) -> None:
        super().setup()
        cfg = Config.model_validate_json(self.cfg_json)
        self.sources = set(cfg.sources_with("c4_rules"))
        self.params = C4_VARIANTS[cfg.clean.c4.variant]
        path = badwords_list(cfg.clean.c4)
        self.badwords = load_badwords(io.local_copy(path) if path else None)

    def work(self, doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if doc["source"] not in self.sources:
            yield doc
            return
        text, reasons = clean_c4_page(doc["text"], self.params, self.badwords)
        for reason, n in reasons.items():
            name = f"c4.{reason}" if reason.startswith("line.") else f"drop.c4_{reason}"
            self.counters.inc(doc["source"], name, n)
        if text is not None:
            yield {**doc, "text": text}


class QualityFilter(GuardedBatchDoFn):
    """Document-level rules (pipeline.filters.quality) and, when a model is
    configured, the reference-page classifier; each drop counted by reason."""

    STAGE = "quality"

    def __init__(self, cfg_json: str):
        self.cfg_json = cfg_json

    def setup(self) -> None:
        super().setup()
        self.cfg = Config.model_validate_json(self.cfg_json)
        self.q = self.cfg.clean.quality
        self.sources = self.cfg.sources_with("quality")
        self.scorer = None
        if self.q.model:
            from pipeline.quality_model import QualityScorer

            self.scorer = QualityScorer(self.q.model)

    def work(self, batch: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        kept = []
        for doc in batch:
            reason = too_short(doc, self.cfg.min_chars(doc["source"]))
            if reason:
                self.counters.inc(doc["source"], f"drop.{reason}")
            else:
                kept.append(doc)
        if self.scorer:
            from pipeline.quality_model import classify_batch

            kept, dropped = classify_batch(kept, self.scorer.score, self.sources, self.q.threshold)
            for source, n in dropped.items():
                self.counters.inc(source, "drop.quality_classifier", n)
        yield from kept


# An Arrow record batch of a Document file ends at WRITE_BATCH_ROWS rows or once
# its texts reach WRITE_BATCH_CHARS, so a writer never unpacks more than that
WRITE_BATCH_ROWS = 1024
WRITE_BATCH_CHARS = 4 << 20


def record_batches(docs: Iterable[dict[str, Any]]) -> Iterator[pa.RecordBatch]:
    """Documents, in order -> DOCUMENT_SCHEMA record batches of at most
    WRITE_BATCH_ROWS rows, each closed once its texts reach WRITE_BATCH_CHARS
    characters (a single longer text makes a batch of its own). Consumes
    `docs` lazily: one batch is held at a time."""
    def batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
        return pa.RecordBatch.from_pydict({f: [d[f] for d in rows] for f in DOCUMENT_FIELDS}, schema=DOCUMENT_SCHEMA)

    rows: list[dict[str, Any]] = []
    chars = 0
    for doc in docs:
        rows.append(doc)
        chars += len(doc["text"])
        if len(rows) == WRITE_BATCH_ROWS or chars >= WRITE_BATCH_CHARS:
            yield batch(rows)
            rows, chars = [], 0
        doc = None  # a huge document is not held while the next one is unpacked
    if rows:
        yield batch(rows)


class DocumentPart:
    """`pipeline.beam.parts.PartWriter` of Documents: packed Documents, in id order ->
    `<source>/part-<i>-of-<n>.arrow` under `out_dir`, unpacked one record batch
    at a time (`record_batches`); returns its manifest entry (file relative to
    `out_dir`, rows, bytes, sha256)."""

    def __init__(self, out_dir: str, packer: Packer = INLINE):
        self.out_dir = out_dir
        self.packer = packer

    def __call__(self, source: str, index: int, count: int, packed: Iterator[Packed]) -> dict[str, Any]:
        name = f"{source}/{part_name(index, count)}.arrow"
        written = write_arrow(io.join(self.out_dir, *name.split("/")), DOCUMENT_SCHEMA,
                              record_batches(map(self.packer.unpack, packed)))
        return {"source": source, "file": name, **written}


class DeadLetterPart:
    """`pipeline.beam.parts.PartWriter` of dead letters: sorted JSON lines ->
    `dead_letter/part-<i>-of-<n>.jsonl` under `out_dir`."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def __call__(self, _group: str, index: int, count: int, lines: Iterator[str]) -> dict[str, Any]:
        name = f"{DEAD}/{part_name(index, count)}.jsonl"
        rows = 0
        with io.atomic_write(io.join(self.out_dir, DEAD, f"{part_name(index, count)}.jsonl")) as f:
            sink = io.HashingWriter(f)
            for line in lines:
                sink.write(line.encode("utf-8", "surrogatepass") + b"\n")
                rows += 1
        return {"file": name, "rows": rows, "bytes": sink.bytes, "sha256": sink.sha256}


class CleanPart:
    """`pipeline.beam.parts.PartWriter` of the clean job: the dead letters' parts
    (`DeadLetterPart`), every source's Documents (`DocumentPart`)."""

    def __init__(self, out_dir: str, packer: Packer = INLINE):
        self.documents = DocumentPart(out_dir, packer)
        self.dead_letters = DeadLetterPart(out_dir)

    def __call__(self, group: str, index: int, count: int, payloads: Iterator[Any]) -> dict[str, Any]:
        return (self.dead_letters if group == DEAD else self.documents)(group, index, count, payloads)


def document_bytes(doc: dict[str, Any]) -> int:
    """A Document's share of a part: the UTF-8 bytes of its strings.

    Raises: what writing it to Arrow would, so the Document is dead-lettered
        before its part is written (`sized_document`): UnicodeEncodeError for
        a lone surrogate, KeyError for a missing field, AttributeError for a
        field that is not a string.
    """
    return sum(len(doc[f].encode("utf-8")) for f in DOCUMENT_FIELDS if f != "lang_score")


def sized_document(doc: dict[str, Any], packer: Packer, packed: Packed | None = None) -> Sized:
    """A Document -> its `Sized` record, with `packed` as its bytes where it
    came packed (`pack` raises for a score that is not a number; see also
    `document_bytes`)."""
    return Sized(doc["source"], doc["id"], doc["id"], document_bytes(doc),
                 packer.pack(doc) if packed is None else packed)


class SizeDocuments(GuardedDoFn):
    """`Carried` Documents -> their `Sized` records, the bytes as they came."""

    STAGE = "write"

    def __init__(self, packer: Packer = INLINE):
        self.packer = packer

    def documents(self, item: Carried) -> Iterator[dict[str, Any]]:
        return carried_documents(self.packer, [item])

    def work(self, item: Carried) -> Iterator[Sized]:
        _, packed = item
        yield sized_document(self.packer.unpack(packed), self.packer, packed)


def sized_dead_letter(record: dict[str, str]) -> Sized:
    """Dead letters are ordered by their JSON line, spread by its hash."""
    line = json.dumps(record, sort_keys=True, ensure_ascii=False)
    digest = hashlib.sha1(line.encode("utf-8", "surrogatepass")).hexdigest()
    return Sized(DEAD, digest, line, len(line) + 1, line)


def _step(name: str, what: str, *counters: str) -> dict[str, Any]:
    return {"step": name, "what": what, "counters": list(counters)}


# The steps of a clean output in pipeline order (`build_clean_pipeline`'s wiring, then
# `quality-filter`'s perplexity filter and classifier), each with the counters it
# removes documents under (shell patterns): the manifest records them, and the run
# report groups removals by them. A step's dead letters count as `dead_letter.<the
# STAGE of its GuardedDoFn>`, reading's as `dead_letter`.
CLEAN_STEPS = (
    _step("read", ("the source reader: records that are not documents (skip.*), records that could not be "
                   "parsed (dead letters), documents over the source's max_doc_bytes (drop.too_large), text "
                   "mostly U+FFFD (drop.replacement_ratio)"),
          "skip.*", DEAD, "drop.too_large", "drop.replacement_ratio"),
    _step("one per id", "the same record twice (drop.duplicate_id): the newest kept",
          "drop.duplicate_id", f"{DEAD}.{KeepOnePerId.STAGE}"),
    _step("line dedup", "CCNet line dedup left no text: every line a repeat (drop.line_dedup_empty)",
          "drop.line_dedup_empty", f"{DEAD}.line_dedup"),
    _step("C4 rules", "the C4 page heuristics (drop.c4_*)", "drop.c4_*", f"{DEAD}.{C4Rules.STAGE}"),
    _step("language ID", "fastText lid.176 outside the source's languages (drop.lang)",
          "drop.lang", f"{DEAD}.{IdentifyLanguage.STAGE}"),
    _step("quality", "too short, or the reference-page classifier (drop.too_short, drop.quality_classifier)",
          "drop.too_short", "drop.quality_classifier", f"{DEAD}.{QualityFilter.STAGE}"),
    _step("exact dedup", "the same normalised text (drop.exact_duplicate)",
          "drop.exact_duplicate", f"{DEAD}.{KeepFirstOfDuplicates.STAGE}"),
    _step("near dedup", "MinHash LSH near-duplicates, and books with >90% overlap (drop.near_duplicate, "
                        "drop.no_shingles)",
          "drop.near_duplicate", "drop.no_shingles", f"{DEAD}.near_dedup"),
    _step("perplexity", ("CCNet's n-gram LM perplexity, after clean (`quality-filter`): a bucket outside "
                         "clean.perplexity.keep (drop.perplexity_<bucket>)"),
          "drop.perplexity_*"),
    _step("write", "documents that cannot be written to Arrow (dead letters)", f"{DEAD}.write"),
)


def list_inputs(p: beam.Pipeline, patterns: list[tuple[str, str]], out_dir: str):
    """The input files of (source, pattern) pairs, expanded on the workers, each
    once and counted; files no reader takes are counted apart, and the listing's
    fingerprint and first unread files written to `<out_dir>/_inputs.json`."""
    listed = (
        p
        | "Patterns" >> beam.Create(patterns)
        | "ExpandPatterns" >> beam.FlatMap(expand_inputs)
        | "OncePerFile" >> beam.Distinct()  # patterns may overlap
    )
    _ = (
        listed
        | "InputsList" >> beam.CombineGlobally(InputsList())
        | "WriteInputsList" >> beam.MapTuple(lambda key, unread: write_inputs_list(out_dir, key, unread))
    )
    return listed | "CountInputs" >> beam.ParDo(CountInputs())


def build_clean_pipeline(p: beam.Pipeline, cfg: Config, patterns: list[tuple[str, str]], out_dir: str,
                         spill_dir: str | None = None):
    """Attach the clean job to pipeline `p`; returns the write of the parts
    list `<out_dir>/_files.json` (Documents and dead letters).

    Args:
        patterns: (source, input pattern) pairs (`pipeline.inputs.source_patterns`),
            expanded on the workers.
        out_dir: the run's folder on any filesystem (`pipeline.core.io.Run.dir`).
        spill_dir: where Documents spill between stages (`pipeline.beam.packed`; the
            local runner: `run_clean`), or None to carry them packed in the
            PCollections.
    """
    cfg_json = cfg.model_dump_json()
    packer = Packer(spill_dir)
    dead = []  # every stage's dead letters (`pipeline.beam.steps.GuardedDoFn`)

    def guarded(docs, label: str, dofn: beam.DoFn):
        out = docs | label >> beam.ParDo(dofn).with_outputs(DEAD, main="docs")
        dead.append(out[DEAD])
        return out.docs

    read = (
        list_inputs(p, patterns, out_dir)
        | "SplitInputs" >> beam.ParDo(SplitInputs(cfg_json))
        | "SpreadFiles" >> beam.Reshuffle()
        | "Read" >> beam.ParDo(ReadSource(cfg_json, packer)).with_outputs(DEAD, PIECES, main="docs")
    )
    assembled = (
        read[PIECES]
        | "GroupPieces" >> beam.GroupByKey()
        | "Assemble" >> beam.ParDo(AssembleSource(cfg_json, packer)).with_outputs(DEAD, main="docs")
    )
    dead += [read[DEAD], assembled[DEAD]]
    grouped = (
        (read.docs | "KeyById" >> beam.Map(lambda d: (d["id"], packer.pack(d))),
         assembled.docs | "KeyAssembledById" >> beam.Map(lambda d: (d["id"], packer.pack(d))))
        | "AllDocs" >> beam.Flatten()
        | "GroupIds" >> beam.GroupByKey()
    )
    docs = guarded(grouped, "OnePerId", KeepOnePerId(packer))
    # a dedup step whose sources have no input is left out of the graph: its stages
    # would only copy every other document through
    read_sources = {source for source, _ in patterns}
    if line_sources := [s for s in cfg.sources_with("line_dedup") if s in read_sources]:
        line_dedup = LineDedup(line_sources, packer, cfg.clean.line_dedup_scope)
        docs = docs | "CCNetLineDedup" >> line_dedup
        dead.append(line_dedup.dead_letters)
    docs = guarded(docs, "C4Rules", C4Rules(cfg_json))
    docs = docs | "Batch" >> batches(cfg.langid.batch_size)
    docs = guarded(docs, "LangId", IdentifyLanguage(cfg_json))
    docs = docs | "BatchQuality" >> batches(cfg.langid.batch_size)
    docs = guarded(docs, "Quality", QualityFilter(cfg_json))
    keyed = guarded(docs, "KeyByContent", GuardedMap(KeepFirstOfDuplicates.STAGE, key_by_content, packer))
    docs = guarded(keyed | "GroupDuplicates" >> beam.GroupByKey(), "ExactDedup", KeepFirstOfDuplicates(packer))
    for group, (settings, sources) in cfg.near_dedup_groups().items():
        if not (sources := [s for s in sources if s in read_sources]):
            continue
        near_dedup = NearDedup(settings, sources, packer)
        docs = docs | f"NearDedup_{group}" >> near_dedup
        dead.append(near_dedup.dead_letters)
    sized_docs = guarded(docs, "SizeDocs", SizeDocuments(packer))  # its dead letters join the others
    sized_dead = dead | "AllDead" >> beam.Flatten() | "SizeDead" >> beam.Map(sized_dead_letter)
    return (
        (sized_docs, sized_dead)
        | "AllSized" >> beam.Flatten()  # one writing step for both: its stages run once
        | "WriteParts" >> WriteSizedParts(cfg.clean.part_bytes, CleanPart(out_dir, packer),
                                          count_as="docs_kept", uncounted=[DEAD])
        | "PartsList" >> beam.combiners.ToList()
        | "WritePartsList" >> beam.Map(lambda files: io.write_json(
            io.join(out_dir, FILES_LIST), sorted(files, key=itemgetter("file"))))
    )


def near_dedup_manifest(cfg: Config) -> dict[str, Any]:
    """{group: its settings, sources and the LSH bands they give} of every
    near-dedup group that ran (`Config.near_dedup_groups`)."""
    groups = {}
    for group, (mh, sources) in cfg.near_dedup_groups().items():
        bands, rows = lsh_params(mh.threshold, mh.num_perm)
        groups[group] = {"sources": sources, **mh.model_dump(mode="json"), "bands": bands, "rows_per_band": rows,
                         "lsh_weights": list(LSH_WEIGHTS), "scheme": SCHEME, "hashfunc": HASHFUNC}
    return groups


class CleanError(PipelineError):
    """The clean job cannot start: no inputs, a missing corpus folder or model."""


def check_inputs(cfg: Config) -> list[tuple[str, str]]:
    """Fail before starting Beam on what would otherwise fail late or silently;
    returns the (source, pattern) pairs the workers will expand. Lists at most
    one file per pattern (a production listing is millions of paths).

    Raises:
        CleanError: a configured pattern matches no file, or only files no
            reader takes; `corpus_dir` is not a folder, holds no source folder,
            or one of a source the config lacks; no source has any input; a
            model or list is missing.
    """
    problems = []
    patterns = source_patterns(cfg)
    matched = set()
    for source, pattern in patterns:
        try:
            found = discover(source, pattern, limit=1)
        except io.StorageError as e:
            problems.append(f"sources.{source}.inputs: {e}")
            continue
        if found.records:
            matched.add(source)
        elif pattern in cfg.sources[source].inputs:
            what = (f"matches only files no {source} reader takes, e.g. {found.unread[0][0]} "
                    f"({found.unread[0][2]})" if found.unread else "matches no file")
            problems.append(f"sources.{source}.inputs: {pattern!r} {what}")
    if cfg.corpus_dir and not io.is_remote(cfg.corpus_dir):
        problems += _corpus_problems(cfg, Path(cfg.corpus_dir))
    if not matched and not problems:
        problems.append("no input at all: every source's inputs are empty")
    if cfg.clean.c4.badwords and badwords_list(cfg.clean.c4) is None:
        log.warning("clean.c4.badwords %s is not there: the C4 rules run without a bad-words list",
                    cfg.clean.c4.badwords)
    models = [("langid.model", cfg.langid.model, "run `python -m pipeline fetch`"),
              ("clean.c4.badwords", badwords_list(cfg.clean.c4),
               "run `python -m pipeline fetch` (it needs `npm`), or give a word list"),
              ("clean.quality.model", cfg.clean.quality.model,
               ("clean with clean.quality.model=null first, then run `python -m pipeline quality-train` and "
                "`python -m pipeline quality-filter`, both with --set clean.quality.model=PATH"))]
    for key, path, hint in models:
        if path and not io.exists(path):
            problems.append(f"{key} not found: {path} ({hint})")
    if problems:
        raise CleanError("; ".join(problems))
    return patterns


def _corpus_problems(cfg: Config, root: Path) -> list[str]:
    """What is wrong with a local `corpus_dir`'s layout (`<source>/` folders,
    each searched recursively); files beside those folders are never read:
    a warning names them."""
    if not root.is_dir():
        return [f"corpus_dir {cfg.corpus_dir!r} is not a folder"]
    entries = sorted(root.iterdir())
    folders = [p.name for p in entries if p.is_dir() and not p.name.startswith(".")]
    loose = [p.name for p in entries if p.name not in folders]  # files, and hidden folders (.git)
    unknown = [name for name in folders if name not in SOURCES]
    problems = []
    if unknown:
        problems.append(f"corpus_dir folders {unknown} are not sources ({', '.join(SOURCES)})")
    missing = [name for name in folders if name in SOURCES and name not in cfg.sources]
    if missing:
        problems.append(f"corpus_dir has {', '.join(f'{m}/' for m in missing)} but the config has no "
                        f"sources.{missing[0]} (give it a share to read it)")
    if not folders:
        problems.append(f"corpus_dir {cfg.corpus_dir!r} holds no source folder: a file is read from "
                        f"<corpus_dir>/<source>/ ({', '.join(SOURCES)}), e.g. a folder of books from "
                        f"{cfg.corpus_dir}/books/" + (f"; {_files(len(loose))} at its top would not be read" if loose else ""))
    elif loose:
        log.warning("corpus_dir %s: %s outside the source folders %s not read: %s", cfg.corpus_dir,
                    _files(len(loose)), "is" if len(loose) == 1 else "are",
                    ", ".join(loose[:5]) + (", ..." if len(loose) > 5 else ""))
    return problems


def _files(n: int) -> str:
    return f"{n} file{'' if n == 1 else 's'}"


def badwords_list(c4) -> str | None:
    """`clean.c4.badwords`, or None where it is optional and not there."""
    if c4.badwords and c4.badwords_optional and not io.exists(c4.badwords):
        return None
    return c4.badwords


def _sha256_or_none(path: str | None) -> str | None:
    return io.sha256_file(path) if path else None


def clean_manifest(cfg: Config, run: io.Run, result, t0: float) -> dict[str, Any]:
    """The clean job's manifest for its finished run: every part file (as its
    writer described it: rows, bytes, sha256, relative to `<out_dir>/clean`),
    the settings that shaped it, input patterns with the files and bytes the
    workers matched, the counters of `result` (Beam's PipelineResult), seconds
    since `t0`."""
    counters = collect_counters(result, (*SOURCES, INPUTS))
    matched = counters.pop(INPUTS, {})
    run_name = io.relative(run.dir, run.final)
    parts_list = io.join(run.dir, FILES_LIST)
    parts = io.read_json(parts_list) if io.exists(parts_list) else []
    parts = [{**entry, "file": f"{run_name}/{entry['file']}"} for entry in parts]
    outputs = [entry for entry in parts if "source" in entry]
    kept = sum(c.get("docs_kept", 0) for c in counters.values())
    if sum(p["rows"] for p in outputs) != kept:  # what the workers wrote, the launcher cannot see
        raise CleanError(
            f"the workers wrote {kept} documents, but {parts_list} lists "
            f"{sum(p['rows'] for p in outputs)}: the workers and this launcher do not share "
            f"{run.final}; on a distributed runner put out_dir on a bucket (gs://, s3://)")
    io.delete(parts_list)
    inputs_list = io.join(run.dir, INPUTS_LIST)
    listed = io.read_json(inputs_list) if io.exists(inputs_list) else {"fingerprint": None, "unread": []}
    io.delete(inputs_list)
    patterns = source_patterns(cfg)
    unread = {s: matched.get(f"{s}.unread_files", 0) for s in SOURCES if matched.get(f"{s}.unread_files")}
    return {
        "format": CLEAN_FORMAT,
        "run": run.id,
        "config_digest": cfg.digest(),
        "clean_config_digest": cfg.clean_digest(),
        # the block of every source read: its whole recipe, beside its reader
        "sources": {s: cfg.sources[s].model_dump(mode="json") for s in SOURCES if any(src == s for src, _ in patterns)},
        "near_dedup": near_dedup_manifest(cfg),
        "line_dedup": {"sources": cfg.sources_with("line_dedup"), "scope": cfg.clean.line_dedup_scope},
        "c4_rules": {"sources": cfg.sources_with("c4_rules"), "variant": cfg.clean.c4.variant,
                     "badwords_sha256": _sha256_or_none(badwords_list(cfg.clean.c4))},
        "quality_model": {"path": cfg.clean.quality.model, "threshold": cfg.clean.quality.threshold,
                          "sha256": _sha256_or_none(cfg.clean.quality.model)},
        "inputs": {s: [p for src, p in patterns if src == s] for s in SOURCES if any(src == s for src, _ in patterns)},
        "input_files": {s: matched[f"{s}.files"] for s in SOURCES if matched.get(f"{s}.files")},
        "input_bytes": {s: matched.get(f"{s}.bytes", 0) for s in SOURCES if matched.get(f"{s}.files")},
        # inputs read as several spans (`clean.split_bytes`): how many spans each
        "input_splits": {s: matched[f"{s}.splits"] for s in SOURCES if matched.get(f"{s}.splits")},
        # every input file, read or not (`pipeline.inputs.fingerprint`): a rerun on the same is skipped
        "input_fingerprint": listed["fingerprint"],
        "langid_sha256": _sha256_or_none(cfg.langid.model),
        # files the patterns found that no reader takes: counted per source, the first ones named
        **({"unread_inputs": {
            "files": unread,
            "bytes": {s: matched.get(f"{s}.unread_bytes", 0) for s in unread},
            "listed": listed["unread"]}} if unread else {}),
        "part_bytes": cfg.clean.part_bytes,
        "steps": list(CLEAN_STEPS),
        "dead_letters": [entry for entry in parts if "source" not in entry],
        "files": outputs,
        "counters": counters,
        "seconds": round(time.time() - t0, 2),
    }


def unread_warning(manifest: dict[str, Any]) -> str | None:
    """One line on the input files a clean run did not read, or None."""
    unread = manifest.get("unread_inputs")
    if not unread:
        return None
    listed = unread.get("listed", [])
    per_source = []
    for source, n in ((s, unread["files"][s]) for s in SOURCES if s in unread["files"]):
        names = [posixpath.basename(e["path"].rstrip("/")) for e in listed if e["source"] == source][:3]
        per_source.append(f"{source}: {n} ({', '.join(names)}{', ...' if n > len(names) else ''})")
    total = sum(unread["files"].values())
    return (f"{total} input file{'s' if total != 1 else ''} found but not read (a format no reader takes, "
            f"or a name that is not UTF-8): {'; '.join(per_source)}; each is named with the "
            "reason in the clean manifest (unread_inputs) and the report; `clean --help` lists the formats")


def up_to_date(cfg: Config) -> dict[str, Any] | None:
    """The committed clean manifest when a clean run now would write the same:
    written under the same settings (`Config.clean_digest`), from the same
    input files (`pipeline.inputs.fingerprint`, listed here) and models
    (sha256), its files all there; else None."""
    try:
        manifest = load_clean_manifest(cfg.out_dir)
        clean_files(cfg.out_dir, manifest)
        check_listed(clean_dir(cfg.out_dir), manifest.get("dead_letters", []), "python -m pipeline clean")
    except ContractError:
        return None
    if manifest.get("clean_config_digest") != cfg.clean_digest():
        return None
    models = [(manifest.get("langid_sha256"), cfg.langid.model),
              (manifest.get("c4_rules", {}).get("badwords_sha256"), badwords_list(cfg.clean.c4))]
    if "quality_filter" not in manifest:  # after that pass, quality_model describes it, not clean
        models.append((manifest.get("quality_model", {}).get("sha256"), cfg.clean.quality.model))
    if any(recorded != _sha256_or_none(path) for recorded, path in models):
        return None
    if manifest.get("input_fingerprint") != fingerprint(listing(cfg)):
        return None
    return manifest


def run_clean(cfg: Config, beam_args: list[str] | None = None, force: bool = False) -> dict[str, Any]:
    """Run the clean job, unless `force` is false and the committed output is
    `up_to_date`; returns the manifest it committed to (or found in)
    `<out_dir>/clean/manifest.json` (any Beam filesystem), with "skipped":
    True when it did not run. Logs `unread_warning`.

    Raises:
        CleanError: see `check_inputs`.
        OutputBusy: another job is writing `<out_dir>/clean` (`pipeline.core.io.Run`).
    """
    quiet_beam_logging()
    options = pipeline_options(cfg, beam_args)  # also hands the filesystems their options
    if not force and (current := up_to_date(cfg)) is not None:
        return {**current, "skipped": True}
    patterns = check_inputs(cfg)
    warn_unshared(options, out_dir=cfg.out_dir, **{"langid.model": cfg.langid.model,
                  "clean.c4.badwords": cfg.clean.c4.badwords, "clean.quality.model": cfg.clean.quality.model})
    with io.Run(clean_dir(cfg.out_dir)) as run:
        try:
            t0 = time.time()
            result = run_pipeline(options, run.dir, lambda p, spill: build_clean_pipeline(
                p, cfg, patterns, run.dir, spill_dir=spill))
            manifest = clean_manifest(cfg, run, result, t0)
            run.commit(manifest)
        except BaseException:
            run.abandon()
            raise
    if warning := unread_warning(manifest):
        log.warning("%s", warning)
    return manifest
