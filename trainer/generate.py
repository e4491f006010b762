"""Text from a trained model: load it, sample with a KV cache, stream the tokens
(`python -m trainer generate`), and size a model for inference on the meta device.

A model comes from a checkpoint (a `.pt` file or a sharded folder, local or on an
object store) or from a Hugging Face Llama folder (`python -m trainer export --hf`).
Its tokenizer is the SentencePiece model it was trained with: the `tokenizer.model` of
an export folder, or the one the checkpoint (or the shard manifest) records.

A prompt is encoded as the shards encode a document, `[BOS] + SentencePiece ids`, so
the model continues it as it would a document's start. Decoding is Meta's reference
`generation.py`: the prompt is fed once, then one token at a time against the KV cache
(`Transformer.setup_kv_cache`); temperature 0 is greedy (argmax), else the logits are
divided by the temperature, cut to the top-k and to the top-p nucleus, and sampled
from a seeded generator.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.model import ModelArgs, Transformer

# The GPU memory sizes `memory_report` checks a model against (GiB: an "80 GB" A100 or
# H100 holds 80 GiB).
GPU_MEMORY_GIB = (80, 40)


def load_model(source: str | Path, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> tuple[Transformer, dict | None]:
    """The model of a checkpoint or of an HF Llama folder (`load_init_weights`), in
    eval mode, on `device` in `dtype`, and the record of the tokenizer it was trained
    with ({"path", "sha256", ...}; None when the source records none).

    The weights are loaded into a model built on the meta device (`assign=True`), so
    the float32 copy read from the file is the only one made before the cast.

    Raises:
        FileNotFoundError: no such checkpoint or folder.
        KeyError, ValueError: a file that is not a checkpoint, or an HF config our
            model cannot express (`trainer.hf.args_from_hf_config`).
    """
    from trainer.checkpoint import load_init_weights

    weights, fields, record = load_init_weights(str(source))
    with torch.device("meta"):
        model = Transformer(ModelArgs(**fields))
    model.load_state_dict(weights, assign=True)
    return model.to(device=device, dtype=dtype).eval(), record


def encode_prompt(sp, text: str) -> list[int]:
    """`[BOS] + ids`: how the shards begin a document."""
    return [sp.bos_id(), *sp.encode(text, out_type=int)]


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> int:
    """The next token from `logits` [vocab_size]: argmax at temperature 0; else a draw
    from softmax(logits / temperature) restricted to the `top_k` most likely tokens
    and then to the smallest set whose probability reaches `top_p` (the nucleus;
    Meta's `sample_top_p`), renormalised."""
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        outside = sorted_probs.cumsum(0) - sorted_probs > top_p  # mass before it reaches p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        pick = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return int(order[pick])
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.no_grad()
def generate(model: Transformer, prompt: list[int], max_new_tokens: int, *,
             temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
             generator: torch.Generator | None = None, eos_id: int | None = None,
             use_cache: bool = True, on_token: Callable[[int], None] | None = None) -> list[int]:
    """Up to `max_new_tokens` tokens after `prompt` (ids), stopping after `eos_id`.

    With `use_cache`, the prompt is fed once and each new token alone, against the
    layers' KV caches (set up here for prompt + max_new_tokens positions, removed at
    the end); without it, every step recomputes the whole sequence (the reference a
    cache is measured against). `on_token` is called with each new token as it is
    chosen (streaming). Returns the new tokens (the EOS included when reached).

    Raises:
        ValueError: an empty prompt, or prompt + max_new_tokens beyond the model's
            max_seq_len (the context it was trained for).
    """
    if not prompt:
        raise ValueError("empty prompt: give at least the BOS token")
    total = len(prompt) + max_new_tokens
    if total > model.args.max_seq_len:
        raise ValueError(f"{len(prompt)} prompt + {max_new_tokens} new tokens exceed the model's "
                         f"context of {model.args.max_seq_len} tokens")
    device = model.output.weight.device
    seq = torch.tensor([prompt], dtype=torch.long, device=device)
    new: list[int] = []
    if use_cache:
        model.setup_kv_cache(1, total)
    try:
        logits, _ = model(seq)
        for _ in range(max_new_tokens):
            token = sample_next(logits[0, -1], temperature, top_k, top_p, generator)
            new.append(token)
            if on_token is not None:
                on_token(token)
            if token == eos_id or len(new) == max_new_tokens:
                break
            step = torch.tensor([[token]], dtype=torch.long, device=device)
            if use_cache:
                logits, _ = model(step, start_pos=len(prompt) + len(new) - 1)
            else:
                seq = torch.cat([seq, step], dim=1)
                logits, _ = model(seq)
    finally:
        if use_cache:
            model.remove_kv_cache()
    return new


def completion_text(sp, prompt: list[int], new: list[int]) -> str:
    """The text `new` adds after `prompt` (ids): decoded together, since a piece's
    leading "▁" is a space only after other text, and bytes join into characters."""
    return sp.decode(prompt + new)[len(sp.decode(prompt)):]


class TextStream:
    """Prints a completion as its tokens arrive: each call decodes the prompt and every
    token so far (`completion_text`) and writes what is new; a character still missing
    some of its bytes is held back until it is whole."""

    def __init__(self, sp, prompt: list[int], out=None):
        self.sp, self.prompt, self.out = sp, prompt, out or sys.stdout
        self.ids: list[int] = []
        self.shown = ""

    def __call__(self, token: int) -> None:
        self.ids.append(token)
        text = completion_text(self.sp, self.prompt, self.ids)
        if text.endswith("\ufffd"):
            return
        self.out.write(text[len(self.shown):])
        self.out.flush()
        self.shown = text

    def finish(self) -> None:
        text = completion_text(self.sp, self.prompt, self.ids)
        self.out.write(text[len(self.shown):] + "\n")
        self.out.flush()


@dataclass
class MemoryEstimate:
    """Bytes a model needs to generate: its weights and its KV cache."""

    size: str
    dtype: torch.dtype
    params: int
    weights: int
    cache_tokens: int
    cache: int

    @property
    def total(self) -> int:
        return self.weights + self.cache


def inference_memory(size: str | ModelArgs, cache_tokens: int = 2048, batch_size: int = 1,
                     dtype: torch.dtype = torch.bfloat16, vocab_size: int = 32000) -> MemoryEstimate:
    """The weights and KV cache of a model at `dtype` with a cache of `cache_tokens`
    positions per sequence, counted from tensors built on the meta device (nothing is
    allocated): the numbers are those of the very modules `generate` runs.

    Activations (a layer's at a time) and the CUDA context come on top of this.
    """
    args = (size if isinstance(size, ModelArgs)
            else ModelArgs.from_name(size, vocab_size=vocab_size, max_seq_len=cache_tokens))
    with torch.device("meta"):
        model = Transformer(args).to(dtype)
        model.setup_kv_cache(batch_size, cache_tokens)
    params = sum(p.numel() for p in model.parameters())
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    cache = sum(b.numel() * b.element_size() for b in model.buffers())
    return MemoryEstimate(size if isinstance(size, str) else "custom", dtype, params, weights,
                          cache_tokens, cache)


def memory_report(m: MemoryEstimate) -> str:
    """`inference_memory` as lines for the terminal, with whether it fits one GPU of
    each size in GPU_MEMORY_GIB."""
    gib = 2**30
    dtype = str(m.dtype).removeprefix("torch.")
    rows = [(f"weights ({dtype})", m.weights),
            (f"KV cache ({m.cache_tokens} tokens, {dtype})", m.cache), ("total", m.total)]
    width = max(len(label) for label, _ in rows) + 1
    lines = [f"{m.size}: {m.params / 1e9:.2f}B parameters"]
    lines += [f"  {label + ':':<{width}} {n / gib:7.2f} GiB" for label, n in rows]
    lines[-1] += " (+ activations and the CUDA context)"
    for size in GPU_MEMORY_GIB:
        fits = "fits" if m.total < size * gib else "does NOT fit"
        lines.append(f"  one {size} GB GPU: {fits} ({100 * m.total / (size * gib):.0f}% of it)")
    return "\n".join(lines)
