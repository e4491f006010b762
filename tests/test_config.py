"""The config: stage outputs under `out_dir`, renamed keys named."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"


def test_one_out_dir_moves_every_stage_output():
    cfg = load_config(DEMO, ["out_dir=exp/a"])
    assert (cfg.tokenizer.model_prefix, cfg.shards.out, cfg.trainer.out) == (
        "exp/a/tokenizer/llama-demo", "exp/a/shards", "exp/a/train")
    remote = load_config(DEMO, ["out_dir=s3://bucket/run/", "name=big"])
    assert (remote.tokenizer.model_prefix, remote.shards.out, remote.trainer.out) == (
        "s3://bucket/run/tokenizer/llama-big", "s3://bucket/run/shards", "s3://bucket/run/train")
    given = load_config(DEMO, ["out_dir=exp/a", "shards.out=elsewhere/shards"])
    assert given.shards.out == "elsewhere/shards" and given.trainer.out == "exp/a/train"


def test_the_old_part_count_key_names_its_replacement():
    with pytest.raises(ConfigError, match="num_files_per_source was replaced by part_bytes"):
        load_config(DEMO, ["clean.num_files_per_source=4"])
