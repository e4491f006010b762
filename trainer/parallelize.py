"""Wrap the plain model from outside: activation checkpointing, `torch.compile`,
FSDP2, and the process group under `torchrun` (torchtitan's `parallelize.py`).

The order is the one torchtitan uses: `apply_ac`, then `apply_compile`, then
`apply_fsdp`. None of them changes the model's `state_dict()` keys: compilation is
done in place (`nn.Module.compile`, no `_orig_mod.` prefix), the activation
checkpoint wrapper strips its `_checkpoint_wrapped_module.` prefix in its own
state-dict hooks, and FSDP2 keeps the names (its parameters become DTensors). So a
checkpoint of a wrapped model loads strictly into a plain `Transformer`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from trainer.model import Transformer


@dataclass(frozen=True)
class Dist:
    """This process among the data-parallel ranks (one process per device).

    `world_size == 1` is the single-process run: no process group, no collectives.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, draws the progress bar and plots."""
        return self.rank == 0


def init_distributed(device_type: str) -> Dist:
    """Join the process group when launched by `torchrun` with WORLD_SIZE > 1.

    Reads the launcher's RANK, WORLD_SIZE and LOCAL_RANK. The backend is NCCL for
    `device_type == "cuda"` (and the device becomes cuda:LOCAL_RANK), gloo otherwise.
    An already initialised group is reused. Without WORLD_SIZE, or with 1, returns
    the single-process `Dist()` and starts nothing.

    Raises:
        KeyError: WORLD_SIZE > 1 but RANK is not set (not launched by torchrun).
        ValueError: the existing process group disagrees with the environment.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    if (dist.get_rank(), dist.get_world_size()) != (rank, world_size):
        raise ValueError(f"process group is rank {dist.get_rank()} of {dist.get_world_size()}, "
                         f"the environment says {rank} of {world_size}")
    return Dist(rank, world_size, local_rank)


def apply_ac(model: Transformer) -> None:
    """Full activation checkpointing per transformer block, in place.

    Each block's activations are dropped after its forward and recomputed in the
    backward (Chen et al. 2016; torchtitan's "full" AC): memory per block falls from
    all intermediate activations to its input, at the cost of one more forward of
    the block. Non-reentrant `torch.utils.checkpoint`, without saving RNG states
    (the model draws no random numbers). Gradients are bitwise those of the plain
    model on CPU. `state_dict()` keys stay plain.
    """
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointImpl, checkpoint_wrapper)

    for i, block in enumerate(model.layers):
        model.layers[i] = checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT,
                                             preserve_rng_state=False)


def apply_compile(model: Transformer, backend: str = "inductor") -> None:
    """`torch.compile` each transformer block in place (`nn.Module.compile`).

    Per block, as torchtitan: all blocks share one graph (compiled once, reused
    for every layer), and FSDP2's per-block collectives stay outside the graphs.
    `fullgraph=True`, so a graph break is an error, not a silent slowdown.
    Compilation happens lazily at the first forward. `backend="inductor"` is the
    default; "aot_eager" traces forward and backward without generating code
    (for fast tests on CPU, where inductor's C++ build takes a minute).
    """
    for block in model.layers:
        block.compile(backend=backend, fullgraph=True)


def apply_fsdp(model: Transformer, param_dtype: torch.dtype | None = None,
               reduce_dtype: torch.dtype = torch.float32) -> None:
    """Shard the parameters, gradients and optimizer state over all ranks with FSDP2
    (`torch.distributed.fsdp.fully_shard`), one unit per block plus the root.

    Each block's parameters are all-gathered just before its forward (and again
    before its backward) and freed after; gradients are reduce-scattered, averaged
    over the ranks. With `param_dtype=torch.bfloat16` (GPU) the gathered parameters
    and the compute are bf16 while the sharded master weights, the optimizer and
    the gradient reduction stay in `reduce_dtype`. Needs an initialised process group.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    for block in model.layers:
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)


def parallelize(model: Transformer, *, ac: bool = False, compile: bool = False,
                compile_backend: str = "inductor", fsdp: bool = False,
                param_dtype: torch.dtype | None = None) -> Transformer:
    """Apply, in torchtitan's order, activation checkpointing, compilation and FSDP2
    to `model` (in place); returns it."""
    if ac:
        apply_ac(model)
    if compile:
        apply_compile(model, compile_backend)
    if fsdp:
        apply_fsdp(model, param_dtype=param_dtype)
    return model
