"""One module per source of the LLaMA recipe; each exposes `read(path, cfg)`.

See `pipeline.sources.base` for the reader contract.
"""

from __future__ import annotations

import importlib
from typing import Callable, Iterator

from pipeline.config import SOURCES


def get_reader(source: str) -> Callable[..., Iterator] | None:
    """The `read(path, cfg)` generator of a source, or None if it has no reader yet."""
    if source not in SOURCES:
        raise KeyError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
    try:
        module = importlib.import_module(f"pipeline.sources.{source}")
    except ModuleNotFoundError as e:
        if e.name == f"pipeline.sources.{source}":
            return None
        raise
    return module.read
