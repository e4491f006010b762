"""Benchmarks (`make bench`): each `bench_*.py` module has `run() -> list[dict]`
returning records made by `record()`; `python -m tests.bench` prints a table and
writes `out/bench/results.json`.

Speed figures are ratios against a reference measured in the same run (these
machines are noisy), medians of repeats; they are never asserted in tests.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable


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
