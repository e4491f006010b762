"""The LLaMA reference-page classifier (LLaMA 2.1: "a linear model to classify pages
used as references in Wikipedia v.s. randomly sampled pages"; RedPajama: a fastText
classifier, keep pages scoring >= 0.25).

Two steps after a first clean pass made without a model (`clean.quality.model: null`):

1. `python -m pipeline quality-train --set clean.quality.model=PATH` trains a fastText
   supervised model on positives (by default the cleaned Wikipedia and books text)
   against random CommonCrawl pages, both read from the clean output. The sample is
   drawn by a Beam job (`build_sample_pipeline`): per class, the `max_examples`
   documents with the smallest seeded id hash, found with a combiner that holds
   `max_examples` small (hash, id, file, row) tuples, then only those rows' texts are
   fetched; nothing holds the corpus. It is committed to `<out_dir>/quality_sample/`
   (one fastText line per document, in hash order). Training runs on the launcher,
   one thread and a fixed seed, so it is reproducible.
2. `python -m pipeline quality-filter --set clean.quality.model=PATH`
   (`pipeline.quality_filter`) applies it to that clean output without re-reading the
   raw inputs: a page of a source with `quality` is kept when its probability of the
   positive label is at least `clean.quality.threshold` (`classify_batch`).

When `clean.quality.model` is set, the clean job itself applies it the same way.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import apache_beam as beam

from pipeline.beam.runner import pipeline_options, quiet_beam_logging, run_pipeline, warn_unshared
from pipeline.core import io
from pipeline.core.config import Config, PipelineError
from pipeline.core.schema import (
    ContractError,
    clean_files,
    load_clean_manifest,
    read_batches,
)
from pipeline.filters.langid import check_fasttext_module, to_single_line
from pipeline.mixture import hash_unit

POSITIVE, NEGATIVE = "__label__reference", "__label__random"
MAX_CHARS = 4000  # of each page given to the classifier (train and predict alike)
SAMPLE_FORMAT = "llama-quality-sample/1"
SAMPLE_DIR = "quality_sample"  # under out_dir: the committed training sample
TWO_STEPS = ("train it on a clean output made without it (clean.quality.model=null): "
             "`python -m pipeline quality-train --set clean.quality.model=PATH`, then apply it with "
             "`python -m pipeline quality-filter --set clean.quality.model=PATH`")


class QualityModelError(PipelineError):
    """The classifier cannot be trained or loaded (names the file or the missing data)."""


def example_line(label: str, text: str) -> str:
    """One fastText training line: label, then the page's first MAX_CHARS as one line."""
    return f"{label} {to_single_line(text[:MAX_CHARS]).strip()}\n"


def classify_batch(docs: Iterable[dict[str, Any]], score: Callable[[list[str]], list[float]],
                   sources: Iterable[str], threshold: float) -> tuple[list[dict[str, Any]], Counter]:
    """The classifier's verdict on a batch of Documents, in order: a document of
    `sources` scoring below `threshold` is dropped, one at or above it is kept with
    meta `quality_score` (6 decimals); other sources pass unchanged.

    Args:
        score: texts -> P(reference page) each (`QualityScorer.score`).
    Returns: (kept documents, {source: documents dropped}).
    """
    docs = list(docs)
    sources = set(sources)
    todo = [i for i, d in enumerate(docs) if d["source"] in sources]
    scores = dict(zip(todo, score([docs[i]["text"] for i in todo]))) if todo else {}
    kept, dropped = [], Counter()
    for i, doc in enumerate(docs):
        s = scores.get(i)
        if s is None:
            kept.append(doc)
        elif s < threshold:
            dropped[doc["source"]] += 1
        else:
            meta = json.loads(doc["meta"])
            meta["quality_score"] = round(s, 6)
            kept.append({**doc, "meta": json.dumps(meta, sort_keys=True, ensure_ascii=False)})
    return kept, dropped


# --- the training sample (Beam) ---------------------------------------------

def candidates(item: tuple[str, str], seed: int) -> Iterator[tuple[str, tuple[float, str, str, int]]]:
    """(label, cleaned Arrow file) -> (label, (seeded id hash, doc id, file, row))
    for each document with a non-blank text, one record batch at a time."""
    label, path = item
    row = 0
    for batch in read_batches(path, ["id", "text"]):
        cols = batch.to_pydict()
        for doc_id, text in zip(cols["id"], cols["text"]):
            if text.strip():
                yield label, (hash_unit(seed, "quality", doc_id), doc_id, path, row)
            row += 1


def by_file(item: tuple[str, list[tuple[float, str, str, int]]]):
    """(label, its winners) -> (file, (row, label, hash, doc id)) per winner."""
    label, winners = item
    for u, doc_id, path, row in winners:
        yield path, (row, label, u, doc_id)


def fetch_examples(item: tuple[str, Iterable[tuple[int, str, float, str]]]):
    """(file, wanted rows) -> (label, (hash, doc id, fastText line)) for each,
    reading the file's texts one record batch at a time."""
    path, wanted = item
    rows: dict[int, list[tuple[str, float, str]]] = {}
    for row, label, u, doc_id in wanted:
        rows.setdefault(row, []).append((label, u, doc_id))
    start = 0
    for batch in read_batches(path, ["text"]):
        texts = batch.column(0)
        for row in range(start, start + batch.num_rows):
            for label, u, doc_id in rows.get(row, ()):
                yield label, (u, doc_id, example_line(label, texts[row - start].as_py()))
        start += batch.num_rows


def sample_name(label: str) -> str:
    """The file of a class's sample lines in the sample's run folder: `reference.txt`, `random.txt`."""
    return f"{label.removeprefix('__label__')}.txt"


def write_sample(item: tuple[str, Iterable[tuple[float, str, str]]], out_dir: str) -> None:
    """(label, its examples) -> their fastText lines in hash order, one file."""
    label, examples = item
    lines = [line for _, _, line in sorted(examples)]
    io.write_bytes(io.join(out_dir, sample_name(label)), "".join(lines).encode("utf-8"))


def build_sample_pipeline(p: beam.Pipeline, files: list[tuple[str, str]], seed: int, limit: int, out_dir: str):
    """Attach the sample job to `p`: per label, the `limit` documents of its files
    with the smallest `hash_unit(seed, "quality", id)` (ties: the smaller id), as
    fastText lines in that order, to `<out_dir>/<sample_name(label)>` (none: no file).

    Memory: the combiner keeps `limit` (hash, id, file, row) tuples per label, the
    texts of the winners only are read again, and one worker writes each label's
    `limit` lines; none of it grows with the corpus.

    Args:
        files: (label, cleaned Arrow file) pairs, any filesystem.
        out_dir: a folder every worker reaches (`pipeline.core.io.Run.dir`).
    """
    return (
        p
        | "Files" >> beam.Create(sorted(files))
        | "SpreadFiles" >> beam.Reshuffle()
        | "Candidates" >> beam.FlatMap(candidates, seed)
        | "Smallest" >> beam.combiners.Top.SmallestPerKey(limit)
        | "ByFile" >> beam.FlatMap(by_file)
        | "GroupByFile" >> beam.GroupByKey()
        | "Fetch" >> beam.FlatMap(fetch_examples)
        | "GroupByLabel" >> beam.GroupByKey()
        | "Write" >> beam.Map(write_sample, out_dir)
    )


def _read_lines(path: str) -> list[str]:
    """A sample file's lines (each ends with a newline; none inside: `example_line`)."""
    if not io.exists(path):
        return []
    data = io.read_bytes(path).decode("utf-8")
    return [line + "\n" for line in data.split("\n")[:-1]]


def draw_sample(cfg: Config, beam_args: list[str] | None = None) -> dict[str, list[str]]:
    """Run the sample job on `<out_dir>/clean` and commit its output to
    `<out_dir>/quality_sample/` (`pipeline.core.io.Run`); returns {label: fastText
    lines in hash order}: up to `max_examples` per class.

    Raises:
        QualityModelError: no clean output, or no document of a class in it.
    """
    q = cfg.clean.quality
    try:
        manifest = load_clean_manifest(cfg.out_dir)
        files = clean_files(cfg.out_dir, manifest, [*q.positive_sources, *q.negative_sources])
    except ContractError as e:
        raise QualityModelError(str(e)) from None
    classes = {POSITIVE: q.positive_sources, NEGATIVE: q.negative_sources}
    docs = {label: sum(e["rows"] for e in manifest["files"] if e["source"] in sources)
            for label, sources in classes.items()}
    if not docs[POSITIVE] or not docs[NEGATIVE]:
        _need_both(cfg, docs[POSITIVE], docs[NEGATIVE])
    inputs = [(label, path) for label, sources in classes.items() for s in sources for path in files.get(s, [])]
    quiet_beam_logging()
    options = pipeline_options(cfg, beam_args)
    warn_unshared(options, out_dir=cfg.out_dir)
    with io.Run(io.join(cfg.out_dir, SAMPLE_DIR)) as run:
        try:
            run_pipeline(options, run.dir, lambda p, _spill: build_sample_pipeline(
                p, inputs, cfg.seed, q.max_examples, run.dir))
            sample = {label: _read_lines(io.join(run.dir, sample_name(label))) for label in classes}
            run_name = io.relative(run.dir, run.final)
            run.commit({
                "format": SAMPLE_FORMAT, "run": run.id, "clean_run": manifest.get("run"), "seed": cfg.seed,
                "max_examples": q.max_examples, "sources": {"positive": q.positive_sources,
                                                             "negative": q.negative_sources},
                "files": [{"label": label, "file": f"{run_name}/{sample_name(label)}", "rows": len(lines)}
                          for label, lines in sample.items() if lines],
            })
        except BaseException:
            run.abandon()
            raise
    return sample


def _need_both(cfg: Config, positives: int, negatives: int) -> NoReturn:
    q = cfg.clean.quality
    raise QualityModelError(
        f"{io.join(cfg.out_dir, 'clean')}: need cleaned documents of {q.positive_sources} (positives) and "
        f"{q.negative_sources} (negatives); found {positives} and {negatives}"
    )


def train_quality_model(cfg: Config, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Train the classifier on `<out_dir>/clean`; writes `cfg.clean.quality.model`.

    The sample (`draw_sample`, a Beam job: `beam_args` go to Beam): up to
    `max_examples` negatives, and as many positives (at least one).

    Returns: {"model", "sha256", "positives", "negatives", "train_precision"}.
    Raises:
        QualityModelError: no positive or no negative example in the clean output.
    """
    check_fasttext_module()
    import fasttext

    q = cfg.clean.quality
    sample = draw_sample(cfg, beam_args)
    negatives = sample[NEGATIVE]
    positives = sample[POSITIVE][: max(len(negatives), 1)]
    if not positives or not negatives:
        _need_both(cfg, len(positives), len(negatives))
    examples = positives + negatives
    examples.sort(key=lambda line: hash_unit(cfg.seed, "order", line))
    with tempfile.TemporaryDirectory() as tmp:
        train_file = Path(tmp) / "train.txt"
        with open(train_file, "w", encoding="utf-8") as f:
            f.writelines(examples)
        model = fasttext.train_supervised(
            str(train_file), epoch=q.epochs, lr=q.lr, wordNgrams=2, dim=64,
            minCount=1, thread=1, seed=cfg.seed, verbose=0,
        )  # one thread: the same model bytes on every run
        _, precision, _ = model.test(str(train_file))
        tmp_model = Path(tmp) / "model.bin"
        model.save_model(str(tmp_model))
        data = tmp_model.read_bytes()
    io.write_bytes(q.model, data)
    return {
        "model": q.model,
        "sha256": hashlib.sha256(data).hexdigest(),
        "positives": len(positives),
        "negatives": len(negatives),
        "train_precision": float(precision),
    }


class QualityScorer:
    """A loaded classifier: `score(texts) -> probabilities of the positive label`.

    Load once per worker (`DoFn.setup`); never pickle it.
    """

    def __init__(self, model_path: str | Path):
        check_fasttext_module()
        import fasttext

        if not io.exists(model_path):
            raise QualityModelError(f"quality model not found: {model_path} ({TWO_STEPS})")
        path = io.local_copy(model_path)
        fasttext.FastText.eprint = lambda *a, **k: None
        self.model = fasttext.load_model(path)

    def score(self, texts: list[str]) -> list[float]:
        """P(reference page) for each text, in [0, 1]; the list form of predict works under numpy 2."""
        if not texts:
            return []
        lines = [to_single_line(t[:MAX_CHARS]) for t in texts]
        labels, probs = self.model.predict(lines, k=2)
        out = []
        for lab, pr in zip(labels, probs):
            scores = dict(zip(lab, pr))
            out.append(min(1.0, float(scores.get(POSITIVE, 0.0))))
        return out
