"""The reference-page classifier's second step (Beam): `python -m pipeline
quality-filter` applies `clean.quality.model` (trained by `quality-train` on
the same output) to the committed clean output, without re-reading the raw
inputs.

Each file the clean manifest lists is one element: a part of a filtered source
(`clean.quality.sources`) is read one record batch at a time, its documents
judged by `quality_model.classify_batch` (as the clean job's own filter does:
below `clean.quality.threshold` dropped, the others kept with meta
`quality_score`) and written under the same name by the clean job's writer
(`record_batches`, `write_arrow`); a part of another source, or of the dead
letters, is copied byte for byte. The launcher then commits a new clean run
(`pipeline.io.Run`, CLEAN_FORMAT): the previous manifest with its files,
dead letters, `counters` (`drop.quality_classifier` added, `docs_kept` per source) and
`quality_model` (path, sha256, threshold, sources) updated; its
`clean_config_digest` stays the clean job's, so the config without the model
still matches the output. Same input, same bytes out; a rerun with the same
model drops nothing more and rewrites the same bytes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from pipeline import io
from pipeline.beam_util import (
    pipeline_options,
    quiet_beam_logging,
    run_pipeline,
    warn_unshared,
)
from pipeline.clean import FILES_LIST, record_batches
from pipeline.config import Config
from pipeline.quality_model import (
    TWO_STEPS,
    QualityModelError,
    QualityScorer,
    classify_batch,
)
from pipeline.schema import (
    DOCUMENT_SCHEMA,
    ContractError,
    clean_dir,
    clean_files,
    load_clean_manifest,
    read_batches,
    write_arrow,
)

DROP = "drop.quality_classifier"


def in_run(entry: dict[str, Any]) -> str:
    """A manifest entry's file inside its run folder (`<source>/part-...arrow`)."""
    return entry["file"].split("/", 1)[1]


class FilterPart(beam.DoFn):
    """Clean manifest entry -> the file in the new run (filtered, or copied);
    yields its entry (file inside the run, rows, bytes, sha256) with `dropped`,
    the documents the classifier removed. The model loads once per worker."""

    def __init__(self, cfg_json: str, src_root: str, out_dir: str):
        self.cfg_json, self.src_root, self.out_dir = cfg_json, src_root, out_dir

    def setup(self) -> None:
        self.q = Config.model_validate_json(self.cfg_json).clean.quality
        self.scorer = QualityScorer(self.q.model)

    def process(self, entry: dict[str, Any]) -> Iterator[dict[str, Any]]:
        src = io.join(self.src_root, entry["file"])
        name = in_run(entry)
        dest = io.join(self.out_dir, *name.split("/"))
        if entry.get("source") not in self.q.sources:  # dead letters have none
            yield {**entry, "file": name, **io.copy(src, dest), "dropped": 0}
            return
        dropped: Counter = Counter()

        def kept() -> Iterator[dict[str, Any]]:
            for batch in read_batches(src):
                docs, n = classify_batch(batch.to_pylist(), self.scorer.score, self.q.sources, self.q.threshold)
                dropped.update(n)
                yield from docs

        written = write_arrow(dest, DOCUMENT_SCHEMA, record_batches(kept()))
        yield {"source": entry["source"], "file": name, **written, "dropped": sum(dropped.values())}


def build_quality_filter_pipeline(p: beam.Pipeline, cfg: Config, entries: list[dict[str, Any]],
                                  src_root: str, out_dir: str):
    """Attach the filter job to `p`: every file of `entries` (the clean
    manifest's parts and dead letters, relative to `src_root`) into the run
    folder `out_dir`, and the list of their entries to `<out_dir>/_files.json`."""
    return (
        p
        | "Parts" >> beam.Create(sorted(entries, key=lambda e: e["file"]))
        | "SpreadParts" >> beam.Reshuffle()
        | "FilterOrCopy" >> beam.ParDo(FilterPart(cfg.model_dump_json(), src_root, out_dir))
        | "PartsList" >> beam.combiners.ToList()
        | "WritePartsList" >> beam.Map(lambda parts: io.write_json(
            io.join(out_dir, FILES_LIST), sorted(parts, key=lambda e: e["file"])))
    )


def filtered_manifest(cfg: Config, previous: dict[str, Any], run: io.Run, t0: float) -> dict[str, Any]:
    """The new clean manifest: `previous` with this run's files, counters and
    quality_model (see the module's docstring)."""
    q = cfg.clean.quality
    parts_list = io.join(run.dir, FILES_LIST)
    written = io.read_json(parts_list) if io.exists(parts_list) else []
    expected = len(previous["files"]) + len(dead_letters(previous))
    if len(written) != expected:  # what the workers wrote, the launcher cannot see
        raise QualityModelError(
            f"the workers wrote {len(written)} of {expected} files to {run.dir}, or this launcher "
            "cannot see them: on a distributed runner put out_dir on a bucket (gs://, s3://)")
    io.delete(parts_list)
    run_name = io.relative(run.dir, run.final)
    kept: Counter = Counter()
    dropped: Counter = Counter()
    for entry in written:
        if "source" in entry:  # a part of Documents, else of dead letters
            kept[entry["source"]] += entry["rows"]
            dropped[entry["source"]] += entry["dropped"]
    entries = [{**{k: v for k, v in e.items() if k != "dropped"}, "file": f"{run_name}/{e['file']}"} for e in written]
    counters = {s: dict(c) for s, c in previous.get("counters", {}).items()}
    for source, n in kept.items():
        c = counters.setdefault(source, {})
        c["docs_kept"] = n
        if source in q.sources:
            c[DROP] = c.get(DROP, 0) + dropped[source]
    manifest = {
        **previous,
        "run": run.id,
        "files": [e for e in entries if "source" in e],
        "counters": {s: dict(sorted(c.items())) for s, c in sorted(counters.items())},
        "quality_model": {"path": q.model, "sha256": io.sha256_file(q.model), "threshold": q.threshold,
                          "sources": q.sources},
        "quality_filter": {"from_run": previous.get("run"), "seconds": round(time.time() - t0, 2)},
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


def run_quality_filter(cfg: Config, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Apply `clean.quality.model` to `<out_dir>/clean` and commit the result as
    its new run; returns the manifest committed.

    Raises:
        QualityModelError: no model, or no clean output (or a listed part missing).
        OutputBusy: another job is writing `<out_dir>/clean` (`pipeline.io.Run`).
    """
    quiet_beam_logging()
    q = cfg.clean.quality
    options = pipeline_options(cfg, beam_args)  # also hands the filesystems their options
    if not q.model or not io.exists(q.model):
        raise QualityModelError(f"clean.quality.model not found: {q.model} ({TWO_STEPS})")
    root = clean_dir(cfg.out_dir)
    warn_unshared(options, out_dir=cfg.out_dir, **{"clean.quality.model": q.model})
    with io.Run(root) as run:
        try:
            t0 = time.time()
            previous = load_clean_manifest(cfg.out_dir)  # under the lock: no clean job replaces it meanwhile
            clean_files(cfg.out_dir, previous)
            entries = previous["files"] + dead_letters(previous)
            run_pipeline(options, run.dir, lambda p, _spill: build_quality_filter_pipeline(
                p, cfg, entries, root, run.dir))
            manifest = filtered_manifest(cfg, previous, run, t0)
            run.commit(manifest)
        except ContractError as e:
            run.abandon()
            raise QualityModelError(str(e)) from None
        except BaseException:
            run.abandon()
            raise
        return manifest
