"""GPU training benchmark: tokens/s and MFU of the ~1B model at seq 2048, bf16, compiled.

    python -m trainer.bench_gpu [--steps 20] [--batch-size 16] [--json results.json]

On one NVIDIA GPU: builds `ModelArgs.from_name("1B")` (vocabulary 32000, context
2048) and wraps it with the trainer's own `trainer.train.build_model` (per-block
`torch.compile` with inductor, optional activation checkpointing), and runs
`trainer.train.train_step` (bf16 autocast over float32 weights, summed token loss,
clipping at 1.0, fused AdamW) on uniformly random token ids (throughput does not
depend on the data) for `--warmup` untimed steps (compilation) and `--steps` timed
ones. It prints, last, a short table:

- tokens/s and the model's training FLOP/s: PaLM's 6N + 12 L d T FLOPs per token
  (`Transformer.flops_per_token`; the attention term counts the full, not the
  causal half, score matrix, as PaLM's Appendix B does);
- MFU against two peaks: a bf16 matmul peak measured in the same process (8192^3
  products, median of 10 after warm-up: what this card sustains today, thermal and
  clock state included) and the datasheet's dense bf16 peak of this device
  (`trainer.devices.PEAK_BF16`, the table the trainer's MFU uses too: H100/H200
  SXM 989e12, A100 312e12, ...; `--peak-flops` to give another).

Sized to finish in under 5 minutes on an H100/H200, compilation included (about
30 s to compile, then about 0.5 s a step). On a machine without CUDA it exits with
status 2 and says so. Nothing here is imported by the trainer or the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

# Before torch allocates: fewer fragmentation stalls with large, varying activations.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import torch

from trainer.devices import MEASURE_N, bf16_peak, measure_matmul_peak
from trainer.model import ModelArgs
from trainer.train import autocast_for, build_model, build_optimizer, train_step

MATMUL_N = MEASURE_N["cuda"]  # 3 x 128 MiB bf16 operands: far past launch overhead and the L2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.bench_gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="1B", help="a size of trainer/model.py (default 1B)")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per step")
    parser.add_argument("--warmup", type=int, default=4, help="untimed steps (compilation)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--no-compile", action="store_true", help="eager (default: inductor)")
    parser.add_argument("--ac", action="store_true", help="activation checkpointing per block")
    parser.add_argument("--peak-flops", type=float, default=None,
                        help="datasheet peak FLOP/s (default: from the device name)")
    parser.add_argument("--json", default=None, help="also write the results here")
    return parser


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    if not torch.cuda.is_available():
        print(f"trainer.bench_gpu needs an NVIDIA GPU with CUDA; torch {torch.__version__} "
              f"sees none (CUDA build: {torch.version.cuda}). Nothing was run.", file=sys.stderr)
        return 2
    results = bench(opts)
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(results, f, indent=2)
    rows = table(results)
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def bench(opts: argparse.Namespace) -> dict:
    """Build the model and optimizer as the trainer does, time `train_step`; the figures."""
    t_start = time.perf_counter()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    peak_sheet = opts.peak_flops or bf16_peak(name)
    peak_measured = measure_matmul_peak(device, torch.bfloat16, MATMUL_N, repeats=10)

    torch.manual_seed(0)
    args = ModelArgs.from_name(opts.model, vocab_size=32000, max_seq_len=opts.seq_len)
    model = build_model(args, device, ac=opts.ac, compile=not opts.no_compile)
    optimizer = build_optimizer(model, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95))
    autocast = autocast_for(device)
    gen = torch.Generator(device).manual_seed(0)

    def batch() -> list[tuple[torch.Tensor, torch.Tensor]]:
        w = torch.randint(0, args.vocab_size, (opts.batch_size, opts.seq_len + 1),
                          device=device, generator=gen)
        return [(w[:, :-1], w[:, 1:])]

    t0 = time.perf_counter()
    for _ in range(opts.warmup):
        loss, _ = train_step(model, optimizer, batch(), 1.0, autocast)
        loss.item()
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()

    step_s, losses = [], []
    for _ in range(opts.steps):
        micro = batch()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        loss, _ = train_step(model, optimizer, micro, 1.0, autocast)
        end.record()
        losses.append(loss.item())  # the trainer reads the loss every step too
        step_s.append(start.elapsed_time(end) / 1e3)
    median_s = statistics.median(step_s)
    tokens_per_s = opts.batch_size * opts.seq_len / median_s
    flops_per_token = model.flops_per_token(opts.seq_len)
    model_flops = flops_per_token * tokens_per_s
    return {
        "device": name, "torch": torch.__version__, "model": opts.model,
        "params": model.num_params(), "seq_len": opts.seq_len, "batch_size": opts.batch_size,
        "compile": not opts.no_compile, "activation_checkpointing": opts.ac,
        "steps": opts.steps, "warmup": opts.warmup, "warmup_s": warmup_s,
        "step_s_median": median_s, "step_s_min": min(step_s), "tokens_per_s": tokens_per_s,
        "flops_per_token": flops_per_token, "model_flops_per_s": model_flops,
        "peak_measured": peak_measured, "peak_datasheet": peak_sheet,
        "mfu_measured": model_flops / peak_measured,
        "mfu_datasheet": model_flops / peak_sheet if peak_sheet else None,
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
        "first_loss": losses[0], "last_loss": losses[-1],
        "total_s": time.perf_counter() - t_start,
    }


def table(r: dict) -> list[tuple[str, str]]:
    """The results of `bench` as (what, value) rows to print."""
    sheet = (f"{r['peak_datasheet'] / 1e12:,.0f} TFLOP/s" if r["peak_datasheet"]
             else "unknown for this device")
    mfu_sheet = f"{r['mfu_datasheet']:.1%}" if r["peak_datasheet"] else "-"
    return [
        ("device", f"{r['device']}, torch {r['torch']}"),
        ("model", (f"{r['model']}: {r['params'] / 1e9:.2f}B params, seq {r['seq_len']}, "
                   f"batch {r['batch_size']}, bf16 autocast, "
                   f"{'compiled' if r['compile'] else 'eager'}"
                   f"{', AC' if r['activation_checkpointing'] else ''}")),
        ("warm-up (compile)", f"{r['warmup_s']:.1f} s for {r['warmup']} steps"),
        ("step time", (f"{r['step_s_median'] * 1e3:.1f} ms median of {r['steps']} "
                       f"(min {r['step_s_min'] * 1e3:.1f})")),
        ("tokens/s", f"{r['tokens_per_s']:,.0f}"),
        ("model FLOP/s", (f"{r['model_flops_per_s'] / 1e12:,.1f} TFLOP/s "
                          f"({r['flops_per_token'] / 1e9:.2f} GFLOP/token)")),
        ("bf16 matmul peak, measured", f"{r['peak_measured'] / 1e12:,.0f} TFLOP/s ({MATMUL_N}^3)"),
        ("bf16 peak, datasheet", sheet),
        ("MFU vs measured peak", f"{r['mfu_measured']:.1%}"),
        ("MFU vs datasheet peak", mfu_sheet),
        ("max memory", f"{r['max_memory_gib']:.1f} GiB"),
        ("loss", f"{r['first_loss']:.3f} -> {r['last_loss']:.3f} (random tokens: ~ln 32000 = 10.37)"),
        ("total time", f"{r['total_s']:.0f} s"),
    ]

if __name__ == "__main__":
    sys.exit(main())
