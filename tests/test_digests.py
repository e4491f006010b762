"""Each stage's settings digest covers what changes its output and nothing
else; the commands that read an earlier stage's output refuse outputs of
different runs or settings, naming both, unless told --allow-mixed; the
report states the runs it describes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core import lineage
from pipeline.core.config import load_config
from pipeline.core.schema import CLEAN_FORMAT, SHARDS_FORMAT

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"


def _digests(*sets: str) -> tuple[str, str, str]:
    cfg = load_config(DEMO, list(sets))
    return cfg.clean_digest(), cfg.tokenizer_digest(), cfg.shards_digest()


@pytest.mark.parametrize(("override", "changes"), [
    ("sources.books.share=9", "tokenizer shards"),  # the mixture: the sample and the shards, not clean
    ("clean.split_bytes=1000", ""),  # how inputs are read in spans: the same documents
    ("langid.batch_size=7", ""),
    ("sources.commoncrawl.perplexity=false", ""),  # a pass after clean (quality-filter)
    ("clean.quality.epochs=3", ""),  # quality-train's
    ("shards.batch_size=3", ""),  # documents per encode call
    ("beam.direct_num_workers=1", ""),  # the same bytes for 1 and 2 workers
    ("out_dir=out/elsewhere", ""),
    ("tokenizer.model_prefix=out/t/m", ""),
    ("trainer.steps=7", ""),
    ("clean.min_chars=150", "clean"),
    ("sources.books.langs=[en]", "clean"),
    ("sources.commoncrawl.line_dedup=false", "clean"),
    ("sources.books.near_dedup=null", "clean"),
    ("clean.near_dedup.books.threshold=0.95", "clean"),
    ("corpus_dir=/data", "clean"),
    ("seed=7", "clean tokenizer shards"),
    ("tokenizer.vocab_size=500", "tokenizer"),
    ("shards.total_tokens=3e6", "shards"),
    ("shards.val_fraction=0.1", "shards"),
])
def test_a_stage_digest_changes_with_what_changes_its_output(override, changes):
    base, changed = _digests(), _digests(override)
    stages = ("clean", "tokenizer", "shards")
    assert {s for s, a, b in zip(stages, base, changed) if a != b} == set(changes.split())


def test_corpus_only_is_a_clean_setting():
    assert _digests("corpus_dir=/data")[0] != _digests("corpus_dir=/data", "corpus_only=true")[0]


def _chain(tmp_path: Path, *sets: str):
    """A config under tmp_path and writers of its stage manifests, as the stages write them."""
    cfg = load_config(DEMO, [f"out_dir={tmp_path}/out", *sets])
    model = Path(f"{cfg.tokenizer.model_prefix}.model")
    model.parent.mkdir(parents=True)
    model.write_bytes(b"model A")
    files = [{"source": "books", "file": "run-c1/books/part-00000-of-00001.arrow", "rows": 2, "bytes": 9,
              "sha256": "ab" * 32}]
    clean = {"format": CLEAN_FORMAT, "run": "c1", "clean_config_digest": cfg.clean_digest(), "files": files}
    contents = lineage.contents(clean)
    tok = {"format": lineage.TOKENIZER_FORMAT, "sha256": lineage._sha256(str(model)), "clean_run": "c1",
           "clean_contents": contents, "tokenizer_digest": cfg.tokenizer_digest()}
    shards = {"format": SHARDS_FORMAT, "run": "s1", "shards_digest": cfg.shards_digest(), "clean_run": "c1",
              "clean_contents": contents, "sources": {}, "tokens_written": 0, "total_tokens_target": 2e6,
              "tokenizer": {"path": str(model), "vocab_size": 2000, "sha256": tok["sha256"]},
              "shards": [{"split": "train", "file": "run-s1/train-00000.arrow", "sha256": "cd" * 32}]}

    def write(clean_=clean, tok_=tok, shards_=shards, training=None):
        for path, obj in ((Path(cfg.out_dir, "clean", "manifest.json"), clean_),
                          (Path(lineage.tokenizer_manifest_path(cfg)), tok_),
                          (Path(cfg.shards.out, "manifest.json"), shards_),
                          (Path(lineage.training_lineage_path(cfg)), training)):
            path.parent.mkdir(parents=True, exist_ok=True)
            if obj is not None:
                path.write_text(json.dumps(obj))
        return lineage.read_runs(cfg)

    return cfg, clean, tok, shards, write


def test_one_chain_of_runs_agrees(tmp_path):
    cfg, _, _, shards, write = _chain(tmp_path)
    runs = write()
    assert lineage.problems(cfg, runs, "training") == []
    training = lineage.training_lineage(runs)
    assert training["shards_run"] == "s1" and training["shards_contents"] == lineage.contents(shards)
    runs = write(training=training)
    assert lineage.problems(cfg, runs, "training") == []
    assert lineage.describe(cfg, runs) == [
        f"clean: run c1 (settings digest {cfg.clean_digest()})",
        f"tokenizer: {cfg.tokenizer.model_prefix}.model, sha256 {runs.model_sha256[:16]}, trained on clean run c1",
        f"shards: run s1 from clean run c1, tokenizer sha256 {runs.model_sha256[:16]}",
        f"training: {cfg.trainer.out}, on shards run s1"]


def test_a_rerun_that_wrote_the_same_bytes_is_the_same_output(tmp_path):
    cfg, clean, _, _, write = _chain(tmp_path)
    rerun = {**clean, "run": "c2", "files": [{**clean["files"][0], "file": "run-c2/books/part-00000-of-00001.arrow"}]}
    assert lineage.problems(cfg, write(clean_=rerun), "shards") == []


def test_mixed_runs_are_named(tmp_path):
    cfg, clean, tok, shards, write = _chain(tmp_path)
    newer = {**clean, "run": "c2", "files": [{**clean["files"][0], "sha256": "ef" * 32}]}
    runs = write(clean_=newer)
    assert lineage.problems(cfg, runs, "clean") == []
    assert lineage.problems(cfg, runs, "shards") == [
        (f"the tokenizer (sha256 {tok['sha256'][:16]}) was trained on clean run c1, but the clean output is now "
         "run c2: rerun `python -m tokenizer train`"),
        ("the shards (run s1) were made from clean run c1, but the clean output is now run c2: rerun "
         "`python -m pipeline shards`")]
    Path(f"{cfg.tokenizer.model_prefix}.model").write_bytes(b"model B")
    runs = write()
    assert lineage.problems(cfg, runs, "shards") == [
        (f"the shards (run s1) were encoded with the tokenizer of sha256 {tok['sha256'][:16]}, but "
         f"{cfg.tokenizer.model_prefix}.model is now {runs.model_sha256[:16]}: rerun `python -m pipeline shards`")]
    runs = write(training={"shards_run": "s0", "shards_contents": "0" * 16},
                 shards_={**shards, "tokenizer": {"sha256": runs.model_sha256}})
    assert lineage.problems(cfg, runs, "training") == [
        (f"the training in {cfg.trainer.out} ran on shards run s0, but the shards are now run s1: train afresh "
         "(`python -m trainer --no-resume`)")]
    assert lineage.check_training(cfg, resume=False).training is None  # its checkpoints go: no conflict
    with pytest.raises(lineage.MixedRuns, match=r"^trainer: .*shards run s0, but the shards are now run s1"):
        lineage.check_training(cfg, resume=True)


def test_settings_that_do_not_match_the_config_are_named(tmp_path):
    cfg, _, _, _, write = _chain(tmp_path)
    write()
    other = load_config(DEMO, [f"out_dir={tmp_path}/out", "clean.min_chars=5", "sources.books.share=9"])
    found = lineage.problems(other, lineage.read_runs(other), "shards")
    assert [p.split(" (")[0] for p in found] == ["the clean output", "the tokenizer", "the shards"]
    assert found[0] == (f"the clean output (run c1) was written under other cleaning settings (digest "
                        f"{cfg.clean_digest()}, this config's {other.clean_digest()}): rerun "
                        "`python -m pipeline clean`")


def test_commands_refuse_mixed_runs_unless_allowed(tmp_path):
    """`tokenizer train`, `shards` and `report` stop at once, naming the runs;
    --allow-mixed goes on (the report then says so)."""
    cfg, clean, _, _, write = _chain(tmp_path)
    write(clean_={**clean, "clean_config_digest": "0123456789abcdef"})

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", *argv, "--config", str(DEMO), "--set", f"out_dir={cfg.out_dir}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)

    for argv in (("tokenizer", "train"), ("pipeline", "shards"), ("pipeline", "report")):
        proc = run(*argv)
        assert proc.returncode == 1, (argv, proc.stderr)
        command = "tokenizer train" if argv[0] == "tokenizer" else argv[1]
        assert proc.stderr.startswith(f"error: {command}: the outputs it reads are not of one run of this config: "
                                      "the clean output (run c1) was written under other cleaning settings "
                                      f"(digest 0123456789abcdef, this config's {cfg.clean_digest()})"), proc.stderr
        assert proc.stderr.count("\n") == 1 and "--allow-mixed" in proc.stderr
    proc = run("pipeline", "report", "--allow-mixed")
    assert proc.returncode == 0, proc.stderr
    report = Path(cfg.out_dir, "report.md").read_text()
    assert "- clean: run c1 (settings digest 0123456789abcdef)" in report
    assert "**Mixed runs** (report written with --allow-mixed)" in report
    assert "WARNING pipeline.core.lineage: report reads mixed runs (--allow-mixed): the clean output (run c1)" in proc.stderr


def test_no_departures_from_target_without_a_clean_manifest(tmp_path):
    from pipeline.report import build_report

    cfg = load_config(DEMO, [f"out_dir={tmp_path}"])
    Path(cfg.shards.out).mkdir(parents=True)
    mix = {"books": {"share": 0.5, "planned_share": 0.5, "achieved_share": 0.2, "tokens_available": 10,
                     "tokens_written": 10}}
    Path(cfg.shards.out, "manifest.json").write_text(json.dumps(
        {"sources": mix, "shards": [], "tokens_written": 10, "total_tokens_target": 10, "mixture": {"tolerance": 0.005},
         "tokenizer": {"path": "m.model", "vocab_size": 2, "sha256": "0" * 64}}))
    report = build_report(cfg)
    assert "(no clean manifest: run `python -m pipeline clean`)" in report
    assert "departs from the target" not in report and "OFF TARGET" not in report
