"""The post-clean pass (Beam): `python -m pipeline quality-filter` applies the
quality filters that are trained on a clean output to that output, without
re-reading the raw inputs, in this order:

1. CCNet's perplexity filter (`clean.perplexity`; models by `lm-train` in
   `clean.perplexity.model_dir`): each document of the sources with `perplexity`
   gets meta `perplexity` and `bucket` (pipeline/filters/perplexity.py); the
   buckets outside `clean.perplexity.keep` are dropped, counted as
   `drop.perplexity_<bucket>`. A language's cut-offs are the `percentiles` of
   the perplexities of a sample of the documents being filtered (each
   document of those sources with `hash_unit(seed, "perplexity", id)` below
   `sample_docs / documents`), scored by the same job as a side input; a rerun
   with the same models takes the cut-offs its input's manifest records (what
   is left is no sample of the web any more).
2. The reference-page classifier (`clean.quality`; the model by
   `quality-train`, `clean.quality.model` or `<out_dir>/quality/model.bin`,
   `classifier_model`): as the clean job's own filter does, a page of
   the sources with `quality` below `clean.quality.threshold` is dropped
   (`drop.quality_classifier`), the others kept with meta `quality_score`.

A filter no source's block turns on (`sources.<name>.perplexity`, `.quality`) is off. Each file the clean manifest lists
is one element: a part of a filtered source is read one record batch at a
time, filtered and written under the same name by the clean job's writer
(`record_batches`, `write_arrow`); a part of another source, or of the dead
letters, is copied byte for byte. The launcher then commits a new clean run
(`pipeline.core.io.Run`, CLEAN_FORMAT): the previous manifest with its files, dead
letters and `counters` updated (drops added, `docs_kept` as it now is, and the
documents per bucket, `perplexity.<bucket>`, as the cut-offs split them when
they were drawn), and
`perplexity` (models, cut-offs, sample sizes) and `quality_model` (path,
sha256, threshold, sources) for the filters that ran; its
`clean_config_digest` stays the clean job's. Same input, same bytes out; a
rerun with the same models drops nothing more and rewrites the same bytes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from pipeline.beam.runner import pipeline_options, quiet_beam_logging, run_pipeline, warn_unshared
from pipeline.clean import FILES_LIST, record_batches
from pipeline.core import io
from pipeline.core.config import Config, PerplexityConfig
from pipeline.core.schema import (
    DOCUMENT_SCHEMA,
    ContractError,
    clean_dir,
    clean_files,
    load_clean_manifest,
    load_manifest,
    read_batches,
    write_arrow,
)
from pipeline.filters.perplexity import annotate, bucket, cutoffs
from pipeline.lm_train import LM_FORMAT, LanguageModelError, LanguageModels
from pipeline.mixture import hash_unit
from pipeline.quality_model import (
    TWO_STEPS,
    QualityModelError,
    QualityScorer,
    classify_batch,
)

DROP = "drop.quality_classifier"
NO_BUCKET = "perplexity.no_bucket"  # kept: no model for its language, no line, or no cut-offs
# documents per bucket (and NO_BUCKET) when the cut-offs were drawn: the split of the
# web the report shows; a rerun on the filtered output leaves them as they were
BUCKET_PREFIX = "perplexity."


def in_run(entry: dict[str, Any]) -> str:
    """A manifest entry's file inside its run folder (`<source>/part-...arrow`)."""
    return entry["file"].split("/", 1)[1]


def classifier_model(cfg: Config) -> str:
    """The classifier this pass applies and `quality-train` writes:
    `clean.quality.model`, else `<out_dir>/quality/model.bin`."""
    return cfg.clean.quality.model or io.join(cfg.out_dir, "quality", "model.bin")


def with_classifier_model(cfg: Config) -> Config:
    """A copy of `cfg` whose `clean.quality.model` is `classifier_model(cfg)`."""
    out = cfg.model_copy(deep=True)
    out.clean.quality.model = classifier_model(cfg)
    return out


def classifier_applied(cfg: Config) -> str | None:
    """The classifier's path when `<out_dir>/clean` was already filtered with it
    as it is now (the same sha256): training it again would learn from what it
    let through, not from the clean output. None otherwise."""
    try:
        clean = load_clean_manifest(cfg.out_dir)
    except ContractError:
        return None
    model = classifier_model(cfg)
    if "classifier" not in (clean.get("quality_filter") or {}).get("filters", ["classifier"]):
        return None
    recorded = (clean.get("quality_model") or {}).get("sha256")
    return model if recorded and io.exists(model) and io.sha256_file(model) == recorded else None


# --- the filters -----------------------------------------------------------------

class PerplexityStep:
    """The perplexity filter on a batch of Documents (see the module's docstring);
    `cuts` ({lang: [head, tail]}) is set before use."""

    def __init__(self, pc: PerplexityConfig, sources: list[str]):
        self.pc = pc
        self.sources = frozenset(sources)
        self.models = LanguageModels(pc.model_dir, pc.langs)
        self.cuts: dict[str, list[float]] = {}

    def apply(self, docs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Counter]:
        kept, counts = [], Counter()
        for doc in docs:
            if doc["source"] not in self.sources:
                kept.append(doc)
                continue
            ppl = self.models.perplexity(doc["text"], doc["lang"])
            cuts = self.cuts.get(doc["lang"])
            if ppl is None or cuts is None:
                counts[NO_BUCKET] += 1
                kept.append(doc)
                continue
            name = bucket(ppl, cuts)
            counts[f"{BUCKET_PREFIX}{name}"] += 1
            if name in self.pc.keep:
                kept.append(annotate(doc, ppl, name))
            else:
                counts[f"drop.perplexity_{name}"] += 1
        return kept, counts


class ClassifierStep:
    """The reference-page classifier on a batch of Documents (`classify_batch`)."""

    def __init__(self, q, model: str, sources: list[str]):
        self.q = q
        self.sources = frozenset(sources)
        self.scorer = QualityScorer(model)

    def apply(self, docs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Counter]:
        kept, dropped = classify_batch(docs, self.scorer.score, self.sources, self.q.threshold)
        return kept, Counter({DROP: sum(dropped.values())})


class FilterPart(beam.DoFn):
    """Clean manifest entry -> the file in the new run (filtered, or copied);
    yields its entry (file inside the run, rows, bytes, sha256) with `counters`,
    what the filters counted. Models load once per worker; the cut-offs come
    as a side input."""

    def __init__(self, cfg_json: str, src_root: str, out_dir: str):
        self.cfg_json, self.src_root, self.out_dir = cfg_json, src_root, out_dir

    def setup(self) -> None:
        cfg = Config.model_validate_json(self.cfg_json)
        self.steps: list[PerplexityStep | ClassifierStep] = []
        pc_sources, q_sources = cfg.sources_with("perplexity"), cfg.sources_with("quality")
        if pc_sources:
            self.steps.append(PerplexityStep(cfg.clean.perplexity, pc_sources))
        if q_sources:
            self.steps.append(ClassifierStep(cfg.clean.quality, classifier_model(cfg), q_sources))

    def process(self, entry: dict[str, Any], cuts: dict[str, Any]) -> Iterator[dict[str, Any]]:
        src = io.join(self.src_root, entry["file"])
        name = in_run(entry)
        dest = io.join(self.out_dir, *name.split("/"))
        steps = [s for s in self.steps if entry.get("source") in s.sources]  # dead letters have none
        if not steps:
            yield {**entry, "file": name, **io.copy(src, dest), "counters": {}}
            return
        for step in steps:
            if isinstance(step, PerplexityStep):
                step.cuts = {lang: c["cutoffs"] for lang, c in cuts.items()}
        counts: Counter = Counter()

        def kept() -> Iterator[dict[str, Any]]:
            for batch in read_batches(src):
                docs = batch.to_pylist()
                for step in steps:
                    docs, n = step.apply(docs)
                    counts.update(n)
                yield from docs

        written = write_arrow(dest, DOCUMENT_SCHEMA, record_batches(kept()))
        yield {"source": entry["source"], "file": name, **written, "counters": dict(counts)}


class ScoreSample(beam.DoFn):
    """Clean manifest entry -> (lang, perplexity) of each of its documents in the
    cut-off sample (`hash_unit(seed, "perplexity", id) < rate`) with a model."""

    def __init__(self, pc_json: str, seed: int, rate: float):
        self.pc_json, self.seed, self.rate = pc_json, seed, rate

    def setup(self) -> None:
        pc = PerplexityConfig.model_validate_json(self.pc_json)
        self.models = LanguageModels(pc.model_dir, pc.langs)

    def process(self, path: str) -> Iterator[tuple[str, float]]:
        for batch in read_batches(path, ["id", "text", "lang"]):
            cols = batch.to_pydict()
            for doc_id, text, lang in zip(cols["id"], cols["text"], cols["lang"]):
                if hash_unit(self.seed, "perplexity", doc_id) < self.rate:
                    ppl = self.models.perplexity(text, lang)
                    if ppl is not None:
                        yield lang, ppl


def lang_cutoffs(item: tuple[str, Any], percentiles: tuple[float, float]) -> tuple[str, dict[str, Any]]:
    """(lang, its sample's perplexities) -> (lang, {"cutoffs", "sample_docs"})."""
    lang, values = item
    values = list(values)
    return lang, {"cutoffs": cutoffs(values, percentiles), "sample_docs": len(values)}


def build_quality_filter_pipeline(p: beam.Pipeline, cfg: Config, entries: list[dict[str, Any]],
                                  src_root: str, out_dir: str, sample: tuple[list[str], float] | None = None,
                                  cuts: dict[str, Any] | None = None):
    """Attach the filter job to `p`: every file of `entries` (the clean
    manifest's parts and dead letters, relative to `src_root`) into the run
    folder `out_dir`, the list of their entries to `<out_dir>/_files.json` and
    the perplexity cut-offs used to `<out_dir>/_cutoffs.json`.

    Args:
        sample: (files, rate) to draw the perplexity cut-offs from (ScoreSample);
            or None and `cuts`, the cut-offs themselves ({lang: {"cutoffs", ...}}).
    """
    if sample is not None:
        files, rate = sample
        pc = cfg.clean.perplexity
        cuts_pc = (
            p
            | "SampleFiles" >> beam.Create(sorted(files))
            | "SpreadSample" >> beam.Reshuffle()
            | "ScoreSample" >> beam.ParDo(ScoreSample(pc.model_dump_json(), cfg.seed, rate))
            | "ByLang" >> beam.GroupByKey()
            | "Cutoffs" >> beam.Map(lang_cutoffs, tuple(pc.percentiles))
            | "AllLangs" >> beam.combiners.ToDict()
        )
    else:
        cuts_pc = p | "GivenCutoffs" >> beam.Create([cuts or {}])
    _ = cuts_pc | "WriteCutoffs" >> beam.Map(lambda c: io.write_json(io.join(out_dir, CUTOFFS), c))
    return (
        p
        | "Parts" >> beam.Create(sorted(entries, key=lambda e: e["file"]))
        | "SpreadParts" >> beam.Reshuffle()
        | "FilterOrCopy" >> beam.ParDo(FilterPart(cfg.model_dump_json(), src_root, out_dir),
                                       beam.pvalue.AsSingleton(cuts_pc))
        | "PartsList" >> beam.combiners.ToList()
        | "WritePartsList" >> beam.Map(lambda parts: io.write_json(
            io.join(out_dir, FILES_LIST), sorted(parts, key=lambda e: e["file"])))
    )


CUTOFFS = "_cutoffs.json"  # a run's perplexity cut-offs, for the launcher's manifest


# --- the launcher ------------------------------------------------------------------

def lm_manifest(pc: PerplexityConfig) -> dict[str, Any]:
    """`lm-train`'s manifest in `pc.model_dir`, with a model for every language of `pc.langs`.

    Raises:
        LanguageModelError: missing, or a language without a model.
    """
    try:
        lm = load_manifest(pc.model_dir, LM_FORMAT, "python -m pipeline lm-train")
    except ContractError as e:
        raise LanguageModelError(str(e)) from None
    missing = [lang for lang in pc.langs if lang not in lm.get("langs", {})]
    if missing:
        raise LanguageModelError(f"{pc.model_dir} has no language model for {missing}: run `python -m "
                                 f"pipeline lm-train` with clean.perplexity.langs: {pc.langs}")
    return lm


def recorded_cutoffs(previous: dict[str, Any], pc: PerplexityConfig, lm: dict[str, Any],
                     sources: list[str]) -> dict[str, Any] | None:
    """The cut-offs the previous run's manifest records when they were taken
    with the same models and percentiles on the same `sources`, else None."""
    before = previous.get("perplexity")
    if not before or list(before.get("percentiles", [])) != list(pc.percentiles) or before.get("sources") != sources:
        return None
    same = all(before["langs"].get(lang, {}).get("arpa_sha256") == lm["langs"][lang]["arpa"]["sha256"]
               and before["langs"][lang].get("sp_sha256") == lm["langs"][lang]["sp_model"]["sha256"]
               for lang in pc.langs)
    if not same:
        return None
    return {lang: {k: v for k, v in c.items() if k in ("cutoffs", "sample_docs")}
            for lang, c in before["langs"].items() if "cutoffs" in c}


def filtered_manifest(cfg: Config, previous: dict[str, Any], run: io.Run, t0: float,
                      lm: dict[str, Any] | None, drawn: bool = True) -> dict[str, Any]:
    """The new clean manifest: `previous` with this run's files, counters,
    `perplexity` and `quality_model` (see the module's docstring); the bucket
    counters are this run's when it `drawn` its cut-offs, else kept as they were."""
    q, pc = cfg.clean.quality, cfg.clean.perplexity
    q_sources, pc_sources = cfg.sources_with("quality"), cfg.sources_with("perplexity")
    parts_list = io.join(run.dir, FILES_LIST)
    written = io.read_json(parts_list) if io.exists(parts_list) else []
    expected = len(previous["files"]) + len(dead_letters(previous))
    if len(written) != expected:  # what the workers wrote, the launcher cannot see
        raise QualityModelError(
            f"the workers wrote {len(written)} of {expected} files to {run.dir}, or this launcher "
            "cannot see them: on a distributed runner put out_dir on a bucket (gs://, s3://)")
    cuts = io.read_json(io.join(run.dir, CUTOFFS))
    io.delete(parts_list)
    io.delete(io.join(run.dir, CUTOFFS))
    run_name = io.relative(run.dir, run.final)
    kept: Counter = Counter()
    counted: dict[str, Counter] = {}
    for entry in written:
        if "source" in entry:  # a part of Documents, else of dead letters
            kept[entry["source"]] += entry["rows"]
            counted.setdefault(entry["source"], Counter()).update(entry["counters"])
    entries = [{**{k: v for k, v in e.items() if k != "counters"}, "file": f"{run_name}/{e['file']}"} for e in written]
    counters = {s: dict(c) for s, c in previous.get("counters", {}).items()}
    for source, n in kept.items():
        c = counters.setdefault(source, {})
        c["docs_kept"] = n
        if drawn and source in pc_sources:
            for name in [k for k in c if k.startswith(BUCKET_PREFIX)]:
                del c[name]
        for name, m in counted.get(source, {}).items():
            if not name.startswith(BUCKET_PREFIX):
                c[name] = c.get(name, 0) + m
            elif drawn:
                c[name] = m
        if source in q_sources:
            c.setdefault(DROP, 0)
    manifest = {
        **previous,
        "run": run.id,
        "files": [e for e in entries if "source" in e],
        "counters": {s: dict(sorted(c.items())) for s, c in sorted(counters.items())},
        "quality_filter": {"from_run": previous.get("run"), "seconds": round(time.time() - t0, 2),
                           "filters": [name for name, on in (("perplexity", pc_sources), ("classifier", q_sources))
                                       if on]},
    }
    if q_sources:
        model = classifier_model(cfg)
        manifest["quality_model"] = {"path": model, "sha256": io.sha256_file(model), "threshold": q.threshold,
                                     "sources": q_sources}
    if pc_sources and lm is not None:
        manifest["perplexity"] = {
            "model_dir": pc.model_dir, "sources": pc_sources, "percentiles": list(pc.percentiles), "keep": pc.keep,
            "langs": {lang: {"sp_sha256": lm["langs"][lang]["sp_model"]["sha256"],
                             "arpa_sha256": lm["langs"][lang]["arpa"]["sha256"], **cuts.get(lang, {})}
                      for lang in pc.langs},
        }
    dead = [e for e in entries if "source" not in e]
    if "dead_letters" in previous:
        manifest["dead_letters"] = dead
    elif dead:
        manifest["dead_letter"] = dead[0]["file"]
    return manifest


def dead_letters(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The dead-letter files a clean manifest lists, as entries with a `file`
    (`dead_letters`: a list of parts; `dead_letter`: one file's name)."""
    if "dead_letters" in manifest:
        return list(manifest["dead_letters"])
    return [{"file": manifest["dead_letter"]}] if manifest.get("dead_letter") else []


def already_filtered(cfg: Config, previous: dict[str, Any], lm: dict[str, Any] | None) -> bool:
    """Whether the clean output `previous` describes was already filtered by
    the filters now on, with the same models and settings: a rerun would
    write the same bytes under a new run id."""
    q, pc = cfg.clean.quality, cfg.clean.perplexity
    q_sources, pc_sources = cfg.sources_with("quality"), cfg.sources_with("perplexity")
    done = previous.get("quality_filter")
    on = [name for name, sources in (("perplexity", pc_sources), ("classifier", q_sources)) if sources]
    if not done or done.get("filters") != on:
        return False
    if pc_sources and (lm is None or recorded_cutoffs(previous, pc, lm, pc_sources) is None
                       or previous["perplexity"].get("keep") != pc.keep):
        return False
    if q_sources:
        model, recorded = classifier_model(cfg), previous.get("quality_model") or {}
        if (recorded.get("threshold"), recorded.get("sources")) != (q.threshold, q_sources):
            return False
        if not io.exists(model) or recorded.get("sha256") != io.sha256_file(model):
            return False
    return True


def run_quality_filter(cfg: Config, beam_args: list[str] | None = None, force: bool = False) -> dict[str, Any]:
    """Apply the post-clean filters to `<out_dir>/clean` and commit the result
    as its new run; returns the manifest committed. When that output was
    already filtered so (`already_filtered`) and not `force`, nothing runs:
    returns its manifest with `"skipped": True`.

    Raises:
        QualityModelError: no filter on, no classifier model, or no clean output
            (or a listed part missing).
        LanguageModelError: no language model of `clean.perplexity.langs`.
        OutputBusy: another job is writing `<out_dir>/clean` (`pipeline.core.io.Run`).
    """
    quiet_beam_logging()
    pc = cfg.clean.perplexity
    q_sources, pc_sources = cfg.sources_with("quality"), cfg.sources_with("perplexity")
    options = pipeline_options(cfg, beam_args)  # also hands the filesystems their options
    if not q_sources and not pc_sources:
        raise QualityModelError("no post-clean filter is on: no source sets perplexity or quality "
                                "(sources.<name>.perplexity, sources.<name>.quality)")
    model = classifier_model(cfg)
    if q_sources and not io.exists(model):
        raise QualityModelError(f"clean.quality.model not found: {model} ({TWO_STEPS})")
    root = clean_dir(cfg.out_dir)
    warn_unshared(options, out_dir=cfg.out_dir, **{"clean.quality.model": model if q_sources else None,
                                                   "clean.perplexity.model_dir": pc.model_dir if pc_sources else None})
    with io.Run(root) as run:
        try:
            t0 = time.time()
            previous = load_clean_manifest(cfg.out_dir)  # under the lock: no clean job replaces it meanwhile
            files = clean_files(cfg.out_dir, previous)
            lm = lm_manifest(pc) if pc_sources else None
            if not force and already_filtered(cfg, previous, lm):
                run.abandon()
                return {**previous, "skipped": True}
            entries = previous["files"] + dead_letters(previous)
            cuts = recorded_cutoffs(previous, pc, lm, pc_sources) if lm else {}
            sample = None
            if cuts is None:  # draw them from this output
                targets = [path for source in pc_sources for path in files.get(source, [])]
                rows = sum(e["rows"] for e in previous["files"] if e["source"] in pc_sources)
                sample = (targets, min(1.0, pc.sample_docs / rows) if rows else 0.0)
            run_pipeline(options, run.dir, lambda p, _spill: build_quality_filter_pipeline(
                p, cfg, entries, root, run.dir, sample, cuts))
            manifest = filtered_manifest(cfg, previous, run, t0, lm, drawn=sample is not None)
            run.commit(manifest)
        except ContractError as e:
            run.abandon()
            raise QualityModelError(str(e)) from None
        except BaseException:
            run.abandon()
            raise
        return manifest
