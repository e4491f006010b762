"""The training loop: AdamW, warmup + cosine schedule, grad accumulation and
clipping, JSONL log, checkpoints and exact resume (LLaMA paper, Section 2.3).

Runs on one CPU (float32) or one GPU (bf16 autocast). Distribution (FSDP2),
`torch.compile` and activation checkpointing are applied from outside the model
and are not wired in here yet.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from pipeline.config import Config
from trainer.checkpoint import (checkpoint_path, latest_checkpoint, list_checkpoints,
                                load_checkpoint, save_checkpoint)
from trainer.data import TokenLoader, TokenStream
from trainer.model import ModelArgs, Transformer
from trainer.plot import plot_loss

# Peak dense FLOP/s for MFU. CUDA: an A100's bf16 tensor-core peak (312 TFLOP/s).
# CPU: a nominal 100 GFLOP/s per thread (one AVX2 core at ~3 GHz: 2 FMA units x
# 8 float32 lanes x 2 FLOPs); CPU MFU is for comparing runs, not hardware.
PEAK_FLOPS_CUDA = 312e12
PEAK_FLOPS_CPU_PER_THREAD = 100e9


def cosine_lr(step: int, *, lr: float, warmup_steps: int, steps: int, min_lr_ratio: float) -> float:
    """Learning rate for update `step` (1-based): linear warmup to `lr` over
    `warmup_steps`, then cosine decay reaching `min_lr_ratio * lr` at `steps`
    (LLaMA Section 2.3: final rate 10% of the peak, 2000 warmup steps)."""
    if step <= warmup_steps:
        return lr * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    min_lr = lr * min_lr_ratio
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups chosen by shape (nanoGPT): matrices and embeddings (dim >= 2)
    decay, vectors (norm weights) do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def _read_log(path: Path, upto: int) -> list[dict]:
    """The log's records up to step `upto` (later ones came from a run that died
    before its next checkpoint and will be redone)."""
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["step"] <= upto]


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def train_step(model: Transformer, optimizer: torch.optim.Optimizer,
               micro: list[tuple[torch.Tensor, torch.Tensor]], grad_clip: float,
               autocast=contextlib.nullcontext()) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer update over the micro-batches `micro` ((x, y) int64 [B, T] each).

    Summed token losses are divided by the target tokens of all micro-batches, so the
    gradient is the one of a single batch holding them all; then global-norm clipping
    at `grad_clip` (0: off), the optimizer step, and zeroed gradients.
    Returns: (mean loss in nats/token, gradient norm before clipping), 0-dim tensors.
    """
    device = next(model.parameters()).device
    n_targets = sum(int((y != -100).sum()) for _, y in micro)
    loss_sum = torch.zeros((), device=device)
    for x, y in micro:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast:
            _, loss = model(x, y, reduction="sum")
        (loss / n_targets).backward()
        loss_sum += loss.detach()
    grad_norm = torch.nn.utils.clip_grad_norm_(
        model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum / n_targets, grad_norm


def train(cfg: Config, resume: bool = True, peak_flops: float | None = None) -> dict:
    """Train `cfg.trainer.model` on the "train" shards of `cfg.shards.out`.

    Per update: `grad_accum` micro-batches of `batch_size` x `seq_len` tokens; the
    summed token losses are divided by the number of target tokens of all of them,
    so the gradient equals that of one large batch. AdamW (beta1, beta2, weight decay
    on dim >= 2 tensors), `cosine_lr`, global-norm clipping at `grad_clip` (0: off).

    Writes under `cfg.trainer.out`: `log.jsonl` (one JSON record per logged step:
    step, loss in nats/token, lr, grad_norm before clipping, tokens, tokens_per_s,
    mfu), `checkpoints/step-NNNNNN.pt` every `ckpt_every` steps and at the end (last
    `keep_checkpoints` kept), and `loss.png`.

    Args:
        cfg: the job config (`trainer`, `shards.out` and `seed` are used).
        resume: continue from the newest checkpoint if there is one; False starts
            afresh, deleting this run's checkpoints and log.
        peak_flops: device peak FLOP/s for MFU; default PEAK_FLOPS_CUDA on CUDA,
            PEAK_FLOPS_CPU_PER_THREAD x threads on CPU.
    Returns:
        {first_loss, last_loss, steps, tokens, checkpoint, log, plot}: losses of the
        first and last logged steps, steps done, tokens trained on, and paths.
    Raises:
        ShardError: missing or corrupt shards or manifest.
        ValueError: a checkpoint of another model shape.
        FloatingPointError: the loss became NaN or infinite.
    """
    t = cfg.trainer
    out = Path(t.out)
    ckpt_dir, log_path = out / "checkpoints", out / "log.jsonl"
    if t.num_threads > 0:
        torch.set_num_threads(t.num_threads)
    device = torch.device(t.device)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    stream = TokenStream(cfg.shards.out, "train", t.seq_len, seed=cfg.seed, shuffle_block=t.shuffle_block)
    loader = TokenLoader(stream, t.batch_size, pin_memory=device.type == "cuda")
    args = ModelArgs.from_name(t.model, vocab_size=stream.vocab_size, max_seq_len=t.seq_len)
    with torch.device(device):
        model = Transformer(args)
    optimizer = torch.optim.AdamW(param_groups(model, t.weight_decay), lr=t.lr,
                                  betas=(t.beta1, t.beta2), fused=device.type == "cuda" or None)

    step = 0
    if not resume:
        for old in list_checkpoints(ckpt_dir):
            old.unlink()
    elif (latest := latest_checkpoint(ckpt_dir)) is not None:
        state = load_checkpoint(latest)
        if state["model_args"] != asdict(args):
            raise ValueError(f"{latest}: saved for model {state['model_args']}, "
                             f"the config gives {asdict(args)}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        loader.load_state_dict(state["data"])
        _set_rng_state(state["rng"])
        step = state["step"]
    records = _read_log(log_path, upto=step)
    out.mkdir(parents=True, exist_ok=True)
    log_path.write_text("".join(json.dumps(r) + "\n" for r in records))

    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    if peak_flops is None:
        peak_flops = (PEAK_FLOPS_CUDA if device.type == "cuda"
                      else PEAK_FLOPS_CPU_PER_THREAD * torch.get_num_threads())
    flops_per_token = model.flops_per_token(t.seq_len)
    tokens_per_step = t.batch_size * t.seq_len * t.grad_accum
    checkpoint = latest_checkpoint(ckpt_dir)
    batches = iter(loader)
    model.train()
    bar = tqdm(total=t.steps, initial=step, desc=f"train {t.model}", unit="step", mininterval=1.0)
    clock, tokens_since = time.perf_counter(), 0
    with log_path.open("a") as log:
        while step < t.steps:
            lr = cosine_lr(step + 1, lr=t.lr, warmup_steps=t.warmup_steps, steps=t.steps,
                           min_lr_ratio=t.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            micro = [next(batches) for _ in range(t.grad_accum)]
            loss, grad_norm = train_step(model, optimizer, micro, t.grad_clip, autocast)
            step += 1
            tokens_since += tokens_per_step
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"step {step}: loss is {loss_value}")
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", refresh=False)

            if step == 1 or step % t.log_every == 0 or step == t.steps:
                elapsed = time.perf_counter() - clock
                tokens_per_s = tokens_since / elapsed
                record = {"step": step, "loss": loss_value, "lr": lr,
                          "grad_norm": grad_norm.item(), "tokens": step * tokens_per_step,
                          "tokens_per_s": tokens_per_s,
                          "mfu": flops_per_token * tokens_per_s / peak_flops}
                records.append(record)
                log.write(json.dumps(record) + "\n")
                log.flush()
                clock, tokens_since = time.perf_counter(), 0

            if step % t.ckpt_every == 0 or step == t.steps:
                state = {"step": step, "model": model.state_dict(),
                         "optimizer": optimizer.state_dict(), "data": loader.state_dict(),
                         "rng": _rng_state(device), "model_args": asdict(args),
                         "config_digest": cfg.digest()}
                checkpoint = save_checkpoint(checkpoint_path(ckpt_dir, step), state,
                                             keep=t.keep_checkpoints)
    bar.close()

    plot = plot_loss(records, out / "loss.png", title=f"{cfg.name}: {t.model}")
    return {"first_loss": records[0]["loss"] if records else None,
            "last_loss": records[-1]["loss"] if records else None,
            "steps": step, "tokens": step * tokens_per_step,
            "checkpoint": str(checkpoint) if checkpoint else None,
            "log": str(log_path), "plot": str(plot)}
