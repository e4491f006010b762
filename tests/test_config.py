"""The config: stage outputs under `out_dir`, renamed keys named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

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
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, ["clean.num_files_per_source=4"])
    assert str(e.value) == (f"{DEMO}: clean.num_files_per_source was replaced by part_bytes (clean.part_bytes, "
                            "bytes per output file; the number of files follows from the data)")


def test_every_old_key_is_named_in_file_order_with_the_sources_it_listed(tmp_path):
    raw = yaml.safe_load(DEMO.read_text())
    raw["sources"]["books"]["keep_langs"] = ["en"]
    raw["clean"] = {"minhash": {"sources": ["commoncrawl", "c4"], "threshold": 0.8},
                    "line_dedup_sources": ["commoncrawl"], "num_files_per_source": 4, "c4": {"sources": []}}
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError) as e:
        load_config(old)
    assert str(e.value).splitlines() == [
        f"{old}: keys of an earlier config:",
        "  sources.books.keep_langs was replaced by sources.books.langs",
        ("  clean.minhash was replaced by clean.near_dedup.web, its sources by "
         "sources.commoncrawl.near_dedup: web and sources.c4.near_dedup: web"),
        "  clean.line_dedup_sources was replaced by sources.commoncrawl.line_dedup: true",
        ("  clean.num_files_per_source was replaced by part_bytes (clean.part_bytes, bytes per output file; "
         "the number of files follows from the data)"),
        "  clean.c4.sources was replaced by sources.NAME.c4_rules: true",
    ]


def test_an_error_from_set_names_the_override_and_the_closest_key():
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, ["trainer.steps=5", "sources.commoncrawl.line_dedupp=true"])
    assert str(e.value) == (
        "--set sources.commoncrawl.line_dedupp=true: invalid config:\n"
        "  sources.commoncrawl.line_dedupp: Extra inputs are not permitted; "
        "did you mean sources.commoncrawl.line_dedup?")
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, ["clen.min_chars=3"])
    assert str(e.value) == ("--set clen.min_chars=3: invalid config:\n"
                            "  clen: Extra inputs are not permitted; did you mean clean?")


def test_an_error_in_the_file_names_the_file_and_one_from_set_is_marked(tmp_path):
    raw = yaml.safe_load(DEMO.read_text())
    raw["beam"]["runnr"] = "DirectRunner"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw, sort_keys=False))
    file_error = "  beam.runnr: Extra inputs are not permitted; did you mean beam.runner?"
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert str(e.value) == f"{bad}: invalid config:\n{file_error}"
    with pytest.raises(ConfigError) as e:
        load_config(bad, ["trainer.steps=0"])
    assert str(e.value) == (f"{bad} with --set trainer.steps=0: invalid config:\n{file_error}\n"
                            "  trainer.steps: Input should be greater than 0 (--set)")


@pytest.mark.parametrize(("old", "new"), [
    ("sources.books.keep_langs=[en]", "sources.books.keep_langs was replaced by sources.books.langs"),
    ("clean.line_dedup_sources=[commoncrawl]",
     "clean.line_dedup_sources was replaced by sources.commoncrawl.line_dedup: true"),
    ("clean.minhash.threshold=0.7", "clean.minhash was replaced by clean.near_dedup.web"),
    ("clean.book_dedup.threshold=0.95", "clean.book_dedup was replaced by clean.near_dedup.books"),
    ("clean.c4.sources=[]", "clean.c4.sources was replaced by sources.NAME.c4_rules: true"),
    ("clean.quality.sources=[]", "clean.quality.sources was replaced by sources.NAME.quality: true"),
    ("clean.perplexity.sources=[]", "clean.perplexity.sources was replaced by sources.NAME.perplexity: true"),
    ("clean.github.licenses=[mit]", "clean.github was replaced by sources.github.licenses"),
])
def test_a_per_feature_source_list_names_the_source_block_key_that_replaced_it(old, new):
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, [old])
    assert str(e.value) == f"{DEMO}: {new}" or str(e.value).startswith(f"{DEMO}: {new}, its sources by ")
    assert "\n" not in str(e.value)


def test_source_defaults_give_each_source_its_recipe_in_both_configs():
    for name in ("demo", "llama-1.4t"):
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        assert cfg.sources_with("line_dedup") == ["commoncrawl"]
        assert cfg.sources_with("perplexity") == cfg.sources_with("quality") == ["commoncrawl"]
        assert {g: s for g, (_, s) in cfg.near_dedup_groups().items()} == {
            "web": ["commoncrawl", "c4"], "books": ["books"]}
        assert (cfg.clean.near_dedup.web.threshold, cfg.clean.near_dedup.books.threshold) == (0.8, 0.9)
        assert cfg.sources["github"].licenses == ["mit", "bsd", "apache"]
        assert cfg.sources["github"].max_line_length == 1000
    assert load_config(DEMO).sources_with("c4_rules") == ["c4"]
    assert load_config(ROOT / "configs" / "llama-1.4t.yaml").sources_with("c4_rules") == []


def test_a_source_block_is_overridden_field_by_field_and_checked_per_source():
    cfg = load_config(DEMO, ["sources.commoncrawl.line_dedup=false", "sources.books.near_dedup=null",
                             "sources.github.min_alnum_fraction=0.5", "sources.wikipedia.quality=true"])
    assert cfg.sources_with("line_dedup") == [] and cfg.sources_with("quality") == ["commoncrawl", "wikipedia"]
    assert list(cfg.near_dedup_groups()) == ["web"]
    assert cfg.sources["github"].min_alnum_fraction == 0.5 and cfg.sources["commoncrawl"].langs == ["en"]
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, ["sources.books.licenses=[mit]", "sources.c4.near_dedup=nowhere"])
    assert "sources.books.licenses: Extra inputs are not permitted" in str(e.value)
    assert "sources.c4.near_dedup: Input should be 'web' or 'books'" in str(e.value)
