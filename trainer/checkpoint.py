"""Checkpoints: `<out>/checkpoints/step-000300.pt` (one process) or the folder
`<out>/checkpoints/step-000300/` (sharded, under `torchrun`), written atomically,
the last few kept. `CheckpointManager` saves and loads every stateful part of a
run (model, optimizer, LR schedule, RNG, data loader) through its
`state_dict`/`load_state_dict`; the folder's names and plain saved state are
`pipeline.core.contracts`' (readable without torch or the trainer).

A single-process checkpoint is a dict of tensors and plain containers (model,
optimizer, step, RNG and data-stream state), so loading uses
`torch.load(weights_only=True)` and never unpickles arbitrary objects.

A sharded checkpoint is written by `torch.distributed.checkpoint` (DCP): each
rank writes its shards of the model and optimizer tensors (`__R_0.distcp`), DCP's
coordinator writes `.metadata`, and each rank adds `rank-RRRRR.pt` with its own
plain state (step, data-stream position, RNG, optimizer hyper-parameters), loaded
with `weights_only=True`. Only tensors go through DCP (it unpickles non-tensor
values with `weights_only=False`), and `.metadata`, which DCP always pickles, is
first checked by `check_dcp_metadata` to hold nothing but DCP's own records.

Either kind resumes under any number of ranks (`CheckpointManager.load`): DCP reshards
on load (N ranks -> M ranks, or into full tensors on one process), a one-process
file is handed to `set_state_dict(full_state_dict=True)`, which cuts each rank's
shard from it, and its optimizer state, keyed by position, is renamed to the
parameter names first (`optimizer_state_by_name`). A rank with no `rank-RRRRR.pt`
of its own (the checkpoint was written by fewer ranks) takes rank 0's: every rank
holds the same step, data-stream position (global, `trainer.data`) and RNG state.

On an object store (`s3://`, `gs://`; `trainer.storage`) a run writes each
checkpoint in a local staging folder as above, then uploads it (`remote_dir` of
the save functions): a file as one object that appears only once complete; a
sharded folder file by file, each rank its own files (no disk shared between
machines needed), and rank 0 `.metadata` last, once it has checked that every
file the metadata names is there. A remote folder without `.metadata` is not a
checkpoint (`list_checkpoints`), so a killed upload is never resumed from. The
newest `keep` are kept there, the newest one locally; `fetch_checkpoint` brings
one back to resume from.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Protocol

import torch

from pipeline.core.contracts import (  # the checkpoint folder's contract, read without torch
    CheckpointError,
    checkpoint_name,
    is_sharded,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    rank_state_name,
    saved_state,  # noqa: F401 (re-exported)
)
from pipeline.core.io import atomic_write
from trainer.storage import download, is_file, is_remote, join, upload


def checkpoint_path(ckpt_dir: str | Path, step: int, sharded: bool = False) -> Path:
    """`<ckpt_dir>/step-000300.pt` for step 300 (zero-padded so names sort by step),
    or the folder `<ckpt_dir>/step-000300` when `sharded`."""
    return Path(ckpt_dir) / checkpoint_name(step, sharded)


def save_checkpoint(path: str | Path, state: dict[str, Any], keep: int = 0,
                    remote_dir: str | None = None) -> Path | str:
    """Write `state` with `torch.save` to a temporary file, then rename it to `path`.

    A killed run never leaves a file under a checkpoint name that is incomplete.
    Args:
        keep: if > 0, afterwards delete all but the newest `keep` checkpoints.
        remote_dir: a folder on an object store to upload the file to; `keep` then
            applies there, and only this newest checkpoint stays beside `path`.
    Returns: `path`, or the uploaded object.
    """
    path = Path(path)
    with atomic_write(path) as f:
        torch.save(state, f)
    if remote_dir is None:
        prune_checkpoints(path.parent, keep)
        return path
    dest = join(remote_dir, path.name)
    upload(path, dest)
    prune_checkpoints(path.parent, 1)
    prune_checkpoints(remote_dir, keep)
    return dest


def fetch_checkpoint(path: str, ckpt_dir: str | Path) -> Path:
    """Download the checkpoint `path` on an object store (a file, or a sharded
    folder's files) into the local folder `ckpt_dir`, under its own name; a folder is
    assembled under a temporary name, then renamed. Returns the local path.

    Raises:
        FileNotFoundError: no such (complete) checkpoint.
    """
    from pipeline.core import io as pio

    name = path.rstrip("/").rsplit("/", 1)[-1]
    local = Path(ckpt_dir) / name
    if not is_file(join(path, ".metadata") if is_sharded(path) else path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    if not is_sharded(path):
        return download(path, local)
    tmp = local.with_name(f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for src, _ in pio.list_tree(path):
        rel = pio.relative(src, path)
        if not rel.startswith(".") or rel == ".metadata":  # not a killed upload's temporary
            download(src, tmp / rel)
    if local.exists():
        remove_checkpoint(local)
    os.replace(tmp, local)
    return local


def remove_checkpoint(path: str | Path) -> None:
    """Delete a checkpoint file or sharded checkpoint folder."""
    if is_remote(path):
        from pipeline.core import io as pio

        if is_sharded(path):
            pio.delete(pio.join(str(path), ".metadata"))  # first: a part left is no checkpoint
            pio.delete_tree(path)
        else:
            pio.delete(path)
        return
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def prune_checkpoints(ckpt_dir: str | Path, keep: int) -> None:
    """If `keep` > 0, delete all but the newest `keep` checkpoints of `ckpt_dir`."""
    if keep > 0:
        for old in list_checkpoints(ckpt_dir)[:-keep]:
            remove_checkpoint(old)


def rank_state_path(path: str | Path, rank: int) -> Path:
    """`<path>/rank-00003.pt`: rank 3's plain state in the sharded checkpoint `path`."""
    return Path(path) / rank_state_name(rank)


def load_rank_state(path: str | Path, rank: int) -> dict:
    """Rank `rank`'s plain state of the sharded checkpoint `path` (`weights_only=True`),
    or rank 0's when it was written by fewer ranks.

    Raises:
        FileNotFoundError: no rank state at all (not a complete sharded checkpoint).
        pickle.UnpicklingError: a rank state holding arbitrary objects.
    """
    own = rank_state_path(path, rank)
    return load_checkpoint(own if own.exists() else rank_state_path(path, 0))


def save_sharded_checkpoint(path: str | Path, tensors: dict[str, Any], extra: dict[str, Any],
                            rank: int, keep: int = 0, remote_dir: str | None = None) -> Path | str:
    """Write a sharded checkpoint folder; a collective: every rank calls it.

    The ranks write into `.<name>.tmp/` next to `path`; after a barrier rank 0
    renames it to `path` (and prunes to the newest `keep`), so a killed job never
    leaves a complete-looking folder. Needs an initialised process group. With
    `remote_dir` (an object store folder), the folder is first uploaded there
    (`_upload_sharded`); `keep` then applies there, and only this newest checkpoint
    stays beside `path`.

    Args:
        path: the folder, e.g. `checkpoint_path(dir, step, sharded=True)`.
        tensors: nested dicts of (sharded) tensors only, e.g. {"model":
            get_model_state_dict(...), "optimizer": optimizer state by parameter
            name}; written by `torch.distributed.checkpoint.save`.
        extra: this rank's plain state (ints, floats, strings, lists, dicts,
            tensors), written with `torch.save` as `rank-RRRRR.pt`.
        rank: this process's rank.
    Returns: `path`, or the uploaded folder.
    """
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    path = Path(path)
    dest = join(remote_dir, path.name) if remote_dir is not None else None
    tmp = path.with_name(f".{path.name}.tmp")
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    dist.barrier()
    dcp.save(tensors, checkpoint_id=tmp)
    with open(rank_state_path(tmp, rank), "wb") as f:
        torch.save(extra, f)
        f.flush()
        os.fsync(f.fileno())
    if dest is not None and rank == 0:
        remove_checkpoint(dest)  # what a killed upload of this step left
    dist.barrier()
    if dest is not None:
        _upload_sharded(tmp, dest, rank)
    if rank == 0:
        if path.exists():
            remove_checkpoint(path)
        os.replace(tmp, path)
        prune_checkpoints(path.parent, keep if dest is None else 1)
        if dest is not None:
            prune_checkpoints(remote_dir, keep)
    dist.barrier()
    return path if dest is None else dest


def _upload_sharded(folder: Path, dest: str, rank: int) -> None:
    """Upload the sharded checkpoint written in `folder` (on each rank's machine) to
    `dest`; a collective. Each rank uploads the files it wrote: DCP's
    `__<rank>_<n>.distcp` and its `rank-RRRRR.pt`. Then rank 0 checks that every
    file `.metadata` names is there and uploads `.metadata`, which makes `dest` a
    checkpoint.

    Raises:
        CheckpointError: a file the metadata names was not uploaded (on rank 0).
    """
    import torch.distributed as dist

    own = rank_state_path(folder, rank).name
    for f in sorted(folder.iterdir()):
        if f.name.startswith(f"__{rank}_") or f.name == own:
            upload(f, join(dest, f.name))
    dist.barrier()
    if rank == 0:
        from pipeline.core import io as pio

        metadata = _MetadataUnpickler(io.BytesIO((folder / ".metadata").read_bytes())).load()
        needed = {s.relative_path for s in metadata.storage_data.values()}
        needed |= {rank_state_path(".", r).name for r in range(dist.get_world_size())}
        missing = needed - {pio.relative(p, dest) for p, _ in pio.list_tree(dest)}
        if missing:
            raise CheckpointError(f"{dest}: not uploaded: {', '.join(sorted(missing))}")
        upload(folder / ".metadata", join(dest, ".metadata"))


class _MetadataUnpickler(pickle.Unpickler):
    """Admits only the classes DCP's `.metadata` is made of (its dataclasses and
    enums, `torch.Size`, dtypes, layouts, paths)."""

    def find_class(self, module: str, name: str) -> Any:
        obj = None
        if module in ("torch.distributed.checkpoint.metadata",
                      "torch.distributed.checkpoint.filesystem"):
            obj = super().find_class(module, name)
            obj = obj if isinstance(obj, type) else None
        elif module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None),
                                                                 torch.dtype)):
            obj = getattr(torch, name)
        elif (module, name) == ("torch.serialization", "_get_layout") or (
                module == "pathlib" and name in ("Path", "PosixPath", "WindowsPath",
                                                 "PurePosixPath", "PureWindowsPath")):
            obj = super().find_class(module, name)
        if obj is None:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in DCP metadata")
        return obj


def check_dcp_metadata(path: str | Path) -> None:
    """Unpickle `<path>/.metadata` with an allow-list, before DCP unpickles it freely.

    Raises:
        FileNotFoundError: no `.metadata` (not a complete DCP checkpoint).
        pickle.UnpicklingError: it refers to anything but DCP's metadata classes.
    """
    data = (Path(path) / ".metadata").read_bytes()
    _MetadataUnpickler(io.BytesIO(data)).load()


def load_sharded_checkpoint(path: str | Path, tensors: dict[str, Any], rank: int,
                            no_dist: bool = False) -> dict:
    """Load a sharded checkpoint into `tensors` (in place) and return this rank's
    plain state (`load_rank_state`: its own `rank-RRRRR.pt`, else rank 0's).

    `tensors` gives the keys and the (sharded) layout to read into, as built by
    `torch.distributed.checkpoint.state_dict.get_state_dict`; DCP reads each
    rank's slices whatever the number of ranks that wrote them. With `no_dist`, or
    without a process group, this process alone reads full tensors (DCP's
    `no_dist`: exporting, or resuming a torchrun job on one process).

    Raises:
        FileNotFoundError: no such checkpoint, or no `.metadata` or rank state in it.
        pickle.UnpicklingError: metadata or rank state holding arbitrary objects.
        torch.distributed.checkpoint.api.CheckpointException (a BaseException):
            `tensors` has a key or shape the checkpoint lacks.
    """
    import torch.distributed.checkpoint as dcp

    path = Path(path)
    check_dcp_metadata(path)
    extra = load_rank_state(path, rank)
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process"
        warnings.filterwarnings("ignore", message=".*single process.*")
        dcp.load(tensors, checkpoint_id=path, no_dist=no_dist)
    return extra


def load_model_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The full (unsharded) model weights of any checkpoint, on CPU, with its saved
    `model_args` (a dict of `ModelArgs` fields).

    Reads a single-process `.pt` file, a sharded folder (in this process alone, also
    from within a process group), or a file
    written by `python -m trainer import`. Keys are the plain parameter names. A
    checkpoint on an object store is first downloaded to a temporary folder.

    Raises:
        FileNotFoundError: no such checkpoint.
        KeyError: a file without "model" and "model_args".
    """
    weights, state = load_model(path)
    return weights, state["model_args"]


def load_model(path: str | Path, mmap: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """As `load_model_weights`, with the checkpoint's plain saved state instead of its
    `model_args` alone: {"model_args", "step", "tokenizer" (the shard manifest's record
    of the tokenizer the model was trained with: path, sha256, vocab_size, bos_id,
    eos_id; absent in older checkpoints), ...}, without the optimizer state. `mmap`:
    a local checkpoint file's tensors are memory-mapped (the ranks of a machine that
    all load it share its pages).
    """
    if is_remote(path):
        with tempfile.TemporaryDirectory() as tmp:
            return load_model(fetch_checkpoint(str(path), tmp))
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    if not is_sharded(path):
        state = load_checkpoint(path, mmap=mmap)
        state.pop("optimizer", None)
        weights = state.pop("model")
        if "model_args" not in state:
            raise KeyError("model_args")
        return weights, state
    from trainer.model import ModelArgs, Transformer

    state = load_checkpoint(rank_state_path(path, 0))
    state.pop("param_groups", None)
    with torch.device("meta"):
        model = Transformer(ModelArgs(**state["model_args"]))
    weights = {k: torch.empty_like(v, device="cpu") for k, v in model.state_dict().items()}
    load_sharded_checkpoint(path, {"model": weights}, rank=0, no_dist=True)
    return weights, state


def load_init_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, dict | None]:
    """The weights `trainer.init_from` names: those of a checkpoint of any kind
    (`load_model`) or of a Hugging Face Llama folder (one with config.json;
    `trainer.hf.import_hf`, local). Returns (weights, `model_args` as a dict, the
    record of the tokenizer they were trained with or None when none is known).

    Raises:
        FileNotFoundError: neither a checkpoint nor an HF folder.
        KeyError, ValueError: as `load_model` and `trainer.hf.import_hf`.
    """
    if not is_remote(path) and (Path(path) / "config.json").is_file():
        from dataclasses import asdict

        from trainer.hf import import_hf, tokenizer_record

        weights, args = import_hf(path)
        return weights, asdict(args), tokenizer_record(path)
    weights, state = load_model(path, mmap=True)
    return weights, state["model_args"], state.get("tokenizer")


def optimizer_state_by_name(state_dict: dict, named_groups: list[dict]) -> dict:
    """An `optimizer.state_dict()` (state keyed by position) keyed by parameter name,
    the form `torch.distributed.checkpoint.state_dict.set_state_dict` loads.

    `torch.optim.Optimizer` numbers the parameters 0, 1, ... in the order of its
    param_groups, and `load_state_dict` matches a saved state to the optimizer by
    that order alone; the names are taken from the same positions.

    Args:
        state_dict: {"state": {int: {name: tensor}}, "param_groups": [{..., "params":
            [int]}]}, e.g. a one-process checkpoint's "optimizer".
        named_groups: the param_groups of the optimizer to load into, with names for
            "params", as `get_state_dict(model, optimizer)[1]["param_groups"]` gives.
    Returns: {"state": {name: {...}}, "param_groups": [{..., "params": [name]}]}; the
        tensors are those of `state_dict` (not copied).
    Raises:
        ValueError: another number of groups, or of parameters in a group.
    """
    saved = state_dict["param_groups"]
    sizes = [len(g["params"]) for g in saved], [len(g["params"]) for g in named_groups]
    if sizes[0] != sizes[1]:
        raise ValueError(f"optimizer state of parameter groups sized {sizes[0]}, "
                         f"this optimizer's are {sizes[1]}")
    names = {i: n for g, ng in zip(saved, named_groups) for i, n in zip(g["params"], ng["params"])}
    return {"state": {names[i]: s for i, s in state_dict["state"].items()},
            "param_groups": [{**g, "params": ng["params"]} for g, ng in zip(saved, named_groups)]}


class GlobalBatchWarning(UserWarning):
    """A run resumed with another global batch (batch_size x grad_accum x ranks) than
    the checkpoint's: each step now trains on another number of tokens."""


def check_global_batch(path: str | Path, saved: dict | None, now: dict) -> bool:
    """Warn (`GlobalBatchWarning`, naming both) when the checkpoint at `path` was
    written with another global batch than this run's.

    The data stream resumes at the saved global window whatever the batch, but the
    LR schedule counts steps, so a step's tokens (and the tokens by step N) change.

    Args:
        saved, now: {"batch_size", "grad_accum", "world_size"} (sequences per rank
            per micro-batch, micro-batches per step, ranks); `saved` None (a
            checkpoint of an earlier version) is not checked.
    Returns: whether the global batches are equal (True when `saved` is None).
    """
    if saved is None:
        return True

    def total(b: dict) -> int:
        return b["batch_size"] * b["grad_accum"] * b["world_size"]

    if total(saved) == total(now):
        return True

    def says(b: dict) -> str:
        return (f"{total(b)} sequences (batch_size {b['batch_size']} x grad_accum "
                f"{b['grad_accum']} x {b['world_size']} rank(s))")

    warnings.warn(f"{path} was written with a global batch of {says(saved)}, this run has "
                  f"{says(now)}: each step now trains on another number of tokens (the data "
                  "stream continues at the saved token count; the LR schedule counts steps)",
                  GlobalBatchWarning, stacklevel=2)
    return False


# --- the run's stateful parts, saved and loaded together ---------------------


class Stateful(Protocol):
    """What a checkpoint holds a part of a run through (torchtitan's `Stateful`)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class RNGState:
    """The random generators a run draws from (torch's, Python's, CUDA's on a GPU), as
    one stateful part: restored, the next draws are those the saved run would make."""

    def __init__(self, device: torch.device):
        self.device = device

    def state_dict(self) -> dict:
        state = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])
        if "cuda" in state:
            torch.cuda.set_rng_state_all(state["cuda"])


# How the optimizer computes (fused kernel, multi-tensor, ...) is this run's choice,
# not saved state: FSDP2's DTensors take the multi-tensor AdamW, one process the fused.
_OPTIMIZER_IMPLEMENTATION = ("foreach", "fused", "capturable", "differentiable")


class CheckpointManager:
    """Saves and loads every stateful part of a run as one checkpoint (torchtitan's
    `CheckpointManager`): the model and optimizer (`state_dict`/`load_state_dict`; under
    FSDP2 through `torch.distributed.checkpoint.state_dict`), the LR schedule (whose
    state is {"step"}), the RNG and the data loader's position, plus `meta`, plain
    records of the run (model_args, config_digest, tokenizer, batch).

    One process writes one file, {"step", "data", "rng", **meta, "model",
    "optimizer"}; under torchrun each checkpoint is a DCP folder of the model and
    optimizer tensors plus each rank's plain state with the optimizer's param_groups.
    Either kind loads under any number of ranks (see the module docstring).

    Args:
        folder: the local checkpoints folder this machine writes in.
        remote_dir: the object store folder each checkpoint is uploaded to (None: local).
        keep: how many checkpoints to keep (0: all).
    """

    def __init__(self, folder: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 schedule: Stateful, rng: Stateful, loader: Stateful, meta: dict, world,
                 keep: int = 0, remote_dir: str | None = None):
        self.folder, self.remote_dir, self.keep, self.world = folder, remote_dir, keep, world
        self.model, self.optimizer = model, optimizer
        self.schedule, self.rng, self.loader, self.meta = schedule, rng, loader, meta

    @property
    def out(self) -> Path | str:
        """Where the checkpoints are kept: `remote_dir`, else the local folder."""
        return self.folder if self.remote_dir is None else self.remote_dir

    def latest(self) -> Path | str | None:
        """The newest complete checkpoint where they are kept, or None."""
        return latest_checkpoint(self.out)

    def clear(self) -> None:
        """Delete every checkpoint where they are kept (rank 0; a collective)."""
        if self.world.is_main:
            for old in list_checkpoints(self.out):
                remove_checkpoint(old)
        if self.world.enabled:
            import torch.distributed as dist

            dist.barrier()

    def plain_state(self) -> dict:
        """Everything but the model and optimizer tensors, in the order it is saved."""
        return {**self.schedule.state_dict(), "data": self.loader.state_dict(),
                "rng": self.rng.state_dict(), **self.meta}

    @torch.no_grad()
    def save(self, step: int) -> Path | str:
        """Write this step's checkpoint (then upload it and prune to `keep`); a
        collective under torchrun. Returns where it is kept."""
        path = checkpoint_path(self.folder, step, sharded=self.world.enabled)
        extra = self.plain_state()
        if not self.world.enabled:
            return save_checkpoint(path, {**extra, "model": self.model.state_dict(),
                                          "optimizer": self.optimizer.state_dict()},
                                   keep=self.keep, remote_dir=self.remote_dir)
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        extra = {**extra, "param_groups": optim_sd["param_groups"]}
        return save_sharded_checkpoint(path, {"model": model_sd, "optimizer": optim_sd["state"]},
                                       extra, rank=self.world.rank, keep=self.keep,
                                       remote_dir=self.remote_dir)

    def load(self, path: Path | str) -> dict:
        """Restore every part from the checkpoint `path` (one where they are kept: a
        remote one is first fetched, once per machine); returns its plain state.

        The optimizer's hyper-parameters come from the checkpoint, its implementation
        flags (`_OPTIMIZER_IMPLEMENTATION`) stay this run's. The data stream's state is
        global (`trainer.data`), so the run continues at the saved token count. When
        the checkpoint's global batch differs from `meta["batch"]`, rank 0 warns
        (`check_global_batch`).

        Raises:
            ValueError: a checkpoint of another model shape, or of other optimizer groups.
        """
        if self.remote_dir is not None:
            path = self._fetch(str(path))
        state = self._load_tensors(path)
        if self.world.is_main:
            check_global_batch(path, state.get("batch"), self.meta["batch"])
        self.loader.load_state_dict(state["data"])
        self.rng.load_state_dict(state["rng"])
        self.schedule.load_state_dict(state)
        return state

    def _check_model(self, path: Path, saved: dict) -> None:
        if saved != self.meta["model_args"]:
            raise ValueError(f"{path}: saved for model {saved}, the config gives "
                             f"{self.meta['model_args']}")

    def _load_tensors(self, path: Path) -> dict:
        """Load model and optimizer from a checkpoint written with any number of ranks:

        - one-process file, one process: `load_state_dict` (a bitwise resume);
        - sharded folder (N ranks), under M ranks or on one process: DCP reads this
          rank's slices (full tensors without a process group) into the layout of
          `get_state_dict`, then `set_state_dict`;
        - one-process file under torchrun: every rank memory-maps it and
          `set_state_dict(full_state_dict=True)` keeps its own shards; the optimizer
          state, keyed by position, is first keyed by name (`optimizer_state_by_name`).
        """
        world, model, optimizer = self.world, self.model, self.optimizer
        if not is_sharded(path) and not world.enabled:
            state = load_checkpoint(path)
            self._check_model(path, state["model_args"])
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            return state
        from torch.distributed.checkpoint import state_dict as dsd

        model_sd, optim_sd = dsd.get_state_dict(model, optimizer)
        if is_sharded(path):
            self._check_model(path, load_rank_state(path, world.rank)["model_args"])
            state = load_sharded_checkpoint(
                path, {"model": model_sd, "optimizer": optim_sd["state"]}, world.rank,
                no_dist=not world.enabled)
            saved_optim = {"state": optim_sd["state"], "param_groups": state["param_groups"]}
            options = None
        else:
            state = load_checkpoint(path, mmap=True)
            self._check_model(path, state["model_args"])
            model_sd = state["model"]
            saved_optim = optimizer_state_by_name(state["optimizer"], optim_sd["param_groups"])
            options = dsd.StateDictOptions(full_state_dict=True)
        mine = {k: optimizer.defaults[k] for k in _OPTIMIZER_IMPLEMENTATION
                if k in optimizer.defaults}
        saved_optim["param_groups"] = [{**g, **mine} for g in saved_optim["param_groups"]]
        dsd.set_state_dict(model, optimizer, model_state_dict=model_sd,
                           optim_state_dict=saved_optim, options=options)
        return state

    def _fetch(self, path: str) -> Path:
        """The remote checkpoint `path`, downloaded into the local folder once per
        machine (by local rank 0, while the machine's other ranks wait)."""
        if self.world.local_rank == 0:
            fetch_checkpoint(path, self.folder)
        if self.world.enabled:
            import torch.distributed as dist

            dist.barrier()
        return self.folder / path.rstrip("/").rsplit("/", 1)[-1]
