"""The LLaMA reference-page classifier (LLaMA 2.1: "a linear model to classify pages
used as references in Wikipedia v.s. randomly sampled pages"; RedPajama: a fastText
classifier, keep pages scoring >= 0.25).

`python -m pipeline quality-train` trains a fastText supervised model on positives
(by default the cleaned Wikipedia and books text) against random CommonCrawl pages,
both read from the clean job's output; with one thread and a fixed seed it is
reproducible. The clean job then keeps a CommonCrawl page when its probability of
the positive label is at least `clean.quality.threshold`.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any, Iterator

from pipeline.config import Config, PipelineError
from pipeline.filters.langid import check_fasttext_module, to_single_line
from pipeline import io
from pipeline.mixture import hash_unit
from pipeline.schema import ContractError, clean_files, load_clean_manifest
from pipeline.shards import read_documents

POSITIVE, NEGATIVE = "__label__reference", "__label__random"
MAX_CHARS = 4000  # of each page given to the classifier (train and predict alike)


class QualityModelError(PipelineError):
    """The classifier cannot be trained or loaded (names the file or the missing data)."""


def _texts(files: dict[str, list[str]], source: str) -> Iterator[tuple[str, str]]:
    """(doc id, text) of every cleaned document of a source, batch by batch."""
    for path in files.get(source, []):
        for _, doc_id, text in read_documents(path):
            yield doc_id, text


def example_line(label: str, text: str) -> str:
    """One fastText training line: label, then the page's first MAX_CHARS as one line."""
    return f"{label} {to_single_line(text[:MAX_CHARS]).strip()}\n"


def select(files: dict[str, list[str]], sources: list[str], seed: int, limit: int) -> list[str]:
    """Up to `limit` texts of `sources`, the ones with the smallest seeded id hash."""
    ranked = sorted(
        (hash_unit(seed, "quality", doc_id), text)
        for source in sources
        for doc_id, text in _texts(files, source)
        if text.strip()
    )
    return [text for _, text in ranked[:limit]]


def train_quality_model(cfg: Config) -> dict[str, Any]:
    """Train the classifier on `<out_dir>/clean`; writes `cfg.clean.quality.model`.

    Returns: {"model", "sha256", "positives", "negatives", "train_precision"}.
    Raises:
        QualityModelError: no positive or no negative example in the clean output.
    """
    check_fasttext_module()
    import fasttext

    q = cfg.clean.quality
    clean_dir = io.join(cfg.out_dir, "clean")
    try:
        files = clean_files(cfg.out_dir, load_clean_manifest(cfg.out_dir))
    except ContractError as e:
        raise QualityModelError(str(e)) from None
    negatives = select(files, q.negative_sources, cfg.seed, q.max_examples)
    positives = select(files, q.positive_sources, cfg.seed, max(len(negatives), 1))
    if not positives or not negatives:
        raise QualityModelError(
            f"{clean_dir}: need cleaned documents of {q.positive_sources} (positives) and "
            f"{q.negative_sources} (negatives); found {len(positives)} and {len(negatives)}"
        )
    examples = [example_line(POSITIVE, t) for t in positives] + [example_line(NEGATIVE, t) for t in negatives]
    examples.sort(key=lambda line: hash_unit(cfg.seed, "order", line))
    with tempfile.TemporaryDirectory() as tmp:
        train_file = Path(tmp) / "train.txt"
        train_file.write_text("".join(examples), encoding="utf-8")
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
            raise QualityModelError(f"quality model not found: {model_path} (run `python -m pipeline quality-train`)")
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
