"""The contracts between the shard job (writer) and the trainer (reader), and the
trainer's checkpoint folder, as the tokenizer and the trainer read them: without
Beam (local paths; `pipeline.core.io`) and without torch (imported only to read
a checkpoint's saved state).

Token shards: `<shards.out>/manifest.json` (format `SHARDS_FORMAT`) lists every
shard, `<split>-<shard>-of-<total>.arrow` (`shard_name`), with its sha256.

Checkpoints: `<trainer.out>/checkpoints/step-000300.pt` (one process, a
`torch.save` dict) or the folder `step-000300/` (sharded: DCP's files plus
`rank-RRRRR.pt`, each rank's plain state); on an object store a folder counts
once its `.metadata`, uploaded last, is there.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from pipeline.core import io
from pipeline.core.errors import PipelineError
from pipeline.core.schema import SHARDS_FORMAT

# --- token shards -----------------------------------------------------------


class ShardError(PipelineError):
    """A shard manifest or shard that is missing, corrupt or disagrees with the
    manifest, or inputs of the shard job that are missing or inconsistent."""


def shard_name(split: str, shard: int, total: int) -> str:
    """`train-00003-of-00016.arrow`: the file name of shard `shard` of `total` of `split`."""
    return f"{split}-{shard:05d}-of-{total:05d}.arrow"


def load_shard_manifest(shard_dir: str | Path) -> dict:
    """Read and check `<shard_dir>/manifest.json` (format `SHARDS_FORMAT`).

    Raises:
        ShardError: the manifest is missing, not JSON, or of another format.
    """
    path = io.join(shard_dir, io.MANIFEST)
    try:
        manifest = json.loads(io.read_bytes(path))
    except FileNotFoundError:
        raise ShardError(f"{path}: cannot read the shard manifest: no such file (write the "
                         "shards first: `python -m pipeline shards`)") from None
    except (OSError, ValueError) as e:
        raise ShardError(f"{path}: cannot read the shard manifest: {e}") from e
    if manifest.get("format") != SHARDS_FORMAT:
        raise ShardError(f"{path}: format {manifest.get('format')!r}, expected {SHARDS_FORMAT!r}")
    return manifest


# --- checkpoints ------------------------------------------------------------

CHECKPOINTS = "checkpoints"  # the folder under trainer.out
DCP_METADATA = ".metadata"  # written (uploaded) last: a sharded folder without it is no checkpoint
_NAME = re.compile(r"^step-(\d{6,})(\.pt)?$")
_TENSOR_KEYS = ("model", "optimizer", "param_groups")  # not part of the plain saved state


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (truncated, overwritten, not a checkpoint)."""


def checkpoint_name(step: int, sharded: bool = False) -> str:
    """`step-000300.pt` for step 300 (zero-padded so names sort by step), or the
    folder name `step-000300` when `sharded`."""
    return f"step-{step:06d}" if sharded else f"step-{step:06d}.pt"


def rank_state_name(rank: int) -> str:
    """`rank-00003.pt`: rank 3's plain state in a sharded checkpoint folder."""
    return f"rank-{rank:05d}.pt"


def is_sharded(path: str | Path) -> bool:
    """Whether `path` is a sharded (DCP folder) checkpoint rather than one file (on an
    object store, where folders are prefixes: whether its name lacks ".pt")."""
    if io.is_remote(path):
        return not str(path).endswith(".pt")
    return Path(path).is_dir()


def list_checkpoints(ckpt_dir: str | Path) -> list[Path | str]:
    """Complete checkpoints (files and sharded folders) in `ckpt_dir`, oldest step
    first (temporary files and folders, whose names start with ".", ignored). On an
    object store, a folder counts once its `.metadata`, uploaded last, is there."""
    if io.is_remote(ckpt_dir):
        found = {}
        for path, _ in io.list_tree(ckpt_dir):
            name, _, rest = io.relative(path, str(ckpt_dir)).partition("/")
            if (m := _NAME.match(name)) and rest == ("" if m.group(2) else DCP_METADATA):
                found[int(m.group(1))] = io.join(str(ckpt_dir), name)
        return [found[s] for s in sorted(found)]
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(ckpt_dir: str | Path) -> Path | str | None:
    """The checkpoint with the highest step, or None."""
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


def load_checkpoint(path: str | Path, map_location="cpu", mmap: bool = False) -> dict:
    """Load a local checkpoint file with `weights_only=True` (tensors and plain
    containers only; torch is imported here).

    `mmap=True` maps the file's tensors instead of reading them (`torch.load(mmap=True)`):
    ranks that each load the same file share its pages.
    Raises:
        FileNotFoundError: no such file.
        pickle.UnpicklingError: the file holds objects other than tensors and plain data.
        CheckpointError: the file is truncated or not a checkpoint (names the file).
    """
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except RuntimeError as e:  # torch's "PytorchStreamReader failed ..." on a damaged zip
        raise CheckpointError(f"{path}: not a readable checkpoint ({e})") from e


def saved_state(path: str | Path) -> dict:
    """A checkpoint's plain saved state (model_args, step, tokenizer...) without its
    tensors: a file is memory-mapped, a sharded folder gives rank 0's state. One on
    an object store is downloaded first.

    Raises:
        FileNotFoundError: no such checkpoint.
    """
    sharded = is_sharded(path)
    src = io.join(path, rank_state_name(0)) if sharded else path
    if io.is_remote(path):
        if not io.exists(src):
            raise FileNotFoundError(f"{path}: no such checkpoint")
        with tempfile.TemporaryDirectory() as tmp:
            return _plain(load_checkpoint(io.download(src, Path(tmp) / "state.pt"), mmap=True))
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    return _plain(load_checkpoint(src, mmap=not sharded))


def _plain(state: dict) -> dict:
    return {k: v for k, v in state.items() if k not in _TENSOR_KEYS}
