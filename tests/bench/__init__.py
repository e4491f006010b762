"""Benchmarks (`make bench`): each `bench_*.py` module has `run() -> list[dict]`
returning records made by `record()`; `python -m tests.bench` prints a table and
writes `out/bench/results.json`.

Speed figures are ratios against a reference measured in the same run (these
machines are noisy), medians of repeats; they are never asserted in tests.

Smoke size (`python -m tests.bench --smoke`, `make bench-smoke`, run by CI):
every bench runs its whole code path once on a little data, to show that it
still works and still yields each of its figures; the numbers mean nothing. A
bench picks its sizes with `size(full, smoke_value)` (module constants too: the
flag is set in the environment before any bench module is imported, and child
processes inherit it), gives its Beam jobs `beam_sets()`, and writes its side
files under `out_dir()`, so a smoke run never overwrites what `make bench` wrote. A bench whose input is absent
raises `BenchSkipped` (reported, not a failure); one that returns no figure, or
a figure whose value is not a finite number, has a missing figure (a failure).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

SMOKE_ENV = "LLAMA_BENCH_SMOKE"  # set (to "1") by `python -m tests.bench --smoke`
ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class BenchSkipped(Exception):
    """A bench cannot run here (an input it needs is absent): its message says why."""


def smoke() -> bool:
    """Whether the benchmarks run at their smoke size (see the module doc)."""
    return os.environ.get(SMOKE_ENV, "") not in ("", "0")


def size(full: T, smoke_value: T) -> T:
    """`full`, or `smoke_value` at the smoke size: `DOCS = size(20_000, 500)`."""
    return smoke_value if smoke() else full


def beam_sets() -> list[str]:
    """Config overrides (`--set`) for the Beam jobs of a bench: one SDK worker at
    the smoke size (a worker's start-up, about 3 CPU-s, is most of a small job),
    none at full size. Not for a bench that compares worker counts."""
    return ["beam.direct_num_workers=1"] if smoke() else []


def out_dir() -> Path:
    """Where benches write their side files (plots, work folders, throughputs):
    `out/bench/` of the repository, `out/bench/smoke/` at the smoke size."""
    return ROOT / "out" / "bench" / ("smoke" if smoke() else "")


def missing(figure: dict[str, Any]) -> bool:
    """A figure without a value: not a finite number (NaN where a measurement
    found nothing to measure)."""
    value = figure.get("value")
    return not isinstance(value, (int, float)) or not math.isfinite(value)


def record(
    name: str,
    value: float,
    unit: str,
    reference: str,
    reference_value: float,
    goal: float | None = None,
    higher_is_better: bool = True,
) -> dict[str, Any]:
    """One figure of `results.json`: {"name", "value", "unit", "reference",
    "reference_value", "ratio", "goal", "met"}; ratio = value / reference_value
    (inverted when lower is better, so ratio > 1 always means "ours is better")."""
    if reference_value:
        ratio = value / reference_value if higher_is_better else reference_value / value
    else:
        ratio = float("nan")
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "reference": reference,
        "reference_value": reference_value,
        "ratio": ratio,
        "goal": goal,
        "met": None if goal is None else bool(ratio >= goal),
    }


def median_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall seconds of `fn()` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
