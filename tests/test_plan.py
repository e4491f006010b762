"""The run planner (pipeline/plan.py): the paper's numbers, Table 1 math, and that
every derived number's formula evaluates to the number shown."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pipeline.core.config import load_config
from pipeline.plan import (
    PlanError,
    build_plan,
    format_plan,
    load_throughputs,
    model_shape,
    num,
    run_plan,
)

ROOT = Path(__file__).resolve().parents[1]
PROD = ROOT / "configs" / "llama-1.4t.yaml"
THROUGHPUTS = ROOT / "configs" / "throughputs.json"


def _prod_plan(*overrides: str):
    return build_plan(load_config(PROD, list(overrides)), load_throughputs(THROUGHPUTS), str(THROUGHPUTS), str(PROD))


def _evaluate(formula: str) -> float:
    expr = formula.removeprefix("= ").split("  (")[0]
    return eval(expr, {"__builtins__": {}, "ceil": math.ceil, "min": min, "max": max})  # arithmetic over numbers only


def _check_formulas(plan) -> int:
    checked = 0
    for f in plan.figures:
        if f.kind == "derived":
            assert f.formula.startswith("= "), f.name
            assert _evaluate(f.formula) == pytest.approx(f.value, rel=2e-5), (f.name, f.formula)
            checked += 1
        else:
            assert f.formula.startswith(f"{f.kind}: "), f.name
    return checked


def test_65b_on_2048_gpus_at_380_tokens_per_s_matches_the_paper():
    plan = _prod_plan()
    hours = plan.get("gpu.65B.gpu_hours")
    assert hours.value == pytest.approx(1.4e12 / 380 / 3600, rel=1e-12)
    assert round(hours.value / 1e6, 3) == 1.023  # Section 2.4 / Table 15: 1,022,362 GPU-hours
    assert hours.formula.startswith("= 1.4e+12 / 380 / 3600")
    assert hours.reference == "Table 15: 1,022,362 GPU-h"
    days = plan.get("gpu.65B.days")
    assert days.value == pytest.approx(1.4e12 / 380 / 3600 / 2048 / 24, rel=1e-12)
    assert round(days.value, 1) == 20.8  # "approximately 21 days"
    assert days.formula.startswith("= 1.4e+12 / (380 * 2048) / 86400")
    # 380 tokens/s of 4.062e11 FLOPs each on a 312 TFLOP/s A100: 49.5% MFU
    assert plan.get("gpu.65B.mfu").value == pytest.approx(380 * 406247227392 / 312e12, rel=1e-12)


def test_other_sizes_scale_by_flops_per_token_within_10_percent_of_table_15():
    plan = _prod_plan()
    got = {m: plan.get(f"gpu.{m}.gpu_hours").value for m in ("7B", "13B", "33B")}
    # 7B and 13B on 1.0T tokens (Table 2), at the 65B's MFU
    assert got["7B"] == pytest.approx(1e12 / (380 * 406247227392 / 42865287168) / 3600, rel=1e-12)
    for m, paper in {"7B": 82_432, "13B": 135_168, "33B": 530_432}.items():
        assert abs(got[m] / paper - 1) < 0.10, (m, got[m])


def test_model_shapes_are_counted_from_the_model_file():
    s65 = model_shape("65B", 32000, 2048)
    assert s65["params"] == 65_285_660_672
    assert s65["params_no_embedding"] == 65_285_660_672 - 32000 * 8192
    assert s65["flops_per_token"] == 6 * s65["params_no_embedding"] + 12 * 80 * 8192 * 2048
    with pytest.raises(PlanError, match="unknown model size '65b'"):
        model_shape("65b", 32000, 2048)


def test_epochs_follow_table_1_math_and_fill_the_total():
    plan = _prod_plan()
    tpb, vf = 0.266, 1e-4
    assert plan.get("tokens_available.commoncrawl").value == pytest.approx(3.3e12 * tpb, rel=1e-12)
    assert plan.get("epochs.commoncrawl").value == pytest.approx(0.67 * 1.4e12 / (3.3e12 * tpb * (1 - vf)), rel=1e-12)
    assert plan.get("epochs.wikipedia").value == pytest.approx(0.045 * 1.4e12 / (83e9 * tpb * (1 - vf)), rel=1e-12)
    assert plan.get("epochs.wikipedia").reference == "Table 1: 2.45"
    # uncapped: the sources' training tokens add up to the total exactly
    assert plan.get("training_tokens").value == pytest.approx(1.4e12, rel=1e-12)
    assert plan.get("training_tokens.c4").value == pytest.approx(0.15 * 1.4e12, rel=1e-12)


def test_shards_disk_and_beam_hours():
    plan = _prod_plan()
    assert plan.get("train_shards").value == 10431  # ceil(1.4e12 / 2^27)
    assert plan.get("shard_bytes").value == 2**28
    val = (3.3e12 + 783e9 + 328e9 + 83e9 + 85e9 + 92e9 + 78e9) * 0.266 * 1e-4
    assert plan.get("val_tokens").value == pytest.approx(val, rel=1e-12)
    assert plan.get("val_shards").value == 1
    assert plan.get("disk.shards").value == pytest.approx((10431 * 2**27 + val) * 2, rel=1e-12)
    assert plan.get("disk.clean").value == pytest.approx(4.749e12, rel=1e-12)
    assert plan.get("disk.checkpoints.65B").value == 65_285_660_672 * 12 * 3
    rates = load_throughputs(THROUGHPUTS).stages
    inputs = 4.189e13 + 3.05e11 + 1.2009e11 + 3.28e11 + 8.3e10 + 9.2e10 + 7.8e10
    clean_h = plan.get("beam.clean.core_hours").value
    assert clean_h == pytest.approx(inputs / rates["clean"].bytes_per_core_s / 3600, rel=1e-12)
    assert plan.get("beam.clean.worker_hours").value == pytest.approx(clean_h / 8, rel=1e-12)
    assert plan.get("beam.shards.core_hours").value == pytest.approx(
        4.749e12 / rates["shards"].bytes_per_core_s / 3600, rel=1e-12)


def test_every_number_shows_its_formula():
    plan = _prod_plan()
    assert _check_formulas(plan) >= 60
    text = format_plan(plan)
    for f in plan.figures:
        assert f.formula in text


def test_mfu_and_gpu_count_from_the_command_line(tmp_path, capsys):
    from pipeline.__main__ import main

    out = tmp_path / "plan.json"
    rc = main(["plan", "--config", str(PROD), "--throughputs", str(THROUGHPUTS), "--mfu", "0.4",
               "--gpus", "1024", "--json", str(out)])
    assert rc == 0
    figures = {f["name"]: f for f in json.loads(out.read_text())["figures"]}
    tps = 0.4 * 312e12 / 406247227392
    assert figures["gpu.65B.tokens_per_gpu_s"]["value"] == pytest.approx(tps, rel=1e-12)
    assert figures["gpu.65B.days"]["value"] == pytest.approx(1.4e12 / (tps * 1024) / 86400, rel=1e-12)
    assert "gpu.65B.mfu" not in figures  # given, not derived
    printed = capsys.readouterr().out
    assert f"= 1.4e+12 / ({num(tps)} * 1024) / 86400" in printed
    assert f"plan: {out}" in printed


def test_demo_plan_lists_the_demo_inputs(demo_inputs):
    cache = demo_inputs["models/lid.176.ftz"].parents[1]
    cfg = load_config(ROOT / "configs" / "demo.yaml", [
        f"sources.{s}.inputs=[{cache}/inputs/{s}/{pat}]"
        for s, pat in (("commoncrawl", "*.warc.gz"), ("github", "*.jsonl.gz"),
                       ("wikipedia", "*.bz2"), ("books", "*.txt"))
    ])
    plan = run_plan(cfg, "demo", str(THROUGHPUTS))
    books = plan.get("input_bytes.books")
    # the Canterbury corpus's alice29.txt and plrabn12.txt
    assert (books.value, books.formula) == (152_089 + 481_861, "measured: 2 files listed (sources.books.inputs)")
    assert plan.get("input_bytes.wikipedia").formula == "measured: 3 files listed (sources.wikipedia.inputs)"
    with pytest.raises(KeyError):
        plan.get("input_bytes.c4")  # no input: left out and the shares renormalised
    assert plan.get("share.books").value == pytest.approx(4.5 / (67 + 4.5 * 3), rel=1e-12)
    cc = plan.get("epochs.commoncrawl")  # one web page: capped at shards.max_epochs
    assert cc.value == 20 and cc.formula.startswith("= min(")
    _check_formulas(plan)


def test_throughputs_file_errors_name_the_file(tmp_path):
    good = json.loads(THROUGHPUTS.read_text())
    bad = tmp_path / "t.json"
    del good["stages"]["shards"]
    bad.write_text(json.dumps(good))
    with pytest.raises(PlanError, match=rf"{bad}: invalid throughputs file: stages lack shards"):
        load_throughputs(bad)
    good["stages"]["shards"] = {"bytes_per_core_s": "fast", "basis": "x"}
    bad.write_text(json.dumps(good))
    with pytest.raises(PlanError, match=rf"{bad}: .*stages\.shards\.bytes_per_core_s"):
        load_throughputs(bad)
    bad.write_text("{")
    with pytest.raises(PlanError, match=rf"{bad}: cannot read throughputs"):
        load_throughputs(bad)


def test_unlisted_inputs_are_an_error_and_folders_are_walked(tmp_path):
    # inputs on a filesystem this machine cannot list (here: no such scheme; offline,
    # a real bucket fails the same way, after the client's retries)
    unlistable = [f"sources.{s}.inputs=[nofs://mirror/{s}/*]" for s in ("commoncrawl", "c4", "github")]
    with pytest.raises(PlanError, match=r"cannot list the inputs .*plan\.input_bytes"):
        run_plan(load_config(PROD, ["plan.input_bytes={}", *unlistable]), str(PROD), str(THROUGHPUTS))
    (tmp_path / "paper-1").mkdir()
    (tmp_path / "paper-1" / "main.tex").write_text("x" * 1000)
    (tmp_path / "paper-1" / "fig.eps").write_text("y" * 234)
    (tmp_path / "paper-2.tex").write_text("z" * 500)
    only_arxiv = [f"sources.{s}.inputs=[]" for s in ("commoncrawl", "github", "wikipedia", "books")]
    only_arxiv.append(f"sources.arxiv.inputs=[{tmp_path}/*]")
    plan = run_plan(load_config(ROOT / "configs" / "demo.yaml", only_arxiv), "demo", str(THROUGHPUTS))
    size = plan.get("input_bytes.arxiv")
    assert (size.value, size.formula) == (1734, "measured: 2 files listed (sources.arxiv.inputs)")
    # no keep fraction measured for arxiv: cleaned bytes = input bytes, and the plan says so
    assert plan.get("clean_bytes.arxiv").value == 1734
    assert any("no clean_keep_fraction for arxiv: assumed 1" in n for n in plan.notes)
    assert plan.get("share.arxiv").value == 1.0
    plan = run_plan(load_config(ROOT / "configs" / "demo.yaml", [*only_arxiv, "plan.clean_bytes.arxiv=800"]),
                    "demo", str(THROUGHPUTS))
    assert plan.get("tokens_available.arxiv").value == pytest.approx(800 * 0.42163, rel=1e-12)
