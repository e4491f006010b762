"""Shared fixtures: the real demo inputs (fetched from the package registries
once into the project's cache) and the shared sample corpus when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("LLAMA_CACHE", ROOT / ".cache"))
SHARED_CORPUS = ROOT.parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def demo_inputs() -> dict[str, Path]:
    """{path relative to the cache: absolute path} of every fetched demo input."""
    from pipeline.fetch import fetch_demo_inputs

    return fetch_demo_inputs(CACHE)


@pytest.fixture(scope="session")
def lid_model(demo_inputs) -> Path:
    return demo_inputs["models/lid.176.ftz"]


@pytest.fixture(scope="session")
def shared_corpus() -> Path:
    """The shared real-sample corpus of all seven sources (present on CI)."""
    if not SHARED_CORPUS.is_dir():
        pytest.skip("the shared sample corpus is not beside this checkout")
    return SHARED_CORPUS
