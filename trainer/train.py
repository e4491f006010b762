"""The training loop: AdamW, warmup + cosine schedule, grad accumulation and
clipping, validation loss per source, JSONL log, checkpoints and exact resume
(LLaMA paper, Section 2.3).

Runs on one CPU (float32), one GPU (bf16 autocast), or many processes under
`torchrun` (FSDP2, NCCL on GPUs, gloo on CPUs). `torch.compile`, activation
checkpointing and FSDP2 are applied from outside the model (`trainer.parallelize`).

The log (`<trainer.out>/log.jsonl`, written by rank 0) holds two kinds of records,
told apart by their keys:

- train: {"step", "loss" (nats/token, mean over the global batch), "lr",
  "grad_norm" (global, before clipping), "tokens" (trained on so far, all ranks),
  "tokens_per_s" (all ranks), "mfu" (model FLOPs utilisation, 0..1; only with a
  peak: `trainer.devices.mfu_peak`)}, at step 1, every `log_every` steps and at the
  last step;
- val: {"step", "val_loss": {source: nats/token}, "val_tokens": {source: target
  tokens evaluated}}, every `val_every` steps (if > 0) and at the last step, when
  the manifest has "val" shards; also at step 0 of a run started from
  `trainer.init_from` (the loss of the weights it starts from);
- eval: {"step", "eval_loss", "eval_bpb": {document set: nats/token, bits per
  byte}, "eval_acc", "eval_acc_norm", "eval_acc_per_token": {task: accuracy}} of
  `trainer.eval`'s sets (`trainer.evaluate.eval_record`), every `eval.every` steps
  (if > 0) and at the last step, when it names any.

With `trainer.tensorboard`, rank 0 also writes each record as TensorBoard scalars
(`tensorboard_scalars`) into `<trainer.out>/tensorboard` or the folder it names.

`trainer.out` may be on an object store (`s3://`, `gs://`): the run then works in a
local staging folder (`trainer.storage.staging_dir`) and mirrors it there. Each
checkpoint is uploaded once saved (`trainer.checkpoint`), after the log and a fresh
loss plot, so a resume trims the log records past its checkpoint as it does
locally; a resume first fetches the newest complete checkpoint and the log.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from tqdm import tqdm

from trainer.checkpoint import (
    check_global_batch,
    checkpoint_path,
    fetch_checkpoint,
    is_sharded,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_rank_state,
    load_sharded_checkpoint,
    optimizer_state_by_name,
    remove_checkpoint,
    save_checkpoint,
    save_sharded_checkpoint,
)
from trainer.data import TokenLoader, TokenStream, source_windows
from trainer.devices import mfu_peak, resolve_device
from trainer.evaluate import eval_record, load_eval_sets, val_loss
from trainer.model import ModelArgs, Transformer
from trainer.parallelize import Dist, init_distributed, parallelize
from trainer.plot import plot_loss
from trainer.storage import delete, download, is_remote, join, staging_dir, upload

if TYPE_CHECKING:  # pipeline.core.config needs pydantic, which GPU images may lack
    from pipeline.core.config import Config


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


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                    betas: tuple[float, float], fused: bool = True) -> torch.optim.AdamW:
    """AdamW over `param_groups` (LLaMA Section 2.3: betas 0.9, 0.95, decay 0.1).

    `fused=True` uses the single-kernel implementation (CPU and CUDA; on CPU about
    4x faster than the default multi-tensor one for a 15M model); the trainer passes
    False under FSDP2, whose DTensor parameters get the multi-tensor default.
    """
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas,
                             fused=fused or None)


def _read_log(path: Path, upto: int) -> list[dict]:
    """The log's records (both kinds) up to step `upto` (later ones came from a run
    that died before its next checkpoint and will be redone)."""
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


def forward_backward(model: torch.nn.Module, micro: list[tuple[torch.Tensor, torch.Tensor]],
                     autocast=None, world: Dist | None = None) -> tuple[torch.Tensor, int]:
    """Accumulate into `.grad` the gradient of the mean token loss of one global batch.

    The global batch is the micro-batches `micro` ((x, y) int64 [B, T] each; y = -100
    marks positions without a target) of every rank. Each micro-batch's summed token
    loss is scaled by world_size / N, N the target tokens of the global batch (an
    all-reduce), and back-propagated; FSDP2 averages the gradients over the ranks,
    so `.grad` is d(sum of all token losses / N): that of one batch holding every
    micro-batch, whatever their sizes (a mean per micro-batch would weight a short
    one's tokens more).

    `autocast`: a context for the forwards (e.g. bf16 `torch.autocast`; None: off).
    `world`: this process among the ranks (None: a single process).
    Returns: (this rank's summed token loss, float32 0-dim tensor, nats; N).
    Raises:
        ValueError: the global batch has no target token.
    """
    autocast = autocast or contextlib.nullcontext()
    world = world or Dist()
    device = next(model.parameters()).device
    n_targets = sum(int((y != -100).sum()) for _, y in micro)
    if world.enabled:
        total = torch.tensor(n_targets, dtype=torch.int64, device=device)
        dist.all_reduce(total)
        n_targets = int(total)
    if n_targets == 0:
        raise ValueError("the batch has no target token (all targets are -100)")
    scale = world.world_size / n_targets
    loss_sum = torch.zeros((), device=device)
    for x, y in micro:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast:
            _, loss = model(x, y, reduction="sum")
        (loss * scale).backward()
        loss_sum += loss.detach()
    return loss_sum, n_targets


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               micro: list[tuple[torch.Tensor, torch.Tensor]], grad_clip: float,
               autocast=None, world: Dist | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer update over the global batch (`micro` on every rank, see
    `forward_backward`): gradients, global-norm clipping at `grad_clip` (0: off;
    the norm over all ranks' shards under FSDP2), the optimizer step, zeroed
    gradients.

    Returns: (mean loss over the global batch in nats/token, gradient norm before
        clipping), 0-dim float32 tensors, equal on every rank.
    """
    world = world or Dist()
    loss_sum, n_targets = forward_backward(model, micro, autocast, world)
    if world.enabled:
        dist.all_reduce(loss_sum)
    grad_norm = torch.nn.utils.clip_grad_norm_(
        model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP2
        grad_norm = grad_norm.full_tensor()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum / n_targets, grad_norm


@torch.no_grad()
def _save(path: Path, model, optimizer, extra: dict, world: Dist, keep: int,
          remote_dir: str | None = None) -> Path | str:
    """Single-process: one `torch.save` file with everything; distributed: a DCP folder
    of model and optimizer tensors plus each rank's plain state (`trainer.checkpoint`).
    Uploaded to `remote_dir` when given (an object store folder)."""
    if not world.enabled:
        return save_checkpoint(path, {**extra, "model": model.state_dict(),
                                      "optimizer": optimizer.state_dict()}, keep=keep,
                               remote_dir=remote_dir)
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    extra = {**extra, "param_groups": optim_sd["param_groups"]}
    return save_sharded_checkpoint(path, {"model": model_sd, "optimizer": optim_sd["state"]},
                                   extra, rank=world.rank, keep=keep, remote_dir=remote_dir)


def _fetch(path: str, ckpt_dir: Path, world: Dist) -> Path:
    """The remote checkpoint `path`, downloaded into `ckpt_dir` once per machine
    (by local rank 0, while the machine's other ranks wait)."""
    if world.local_rank == 0:
        fetch_checkpoint(path, ckpt_dir)
    if world.enabled:
        dist.barrier()
    return ckpt_dir / path.rstrip("/").rsplit("/", 1)[-1]


def _publish(staging: Path, out: str, records: list[dict], title: str) -> None:
    """Upload a run's log and a freshly drawn loss plot from `staging` to `out` (rank 0)."""
    plot_loss(records, staging / "loss.png", title=title)
    for name in ("log.jsonl", "loss.png"):
        upload(staging / name, join(out, name))


# How the optimizer computes (fused kernel, multi-tensor, ...) is this run's choice,
# not saved state: FSDP2's DTensors take the multi-tensor AdamW, one process the fused.
_OPTIMIZER_IMPLEMENTATION = ("foreach", "fused", "capturable", "differentiable")


def _load(path: Path, model, optimizer, world: Dist, args: ModelArgs,
          batch: dict | None = None) -> dict:
    """Load model and optimizer from a checkpoint written by `_save` with any number of
    ranks; returns the rest of the saved state (step, data, rng, model_args, batch).

    - one-process file, one process: `load_state_dict` (a bitwise resume);
    - sharded folder (N ranks), under M ranks or on one process: DCP reads this
      rank's slices (full tensors without a process group) into the layout of
      `get_state_dict`, then `set_state_dict`;
    - one-process file under torchrun: every rank memory-maps it and
      `set_state_dict(full_state_dict=True)` keeps its own shards; the optimizer
      state, keyed by position, is first keyed by name (`optimizer_state_by_name`).
    The optimizer's hyper-parameters come from the checkpoint, its implementation
    flags (`_OPTIMIZER_IMPLEMENTATION`) stay this run's. The data stream's state is
    global (`trainer.data`), so the run continues at the saved token count.

    Args:
        batch: this run's {"batch_size", "grad_accum", "world_size"}; when the
            checkpoint's global batch differs, rank 0 warns (`check_global_batch`).
    Raises:
        ValueError: a checkpoint of another model shape, or of other optimizer groups.
    """
    def check(saved: dict) -> None:
        if saved != asdict(args):
            raise ValueError(f"{path}: saved for model {saved}, the config gives {asdict(args)}")

    if not is_sharded(path) and not world.enabled:
        state = load_checkpoint(path)
        check(state["model_args"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    else:
        from torch.distributed.checkpoint import state_dict as dsd

        model_sd, optim_sd = dsd.get_state_dict(model, optimizer)
        if is_sharded(path):
            check(load_rank_state(path, world.rank)["model_args"])
            state = load_sharded_checkpoint(
                path, {"model": model_sd, "optimizer": optim_sd["state"]}, world.rank,
                no_dist=not world.enabled)
            saved_optim = {"state": optim_sd["state"], "param_groups": state["param_groups"]}
            options = None
        else:
            state = load_checkpoint(path, mmap=True)
            check(state["model_args"])
            model_sd = state["model"]
            saved_optim = optimizer_state_by_name(state["optimizer"], optim_sd["param_groups"])
            options = dsd.StateDictOptions(full_state_dict=True)
        mine = {k: optimizer.defaults[k] for k in _OPTIMIZER_IMPLEMENTATION
                if k in optimizer.defaults}
        saved_optim["param_groups"] = [{**g, **mine} for g in saved_optim["param_groups"]]
        dsd.set_state_dict(model, optimizer, model_state_dict=model_sd,
                           optim_state_dict=saved_optim, options=options)
    if batch is not None and world.is_main:
        check_global_batch(path, state.get("batch"), batch)
    return state


class SetupError(ValueError):
    """A setting of the run that cannot work here (`trainer.init_from`,
    `trainer.tensorboard`): the command line prints the message alone."""


def tensorboard_dir(out: str, tensorboard: bool | str) -> Path | None:
    """Where `trainer.tensorboard` writes: None (off), `<out>/tensorboard` (true) or
    the folder given; checks that `torch.utils.tensorboard` can be imported.

    Raises:
        SetupError: the tensorboard package is missing, or the folder would be on an
            object store (event files are appended to: a local folder only).
    """
    if tensorboard is False:
        return None
    folder = join(out, "tensorboard") if tensorboard is True else tensorboard
    if is_remote(folder):
        raise SetupError(f"trainer.tensorboard: {folder} is on an object store; TensorBoard "
                         "appends to its files: give a local folder (trainer.tensorboard=DIR)")
    try:
        import torch.utils.tensorboard  # noqa: F401  (needs the tensorboard package)
    except ImportError:
        raise SetupError("trainer.tensorboard is set, but the tensorboard package is not "
                         "installed: pip install tensorboard (requirements-dev.txt pins it), "
                         "or set trainer.tensorboard=false") from None
    return Path(folder)


def tensorboard_scalars(record: dict, prefix: str = "") -> list[tuple[str, float]]:
    """A log record as TensorBoard (tag, value) scalars at its "step": each number
    under its key, each number of a nested dict under "key/name" ("val_loss/books");
    anything else (text, lists) is left out."""
    out = []
    for key, value in (sorted(record.items()) if prefix else record.items()):
        if key == "step" and not prefix:
            continue
        if isinstance(value, dict):
            out += tensorboard_scalars(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((f"{prefix}{key}", float(value)))
    return out


def init_weights(model: torch.nn.Module, path: str, args: ModelArgs,
                 tokenizer: dict | None) -> str:
    """Load the weights of `trainer.init_from` (a checkpoint or an HF Llama folder,
    `load_init_weights`) into the unsharded `model`; returns a line saying so.

    Args:
        args: this run's model; the source must have the same shape (its context
            length may differ: RoPE is computed, not learnt).
        tokenizer: the shard manifest's tokenizer record.
    Raises:
        SetupError: another shape, or weights trained with another tokenizer than
            the shards' (both record its sha256 and they differ).
    """
    from trainer.checkpoint import load_init_weights

    try:
        weights, saved, saved_tokenizer = load_init_weights(path)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise SetupError(f"trainer.init_from={path}: {e}") from None
    if {**saved, "max_seq_len": 0} != {**asdict(args), "max_seq_len": 0}:
        raise SetupError(f"trainer.init_from={path}: a model {saved}; this run's "
                         f"(trainer.model, the shards' vocabulary) is {asdict(args)}")
    mine, theirs = (tokenizer or {}).get("sha256"), (saved_tokenizer or {}).get("sha256")
    if mine and theirs and mine != theirs:
        raise SetupError(f"trainer.init_from={path}: trained with the tokenizer "
                         f"{saved_tokenizer.get('path')} (sha256 {theirs[:16]}), the shards were "
                         f"written with {tokenizer.get('path')} (sha256 {mine[:16]}): the same ids "
                         "would mean other text")
    model.load_state_dict(weights)
    return (f"init: weights of {path} (new optimizer, schedule and data stream)"
            + ("" if theirs else "; it records no tokenizer to check against the shards'"))


def train(cfg: Config, resume: bool = True, peak_flops: float | str | None = None,
          compile_backend: str = "inductor") -> dict:
    """Train `cfg.trainer.model` on the "train" shards of `cfg.shards.out`.

    Per update, on each of R ranks (R = 1 without torchrun): `grad_accum`
    micro-batches of `batch_size` x `seq_len` tokens; the summed token losses are
    divided by the target tokens of the global batch, so the gradient equals that
    of one batch of R x grad_accum x batch_size sequences (`forward_backward`).
    AdamW (beta1, beta2, weight decay on dim >= 2 tensors), `cosine_lr`, global-norm
    clipping at `grad_clip` (0: off). `trainer.compile` and
    `trainer.activation_checkpointing` wrap the blocks (`trainer.parallelize`).

    Under torchrun (WORLD_SIZE > 1): one process per device, FSDP2 over all ranks
    (bf16 parameters in compute on CUDA, float32 master weights and reduction),
    each rank reading its disjoint part of the stream; every rank builds the full
    model from the seed before sharding, so the weights equal the single-process
    run's. Only rank 0 logs, draws the progress bar and plots.

    Writes under `cfg.trainer.out`: `log.jsonl` (train and val records, see the
    module docstring), checkpoints every `ckpt_every` steps and at the end (last
    `keep_checkpoints` kept): `checkpoints/step-NNNNNN.pt` on one process,
    `checkpoints/step-NNNNNN/` (torch.distributed.checkpoint) under torchrun; and
    `loss.png`. Validation: every `val_every` steps (0: only at the end) and at
    the last step, `val_batches` batches of `batch_size` windows per source of the
    manifest's "val" shards (`source_windows`, `evaluate`); skipped when there are
    none. A run with no checkpoint yet starts from `trainer.init_from`'s weights
    when set (`init_weights`; then validation also runs at step 0), else from the
    seed. `trainer.tensorboard`: the log's records as TensorBoard scalars too.

    Args:
        cfg: the job config (`trainer`, `shards.out`, `seed` and `name` are used).
        resume: continue from the newest checkpoint if there is one; False starts
            afresh, deleting this run's checkpoints and log.
        peak_flops: device peak FLOP/s for MFU, or "measure"; default
            `cfg.trainer.peak_flops`, else the GPU's entry in `trainer.devices.PEAK_BF16`;
            none (CPU, an unlisted GPU): no MFU in the log.
        compile_backend: `torch.compile` backend when `cfg.trainer.compile`.
    Returns:
        {first_loss, last_loss, steps, start_step, tokens, checkpoint, log, plot,
        val_loss, val}: losses of the first and last logged steps, the step reached
        and the one this call started from (its checkpoint's; 0), tokens trained on
        (all ranks), paths (plot None on ranks > 0), the last validation losses
        {source: nats/token} (None if none) and every val record of the run.
    Raises:
        ShardError: missing or corrupt shards or manifest.
        DeviceError: `trainer.device` is not usable here (`trainer.devices.resolve_device`).
        SetupError: `trainer.init_from` or `trainer.tensorboard` cannot be used.
        ValueError: a checkpoint of another model shape (one of any world size resumes).
        FloatingPointError: the loss became NaN or infinite.
    """
    t = cfg.trainer
    device = resolve_device(t.device)
    tensorboard_dir(t.out, t.tensorboard)  # a missing package: said before any work
    owns_group = not (dist.is_available() and dist.is_initialized())
    world = init_distributed(device.type)
    try:
        return _train(cfg, device, world, resume, peak_flops, compile_backend)
    finally:
        if world.enabled and owns_group:
            dist.destroy_process_group()


def data_notes(manifest: dict, windows_per_epoch: int, seq_len: int, windows_to_train: int) -> list[str]:
    """What a run will do with its shards, for the user before it starts: how
    many passes over the training windows (a warning past one: the run repeats
    data the mixture did not plan to repeat), and the sources of the mixture
    that have no training tokens at all."""
    passes = windows_to_train / windows_per_epoch
    notes = [f"data: {windows_to_train:,} windows of {seq_len} tokens to train on, "
             f"{windows_per_epoch:,} in the shards: {passes:.2f} passes"]
    if passes > 1:
        notes.append(f"warning: trainer.steps exceed one pass over the shards ({passes:.2f} passes): "
                     "every window is seen again; raise shards.total_tokens or lower trainer.steps")
    empty = sorted(s for s, info in manifest.get("sources", {}).items()
                   if info.get("target_share", 0) > 0 and info.get("tokens_written", 0) == 0)
    if empty:
        notes.append(f"warning: no training tokens from {', '.join(empty)} "
                     "(in the mixture, but nothing of it was written to the shards)")
    return notes


def _eval_sets(cfg: Config, manifest: dict, world: Dist) -> tuple[list, list]:
    """`trainer.eval`'s document sets and tasks, encoded once with the shards' tokenizer
    (`trainer.evaluate.load_eval_sets`); lines skipped in them are said on rank 0.

    Raises:
        SetupError: the manifest names no tokenizer, or it or a set cannot be read.
    """

    ev = cfg.trainer.eval
    path = (manifest.get("tokenizer") or {}).get("path")
    if path is None:
        raise SetupError("trainer.eval: the shard manifest names no tokenizer to encode the "
                         "eval sets with")
    try:
        docs, tasks = load_eval_sets(ev.docs, ev.tasks, path, ev.max_docs)
    except (OSError, ValueError) as e:
        raise SetupError(f"trainer.eval: {e}") from None
    for s in [*docs, *tasks]:
        if s.skipped and world.is_main:
            print(f"note: trainer.eval {s.name}: skipped lines of {s.path}: {s.skipped}",
                  file=sys.stderr)
    return docs, tasks


def _train(cfg: Config, device: torch.device, world: Dist, resume: bool,
           peak_flops: float | str | None, compile_backend: str) -> dict:
    """`train` on this process, once the process group (if any) is up."""
    t = cfg.trainer
    if world.enabled and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    remote = is_remote(t.out)
    local = staging_dir(t.out) if remote else Path(t.out)  # where this machine writes
    ckpt_dir, log_path = local / "checkpoints", local / "log.jsonl"
    # where they are kept: those very paths when local, else uploaded there
    out_ckpt_dir, out_log = join(t.out, "checkpoints"), join(t.out, "log.jsonl")
    if remote:
        if world.local_rank == 0:  # the store holds the run: nothing stale is kept here
            shutil.rmtree(local, ignore_errors=True)
        if world.enabled:
            dist.barrier()
    if t.num_threads > 0:
        torch.set_num_threads(t.num_threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    stream = TokenStream(cfg.shards.out, "train", t.seq_len, seed=cfg.seed,
                         shuffle_block=t.shuffle_block, rank=world.rank,
                         world_size=world.world_size)
    loader = TokenLoader(stream, t.batch_size, pin_memory=device.type == "cuda")
    val_windows = source_windows(cfg.shards.out, t.seq_len,
                                 t.val_batches * t.batch_size * world.world_size)
    eval_sets = _eval_sets(cfg, stream.manifest, world) if t.eval.docs or t.eval.tasks else None
    args = ModelArgs.from_name(t.model, vocab_size=stream.vocab_size, max_seq_len=t.seq_len)
    with torch.device(device):
        model = Transformer(args)
    flops_per_token = model.flops_per_token(t.seq_len)
    n_params = model.num_params()
    # weights to start from: loaded whole, before sharding, when this run has no checkpoint
    init_from = None if resume and latest_checkpoint(out_ckpt_dir) is not None else t.init_from
    if init_from is not None:
        note = init_weights(model, init_from, args, stream.manifest.get("tokenizer"))
        if world.is_main:
            print(note, file=sys.stderr)
    elif t.init_from is not None and world.is_main:
        print(f"note: resuming this run's checkpoints in {out_ckpt_dir}; trainer.init_from "
              "only starts a run", file=sys.stderr)
    parallelize(model, ac=t.activation_checkpointing, compile=t.compile,
                compile_backend=compile_backend, fsdp=world.enabled,
                param_dtype=torch.bfloat16 if device.type == "cuda" else None)
    optimizer = build_optimizer(model, t.lr, t.weight_decay, (t.beta1, t.beta2),
                                fused=not world.enabled)

    step, checkpoint = 0, None  # the newest checkpoint under trainer.out
    if not resume:
        if world.is_main:
            for old in list_checkpoints(out_ckpt_dir):
                remove_checkpoint(old)
        if world.enabled:
            dist.barrier()
    elif (checkpoint := latest_checkpoint(out_ckpt_dir)) is not None:
        batch = {"batch_size": t.batch_size, "grad_accum": t.grad_accum,
                 "world_size": world.world_size}
        state = _load(_fetch(checkpoint, ckpt_dir, world) if remote else checkpoint,
                      model, optimizer, world, args, batch)
        saved_digest = state.get("config_digest")
        if world.is_main and saved_digest not in (None, cfg.digest()):
            print(f"warning: {checkpoint} was written with another config (digest {saved_digest}, "
                  f"now {cfg.digest()}): a changed trainer.steps, lr or warmup re-plans the "
                  "schedule from here", file=sys.stderr)
        loader.load_state_dict(state["data"])
        _set_rng_state(state["rng"])
        step = state["step"]
    if remote and resume and world.is_main:
        with contextlib.suppress(FileNotFoundError):  # no log yet
            download(out_log, log_path)
    records = _read_log(log_path, upto=step) if world.is_main else []
    if world.is_main:
        local.mkdir(parents=True, exist_ok=True)
        log_path.write_text("".join(json.dumps(r) + "\n" for r in records))
        if remote and records:
            upload(log_path, out_log)
        elif remote:  # Beam's S3 writer cannot write an empty object: none stands for it
            delete(out_log)

    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    peak_flops, peak_note = mfu_peak(device, t.peak_flops if peak_flops is None else peak_flops)
    tokens_per_step = t.batch_size * t.seq_len * t.grad_accum * world.world_size
    if world.is_main:
        for note in data_notes(stream.manifest, stream.windows_per_epoch, t.seq_len,
                               t.steps * tokens_per_step // t.seq_len):
            print(note, file=sys.stderr)
        print(peak_note, file=sys.stderr)
    # tokens trained on so far, from the stream's global position: right after a resume
    # under another global batch too (then step * tokens_per_step would not be)
    position = loader.state_dict()
    tokens_start = (position["epoch"] * position["windows_per_epoch"] + position["window"]) * t.seq_len
    step_start = step
    title = f"run {cfg.name}, model {t.model} ({n_params / 1e6:,.1f}M parameters)"
    published = None  # the step whose log and plot were last uploaded (remote out)
    batches = iter(loader)
    model.train()
    bar = tqdm(total=t.steps, initial=step, desc=f"train {t.model}", unit="step",
               mininterval=1.0, disable=not world.is_main)
    clock, tokens_since = time.perf_counter(), 0
    # Ctrl-C (single process): finish the step, checkpoint it, stop; a resume continues exactly
    interrupt = {"requested": False}
    with contextlib.ExitStack() as stack:
        if not world.enabled and threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, lambda *_: interrupt.update(requested=True))
            stack.callback(signal.signal, signal.SIGINT, previous)
        log = stack.enter_context(log_path.open("a")) if world.is_main else None
        board = None
        if world.is_main and (board_dir := tensorboard_dir(t.out, t.tensorboard)) is not None:
            from torch.utils.tensorboard import SummaryWriter

            # events past the checkpoint came from a run that died: hidden, as the log trims them
            board = stack.enter_context(SummaryWriter(board_dir, purge_step=step + 1 if step else 0))

        def write(record: dict) -> None:
            records.append(record)
            if log is not None:
                log.write(json.dumps(record) + "\n")
                log.flush()
            if board is not None:
                for tag, value in tensorboard_scalars(record):
                    board.add_scalar(tag, value, record["step"])
                board.flush()

        if init_from is not None and val_windows:  # the starting point, to compare with its source
            losses = val_loss(model, val_windows, t.batch_size, autocast, world)
            write({"step": 0, "val_loss": {s: v[0] for s, v in losses.items()},
                   "val_tokens": {s: v[1] for s, v in losses.items()}})
            clock = time.perf_counter()

        while step < t.steps:
            lr = cosine_lr(step + 1, lr=t.lr, warmup_steps=t.warmup_steps, steps=t.steps,
                           min_lr_ratio=t.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            micro = [next(batches) for _ in range(t.grad_accum)]
            loss, grad_norm = train_step(model, optimizer, micro, t.grad_clip, autocast, world)
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
                write({"step": step, "loss": loss_value, "lr": lr,
                       "grad_norm": grad_norm.item(),
                       "tokens": tokens_start + (step - step_start) * tokens_per_step,
                       "tokens_per_s": tokens_per_s,
                       **({"mfu": flops_per_token * tokens_per_s / (peak_flops * world.world_size)}
                          if peak_flops else {})})
                clock, tokens_since = time.perf_counter(), 0

            if val_windows and ((t.val_every > 0 and step % t.val_every == 0) or step == t.steps):
                losses = val_loss(model, val_windows, t.batch_size, autocast, world)
                write({"step": step, "val_loss": {s: v[0] for s, v in losses.items()},
                       "val_tokens": {s: v[1] for s, v in losses.items()}})
                clock = time.perf_counter()  # validation time is not training throughput

            if eval_sets and ((t.eval.every > 0 and step % t.eval.every == 0) or step == t.steps):

                write({"step": step, **eval_record(model, *eval_sets, t.seq_len, t.batch_size,
                                                   autocast)})
                clock = time.perf_counter()

            if step % t.ckpt_every == 0 or step == t.steps or interrupt["requested"]:
                extra = {"step": step, "data": loader.state_dict(), "rng": _rng_state(device),
                         "model_args": asdict(args), "config_digest": cfg.digest(),
                         "tokenizer": stream.manifest.get("tokenizer"),
                         "batch": {"batch_size": t.batch_size, "grad_accum": t.grad_accum,
                                   "world_size": world.world_size}}
                if remote and world.is_main:  # the log first: records past a checkpoint are trimmed
                    _publish(local, t.out, records, title)
                    published = step
                checkpoint = _save(checkpoint_path(ckpt_dir, step, sharded=world.enabled),
                                   model, optimizer, extra, world, t.keep_checkpoints,
                                   out_ckpt_dir if remote else None)
            if interrupt["requested"]:
                break
    bar.close()

    train_records = [r for r in records if "loss" in r]
    val_records = [r for r in records if "val_loss" in r]
    plot = None
    if world.is_main and remote:
        if published != step:
            _publish(local, t.out, records, title)
        plot = join(t.out, "loss.png")
    elif world.is_main:
        plot = plot_loss(records, local / "loss.png", title=title)
    return {"first_loss": train_records[0]["loss"] if train_records else None,
            "last_loss": train_records[-1]["loss"] if train_records else None,
            "steps": step, "start_step": step_start,
            "tokens": tokens_start + (step - step_start) * tokens_per_step,
            "checkpoint": str(checkpoint) if checkpoint else None,
            "log": str(out_log), "plot": str(plot) if plot else None,
            "val_loss": val_records[-1]["val_loss"] if val_records else None,
            "val": val_records, "interrupted": interrupt["requested"]}
