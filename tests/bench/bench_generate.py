"""Generation speed on CPU with the KV cache vs recomputing the prefix at every step
(figure `generate.kv_vs_recompute`, goal 5x).

The 15M model at LLaMA's vocabulary (32000), random weights, a 16-token prompt, 256
new tokens, greedy, float32, one thread (as the other benchmarks: these machines are
shared). With the cache (`trainer.generate.generate`), a step runs one token through
every layer and the output projection. Two references recompute the whole sequence
at every step:

- `generate.kv_vs_recompute` (goal 5x): the model's forward over the sequence, as
  `generate(use_cache=False)` does and as any caller of `Transformer.forward` would
  (it returns every position's logits);
- `generate.kv_vs_recompute_last` (no goal; the fairest reference): the same layers,
  but the output projection of the last position only (nanoGPT's inference
  shortcut). At this size the 32000 x 192 output projection, one matrix-vector
  product per new token in every variant, is a large fixed share of a cached step,
  so the cache gains less against this reference.

All must give the same tokens, else the figures would compare different work and
the benchmark fails. Runs of the three alternate, so drifting machine load hits them
alike; medians of 2 after a short warm-up.
"""

from __future__ import annotations

import statistics
import time

import torch

from tests.bench import record, size

MODEL, VOCAB, PROMPT, NEW = "15M", 32000, 16, size(256, 16)
REPEATS = size(2, 1)


def _recompute_last(model, prompt: list[int], new: int) -> list[int]:
    """Greedy tokens without a cache, the output projection on the last position only."""
    from trainer.model import rope_angles

    seq = list(prompt)
    with torch.no_grad():
        for _ in range(new):
            tokens = torch.tensor([seq])
            rope = rope_angles(model.args.head_dim, len(seq), model.args.rope_theta)
            h = model.tok_embeddings(tokens)
            for layer in model.layers:
                h = layer(h, rope)
            seq.append(int(model.output(model.norm(h[:, -1]))[0].argmax()))
    return seq[len(prompt):]


def run() -> list[dict]:
    from trainer.generate import generate
    from trainer.model import ModelArgs, Transformer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = Transformer(ModelArgs.from_name(MODEL, vocab_size=VOCAB,
                                                max_seq_len=PROMPT + NEW)).eval()
        prompt = torch.randint(3, VOCAB, (PROMPT,), generator=torch.Generator().manual_seed(0)).tolist()
        variants = {"cache": lambda n: generate(model, prompt, n),
                    "recompute": lambda n: generate(model, prompt, n, use_cache=False),
                    "recompute_last": lambda n: _recompute_last(model, prompt, n)}
        for fn in variants.values():  # warm-up
            fn(8)
        times: dict[str, list[float]] = {k: [] for k in variants}
        tokens: dict[str, list[int]] = {}
        for _ in range(REPEATS):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                tokens[name] = fn(NEW)
                times[name].append(time.perf_counter() - t0)
        if not tokens["cache"] == tokens["recompute"] == tokens["recompute_last"]:
            raise RuntimeError("cached and recomputed generation disagree")
    finally:
        torch.set_num_threads(threads)
    speed = {k: NEW / statistics.median(v) for k, v in times.items()}
    where = f"({MODEL}, {NEW} new tokens, CPU)"
    return [record("generate.kv_vs_recompute", speed["cache"], "tokens/s",
                   f"recompute: forward over the prefix {where}", speed["recompute"], goal=5.0),
            record("generate.kv_vs_recompute_last", speed["cache"], "tokens/s",
                   f"recompute, last-position logits only {where}", speed["recompute_last"])]
