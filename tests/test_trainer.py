"""The training loop on real text: the loss falls, a resumed run is bitwise the
uninterrupted one, gradient accumulation equals one large batch."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, read_log
from tests.conftest import trainer_config as config
from trainer.__main__ import main
from trainer.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from trainer.model import Attention, FeedForward, ModelArgs, Transformer
from trainer.train import cosine_lr, forward_backward, param_groups, train


def test_loss_falls_on_real_text(book_shards, tmp_path):
    cfg = config(book_shards, tmp_path, steps=60, log_every=10, ckpt_every=20)
    summary = train(cfg)
    records = read_log(tmp_path)
    assert [r["step"] for r in records] == [1, 10, 20, 30, 40, 50, 60]
    assert summary["first_loss"] == records[0]["loss"] == pytest.approx(math.log(259), abs=0.15)
    assert summary["last_loss"] == records[-1]["loss"] <= 0.7 * summary["first_loss"]
    assert summary["steps"] == 60 and summary["tokens"] == 60 * 8 * 64
    for r in records:
        assert r["lr"] == cosine_lr(r["step"], lr=3e-3, warmup_steps=10, steps=60, min_lr_ratio=0.1)
        assert r["grad_norm"] > 0 and r["tokens_per_s"] > 0
        assert "mfu" not in r  # a CPU has no datasheet peak: no MFU (trainer/devices.py)
    # Checkpoints at 20, 40, 60; the last two kept.
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == [
        "step-000040.pt", "step-000060.pt"]
    assert summary["checkpoint"] == str(tmp_path / "checkpoints" / "step-000060.pt")
    assert Path(summary["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The stream's position in the checkpoint: 60 steps of 8 windows, still in epoch 0.
    state = load_checkpoint(summary["checkpoint"])
    assert state["step"] == 60 and (state["data"]["epoch"], state["data"]["window"]) == (0, 60 * 8)


def test_resume_is_bitwise_identical(book_shards, tmp_path):
    """Run 12 steps (checkpoints at 4, 8, 12), then lose everything after step 4 as a
    crash would, and resume: steps 5-12 repeat to the last bit."""
    cfg = config(book_shards, tmp_path, steps=12, ckpt_every=4, keep_checkpoints=5)
    train(cfg)
    full = read_log(tmp_path)
    final = load_checkpoint(tmp_path / "checkpoints" / "step-000012.pt")
    for p in list_checkpoints(tmp_path / "checkpoints")[1:]:
        p.unlink()

    summary = train(cfg)
    resumed = read_log(tmp_path)
    assert [r["step"] for r in resumed] == list(range(1, 13))  # no step logged twice
    assert resumed[:4] == full[:4]
    assert [r["loss"] for r in resumed[4:]] == [r["loss"] for r in full[4:]]
    assert [r["grad_norm"] for r in resumed[4:]] == [r["grad_norm"] for r in full[4:]]
    again = load_checkpoint(summary["checkpoint"])
    assert again["data"] == final["data"]
    for name, tensor in final["model"].items():
        assert torch.equal(again["model"][name], tensor), name
    for i, s in final["optimizer"]["state"].items():
        assert torch.equal(again["optimizer"]["state"][i]["exp_avg_sq"], s["exp_avg_sq"])


def test_grad_accumulation_equals_one_big_batch(book_shards, tmp_path):
    """8 sequences at once vs 2 micro-batches of 4: the same windows, so the same loss
    and the same gradient norm (clipping and Adam would hide a mis-scaled gradient)."""
    big = config(book_shards, tmp_path / "big", steps=3, batch_size=8, grad_accum=1)
    small = config(book_shards, tmp_path / "small", steps=3, batch_size=4, grad_accum=2)
    train(big), train(small)
    a, b = read_log(tmp_path / "big"), read_log(tmp_path / "small")
    for ra, rb in zip(a, b, strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-4)


def test_resume_refuses_another_model(book_shards, tmp_path):
    train(config(book_shards, tmp_path, steps=2))
    with pytest.raises(ValueError, match="saved for model"):
        train(config(book_shards, tmp_path, steps=4, model="15M"))


def test_cosine_schedule():
    kw = dict(lr=1.0, warmup_steps=10, steps=110, min_lr_ratio=0.1)
    assert cosine_lr(1, **kw) == pytest.approx(0.1)
    assert cosine_lr(10, **kw) == pytest.approx(1.0)
    assert cosine_lr(60, **kw) == pytest.approx(0.55)  # halfway: mean of peak and floor
    assert cosine_lr(110, **kw) == pytest.approx(0.1)
    assert cosine_lr(500, **kw) == pytest.approx(0.1)
    assert cosine_lr(1, lr=1.0, warmup_steps=0, steps=2, min_lr_ratio=0.0) == pytest.approx(0.5)


def test_weight_decay_by_shape():
    model = Transformer(ModelArgs.from_name("demo", vocab_size=100, max_seq_len=16))
    decay, no_decay = param_groups(model, 0.1)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    assert len(decay["params"]) == 2 + 7 * 4  # embeddings, output; wq wk wv wo w1 w2 w3
    assert len(no_decay["params"]) == 2 * 4 + 1  # RMSNorm weights
    assert all(p.dim() == 1 for p in no_decay["params"])


def test_weight_decay_of_every_parameter():
    """Every parameter with < 2 dims gets 0, every attention and FFN
    matrix 0.1 (found by module type, not by name), each parameter in exactly one group."""
    model = Transformer(ModelArgs.from_name("demo", vocab_size=100, max_seq_len=16))
    groups = torch.optim.AdamW(param_groups(model, 0.1)).param_groups
    decay_of = {}
    for group in groups:
        for p in group["params"]:
            assert id(p) not in decay_of
            decay_of[id(p)] = group["weight_decay"]
    assert len(decay_of) == len(list(model.parameters()))
    matrices = [p for m in model.modules() if isinstance(m, (Attention, FeedForward))
                for p in m.parameters()]
    assert len(matrices) == 7 * 4 and all(p.dim() == 2 for p in matrices)
    assert all(decay_of[id(p)] == 0.1 for p in matrices)
    vectors = [p for p in model.parameters() if p.dim() < 2]
    assert len(vectors) == 9 and all(decay_of[id(p)] == 0.0 for p in vectors)


def test_accumulated_gradients_equal_one_batch_of_10_and_100_targets():
    """Micro-batches holding 10 and 100 target tokens (the rest -100)
    accumulate to the gradient of one batch holding both, within 1e-6. A mean per
    micro-batch would weight each of the 10 tokens 10x more: checked to differ."""
    torch.manual_seed(0)
    model = Transformer(ModelArgs.from_name("demo", vocab_size=259, max_seq_len=64))
    x = torch.randint(0, 259, (3, 64))
    y = torch.randint(0, 259, (3, 64))
    y[0, 10:] = -100  # 10 targets
    y[1, 50:] = -100  # 50 + 50 targets
    y[2, :14] = -100
    assert [int((r != -100).sum()) for r in y] == [10, 50, 50]

    def grads(micro):
        model.zero_grad(set_to_none=True)
        loss_sum, n = forward_backward(model, micro)
        return loss_sum / n, n, [p.grad.clone() for p in model.parameters()]

    loss_a, n_a, acc = grads([(x[:1], y[:1]), (x[1:], y[1:])])
    loss_b, n_b, one = grads([(x, y)])
    assert n_a == n_b == 110
    torch.testing.assert_close(loss_a, loss_b, rtol=0, atol=1e-6)
    for g_acc, g_one in zip(acc, one, strict=True):
        torch.testing.assert_close(g_acc, g_one, rtol=0, atol=1e-6)
    # The per-micro-batch mean is a different gradient (the test can fail).
    model.zero_grad(set_to_none=True)
    for xm, ym in ((x[:1], y[:1]), (x[1:], y[1:])):
        (model(xm, ym)[1] / 2).backward()
    assert max((p.grad - g).abs().max().item() for p, g in zip(model.parameters(), one)) > 1e-4


def test_checkpoint_never_unpickles_objects(tmp_path):
    save_checkpoint(tmp_path / "step-000001.pt", {"step": 1, "x": torch.ones(2)})
    assert load_checkpoint(tmp_path / "step-000001.pt")["step"] == 1
    save_checkpoint(tmp_path / "step-000002.pt", {"step": 2, "obj": Path("x")}, keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000002.pt"]
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path / "step-000002.pt")


def test_command_line(book_shards, tmp_path, capsys):
    assert main(["--config", str(ROOT / "configs" / "demo.yaml"),
                 "--set", f"shards.out={book_shards}", "--set", f"trainer.out={tmp_path}",
                 "--set", "trainer.steps=2", "--set", "trainer.seq_len=32",
                 "--set", "trainer.batch_size=2", "--set", "trainer.num_threads=1"]) == 0
    printed = capsys.readouterr().out
    assert f"checkpoint: {tmp_path / 'checkpoints' / 'step-000002.pt'}" in printed
    assert f"log:        {tmp_path / 'log.jsonl'}" in printed
    assert f"plot:       {tmp_path / 'loss.png'}" in printed
    with pytest.raises(SystemExit):
        main(["--config", str(ROOT / "configs" / "demo.yaml"), "--set", "trainer.stepz=2"])
    assert "trainer.stepz" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # named before any shard is opened
        main(["--config", str(ROOT / "configs" / "demo.yaml"), "--set", "trainer.model=7b",
              "--set", f"shards.out={tmp_path / 'none'}"])
    assert "trainer.model '7b' is not a model size" in (err := capsys.readouterr().err)
    assert "did you mean '7B'?" in err


def test_data_notes_count_passes_and_flag_sources_without_tokens():
    from trainer.train import data_notes

    manifest = {"sources": {"arxiv": {"target_share": 0.025, "tokens_written": 0},
                            "books": {"target_share": 0.045, "tokens_written": 54396},
                            "c4": {"target_share": 0.0, "tokens_written": 0}}}
    # the demo: 300 steps x 16 sequences of 128 over 313,802 tokens (2,432 windows of 129)
    notes = data_notes(manifest, 313_802 // 129, 128, 300 * 16)
    assert notes[0] == "data: 4,800 windows of 128 tokens to train on, 2,432 in the shards: 1.97 passes"
    assert notes[1].startswith("warning: trainer.steps exceed one pass over the shards (1.97 passes)")
    assert notes[2] == ("warning: no training tokens from arxiv (in the mixture, but nothing of it "
                        "was written to the shards)")
    assert data_notes({"sources": {}}, 1000, 128, 1000) == [
        "data: 1,000 windows of 128 tokens to train on, 1,000 in the shards: 1.00 passes"]
