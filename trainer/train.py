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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self

import torch
import torch.distributed as dist
from tqdm import tqdm

from pipeline.core.contracts import CHECKPOINTS
from trainer.checkpoint import CheckpointManager, RNGState, latest_checkpoint
from trainer.data import TokenLoader, TokenStream, source_windows
from trainer.devices import mfu_peak, resolve_device
from trainer.evaluate import eval_record, load_eval_sets, val_loss
from trainer.model import ModelArgs, Transformer
from trainer.parallelize import Dist, init_distributed, parallelize
from trainer.plot import plot_loss
from trainer.storage import delete, download, is_remote, join, staging_dir, upload

if TYPE_CHECKING:  # annotations only: the config is built by the caller
    from pipeline.core.config import Config

LOG = "log.jsonl"  # under trainer.out


class SetupError(ValueError):
    """A setting of the run that cannot work here (`trainer.init_from`,
    `trainer.tensorboard`): the command line prints the message alone."""


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


def _train(cfg: Config, device: torch.device, world: Dist, resume: bool,
           peak_flops: float | str | None, compile_backend: str) -> dict:
    """`train` on this process, once the process group (if any) is up: build the run,
    resume it, loop over the steps, sum it up."""
    run = _build(cfg, device, world, resume, compile_backend)
    checkpoint = _resume(run, resume)
    records = _restore_log(run.paths, world, run.schedule.step, resume)
    progress = _Progress.at(run, checkpoint, _plan(run, peak_flops))
    with _interrupt_requests(world) as interrupt, _Log(run, records) as log:
        _loop(run, log, progress, interrupt)
    return _summary(run, records, progress)


# --- build -------------------------------------------------------------------------


@dataclass
class RunPaths:
    """Where a run writes (`local`: this machine's folder) and where it keeps its
    files (`trainer.out`: those very paths when local, else uploaded there)."""

    out: str
    local: Path

    @property
    def remote(self) -> bool:
        return is_remote(self.out)

    @property
    def ckpt_dir(self) -> Path:
        return self.local / CHECKPOINTS

    @property
    def log_path(self) -> Path:
        return self.local / LOG

    @property
    def out_ckpt_dir(self) -> Path | str:
        return join(self.out, CHECKPOINTS)

    @property
    def out_log(self) -> Path | str:
        return join(self.out, LOG)


def run_paths(out: str, world: Dist) -> RunPaths:
    """The paths of a run writing to `out`; on an object store its local staging
    folder starts empty (the store holds the run: nothing stale is kept here)."""
    if not is_remote(out):
        return RunPaths(out, Path(out))
    paths = RunPaths(out, staging_dir(out))
    if world.local_rank == 0:
        shutil.rmtree(paths.local, ignore_errors=True)
    if world.enabled:
        dist.barrier()
    return paths


@dataclass
class Run:
    """A run's parts, as `_build` makes them."""

    cfg: Config
    device: torch.device
    world: Dist
    paths: RunPaths
    stream: TokenStream
    loader: TokenLoader
    val_windows: dict
    eval_sets: tuple[list, list] | None
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: CosineSchedule
    checkpoints: CheckpointManager
    init_from: str | None  # the weights this run started from (None: seed or checkpoint)
    autocast: contextlib.AbstractContextManager
    flops_per_token: float
    title: str

    @property
    def tokens_per_step(self) -> int:
        t = self.cfg.trainer
        return t.batch_size * t.seq_len * t.grad_accum * self.world.world_size


def _build(cfg: Config, device: torch.device, world: Dist, resume: bool,
           compile_backend: str) -> Run:
    """Seed, data stream, validation and eval sets, model (wrapped, `_build_model`),
    optimizer, LR schedule and the checkpoint manager over them."""
    t = cfg.trainer
    if world.enabled and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    paths = run_paths(t.out, world)
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
    model, init_from = _build_model(cfg, args, device, world, resume, compile_backend,
                                    stream.manifest.get("tokenizer"))
    optimizer = build_optimizer(model, t.lr, t.weight_decay, (t.beta1, t.beta2),
                                fused=not world.enabled)
    schedule = CosineSchedule(optimizer, lr=t.lr, warmup_steps=t.warmup_steps, steps=t.steps,
                              min_lr_ratio=t.min_lr_ratio)
    meta = {"model_args": asdict(args), "config_digest": cfg.digest(),
            "tokenizer": stream.manifest.get("tokenizer"),
            "batch": {"batch_size": t.batch_size, "grad_accum": t.grad_accum,
                      "world_size": world.world_size}}
    checkpoints = CheckpointManager(
        paths.ckpt_dir, model=model, optimizer=optimizer, schedule=schedule,
        rng=RNGState(device), loader=loader, meta=meta, world=world, keep=t.keep_checkpoints,
        remote_dir=paths.out_ckpt_dir if paths.remote else None)
    autocast = autocast_for(device)
    title = f"run {cfg.name}, model {t.model} ({model.num_params() / 1e6:,.1f}M parameters)"
    return Run(cfg, device, world, paths, stream, loader, val_windows, eval_sets, model,
               optimizer, schedule, checkpoints, init_from, autocast,
               model.flops_per_token(t.seq_len), title)


def build_model(args: ModelArgs, device: torch.device, *, ac: bool = False,
                compile: bool = False, compile_backend: str = "inductor", fsdp: bool = False,
                init: Callable[[Transformer], None] | None = None) -> Transformer:
    """The model on `device` from the current seed (then `init(model)`: weights to start
    from, loaded whole), wrapped from outside (`trainer.parallelize`): activation
    checkpointing, per-block `torch.compile`, FSDP2 (bf16 parameters in compute on CUDA)."""
    with torch.device(device):
        model = Transformer(args)
    if init is not None:
        init(model)
    return parallelize(model, ac=ac, compile=compile, compile_backend=compile_backend, fsdp=fsdp,
                       param_dtype=torch.bfloat16 if device.type == "cuda" else None)


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """The forwards' compute dtype: bf16 autocast on CUDA (float32 weights), else float32."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _build_model(cfg: Config, args: ModelArgs, device: torch.device, world: Dist, resume: bool,
                 compile_backend: str, tokenizer: dict | None) -> tuple[Transformer, str | None]:
    """`build_model` from the seed, or from `trainer.init_from`'s weights when this run
    has no checkpoint yet. Returns (model, the init_from it started from or None)."""
    t = cfg.trainer
    out_ckpt_dir = join(t.out, CHECKPOINTS)
    init_from = None if resume and latest_checkpoint(out_ckpt_dir) is not None else t.init_from

    def init(model: Transformer) -> None:
        note = init_weights(model, init_from, args, tokenizer)
        if world.is_main:
            print(note, file=sys.stderr)

    if init_from is None and t.init_from is not None and world.is_main:
        print(f"note: resuming this run's checkpoints in {out_ckpt_dir}; trainer.init_from "
              "only starts a run", file=sys.stderr)
    model = build_model(args, device, ac=t.activation_checkpointing, compile=t.compile,
                        compile_backend=compile_backend, fsdp=world.enabled,
                        init=init if init_from is not None else None)
    return model, init_from


def cosine_lr(step: int, *, lr: float, warmup_steps: int, steps: int, min_lr_ratio: float) -> float:
    """Learning rate for update `step` (1-based): linear warmup to `lr` over
    `warmup_steps`, then cosine decay reaching `min_lr_ratio * lr` at `steps`
    (LLaMA Section 2.3: final rate 10% of the peak, 2000 warmup steps)."""
    if step <= warmup_steps:
        return lr * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    min_lr = lr * min_lr_ratio
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


class CosineSchedule:
    """`cosine_lr` as the optimizer's LR schedule, and a stateful part of the run:
    its state is the number of updates done, {"step"} (a checkpoint's "step")."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, lr: float, warmup_steps: int,
                 steps: int, min_lr_ratio: float):
        self.optimizer, self.step = optimizer, 0
        self.settings = {"lr": lr, "warmup_steps": warmup_steps, "steps": steps,
                         "min_lr_ratio": min_lr_ratio}

    def advance(self) -> float:
        """Count one more update and set its learning rate in every parameter group;
        returns that rate."""
        self.step += 1
        lr = cosine_lr(self.step, **self.settings)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]


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


def data_notes(manifest: dict, windows_per_epoch: int, seq_len: int, windows_to_train: int) -> list[str]:
    """What a run will do with its shards, for the user before it starts: how
    many passes over the training windows (a warning past one: the run repeats
    data the mixture did not plan to repeat), and the sources of the mixture
    that have no training tokens at all."""
    passes = windows_to_train / windows_per_epoch
    notes = [(f"data: {windows_to_train:,} windows of {seq_len} tokens to train on, "
              f"{windows_per_epoch:,} in the shards: {passes:.2f} passes")]
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


# --- resume ------------------------------------------------------------------------


def _resume(run: Run, resume: bool) -> Path | str | None:
    """Restore every part from the newest checkpoint under trainer.out, and return it
    (None: none, the run starts at step 0); without `resume`, delete this run's
    checkpoints instead."""
    if not resume:
        run.checkpoints.clear()
        return None
    checkpoint = run.checkpoints.latest()
    if checkpoint is None:
        return None
    state = run.checkpoints.load(checkpoint)
    saved_digest = state.get("config_digest")
    if run.world.is_main and saved_digest not in (None, run.cfg.digest()):
        print(f"warning: {checkpoint} was written with another config (digest {saved_digest}, "
              f"now {run.cfg.digest()}): a changed trainer.steps, lr or warmup re-plans the "
              "schedule from here", file=sys.stderr)
    return checkpoint


def _restore_log(paths: RunPaths, world: Dist, step: int, resume: bool) -> list[dict]:
    """The log's records up to `step`, rewritten without the later ones (rank 0; a
    remote run's log is fetched first and uploaded again)."""
    if paths.remote and resume and world.is_main:
        with contextlib.suppress(FileNotFoundError):  # no log yet
            download(paths.out_log, paths.log_path)
    records = _read_log(paths.log_path, upto=step) if world.is_main else []
    if world.is_main:
        paths.local.mkdir(parents=True, exist_ok=True)
        paths.log_path.write_text("".join(json.dumps(r) + "\n" for r in records))
        if paths.remote and records:
            upload(paths.log_path, paths.out_log)
        elif paths.remote:  # Beam's S3 writer cannot write an empty object: none stands for it
            delete(paths.out_log)
    return records


def _read_log(path: Path, upto: int) -> list[dict]:
    """The log's records (both kinds) up to step `upto` (later ones came from a run
    that died before its next checkpoint and will be redone)."""
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["step"] <= upto]


# --- step --------------------------------------------------------------------------


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


# --- loop --------------------------------------------------------------------------


def _plan(run: Run, peak_flops: float | str | None) -> float | None:
    """Say what the run will do with its shards and what MFU is measured against
    (rank 0); returns the peak FLOP/s per device (None: no MFU)."""
    t = run.cfg.trainer
    peak, peak_note = mfu_peak(run.device, t.peak_flops if peak_flops is None else peak_flops)
    if run.world.is_main:
        for note in data_notes(run.stream.manifest, run.stream.windows_per_epoch, t.seq_len,
                               t.steps * run.tokens_per_step // t.seq_len):
            print(note, file=sys.stderr)
        print(peak_note, file=sys.stderr)
    return peak


@dataclass
class _Progress:
    """What the loop keeps between steps."""

    step_start: int
    tokens_start: int  # trained on before this run (all ranks)
    checkpoint: Path | str | None  # the newest one
    peak_flops: float | None
    published: int | None = None  # the step whose log and plot were last uploaded (remote out)
    interrupted: bool = False
    clock: float = 0.0  # throughput: since when
    tokens_since: int = 0  # and how many tokens since then

    @classmethod
    def at(cls, run: Run, checkpoint: Path | str | None, peak_flops: float | None) -> _Progress:
        # from the stream's global position: right after a resume under another global
        # batch too (then step * tokens_per_step would not be)
        position = run.loader.state_dict()
        windows = position["epoch"] * position["windows_per_epoch"] + position["window"]
        return cls(run.schedule.step, windows * run.cfg.trainer.seq_len, checkpoint, peak_flops)

    def tokens(self, run: Run) -> int:
        return self.tokens_start + (run.schedule.step - self.step_start) * run.tokens_per_step

    def restart_clock(self) -> None:
        self.clock, self.tokens_since = time.perf_counter(), 0


def _due(step: int, every: int, last: int) -> bool:
    """Whether something done every `every` steps (0: only at the end) is due at `step`."""
    return (every > 0 and step % every == 0) or step == last


def _loop(run: Run, log: _Log, progress: _Progress, interrupt: dict) -> None:
    """The training steps up to trainer.steps, each logged, validated, evaluated and
    checkpointed when due; after a Ctrl-C, the step is finished and checkpointed."""
    t = run.cfg.trainer
    batches = iter(run.loader)
    run.model.train()
    bar = tqdm(total=t.steps, initial=run.schedule.step, desc=f"train {t.model}", unit="step",
               mininterval=1.0, disable=not run.world.is_main)
    progress.restart_clock()
    if run.init_from is not None and run.val_windows:  # the starting point, to compare with its source
        log.write(_val_record(run, 0))
        progress.clock = time.perf_counter()
    while run.schedule.step < t.steps:
        lr = run.schedule.advance()
        micro = [next(batches) for _ in range(t.grad_accum)]
        loss, grad_norm = train_step(run.model, run.optimizer, micro, t.grad_clip, run.autocast,
                                     run.world)
        step = run.schedule.step
        progress.tokens_since += run.tokens_per_step
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"step {step}: loss is {loss_value}")
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", refresh=False)
        _record_step(run, log, progress, {"loss": loss_value, "lr": lr,
                                          "grad_norm": grad_norm.item()})
        if _due(step, t.ckpt_every, t.steps) or interrupt["requested"]:
            if run.paths.remote and run.world.is_main:  # the log first: records past a checkpoint are trimmed
                _publish(run.paths.local, t.out, log.records, run.title)
                progress.published = step
            progress.checkpoint = run.checkpoints.save(step)
        if interrupt["requested"]:
            break
    bar.close()
    progress.interrupted = interrupt["requested"]


def _record_step(run: Run, log: _Log, progress: _Progress, train: dict) -> None:
    """Log the step's `train` figures ({"loss", "lr", "grad_norm"}) with its throughput
    and MFU, and its validation and eval losses, when each is due."""
    t, step = run.cfg.trainer, run.schedule.step
    if step == 1 or step % t.log_every == 0 or step == t.steps:
        tokens_per_s = progress.tokens_since / (time.perf_counter() - progress.clock)
        peak = progress.peak_flops
        log.write({"step": step, **train, "tokens": progress.tokens(run),
                   "tokens_per_s": tokens_per_s,
                   **({"mfu": run.flops_per_token * tokens_per_s / (peak * run.world.world_size)}
                      if peak else {})})
        progress.restart_clock()
    if run.val_windows and _due(step, t.val_every, t.steps):
        log.write(_val_record(run, step))
        progress.clock = time.perf_counter()  # validation time is not training throughput
    if run.eval_sets and _due(step, t.eval.every, t.steps):
        log.write({"step": step, **eval_record(run.model, *run.eval_sets, t.seq_len, t.batch_size,
                                               run.autocast)})
        progress.clock = time.perf_counter()


def _val_record(run: Run, step: int) -> dict:
    losses = val_loss(run.model, run.val_windows, run.cfg.trainer.batch_size, run.autocast,
                      run.world)
    return {"step": step, "val_loss": {s: v[0] for s, v in losses.items()},
            "val_tokens": {s: v[1] for s, v in losses.items()}}


@contextlib.contextmanager
def _interrupt_requests(world: Dist) -> Iterator[dict]:
    """{"requested"}, set by Ctrl-C while inside (single process, main thread): the loop
    finishes the step, checkpoints it and stops; a resume continues exactly."""
    interrupt = {"requested": False}
    if world.enabled or threading.current_thread() is not threading.main_thread():
        yield interrupt
        return
    previous = signal.signal(signal.SIGINT, lambda *_: interrupt.update(requested=True))
    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, previous)


class _Log:
    """The run's records: kept (`records`), appended to log.jsonl and, with
    `trainer.tensorboard`, written as TensorBoard scalars (rank 0)."""

    def __init__(self, run: Run, records: list[dict]):
        self.run, self.records = run, records
        self.file, self.board = None, None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Self:
        run, step = self.run, self.run.schedule.step
        if run.world.is_main:
            self.file = self._stack.enter_context(run.paths.log_path.open("a"))
            board_dir = tensorboard_dir(run.cfg.trainer.out, run.cfg.trainer.tensorboard)
            if board_dir is not None:
                from torch.utils.tensorboard import SummaryWriter

                # events past the checkpoint came from a run that died: hidden, as the log trims them
                self.board = self._stack.enter_context(
                    SummaryWriter(board_dir, purge_step=step + 1 if step else 0))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.__exit__(*exc)

    def write(self, record: dict) -> None:
        self.records.append(record)
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        if self.board is not None:
            for tag, value in tensorboard_scalars(record):
                self.board.add_scalar(tag, value, record["step"])
            self.board.flush()


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


def _publish(staging: Path, out: str, records: list[dict], title: str) -> None:
    """Upload a run's log and a freshly drawn loss plot from `staging` to `out` (rank 0)."""
    plot_loss(records, staging / "loss.png", title=title)
    for name in ("log.jsonl", "loss.png"):
        upload(staging / name, join(out, name))


def _summary(run: Run, records: list[dict], progress: _Progress) -> dict:
    """`train`'s result; draws the loss plot (rank 0; uploads it with the log when
    trainer.out is remote and they are not up to date there)."""
    step, out = run.schedule.step, run.cfg.trainer.out
    train_records = [r for r in records if "loss" in r]
    val_records = [r for r in records if "val_loss" in r]
    plot = None
    if run.world.is_main and run.paths.remote:
        if progress.published != step:
            _publish(run.paths.local, out, records, run.title)
        plot = join(out, "loss.png")
    elif run.world.is_main:
        plot = plot_loss(records, run.paths.local / "loss.png", title=run.title)
    return {"first_loss": train_records[0]["loss"] if train_records else None,
            "last_loss": train_records[-1]["loss"] if train_records else None,
            "steps": step, "start_step": progress.step_start, "tokens": progress.tokens(run),
            "checkpoint": str(progress.checkpoint) if progress.checkpoint else None,
            "log": str(run.paths.out_log), "plot": str(plot) if plot else None,
            "val_loss": val_records[-1]["val_loss"] if val_records else None,
            "val": val_records, "interrupted": progress.interrupted}
