"""Table 1 mixture: epochs from shares and token counts; seeded repeats."""

from __future__ import annotations

import pytest

from pipeline.mixture import compute_epochs, hash_unit, repeat_count

# LLaMA Table 1: share (%), epochs, and disk size (GB) of each source
TABLE1 = {
    "commoncrawl": (67.0, 1.10, 3300),
    "c4": (15.0, 1.06, 783),
    "github": (4.5, 0.64, 328),
    "wikipedia": (4.5, 2.45, 83),
    "books": (4.5, 2.23, 85),
    "arxiv": (2.5, 1.06, 92),
    "stackexchange": (2.0, 1.03, 78),
}


def test_epochs_reproduce_table1():
    # Token counts implied by Table 1 (share * 1.4T / epochs) give back its epochs.
    total = 1.4e12
    tokens = {s: int(share / 100 * total / ep) for s, (share, ep, _) in TABLE1.items()}
    mix = compute_epochs({s: v[0] for s, v in TABLE1.items()}, tokens, total)
    for source, (share, epochs, _) in TABLE1.items():
        assert mix[source]["epochs"] == pytest.approx(epochs, rel=1e-6)
        assert mix[source]["share"] == pytest.approx(share / 100, rel=1e-9)


def test_missing_sources_are_renormalised():
    mix = compute_epochs({"wikipedia": 4.5, "books": 4.5, "c4": 15.0}, {"wikipedia": 100, "books": 300}, 1000)
    assert set(mix) == {"books", "wikipedia"}
    assert mix["books"]["share"] == 0.5 and mix["books"]["epochs"] == pytest.approx(500 / 300)
    with pytest.raises(ValueError, match="no source"):
        compute_epochs({"c4": 15.0}, {}, 1000)


def test_repeat_count_mean_matches_epochs():
    ids = [f"doc-{i}" for i in range(20000)]
    for epochs in (0.3, 1.0, 2.45):
        mean = sum(repeat_count(epochs, 7, d) for d in ids) / len(ids)
        assert mean == pytest.approx(epochs, abs=0.02)
    assert [repeat_count(1.5, 7, d) for d in ids[:50]] == [repeat_count(1.5, 7, d) for d in ids[:50]]
    assert hash_unit(1, "a") != hash_unit(2, "a")


def test_max_epochs_caps_a_tiny_source_without_redistributing():
    mix = compute_epochs({"commoncrawl": 67.0, "books": 4.5}, {"commoncrawl": 100, "books": 10**6}, 10**6, max_epochs=20)
    assert mix["commoncrawl"]["epochs"] == 20 and mix["commoncrawl"]["capped"]
    assert mix["books"]["epochs"] == pytest.approx(4.5 / 71.5) and not mix["books"]["capped"]


def test_production_config_is_table1():
    from pathlib import Path

    from pipeline.config import load_config
    from trainer.model import ModelArgs

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "llama-1.4t.yaml")
    assert {s: c.share for s, c in cfg.sources.items()} == {s: v[0] for s, v in TABLE1.items()}
    assert cfg.shards.total_tokens == 1.4e12 and cfg.tokenizer.vocab_size == 32000
    t = cfg.trainer
    assert (t.lr, t.warmup_steps, t.weight_decay, t.beta2, t.grad_clip) == (1.5e-4, 2000, 0.1, 0.95, 1.0)
    args = ModelArgs.from_name(t.model)
    assert (args.dim, args.n_heads, args.n_layers) == (8192, 64, 80)
    # 4M-token batches (Table 2) on 2048 GPUs
    assert 2048 * t.batch_size * t.grad_accum * t.seq_len == 4 * 2**20
    assert t.steps == round(1.4e12 / (4 * 2**20))
