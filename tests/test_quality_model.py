"""The reference-page classifier: its Beam training sample, reproducible training,
scores, and the second step that filters a committed clean output."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.core.config import load_config
from pipeline.core.io import sha256_file
from pipeline.core.schema import (
    DOCUMENT_SCHEMA,
    clean_files,
)
from pipeline.mixture import hash_unit
from pipeline.quality_model import (
    NEGATIVE,
    POSITIVE,
    QualityModelError,
    QualityScorer,
    draw_sample,
    example_line,
    train_quality_model,
)
from pipeline.shards import read_documents
from tests.conftest import ROOT, poem_passages, python_files, write_texts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, demo_inputs):
    """Positives: paragraphs of Paradise Lost; negatives (configured): real Python files."""
    out = tmp_path_factory.mktemp("q")
    paragraphs, code = poem_passages(demo_inputs), python_files(demo_inputs)
    write_texts(out, {"books": paragraphs[:60], "github": code[:60]})
    return out, paragraphs[60:70], code[60:70]


def _cfg(out: Path, model: str, *extra: str):
    return load_config(ROOT / "configs" / "demo.yaml", [
        f"out_dir={out}", f"clean.quality.model={out}/{model}",
        "clean.quality.positive_sources=[books]", "clean.quality.negative_sources=[github]", *extra,
    ])


def _select_in_memory(out: Path, sources: list[str], seed: int, limit: int) -> list[str]:
    """The reference: every (hash, text) of `sources` sorted in memory (what
    quality-train once did on the launcher), the first `limit` texts."""
    files = clean_files(str(out))
    ranked = sorted(
        (hash_unit(seed, "quality", doc_id), text)
        for source in sources for path in files.get(source, []) for _, doc_id, text in read_documents(path)
        if text.strip()
    )
    return [text for _, text in ranked[:limit]]


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
    write_texts(tmp_path, {"books": ["A reference page. " * 30]})  # positives, but no negatives
    with pytest.raises(QualityModelError, match="need cleaned documents"):
        train_quality_model(_cfg(tmp_path, "m.bin"))
    with pytest.raises(QualityModelError, match="quality-train"):
        QualityScorer(tmp_path / "none.bin")


def test_beam_sample_is_the_in_memory_selection(tmp_path, demo_inputs):
    """Per class, the documents with the smallest seeded id hash, in that order,
    over several parts and record batches; a blank text is never an example."""
    paragraphs, code = poem_passages(demo_inputs), python_files(demo_inputs)
    write_texts(tmp_path, {"books": [*paragraphs[:40], " \n "], "github": code[:50]}, num_parts=3)
    cfg = _cfg(tmp_path, "m.bin", "clean.quality.max_examples=25")
    sample = draw_sample(cfg)
    assert sample[POSITIVE] == [example_line(POSITIVE, t) for t in _select_in_memory(tmp_path, ["books"], cfg.seed, 25)]
    assert sample[NEGATIVE] == [example_line(NEGATIVE, t) for t in _select_in_memory(tmp_path, ["github"], cfg.seed, 25)]
    assert len(set(sample[POSITIVE])) == len(set(sample[NEGATIVE])) == 25
    manifest = json.loads((tmp_path / "quality_sample" / "manifest.json").read_text())
    assert [(f["label"], f["rows"]) for f in manifest["files"]] == [(POSITIVE, 25), (NEGATIVE, 25)]

    # two sources in one class are ranked together; fewer documents than the limit: all of them
    both = _cfg(tmp_path, "m.bin", "clean.quality.max_examples=60", "clean.quality.positive_sources=[books, github]")
    sample = draw_sample(both)
    assert sample[POSITIVE] == [example_line(POSITIVE, t)
                                for t in _select_in_memory(tmp_path, ["books", "github"], cfg.seed, 60)]
    assert len(sample[NEGATIVE]) == 50 and len(sample[POSITIVE]) == 60


@pytest.fixture(scope="module")
def filtered(corpus, tmp_path_factory, demo_inputs):
    """A clean output whose commoncrawl part mixes held-out passages and code,
    with books (not filtered) and a dead-letter part beside it; quality-filter
    applied to it with the model trained on `corpus`."""
    from pipeline.quality_filter import run_quality_filter

    model_dir, held_poem, held_code = corpus
    model = train_quality_model(_cfg(model_dir, "filter.bin"))["model"]
    out = tmp_path_factory.mktemp("qf")
    mixed = [t for pair in zip(held_poem, held_code) for t in pair]
    before = write_texts(out, {"commoncrawl": mixed, "books": poem_passages(demo_inputs)[:5]}, num_parts=2)
    run = before["files"][0]["file"].split("/", 1)[0]
    dead = out / "clean" / run / "dead_letter" / "part-00000-of-00001.jsonl"
    dead.parent.mkdir()
    dead.write_text(json.dumps({"path": "x.warc.gz", "reason": "truncated", "record": "7", "source": "commoncrawl"}) + "\n")
    before["dead_letters"] = [{"file": f"{run}/dead_letter/part-00000-of-00001.jsonl", "rows": 1,
                               "bytes": dead.stat().st_size, "sha256": sha256_file(dead)}]
    before["counters"] = {"books": {"docs_kept": 5, "docs_read": 5}, "commoncrawl": {"docs_kept": 20, "docs_read": 20}}
    (out / "clean" / "manifest.json").write_text(json.dumps(before))
    docs_before = {e["file"].split("/", 1)[1]: pa.ipc.open_file(str(out / "clean" / e["file"])).read_all().to_pylist()
                   for e in before["files"]}
    cfg = load_config(ROOT / "configs" / "demo.yaml", [f"out_dir={out}", f"clean.quality.model={model}",
                                                       "sources.commoncrawl.perplexity=false"])  # the classifier alone
    return cfg, before, docs_before, run_quality_filter(cfg)


def _by_name(entries: list[dict]) -> dict[str, str]:
    return {e["file"].split("/", 1)[1]: e["sha256"] for e in entries}


def test_quality_filter_keeps_what_the_clean_jobs_filter_keeps(filtered, tmp_path):
    """Per part, the documents and meta the clean job's QualityFilter yields for
    the same documents, in the bytes the clean job's writer gives them; the
    other sources' parts and the dead letters copied as they were."""
    from pipeline.clean import QualityFilter, record_batches
    from pipeline.core.schema import write_arrow

    cfg, before, docs_before, after = filtered
    in_job = QualityFilter(cfg.model_dump_json())
    in_job.setup()
    out = Path(cfg.out_dir) / "clean"
    written = _by_name(after["files"])
    assert sorted(written) == sorted(docs_before)
    for name, docs in docs_before.items():
        expected = list(in_job.process(docs))
        got = _read(out, after, name)
        assert [(d["id"], d["meta"]) for d in got] == [(d["id"], d["meta"]) for d in expected]
        reference = write_arrow(str(tmp_path / name.replace("/", "-")), DOCUMENT_SCHEMA, record_batches(expected))
        assert written[name] == reference["sha256"]
        if name.startswith("books/"):
            assert written[name] == _by_name(before["files"])[name]  # copied as it was
    kept = [d for name in written if name.startswith("commoncrawl/") for d in _read(out, after, name)]
    passages = {f"u:{i}" for i in range(0, 20, 2)}  # `mixed`: a passage, then a code page
    assert passages <= {d["url"] for d in kept} and len(kept) == 12  # and 2 of the 10 code pages
    assert min(json.loads(d["meta"])["quality_score"] for d in kept) >= 0.25
    assert _by_name(after["dead_letters"]) == _by_name(before["dead_letters"])
    assert "truncated" in (out / after["dead_letters"][0]["file"]).read_text()


def test_quality_filter_counts_its_drops_and_a_rerun_writes_the_same_bytes(filtered):
    from pipeline.quality_filter import run_quality_filter
    from pipeline.report import funnel, write_report

    cfg, before, _, after = filtered
    model = cfg.clean.quality.model
    assert after["counters"] == {"books": {"docs_kept": 5, "docs_read": 5},
                                 "commoncrawl": {"docs_kept": 12, "docs_read": 20, "drop.quality_classifier": 8}}
    assert after["quality_model"] == {"path": model, "sha256": sha256_file(model), "threshold": 0.25,
                                      "sources": ["commoncrawl"]}
    assert after["format"] == before["format"] and after["quality_filter"]["from_run"] == before["run"]
    assert ("quality", {"quality_classifier": 8}) in funnel(after["counters"]["commoncrawl"])["by_stage"]
    _, text = write_report(cfg)
    assert "quality: quality_classifier: 8" in text
    assert f"sha256 {sha256_file(model)[:16]}, threshold 0.25) was applied to the cleaned documents of commoncrawl" in text

    assert run_quality_filter(cfg) == {**after, "skipped": True}  # up to date: nothing runs
    again = run_quality_filter(cfg, force=True)  # its own output in: nothing more to drop, the same bytes
    assert again["run"] != after["run"]
    assert _by_name(again["files"]) == _by_name(after["files"])
    assert _by_name(again["dead_letters"]) == _by_name(after["dead_letters"])
    assert again["counters"] == after["counters"]
    assert not (Path(cfg.out_dir) / "clean" / after["files"][0]["file"]).exists()  # the old run is gone


def test_quality_filter_needs_the_model_and_a_clean_output(tmp_path):
    from pipeline.__main__ import main
    from pipeline.quality_filter import run_quality_filter

    with pytest.raises(QualityModelError, match="quality-train --set clean.quality.model=PATH"):
        run_quality_filter(_cfg(tmp_path, "none.bin"))
    (tmp_path / "m.bin").write_bytes(b"not read: there is no clean output")
    with pytest.raises(QualityModelError, match="manifest.json not found: run `python -m pipeline clean`"):
        run_quality_filter(_cfg(tmp_path, "m.bin"))
    assert main(["quality-filter", "--set", f"out_dir={tmp_path}"]) == 1  # no <out_dir>/quality/model.bin


def _read(out: Path, manifest: dict, name: str) -> list[dict]:
    """The Documents of a part (by its name inside the run) of a committed clean output."""
    (entry,) = [e for e in manifest["files"] if e["file"].split("/", 1)[1] == name]
    return pa.ipc.open_file(str(out / entry["file"])).read_all().to_pylist()
