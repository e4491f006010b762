"""The reference-page classifier: reproducible training, scores, and the clean-job filter."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.config import load_config
from pipeline.quality_model import QualityModelError, QualityScorer, train_quality_model
from pipeline.schema import DOCUMENT_FIELDS, DOCUMENT_SCHEMA, write_clean_output
from pipeline.sources.base import make_document

ROOT = Path(__file__).resolve().parents[1]


def _write(out: Path, parts: dict[str, list[str]]) -> None:
    tables = {}
    for source, texts in parts.items():
        docs = [make_document(source, f"{source}-{i}", t, f"u:{i}") for i, t in enumerate(texts)]
        tables[source] = [pa.Table.from_pydict({f: [d[f] for d in docs] for f in DOCUMENT_FIELDS}, schema=DOCUMENT_SCHEMA)]
    write_clean_output(str(out), tables)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, demo_inputs):
    """Positives: paragraphs of Paradise Lost; negatives (configured): real Python files."""
    out = tmp_path_factory.mktemp("q")
    poem = demo_inputs["inputs/books/plrabn12.txt"].read_text(encoding="latin-1")
    lines = [line for line in poem.splitlines() if line.strip()][100:]  # past the preamble
    paragraphs = ["\n".join(lines[i : i + 20]) for i in range(0, 20 * 70, 20)]  # 20-line passages
    with gzip.open(demo_inputs["inputs/github/site-packages.jsonl.gz"], "rt", encoding="utf-8") as f:
        code = [r["content"] for r in map(json.loads, f) if r["path"].endswith(".py") and len(r["content"]) > 300]
    _write(out, {"books": paragraphs[:60], "github": code[:60]})
    return out, paragraphs[60:70], code[60:70]


def _cfg(out: Path, model: str):
    return load_config(ROOT / "configs" / "demo.yaml", [
        f"out_dir={out}", f"clean.quality.model={out}/{model}",
        "clean.quality.positive_sources=[books]", "clean.quality.negative_sources=[github]",
    ])


def test_training_is_reproducible_and_separates_held_out_pages(corpus):
    out, held_poem, held_code = corpus
    a = train_quality_model(_cfg(out, "a.bin"))
    b = train_quality_model(_cfg(out, "b.bin"))
    assert a["sha256"] == b["sha256"]
    assert (a["positives"], a["negatives"]) == (60, 60)
    scorer = QualityScorer(a["model"])
    poem_scores, code_scores = scorer.score(held_poem), scorer.score(held_code)
    assert min(poem_scores) > 0.5 > max(code_scores)
    assert scorer.score(["line one\nline two"]) == scorer.score(["line one line two"])


def test_missing_examples_and_model_are_clear_errors(tmp_path):
    with pytest.raises(QualityModelError, match="manifest.json not found: run `python -m pipeline clean`"):
        train_quality_model(_cfg(tmp_path, "m.bin"))
    _write(tmp_path, {"books": ["A reference page. " * 30]})  # positives, but no negatives
    with pytest.raises(QualityModelError, match="need cleaned documents"):
        train_quality_model(_cfg(tmp_path, "m.bin"))
    with pytest.raises(QualityModelError, match="quality-train"):
        QualityScorer(tmp_path / "none.bin")
