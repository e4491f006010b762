"""Checkpoints: `<out>/checkpoints/step-000300.pt`, written atomically, the last few kept.

A checkpoint is a dict of tensors and plain containers (model, optimizer, step,
RNG and data-stream state), so loading uses `torch.load(weights_only=True)` and
never unpickles arbitrary objects (DESIGN.md, "Trainer").
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

_NAME = re.compile(r"^step-(\d{6,})\.pt$")


def checkpoint_path(ckpt_dir: str | Path, step: int) -> Path:
    """`<ckpt_dir>/step-000300.pt` for step 300 (zero-padded so names sort by step)."""
    return Path(ckpt_dir) / f"step-{step:06d}.pt"


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Complete checkpoints in `ckpt_dir`, oldest step first (temporary files ignored)."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step, or None."""
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


def save_checkpoint(path: str | Path, state: dict[str, Any], keep: int = 0) -> Path:
    """Write `state` with `torch.save` to a temporary file, then rename it to `path`.

    A killed run never leaves a file under a checkpoint name that is incomplete.
    Args:
        keep: if > 0, afterwards delete all but the newest `keep` checkpoints.
    Returns: `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if keep > 0:
        for old in list_checkpoints(path.parent)[:-keep]:
            old.unlink()
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with `weights_only=True` (tensors and plain containers only).

    Raises:
        FileNotFoundError: no such file.
        pickle.UnpicklingError: the file holds objects other than tensors and plain data.
    """
    return torch.load(path, map_location=map_location, weights_only=True)
