"""One module per source of the LLaMA recipe; each exposes `read(path, cfg,
span=None)`, and optionally `split(path, nbytes, cfg)` and `assemble(key,
values, cfg)`.

See `pipeline.sources.base` for the contract.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterator

from pipeline.core.config import SOURCES


def get_reader(source: str) -> Callable[..., Iterator] | None:
    """The `read(path, cfg, span=None)` generator of a source, or None if it has no reader yet."""
    return source_hook(source, "read")


def source_hook(source: str, name: str) -> Callable[..., Any] | None:
    """Function `name` of a source's module (`read`, `split`, `assemble`), or
    None when the source has no module or the module no such function."""
    if source not in SOURCES:
        raise KeyError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
    try:
        module = importlib.import_module(f"pipeline.sources.{source}")
    except ModuleNotFoundError as e:
        if e.name == f"pipeline.sources.{source}":
            return None
        raise
    return getattr(module, name, None)
