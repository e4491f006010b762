"""The lineage report (pipeline/report.py): funnel per source, mixture table and
charts, from stage outputs. The counters and mixture figures below are those a
`make demo` run recorded (clean and shard manifests, training log)."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

from pipeline.core.config import load_config
from pipeline.report import (
    collect,
    funnel,
    funnel_steps,
    mixture_notes,
    stage_of,
    write_charts,
    write_report,
)

ROOT = Path(__file__).resolve().parents[1]

GITHUB = {"docs_kept": 560, "docs_read": 589, "drop.too_short": 29, "skip.alpha_per_token": 3,
          "skip.empty": 16, "skip.license": 93, "skip.license_file": 88, "skip.max_line_length": 3,
          "skip.mean_line_length": 1}
WIKIPEDIA = {"docs_kept": 111, "docs_read": 112, "drop.duplicate_id": 1, "skip.namespace": 3,
             "skip.redirect": 99}
BOOKS = {"docs_kept": 2, "docs_read": 2}
MIXTURE = {
    "books": {"achieved_share": 0.44815293954018304, "capped": False, "epochs": 0.4753090419781855,
              "share": 0.055900621118012424, "target_share": 0.045, "tokens_available": 235218,
              "tokens_written": 235218, "val_tokens": 0},
    "github": {"achieved_share": 0.1903303922371828, "capped": False, "epochs": 0.030547496932585825,
               "share": 0.055900621118012424, "target_share": 0.045, "tokens_available": 3659915,
               "tokens_written": 99897, "val_tokens": 21036},
}


def _chunks(png: bytes) -> list[bytes]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    out, i = [], 8
    while i < len(png):
        (n,) = struct.unpack(">I", png[i:i + 4])
        out.append(png[i + 4:i + 8])
        i += 12 + n
    return out


@pytest.fixture()
def run_dir(tmp_path):
    """A run's stage outputs: clean and shard manifests and a training log."""
    out = tmp_path / "out"
    (out / "clean").mkdir(parents=True)
    (tmp_path / "in").mkdir()
    book = tmp_path / "in" / "book.txt"
    book.write_bytes(b"x" * 633_950)
    clean = {
        "counters": {"github": GITHUB, "wikipedia": WIKIPEDIA, "books": BOOKS},
        "inputs": {"github": [str(tmp_path / "in" / "gone.jsonl.gz")], "wikipedia": ["a.bz2", "b.bz2", "c.bz2"],
                   "books": [str(book)]},
        "input_bytes": {"wikipedia": 1_833_754},  # recorded by the clean job (proposed field)
        "files": [{"source": "github", "bytes": 4_133_834}, {"source": "github", "bytes": 4_488_578},
                  {"source": "wikipedia", "bytes": 3_067_684}, {"source": "books", "bytes": 620_012}],
    }
    (out / "clean" / "manifest.json").write_text(json.dumps(clean))
    (out / "shards").mkdir()
    shards = {"sources": MIXTURE, "shards": [{"split": "train"}] * 4 + [{"split": "val"}],
              "tokens_written": 524861, "total_tokens_target": 2e6,
              "tokenizer": {"path": "m.model", "vocab_size": 2000, "sha256": "3ac0572e16a506f9" + "0" * 48}}
    (out / "shards" / "manifest.json").write_text(json.dumps(shards))
    (out / "train").mkdir()
    log = [{"step": 1, "loss": 7.6364, "lr": 1e-4, "tokens": 2048},
           {"step": 300, "loss": 4.2964, "lr": 3e-4, "tokens": 614400},
           {"step": 300, "val_loss": {"github": 4.614861607551575}, "val_tokens": {"github": 16384}}]
    (out / "train" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return load_config(ROOT / "configs" / "demo.yaml", [f"out_dir={out}", f"shards.out={out}/shards",
                                                        f"trainer.out={out}/train"])


def test_stages_of_counters():
    assert stage_of("skip.license") == "read" and stage_of("dead_letter") == "read"
    assert stage_of("drop.c4_lorem_ipsum") == "C4 rules"
    assert stage_of("drop.lang") == "language ID"
    assert stage_of("drop.quality_classifier") == "quality"
    assert stage_of("drop.near_duplicate") == "near dedup"
    assert stage_of("drop.something_new") == "other"
    assert stage_of("docs_kept") is None and stage_of("c4.line.javascript") is None
    assert stage_of("drop.line_dedup_empty") == "line dedup" and stage_of("drop.replacement_ratio") == "read"
    assert stage_of("dead_letter.language_id") == "language ID" and stage_of("dead_letter.write") == "write"
    assert stage_of("text.surrogates_replaced") is None and stage_of("line_dedup.lines_removed") is None


def test_funnel_rows_follow_the_pipeline_order():
    f = funnel(GITHUB)
    assert f["records"] == 589 + 204
    assert funnel_steps(f) == [
        ("records read", 793, {}),
        ("after read", 589, {"alpha_per_token": 3, "empty": 16, "license": 93, "license_file": 88,
                             "max_line_length": 3, "mean_line_length": 1}),
        ("after quality", 560, {"too_short": 29}),
        ("kept", 560, {}),
    ]
    w = funnel({**WIKIPEDIA, "dead_letter": 2, "drop.lang": 4, "docs_kept": 107})
    assert [(label, left) for label, left, _ in funnel_steps(w)] == [
        ("records read", 216), ("after read", 112), ("after one per id", 111), ("after language ID", 107),
        ("kept", 107)]
    assert funnel_steps(w)[1][2] == {"dead letter": 2, "namespace": 3, "redirect": 99}


def test_dead_letters_of_later_stages_are_documents_already_read():
    """`dead_letter` counts every stage's, `dead_letter.<stage>` those after
    reading: a document read, then failed on by C4 rules and by the writer."""
    f = funnel({**WIKIPEDIA, "dead_letter": 4, "dead_letter.c4_rules": 1, "dead_letter.write": 1,
                "docs_kept": 109})
    assert f["records"] == 112 + 102 + 2 and f["dead_letter"] == 4
    assert funnel_steps(f) == [
        ("records read", 216, {}),
        ("after read", 112, {"dead letter": 2, "namespace": 3, "redirect": 99}),
        ("after one per id", 111, {"duplicate_id": 1}),
        ("after C4 rules", 110, {"dead letter": 1}),
        ("after write", 109, {"dead letter": 1}),
        ("kept", 109, {}),
    ]


def test_a_page_emptied_by_line_dedup_is_line_dedups_drop(demo_inputs, tmp_path):
    """The demo's web page in two WARC files, the second a later capture of the
    same page (its records' WARC-Record-IDs differ): every line of the second
    copy repeats the first, so line dedup empties it and drops it, and the
    report puts the drop under line dedup (before, language ID dropped the
    empty text, as "lang")."""
    import gzip
    import re

    from tests.conftest import run_clean_job

    cache = demo_inputs["models/lid.176.ftz"].parents[1]
    raw = gzip.decompress((cache / "inputs" / "commoncrawl" / "at.warc.gz").read_bytes())
    again = re.sub(rb"(WARC-Record-ID: <urn:uuid:[0-9a-f-]{24})[0-9a-f]{12}>", rb"\g<1>000000000000>", raw)
    assert again != raw and len(again) == len(raw)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "at.warc.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "in" / "at-again.warc.gz").write_bytes(gzip.compress(again))
    manifest, docs, dead = run_clean_job(tmp_path / "out", cache, f"sources.commoncrawl.inputs=[{tmp_path}/in/*.warc.gz]")
    counters = manifest["counters"]["commoncrawl"]
    assert dead == [] and len(docs) == 1
    assert counters == {"docs_kept": 1, "docs_read": 2, "drop.line_dedup_empty": 1, "line_dedup.lines_removed": 45,
                        "skip.http_status": 2, "skip.record_type": 12}
    assert funnel_steps(funnel(counters)) == [
        ("records read", 16, {}),
        ("after read", 2, {"http_status": 2, "record_type": 12}),
        ("after line dedup", 1, {"line_dedup_empty": 1}),
        ("kept", 1, {}),
    ]


def test_report_tables_and_chart_links(run_dir):
    path, text = write_report(run_dir)
    assert path == str(Path(run_dir.out_dir) / "report.md") and Path(path).read_text() == text
    assert ("| github | 1 | ? | 793 | read: alpha_per_token: 3, empty: 16, license: 93, license_file: 88, "
            "max_line_length: 3, mean_line_length: 1; quality: too_short: 29 | 0 | 560 | 8.62 MB |") in text
    assert "| wikipedia | 3 | 1.83 MB | 214 | read: namespace: 3, redirect: 99; one per id: duplicate_id: 1 " in text
    assert "| books | 1 | 0.63 MB | 2 | - | 0 | 2 | 0.62 MB |" in text
    # 0.1903303922371828 * 614400 tokens trained = 116939
    assert "| github | 3659915 | 0.03 (0.03) | 99897 | 5.6% (Table 1: 4.5%) | 19.0% | 116939 | 4.6149 |" in text
    assert ("| books | 235218 | 0.48 (1.00) | 235218 | 5.6% (Table 1: 4.5%) | 44.8% | 275345 "
            "| - (none of its documents were held out for validation) |") in text
    assert "| github | 4.6149 | 16384 |" in text
    for name in ("report-funnel-github.png", "report-funnel-wikipedia.png", "report-funnel-books.png",
                 "report-mixture.png"):
        assert f"]({name})" in text
        assert (Path(run_dir.out_dir) / name).is_file()


def test_charts_are_byte_identical_on_rerun_and_carry_no_metadata(run_dir, tmp_path):
    data = collect(run_dir)
    first = {Path(p).name: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in write_charts(data, tmp_path / "a")}
    again = {Path(p).name: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in write_charts(data, tmp_path / "b")}
    assert len(first) == 4 and first == again
    png = (tmp_path / "a" / "report-mixture.png").read_bytes()
    assert _chunks(png) == [b"IHDR", b"pHYs", b"IDAT", b"IEND"]  # no tEXt: no version, no date
    assert struct.unpack(">II", png[16:24]) == (800, 400)  # 8 x 4 inches at 100 dpi


def test_report_without_outputs_says_what_to_run(tmp_path):
    cfg = load_config(ROOT / "configs" / "demo.yaml", [f"out_dir={tmp_path}", f"shards.out={tmp_path}/s",
                                                       f"trainer.out={tmp_path}/t"])
    data = collect(cfg)
    assert write_charts(data, tmp_path) == []
    _, text = write_report(cfg)
    assert "(no clean manifest: run `python -m pipeline clean`)" in text
    assert ".png)" not in text and "## Token shards" not in text


def test_mixture_notes_explain_each_departure():
    # the shard manifest's per-source fields, as pipeline/shards.py writes them
    shards = {
        "mixture": {"tolerance": 0.005},
        "sources": {
            "wikipedia": {"share": 0.3, "planned_share": 0.3, "achieved_share": 0.303,
                          "mixture_eligible": True, "share_error_bound": 0.001},
            "github": {"share": 0.3, "planned_share": 0.3, "achieved_share": 0.31,
                       "mixture_eligible": True, "share_error_bound": 0.004},
            "books": {"share": 0.3, "planned_share": 0.3, "achieved_share": 0.28,
                      "mixture_eligible": False, "share_error_bound": 0.05,
                      "largest_doc_tokens": 180579},
            "commoncrawl": {"share": 0.1, "planned_share": 0.02, "achieved_share": 0.02,
                            "capped": True, "epochs": 20.0},
        },
    }
    assert mixture_notes(shards) == [
        "",
        "Where the mixture departs from the target (tolerance 0.5 points):",
        "",
        "- github: OFF TARGET, 31.00% vs planned 30.00%",
        ("- books: 28.00% vs planned 30.00%; a source of few large documents (its largest, "
         "180579 tokens, is written whole), so its share can miss by up to 5.00 points"),
        ("- commoncrawl: capped at shards.max_epochs (20.00 epochs), so planned 2.00% "
        "instead of the target 10.00%"),
    ]
    assert mixture_notes({"sources": {"wikipedia": shards["sources"]["wikipedia"]}}) == []


def test_the_report_groups_removals_by_the_steps_its_manifest_records(run_dir):
    """A clean manifest names its steps and their counters: the report follows
    them, not the steps of the code that reads it; a removal counter no step
    claims goes under "other"."""
    path = Path(run_dir.out_dir) / "clean" / "manifest.json"
    clean = json.loads(path.read_text())
    clean["steps"] = [{"step": "reader", "what": "what the readers skip", "counters": ["skip.*", "dead_letter"]},
                      {"step": "length", "what": "too short", "counters": ["drop.too_short"]}]
    clean["counters"]["wikipedia"] = {**WIKIPEDIA, "docs_kept": 110, "drop.too_short": 1}
    path.write_text(json.dumps(clean))
    data = collect(run_dir)
    assert [s["step"] for s in data["steps"]] == ["reader", "length", "other"]
    by_source = {s["source"]: s["funnel"] for s in data["sources"]}
    github, wikipedia = by_source["github"], by_source["wikipedia"]
    assert [(label, left) for label, left, _ in funnel_steps(github)] == [
        ("records read", 793), ("after reader", 589), ("after length", 560), ("kept", 560)]
    assert funnel_steps(wikipedia)[2:] == [("after length", 111, {"too_short": 1}),
                                           ("after other", 110, {"duplicate_id": 1}), ("kept", 110, {})]
    _, text = write_report(run_dir)
    assert "Stages: **reader**: what the readers skip; **length**: too short.\n" in text
    assert "| wikipedia | 3 | 1.83 MB | 214 | reader: namespace: 3, redirect: 99; length: too_short: 1; " in text


def test_a_manifest_without_steps_reads_as_todays_clean_job(run_dir):
    from pipeline.clean import CLEAN_STEPS

    data = collect(run_dir)  # the fixture's manifest predates the steps
    assert data["steps"][:-1] == list(CLEAN_STEPS) and data["steps"][-1]["step"] == "other"
    assert [s["step"] for s in CLEAN_STEPS] == [
        "read", "one per id", "line dedup", "C4 rules", "language ID", "quality", "exact dedup", "near dedup",
        "perplexity", "write"]


def test_every_guarded_stage_of_the_clean_job_is_one_step(run_dir):
    """Each GuardedDoFn's dead letters (`dead_letter.<STAGE>`) belong to exactly
    one step, as do the writer's (a GuardedMap of stage "write")."""
    from pipeline.beam.steps import GuardedDoFn
    from pipeline.clean import CLEAN_STEPS

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    stages = {c.STAGE for c in subclasses(GuardedDoFn) if c.STAGE} | {"write"}
    assert stages >= {"one_per_id", "line_dedup", "c4_rules", "language_id", "quality", "exact_dedup",
                      "near_dedup"}
    for stage in stages:
        owners = [s["step"] for s in CLEAN_STEPS if f"dead_letter.{stage}" in s["counters"]]
        assert len(owners) == 1, (stage, owners)


def test_the_clean_job_records_its_steps_in_the_manifest(demo_inputs, tmp_path):
    from pipeline.clean import CLEAN_STEPS
    from tests.conftest import run_clean_job

    cache = demo_inputs["models/lid.176.ftz"].parents[1]
    _, docs, _ = run_clean_job(tmp_path / "out", cache,
                               f"sources.commoncrawl.inputs=[{cache}/inputs/commoncrawl/at.warc.gz]")
    committed = json.loads((tmp_path / "out" / "clean" / "manifest.json").read_text())
    assert committed["steps"] == json.loads(json.dumps(CLEAN_STEPS)) and len(docs) == 1
    assert funnel_steps(funnel(committed["counters"]["commoncrawl"], committed["steps"])) == [
        ("records read", 8, {}), ("after read", 1, {"http_status": 1, "record_type": 6}), ("kept", 1, {})]
