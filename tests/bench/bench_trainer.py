"""Training-step speed on CPU: our model vs Hugging Face `LlamaForCausalLM` with the
same config, weights, batch and optimizer (figure `trainer.cpu_vs_hf`, goal 1.1).

One step = forward, summed-token cross-entropy, backward, global-norm clipping at
1.0 and a fused AdamW update. Ours is the trainer's own `train_step` (the model's
chunked loss, `trainer.model.linear_cross_entropy`). HF's is what a transformers
user runs: the model's logits, `F.cross_entropy` over them in float32 (what
transformers' `ForCausalLMLoss` computes), then the same clipping and AdamW, with
`fused=True` as the HF Trainer's default `optim="adamw_torch_fused"` (torch >= 2.8)
and the same decay groups (`build_optimizer`; the Trainer's also spare only the
norm weights of a Llama). The model is the 15M size at LLaMA's vocabulary (32000),
seq 256, batch 4, float32, one thread (like the other benchmarks: these machines
are shared). The two models' first losses must agree (same weights, via
`trainer.hf`), else the figure would compare different computations and the
benchmark fails. Steps of the two alternate, so drifting machine load hits both
alike; medians of 9 after one warm-up step each.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from tests.bench import record, size

MODEL, VOCAB, SEQ_LEN, BATCH = "15M", 32000, 256, 4
REPEATS = size(9, 1)


def run() -> list[dict]:
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainer.hf import hf_config, to_hf_state_dict
    from trainer.model import ModelArgs, Transformer
    from trainer.train import build_optimizer, train_step

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        args = ModelArgs.from_name(MODEL, vocab_size=VOCAB, max_seq_len=SEQ_LEN)
        ours = Transformer(args)
        config = {k: v for k, v in hf_config(args).items() if k not in ("architectures", "model_type")}
        hf = LlamaForCausalLM(LlamaConfig(**config, attn_implementation="sdpa"))
        hf.load_state_dict(to_hf_state_dict(ours.state_dict(), args))
        window = torch.randint(0, VOCAB, (BATCH, SEQ_LEN + 1), generator=torch.Generator().manual_seed(0))
        x, y = window[:, :-1], window[:, 1:]
        opt_ours = build_optimizer(ours, lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95))
        opt_hf = build_optimizer(hf, lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95))

        def step_ours() -> float:
            return train_step(ours, opt_ours, [(x, y)], grad_clip=1.0)[0].item()

        def step_hf() -> float:
            logits = hf(input_ids=x).logits
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
            (loss / y.numel()).backward()
            torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
            opt_hf.step()
            opt_hf.zero_grad(set_to_none=True)
            return loss.item() / y.numel()

        first_ours, first_hf = step_ours(), step_hf()  # also the warm-up
        if abs(first_ours - first_hf) > 1e-4:
            raise RuntimeError(f"the models disagree: loss {first_ours} (ours) vs {first_hf} (HF)")
        t_ours, t_hf = [], []
        for _ in range(REPEATS):
            for fn, times in ((step_ours, t_ours), (step_hf, t_hf)):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    tokens = BATCH * SEQ_LEN
    return [record("trainer.cpu_vs_hf", tokens / statistics.median(t_ours), "tokens/s",
                   f"HF LlamaForCausalLM {MODEL}", tokens / statistics.median(t_hf), goal=1.1)]
