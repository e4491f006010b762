"""`python -m pipeline`: one subcommand per stage, each explained in the top help
and its own --help, dispatched to its handler with the loaded config and the
arguments left for Beam; exit codes 0 (done or skipped), 1 (an expected
failure), 2 (a bad command line or config)."""

from __future__ import annotations

import pytest

from pipeline.__main__ import BEAM_EPILOG, COMMANDS, main
from pipeline.core.config import load_config
from tests.conftest import ROOT

DEMO = str(ROOT / "configs" / "demo.yaml")


def _words(text: str) -> str:
    return " ".join(text.split())


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return _words(capsys.readouterr().out)


def _outputs(tmp_path) -> list[str]:
    return ["--config", DEMO, "--set", f"out_dir={tmp_path}", "--set", f"shards.out={tmp_path}/s",
            "--set", f"trainer.out={tmp_path}/t"]


def test_top_help_explains_every_command_in_the_order_make_demo_runs_them(capsys):
    text = _help(capsys)
    names = ["fetch", "clean", "lm-train", "quality-train", "quality-filter", "shards", "report", "plan"]
    assert [c.name for c in COMMANDS] == names
    at = [text.index(f" {c.name} {_words(c.details)}") for c in COMMANDS]
    assert at == sorted(at)
    assert "passed to Beam (e.g. --runner=DataflowRunner --project=P --region=R)" in text


def test_each_command_help_explains_it_with_its_own_options(capsys):
    force, mixed = set(), set()
    for c in COMMANDS:
        text = _help(capsys, c.name)
        assert f"usage: python -m pipeline {c.name} [-h] [--config CONFIG] [--set KEY=VALUE]" in text
        assert _words(c.details) in text
        assert (_words(BEAM_EPILOG) in text) == c.beam_job
        force |= {c.name} if "[--force]" in text else set()
        mixed |= {c.name} if "[--allow-mixed]" in text else set()
    assert force == {"clean", "lm-train", "quality-train", "quality-filter", "shards"}
    assert mixed == {"quality-filter", "shards", "report"}
    assert "[--lid-model PATH]" in _help(capsys, "fetch")
    assert "[--throughputs FILE]" in _help(capsys, "plan")


def test_clean_help_lists_the_formats_each_source_reads(capsys):
    from pipeline.inputs import formats_help

    assert _words(formats_help()) in _help(capsys, "clean")


def test_report_command_writes_and_prints_the_report(tmp_path, capsys):
    assert main(["report", *_outputs(tmp_path)]) == 0
    out = capsys.readouterr().out
    text = (tmp_path / "report.md").read_text()
    assert out == f"{text}\nreport: {tmp_path}/report.md\n"
    assert "(no clean manifest: run `python -m pipeline clean`)" in text


@pytest.mark.parametrize(("argv", "target", "line"), [
    (["clean"], "pipeline.clean.run_clean",
     "clean: skipped: {out}/clean (run R1) is up to date with these inputs and settings (--force reruns it)"),
    (["shards"], "pipeline.shards.run_shards",
     ("shards: skipped: {out}/s (run R1) is up to date with this clean output, tokenizer and settings "
      "(--force reruns it)")),
    (["lm-train"], "pipeline.lm_train.train_language_models",
     "lm-train: skipped: {out}/lm is up to date with this Wikipedia and these settings (--force reruns it)"),
    (["quality-filter", "--allow-mixed"], "pipeline.quality_filter.run_quality_filter",
     ("quality-filter: skipped: {out}/clean (run R1) is already filtered with these models and settings "
      "(--force reruns it)")),
])
def test_a_skipped_stage_says_so_in_one_line(argv, target, line, tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(target, lambda cfg, beam_args, **kw: calls.append((beam_args, kw)) or
                        {"skipped": True, "run": "R1"})
    assert main([*argv, *_outputs(tmp_path), "--direct_num_workers=2"]) == 0
    assert capsys.readouterr().out == line.format(out=tmp_path) + "\n"
    assert calls[0][0] == ["--direct_num_workers=2"] and calls[0][1]["force"] is False


def test_a_stage_runs_with_force_and_beams_arguments(tmp_path, capsys, monkeypatch):
    calls = []
    manifest = {"files": [{}, {}], "seconds": 1.5, "counters": {"books": {"docs_kept": 2}}}
    monkeypatch.setattr("pipeline.clean.run_clean",
                        lambda cfg, beam_args, force: calls.append((cfg.out_dir, beam_args, force)) or manifest)
    assert main(["clean", *_outputs(tmp_path), "--force", "--runner=DirectRunner"]) == 0
    assert calls == [(str(tmp_path), ["--runner=DirectRunner"], True)]
    assert capsys.readouterr().out == f'clean: 2 files in {tmp_path}/clean (1.5 s)\n  books          {{"docs_kept": 2}}\n'


def test_an_expected_failure_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    from pipeline.clean import CleanError

    def fail(*args, **kwargs):
        raise CleanError("no inputs: sources.books.inputs matches no file")

    monkeypatch.setattr("pipeline.clean.run_clean", fail)
    assert main(["clean", *_outputs(tmp_path)]) == 1
    assert capsys.readouterr().err == "error: no inputs: sources.books.inputs matches no file\n"


def test_a_bad_config_exits_2_naming_it(tmp_path, capsys):
    assert main(["plan", *_outputs(tmp_path), "--set", "no_such_key=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no_such_key" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["clean", "--confg=x.yaml"], "unrecognized argument --confg: did you mean --config?"),
    (["fetch", "--runner=DirectRunner"], "unrecognized arguments: --runner=DirectRunner"),
])
def test_arguments_that_must_not_reach_beam_exit_2(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, *_outputs(tmp_path)])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_the_plan_options_reach_the_config(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("pipeline.plan.run_plan", lambda cfg, config, throughputs: seen.append(cfg.plan) or {})
    monkeypatch.setattr("pipeline.plan.format_plan", lambda plan: "")
    assert main(["plan", *_outputs(tmp_path), "--gpus", "64", "--mfu", "0.4"]) == 0
    assert (seen[0].gpus, seen[0].mfu, seen[0].tokens_per_gpu_s) == (64, 0.4, None)
    cfg = load_config(DEMO, [])
    assert cfg.plan.gpus != 64


def test_beam_is_imported_without_pandas_and_bigquery_which_stay_importable():
    """The command line's first Beam import leaves out what no job uses; nothing is
    lost: pandas, the BigQuery connector, pyarrow's pandas conversion and the
    object-store filesystems all work afterwards."""
    import subprocess
    import sys

    code = """
import sys
from pipeline.__main__ import NOT_AT_BEAM_IMPORT, import_beam
import_beam()
print(sorted(m for m in NOT_AT_BEAM_IMPORT if m in sys.modules))
from apache_beam.io.filesystems import FileSystems
print([type(FileSystems.get_filesystem(p)).__name__ for p in ("gs://b/o", "s3://b/o", "/tmp/x")])
import pyarrow as pa
print(pa.table({"a": [1, 2]}).to_pandas()["a"].sum(), pa.int32().to_pandas_dtype().__name__)
import apache_beam.io.gcp.bigquery as bq
print(bq.__name__ in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "[]", "['GCSFileSystem', 'S3FileSystem', 'LocalFileSystem']", "3 int32", "True"]
