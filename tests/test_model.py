"""The LLaMA model: sizes of the paper, RoPE, causality, loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import trainer.loss
import trainer.model
from trainer.model import (
    MODEL_SIZES,
    ModelArgs,
    RMSNorm,
    Transformer,
    apply_rope,
    linear_cross_entropy,
    rope_angles,
)


@pytest.mark.parametrize("name,billions,ffn_hidden", [
    ("7B", 6.7, 11008), ("13B", 13.0, 13824), ("33B", 32.5, 17920), ("65B", 65.2, 22016)])
def test_paper_sizes_on_meta_device(name, billions, ffn_hidden):
    """Table 2 of the paper; hidden sizes as in Meta's released checkpoints."""
    args = ModelArgs.from_name(name)
    assert (args.vocab_size, args.max_seq_len) == (32000, 2048)
    assert args.ffn_hidden == ffn_hidden
    with torch.device("meta"):
        model = Transformer(args)
    assert model.num_params() == pytest.approx(billions * 1e9, rel=0.01)


def test_demo_parameter_count_and_flops():
    args = ModelArgs.from_name("demo", vocab_size=2000, max_seq_len=128)
    model = Transformer(args)
    d, hidden, layers = 128, 352, 4  # 2/3 * 4 * 128 = 341, rounded up to 32s
    per_layer = 4 * d * d + 3 * d * hidden + 2 * d
    assert args.ffn_hidden == hidden
    assert model.num_params() == 2 * 2000 * d + layers * per_layer + d == 1_315_968
    # PaLM: 6 x (parameters but the input embedding) + 12 x layers x dim x seq_len.
    assert model.flops_per_token(128) == 6 * (1_315_968 - 2000 * d) + 12 * layers * d * 128


def test_7b_flops_per_token():
    with torch.device("meta"):
        model = Transformer(ModelArgs.from_name("7B"))
    assert model.flops_per_token(2048) == 6 * (6_738_415_616 - 32000 * 4096) + 12 * 32 * 4096 * 2048


def test_unknown_size_is_named():
    with pytest.raises(KeyError, match="'3B'.*demo, 15M"):
        ModelArgs.from_name("3B")


def _reference_rope(x: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Meta's LLaMA reference: complex64 rotation (precompute_freqs_cis, apply_rotary_emb)."""
    _, T, _, D = x.shape
    freqs = 1.0 / (theta ** (torch.arange(0, D, 2)[: D // 2].float() / D))
    freqs_cis = torch.polar(torch.ones(T, D // 2), torch.outer(torch.arange(T).float(), freqs))
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs_cis[None, :, None, :]).flatten(3).type_as(x)


def test_rope_matches_reference_and_is_relative():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 3, 8)
    rope = rope_angles(8, 32, 10000.0)
    assert rope.dtype == torch.float32 and rope.shape == (2, 32, 8)
    # Pair 1 of position 3 turns by 3 * 10000^(-2/8) = 0.3 radians.
    c, s = math.cos(0.3), math.sin(0.3)
    assert rope[:, 3, 2:4].flatten().tolist() == pytest.approx([c, c, -s, s], abs=1e-7)
    torch.testing.assert_close(apply_rope(x, rope), _reference_rope(x), rtol=1e-5, atol=1e-5)
    # q_m . k_n depends only on m - n.
    q, k = torch.randn(8), torch.randn(8)
    seq = torch.zeros(1, 16, 1, 8)
    seq[0, :, 0] = q
    rq = apply_rope(seq, rope)[0, :, 0]
    seq[0, :, 0] = k
    rk = apply_rope(seq, rope)[0, :, 0]
    torch.testing.assert_close(rq[5] @ rk[2], rq[13] @ rk[10])
    assert not torch.allclose(rq[5] @ rk[2], rq[5] @ rk[3])


def test_rope_is_applied_in_float32_and_not_saved():
    x = torch.randn(1, 64, 2, 16).bfloat16()
    rope = rope_angles(16, 64, 10000.0)
    out = apply_rope(x, rope)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, apply_rope(x.float(), rope).bfloat16())
    model = Transformer(ModelArgs.from_name("demo", vocab_size=50, max_seq_len=64))
    assert not any("rope" in name for name in model.state_dict())
    assert not list(model.buffers())  # a buffer would be cast by model.to(bfloat16)


def test_rmsnorm():
    x = torch.tensor([[3.0, 4.0]])
    norm = RMSNorm(2, eps=0.0)
    torch.testing.assert_close(norm(x), x / math.sqrt(12.5))


def test_attention_is_causal():
    torch.manual_seed(0)
    model = Transformer(ModelArgs.from_name("demo", vocab_size=100, max_seq_len=32))
    tokens = torch.randint(0, 100, (2, 32))
    changed = tokens.clone()
    changed[:, 20] = (changed[:, 20] + 1) % 100
    a, _ = model(tokens)
    b, _ = model(changed)
    assert a.shape == (2, 32, 100)
    torch.testing.assert_close(a[:, :20], b[:, :20], rtol=0, atol=0)
    assert not torch.allclose(a[:, 20:], b[:, 20:])


def test_loss_at_init_and_reductions():
    torch.manual_seed(0)
    model = Transformer(ModelArgs.from_name("demo", vocab_size=2000, max_seq_len=64))
    tokens = torch.randint(0, 2000, (4, 64))
    targets = torch.randint(0, 2000, (4, 64))
    logits, mean = model(tokens, targets)
    assert logits is None and mean.dtype == torch.float32
    assert mean.item() == pytest.approx(math.log(2000), abs=0.1)  # near-uniform at init
    targets[:, :16] = -100  # ignored positions
    _, total = model(tokens, targets, reduction="sum")
    _, mean = model(tokens, targets)
    torch.testing.assert_close(total, mean * (4 * 48))
    with pytest.raises(ValueError, match="max_seq_len 64"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_small_sizes_are_named_by_their_size():
    for name, expected in (("15M", 15e6), ("125M", 134e6), ("1B", 1.06e9)):
        with torch.device("meta"):
            model = Transformer(ModelArgs.from_name(name))
        assert model.num_params() == pytest.approx(expected, rel=0.01), name
    assert set(MODEL_SIZES) >= {"demo", "15M", "125M", "1B", "7B", "13B", "33B", "65B"}


def _loss_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """150 rows of hidden size 24, vocabulary 300, every 7th row ignored."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(150, 24, generator=g)
    w = torch.randn(300, 24, generator=g) * 0.5  # logits of std ~2.5
    targets = torch.randint(0, 300, (150,), generator=g)
    targets[::7] = -100
    return h, w, targets


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_chunked_loss_and_gradients_equal_cross_entropy(monkeypatch, reduction):
    """The CPU loss in chunks of 64 rows (64, 64 and a ragged 22) against
    `F.cross_entropy` over the whole logits in float64, gradients through a scale."""
    monkeypatch.setattr(trainer.loss, "LOSS_CHUNK_ELEMENTS", 64 * 300)
    h, w, targets = _loss_inputs()
    h64, w64 = h.double().requires_grad_(), w.double().requires_grad_()
    ref = F.cross_entropy(F.linear(h64, w64), targets, ignore_index=-100, reduction=reduction)
    (ref * 0.37).backward()
    h, w = h.requires_grad_(), w.requires_grad_()
    loss = linear_cross_entropy(h, w, targets, reduction)
    (loss * 0.37).backward()
    n_valid = 128  # 150 rows less the 22 multiples of 7
    assert loss.dtype == torch.float32
    assert ref.item() / (n_valid if reduction == "sum" else 1) > 8  # ln(300) = 5.7 is uniform
    torch.testing.assert_close(loss.double(), ref, rtol=1e-6, atol=0)
    torch.testing.assert_close(h.grad.double(), h64.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w.grad.double(), w64.grad, rtol=1e-5, atol=1e-6)
    assert (h.grad[::7] == 0).all() and (h.grad[1] != 0).all()  # ignored rows get none
    with torch.no_grad():  # the loss-only path computes the same value
        assert torch.equal(linear_cross_entropy(h, w, targets, reduction), loss.detach())


def test_chunked_loss_guards():
    h, w, targets = _loss_inputs()
    loss = linear_cross_entropy(h.requires_grad_(), w, targets, "sum")
    loss.backward(retain_graph=True)
    # Its backward scales the saved gradients in place: a second one must fail, not
    # return scaled-twice gradients.
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    assert linear_cross_entropy(h, w, torch.full_like(targets, -100), "mean").isnan()
    with pytest.raises(ValueError, match="'none'"):
        linear_cross_entropy(h, w, targets, "none")


def test_bfloat16_model_loss_is_float32():
    """Outside float32 the loss is `F.cross_entropy` over float32 logits."""
    torch.manual_seed(0)
    model = Transformer(ModelArgs.from_name("demo", vocab_size=2000, max_seq_len=64))
    tokens, targets = torch.randint(0, 2000, (2, 2, 64))
    _, loss32 = model(tokens, targets)
    model.to(torch.bfloat16)
    _, loss16 = model(tokens, targets)
    assert loss16.dtype == torch.float32
    assert loss16.item() == pytest.approx(loss32.item(), abs=0.005)
