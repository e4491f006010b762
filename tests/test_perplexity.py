"""CCNet's perplexity filter: its normaliser, the document perplexity and the
buckets (pure), then the post-clean pass that applies it to a committed clean
output with models `lm-train` trained on that output's Wikipedia."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.core.config import ConfigError, load_config
from pipeline.core.schema import DOCUMENT_SCHEMA, write_clean_output
from pipeline.dedup import line_keys as ccnet
from pipeline.filters.perplexity import (
    UNICODE_PUNCT,
    bucket,
    cutoffs,
    doc_perplexity,
    normalize,
    normalized_lines,
    perplexity,
)
from pipeline.sources.base import make_document
from tests.conftest import ROOT, poem_passages, python_files, write_texts


def test_normalize_is_ccnets():
    """Strip, lowercase, accents off, digits to 0, CCNet's punctuation table,
    control characters (a tab) removed."""
    assert normalize("  Héllo, Wörld 2023 — «quoted» ’s\tx ") == 'hello, world 0000  -  "quoted" \'sx'
    assert normalize("Ｃａｆé ＂１２３＂！") == "ｃａｆe ＂000＂!"  # digits first: "１" never reaches the quote rule
    assert normalize("Straße ﬁne ٣") == "straße ﬁne 0"  # no NFKC: ligatures stay; Arabic-Indic digit -> 0
    assert normalized_lines("First line\n\n   \nSecond, 42.\n") == ["first line", "second, 00."]
    assert set(UNICODE_PUNCT) == set(ccnet._UNICODE_PUNCT)  # the dedup key removes what this replaces


def test_document_perplexity_and_buckets():
    scores = {"▁a ▁b": -2.0, "▁c": -1.0}

    def encode(lines):
        return [[f"▁{w}" for w in line.split()] for line in lines]

    # 3 log10 units over 5 tokens: each line's pieces and its </s>
    assert doc_perplexity(["a b", "c"], encode, scores.__getitem__) == round(10 ** 0.6, 1) == 4.0
    assert doc_perplexity([], encode, scores.__getitem__) is None
    assert perplexity(-5.0, 2) == 316.2
    cuts = cutoffs([10.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], (30, 60))
    assert cuts == pytest.approx([3.7, 6.4])
    assert [bucket(p, cuts) for p in (3.6, 3.7, 6.39, 6.4, 100.0)] == ["head", "middle", "middle", "tail", "tail"]


def test_config_checks_the_percentiles_and_keep():
    with pytest.raises(ConfigError, match="percentiles"):
        load_config(ROOT / "configs" / "demo.yaml", ["clean.perplexity.percentiles=[60, 30]"])
    with pytest.raises(ConfigError, match="clean.perplexity.keep"):
        load_config(ROOT / "configs" / "demo.yaml", ["clean.perplexity.keep=[]"])
    with pytest.raises(ConfigError, match="clean.perplexity.order"):
        load_config(ROOT / "configs" / "demo.yaml", ["clean.perplexity.order=1"])  # kenlm needs bigrams
    assert load_config(ROOT / "configs" / "demo.yaml", ["out_dir=x"]).clean.perplexity.model_dir == "x/lm"


def _write_langs(out: Path, parts: dict[str, list[tuple[str, str]]]) -> dict:
    """(text, lang) pairs as a committed clean output, two parts a source."""
    tables = {}
    for source, docs in parts.items():
        rows = [make_document(source, f"{source}-{i}", t, f"u:{i}", lang, 1.0) for i, (t, lang) in enumerate(docs)]
        tables[source] = [pa.Table.from_pylist(rows[k::2], schema=DOCUMENT_SCHEMA) for k in range(2)]
    return write_clean_output(str(out), tables, max_chunksize=7)


@pytest.fixture(scope="module")
def filtered(tmp_path_factory, demo_inputs):
    """A clean output: Wikipedia (60 passages of Paradise Lost, in English),
    commoncrawl pages (10 held-out passages and 10 Python files, English, and 2
    German pages) and books; the LM trained on it, then the perplexity filter
    applied (the classifier off)."""
    from pipeline.lm_train import train_language_models
    from pipeline.quality_filter import run_quality_filter

    out = tmp_path_factory.mktemp("ppl")
    poem, code = poem_passages(demo_inputs), python_files(demo_inputs)
    pages = [(t, "en") for pair in zip(poem[60:70], code[:10]) for t in pair] + [(t, "de") for t in poem[:2]]
    before = _write_langs(out, {"wikipedia": [(t, "en") for t in poem[:60]], "commoncrawl": pages,
                                "books": [(t, "en") for t in poem[60:65]]})
    cfg = load_config(ROOT / "configs" / "demo.yaml", [
        f"out_dir={out}", "sources.commoncrawl.quality=false", "clean.perplexity.vocab_size=300"])
    lm = train_language_models(cfg)
    pages_before = _docs(cfg, before, "commoncrawl")  # the filter's commit removes their run
    return cfg, before, pages_before, lm, run_quality_filter(cfg)


def _docs(cfg, manifest, source):
    return [d for e in manifest["files"] if e["source"] == source
            for d in pa.ipc.open_file(str(Path(cfg.out_dir) / "clean" / e["file"])).read_all().to_pylist()]


def test_the_filter_buckets_every_page_by_the_sample_cutoffs(filtered):
    """Every English page scored, cut-offs the 30th and 60th percentiles of all
    of them (the sample is every page here), the tail dropped: the 8 pages with
    the highest perplexity, all of them code; the German pages pass unscored."""
    from pipeline.lm_train import LanguageModels

    cfg, before, pages, lm, after = filtered
    models = LanguageModels(cfg.clean.perplexity.model_dir, ["en"])
    ppl = {d["url"]: models.perplexity(d["text"], "en") for d in pages if d["lang"] == "en"}
    cuts = cutoffs(ppl.values(), (30, 60))
    recorded = after["perplexity"]["langs"]["en"]
    assert recorded["cutoffs"] == cuts and recorded["sample_docs"] == 20
    assert recorded["arpa_sha256"] == lm["langs"]["en"]["arpa"]["sha256"]
    buckets = {u: bucket(p, cuts) for u, p in ppl.items()}
    tail = {u for u, b in buckets.items() if b == "tail"}
    assert len(tail) == 8 and all(int(u[2:]) % 2 == 1 for u in tail)  # odd urls: the code files
    kept = _docs(cfg, after, "commoncrawl")
    assert [d["url"] for d in kept] == [d["url"] for d in pages if d["url"] not in tail]
    for d in kept:
        meta = json.loads(d["meta"])
        if d["lang"] == "en":
            assert (meta["perplexity"], meta["bucket"]) == (ppl[d["url"]], buckets[d["url"]])
        else:
            assert "perplexity" not in meta
    assert after["counters"]["commoncrawl"] == {
        "docs_kept": 14, "drop.perplexity_tail": 8, "perplexity.head": 6, "perplexity.middle": 6,
        "perplexity.tail": 8, "perplexity.no_bucket": 2}
    books = {e["file"].split("/", 1)[1]: e["sha256"] for e in before["files"] if e["source"] == "books"}
    assert {e["file"].split("/", 1)[1]: e["sha256"] for e in after["files"] if e["source"] == "books"} == books


def test_a_rerun_keeps_the_cutoffs_and_the_bytes_and_the_report_shows_the_buckets(filtered):
    from pipeline.quality_filter import run_quality_filter
    from pipeline.report import funnel, write_report

    cfg, _, _, _, after = filtered
    assert run_quality_filter(cfg) == {**after, "skipped": True}  # up to date: nothing runs
    again = run_quality_filter(cfg, force=True)  # the tail is gone: new percentiles would cut again
    assert again["perplexity"] == after["perplexity"]
    assert [e["sha256"] for e in again["files"]] == [e["sha256"] for e in after["files"]]
    assert again["counters"] == after["counters"]
    assert ("perplexity", {"perplexity_tail": 8}) in funnel(after["counters"]["commoncrawl"])["by_stage"]
    _, text = write_report(cfg)
    assert "| commoncrawl | 20 | 6 | 6 | 8 (8 removed) | 2 | 8 | 0 | 14 |" in text
    assert "perplexity: perplexity_tail: 8" in text


def test_the_filter_needs_its_models(tmp_path, demo_inputs):
    from pipeline.lm_train import LanguageModelError
    from pipeline.quality_filter import run_quality_filter

    write_texts(tmp_path, {"commoncrawl": poem_passages(demo_inputs)[:3]})
    cfg = load_config(ROOT / "configs" / "demo.yaml", [f"out_dir={tmp_path}", "sources.commoncrawl.quality=false"])
    with pytest.raises(LanguageModelError, match="lm/manifest.json not found: run `python -m pipeline lm-train`"):
        run_quality_filter(cfg)


def test_quality_train_skips_an_output_its_model_already_filtered(tmp_path):
    """After quality-filter applied the classifier, training it again on what it
    let through would learn other pages: `quality-train` says so and stops."""
    from pipeline.__main__ import main
    from pipeline.core.io import sha256_file
    from pipeline.quality_filter import classifier_applied

    cfg = load_config(ROOT / "configs" / "demo.yaml", [f"out_dir={tmp_path}"])
    model = tmp_path / "quality" / "model.bin"
    model.parent.mkdir()
    model.write_bytes(b"a classifier")
    manifest = {"format": "llama-clean-documents/1", "run": "r", "files": [], "counters": {},
                "quality_filter": {"filters": ["perplexity"]}, "quality_model": {"sha256": sha256_file(model)}}
    (tmp_path / "clean").mkdir()
    (tmp_path / "clean" / "manifest.json").write_text(json.dumps(manifest))
    assert classifier_applied(cfg) is None  # only the perplexity filter ran
    manifest["quality_filter"]["filters"].append("classifier")
    (tmp_path / "clean" / "manifest.json").write_text(json.dumps(manifest))
    assert classifier_applied(cfg) == str(model)
    assert main(["quality-train", "--set", f"out_dir={tmp_path}"]) == 0  # skipped
    model.write_bytes(b"another classifier")
    assert classifier_applied(cfg) is None
