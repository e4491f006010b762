"""The LLaMA model (Touvron et al. 2023, Section 2.2), in one readable file.

A decoder-only Transformer with the paper's three changes to GPT: RMSNorm
pre-normalisation (from GPT-3), the SwiGLU feed-forward (PaLM) with a hidden
size of 2/3 * 4d, and rotary position embeddings (RoPE, GPT-Neo). No biases,
untied input and output embeddings, causal attention through
`F.scaled_dot_product_attention`. The model knows nothing about distribution,
compilation or mixed precision: those are applied from outside (torchtitan).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainer.loss import linear_cross_entropy


@dataclass
class ModelArgs:
    """Hyper-parameters of a LLaMA model.

    `norm_eps=1e-6` and `rope_theta=10000` are the released LLaMA-1 values
    (`params.json`, `precompute_freqs_cis`); `multiple_of=256` rounds the
    SwiGLU hidden size as in the reference code.
    """

    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    vocab_size: int = 32000
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-6
    max_seq_len: int = 2048
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_hidden(self) -> int:
        """SwiGLU hidden size: 2/3 * 4d (times the multiplier), rounded up to `multiple_of`.

        7B: 11008, 13B: 13824, 33B: 17920, 65B: 22016 (LLaMA reference code).
        """
        hidden = int(2 * 4 * self.dim / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * math.ceil(hidden / self.multiple_of)

    @classmethod
    def from_name(cls, name: str, **overrides) -> ModelArgs:
        """The named size from `MODEL_SIZES`, with fields overridden (e.g. `vocab_size`).

        Raises:
            KeyError: unknown size name (the message lists the known ones).
            TypeError: an override that is not a field.
        """
        if name not in MODEL_SIZES:
            raise KeyError(f"unknown model size {name!r}; known: {', '.join(MODEL_SIZES)}")
        return cls(**{**MODEL_SIZES[name], **overrides})


# Table 2 of the paper (dim, heads, layers), vocabulary 32000, context 2048; plus small
# sizes for tests and CPU demos, named by their total at vocabulary 32000 (the trainer
# sets vocab_size from the shard manifest and max_seq_len from its seq_len).
MODEL_SIZES: dict[str, dict] = {
    "demo": dict(dim=128, n_layers=4, n_heads=4, multiple_of=32),  # 1.3M at vocab 2000
    "15M": dict(dim=192, n_layers=6, n_heads=6, multiple_of=32),
    "125M": dict(dim=768, n_layers=12, n_heads=12),  # GPT-3 Small's shape
    "1B": dict(dim=2048, n_layers=18, n_heads=16),
    "7B": dict(dim=4096, n_layers=32, n_heads=32),
    "13B": dict(dim=5120, n_layers=40, n_heads=40),
    "33B": dict(dim=6656, n_layers=60, n_heads=52),
    "65B": dict(dim=8192, n_layers=80, n_heads=64),
}


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight over the last dim, computed in float32
    (Zhang & Sennrich 2019; LLaMA Section 2.2, "Pre-normalization")."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


def rope_angles(head_dim: int, seq_len: int, theta: float,
                device: torch.device | str | None = None, start: int = 0) -> torch.Tensor:
    """RoPE table (Su et al. 2021), float32 [2, seq_len, head_dim] on `device`, for
    positions start, ..., start + seq_len - 1.

    Features (2i, 2i+1) form pair i, turned at position t by the angle
    t * theta^(-2i/head_dim) (`precompute_freqs_cis` in the LLaMA reference code).
    Row 0 holds the cosine of each feature's pair angle, row 1 the sine with the sign
    it takes in the rotation (-sin at 2i, +sin at 2i+1); see `apply_rope`.
    """
    freqs = 1.0 / theta ** (
        torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
    positions = torch.arange(start, start + seq_len, dtype=torch.float32, device=device)
    angles = torch.outer(positions, freqs)
    angles = angles[:, :, None].expand(-1, -1, 2).flatten(1)  # each pair's angle twice
    sin = angles.sin()
    sin[:, 0::2].neg_()
    return torch.stack([angles.cos(), sin])


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs (x[2i], x[2i+1]) of `x` [B, T, H, D] by `rope_angles`
    [2, >=T, D]: (x0 cos - x1 sin, x1 cos + x0 sin).

    The rotation is done in float32 and cast back to x's dtype (the reference code
    does it in complex64). Pairs are interleaved, as in Meta's checkpoints
    (`trainer.hf` converts to Hugging Face's rotate-half order). Real arithmetic
    rather than the reference's complex product: inductor generates no code for
    complex operators, and on an H200 the complex form made the compiled 1B
    training step 5% slower. As x * cos + swap_pairs(x) * signed sin, the backward
    is two products and a swap: on CPU, forward and backward are 1.1-1.5x faster
    than turning the pair's two halves apart and stacking them (bitwise the same).
    """
    T = x.shape[1]
    cos, sin = rope[0, :T, None], rope[1, :T, None]  # [T, 1, D]: the same for every head
    xf = x.float()
    swapped = torch.stack((xf[..., 1::2], xf[..., 0::2]), dim=-1).flatten(-2)
    return (xf * cos + swapped * sin).type_as(x)


class KVCache(nn.Module):
    """The keys and values of the positions decoded so far, [B, n_heads, max_seq_len,
    head_dim] each, so that generating a token computes only that token's (as in
    Meta's reference `generation.py`). Buffers, not parameters: not in the state dict."""

    def __init__(self, batch_size: int, max_seq_len: int, n_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str | None = None):
        super().__init__()
        shape = (batch_size, n_heads, max_seq_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, n_heads, T, head_dim] at positions start..start + T - 1;
        returns the keys and values of positions 0..start + T - 1."""
        end = start + k.shape[2]
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class Attention(nn.Module):
    """Multi-head causal self-attention with RoPE on queries and keys; with a `cache`
    (`Transformer.setup_kv_cache`), also over the cached positions before `start_pos`."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.head_dim = args.n_heads, args.head_dim
        self.wq = nn.Linear(args.dim, args.dim, bias=False)
        self.wk = nn.Linear(args.dim, args.dim, bias=False)
        self.wv = nn.Linear(args.dim, args.dim, bias=False)
        self.wo = nn.Linear(args.dim, args.dim, bias=False)
        self.cache: KVCache | None = None

    def forward(self, x: torch.Tensor, rope: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)
        k = self.wk(x).view(B, T, self.n_heads, self.head_dim)
        v = self.wv(x).view(B, T, self.n_heads, self.head_dim)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        mask, causal = None, True
        if self.cache is not None:
            k, v = self.cache.update(start_pos, k, v)
            if start_pos > 0:  # query i sees keys 0..start_pos + i: SDPA's is_causal aligns
                causal = False  # its mask top-left, wrong for queries after a cached prefix
                if T > 1:
                    mask = torch.ones(T, start_pos + T, dtype=torch.bool, device=x.device).tril(start_pos)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x) (Shazeer 2020; LLaMA Section 2.2)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        hidden = args.ffn_hidden
        self.w1 = nn.Linear(args.dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, args.dim, bias=False)
        self.w3 = nn.Linear(args.dim, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: h = x + attn(norm(x)); out = h + ffn(norm(h))."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.attention = Attention(args)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)
        self.feed_forward = FeedForward(args)

    def forward(self, x: torch.Tensor, rope: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), rope, start_pos)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    """The LLaMA decoder. Parameter names follow Meta's checkpoints."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        if args.dim % args.n_heads or args.head_dim % 2:
            raise ValueError(f"dim {args.dim} must split into {args.n_heads} even-sized heads")
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """(Re)initialise every parameter, in place.

        The paper gives no init; this is GPT-2's: normal(0, 0.02), residual output
        projections (wo, w2) scaled by 1/sqrt(2 * n_layers), norms at 1. Call it
        after `to_empty(device=...)` when the model was built on the meta device.
        """
        std_out = 0.02 / math.sqrt(2 * self.args.n_layers)
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)
            else:
                std = std_out if name.endswith(("wo.weight", "w2.weight")) else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(
        self, tokens: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean",
        start_pos: int = 0,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Next-token logits without `targets`; the cross-entropy loss with them.

        Args:
            tokens: int64 [B, T] token ids, T <= max_seq_len.
            targets: int64 [B, T] next-token ids; -100 marks positions to ignore.
            reduction: "mean" (nats per target token) or "sum" (nats; divide by the
                number of target tokens of all micro-batches for grad accumulation).
            start_pos: the position of tokens[:, 0]. With a KV cache
                (`setup_kv_cache`), the tokens attend to the cached positions before
                it too: generation feeds the prompt at 0, then one token at a time.
        Returns:
            (logits [B, T, vocab_size] in the compute dtype, None) without targets;
            (None, loss float32 0-dim) with them: the loss is computed from the last
            hidden states without keeping the logits (`linear_cross_entropy`).
        Raises:
            ValueError: start_pos + T exceeds max_seq_len.
        """
        T = tokens.shape[1]
        if start_pos + T > self.args.max_seq_len:
            raise ValueError(f"sequence length {start_pos + T} > max_seq_len {self.args.max_seq_len}")
        # The RoPE table is made per forward (a few small ops, as in transformers' Llama),
        # not held in a buffer: `model.to(torch.bfloat16)` would cast a buffer, rounding
        # cos and sin by up to 2e-3.
        rope = rope_angles(self.args.head_dim, T, self.args.rope_theta, device=tokens.device,
                           start=start_pos)
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h, rope, start_pos)
        h = self.norm(h)
        if targets is None:
            return self.output(h), None
        return None, linear_cross_entropy(h.flatten(0, 1), self.output.weight,
                                          targets.flatten(), reduction)

    def setup_kv_cache(self, batch_size: int, max_seq_len: int | None = None) -> None:
        """Give every attention layer a `KVCache` for `batch_size` sequences of up to
        `max_seq_len` positions (default: args.max_seq_len), in the dtype and on the
        device of the weights (the meta device too: `trainer.generate` sizes it there)."""
        w = self.output.weight
        for layer in self.layers:
            layer.attention.cache = KVCache(batch_size, max_seq_len or self.args.max_seq_len,
                                            self.args.n_heads, self.args.head_dim, w.dtype, w.device)

    def remove_kv_cache(self) -> None:
        """Drop the layers' KV caches (back to plain causal attention)."""
        for layer in self.layers:
            layer.attention.cache = None

    def num_params(self, exclude_embedding: bool = False) -> int:
        """Number of parameters; `exclude_embedding` leaves out the input embedding
        table (a lookup, no FLOPs), as for the FLOP count."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.tok_embeddings.weight.numel() if exclude_embedding else n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward) at sequence length `seq_len`.

        PaLM (Chowdhery et al. 2022), Appendix B: 6N + 12 * L * d * T, with N the
        parameters outside the input embedding and the attention term counted over
        the full (not causal-halved) score matrix. For MFU = achieved / peak FLOP/s.
        """
        a = self.args
        return 6 * self.num_params(exclude_embedding=True) + 12 * a.n_layers * a.dim * seq_len
