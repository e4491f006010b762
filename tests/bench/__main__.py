"""Run the benchmarks: `python -m tests.bench [--smoke] [--only NAME ...]`."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from pipeline.core.io import atomic_write
from tests import bench


def write_results(results: list[dict[str, Any]], out: Path, partial: bool) -> None:
    """Write `results` to `out` (JSON list); when `partial`, the figures already
    in `out` whose names are not in `results` stay."""
    if partial and out.is_file():
        fresh = {r["name"] for r in results}
        results = [r for r in json.loads(out.read_text()) if r["name"] not in fresh] + results
    with atomic_write(out) as f:
        f.write(json.dumps(results, indent=2).encode())


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"{'figure':<34} {'value':>14} {'unit':<12} {'reference':<28} {'ratio':>7} {'goal':>6}  met")
    for r in results:
        goal = "" if r["goal"] is None else f"{r['goal']:.2f}"
        met = "" if r["met"] is None else ("yes" if r["met"] else "NO")
        print(f"{r['name']:<34} {r['value']:>14.4g} {r['unit']:<12} {r['reference'][:28]:<28} "
              f"{r['ratio']:>7.3f} {goal:>6}  {met}")


def cpu_seconds() -> float:
    """CPU seconds of this process and of its children waited for, so far."""
    own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="Run the benchmarks, print a table, write out/bench/results.json. Exits 1 "
                    "when a bench fails or a figure is missing (no figure, or not a number).",
    )
    parser.add_argument("--only", nargs="*", default=[], help="module names, e.g. tokenizer dedup; their figures replace those of the same "
                        "name in --out, the others stay")
    parser.add_argument("--smoke", action="store_true",
                        help="every bench at its smoke size (a little data, each code path once: "
                             "checks that the benches work, measures nothing); side files under "
                             "out/bench/smoke/")
    parser.add_argument("--out", default=None,
                        help="results file (default out/bench/results.json; with --smoke "
                             "out/bench/smoke/results.json)")
    args = parser.parse_args(argv)
    if args.smoke:
        os.environ[bench.SMOKE_ENV] = "1"  # before any bench module is imported; children inherit it
    out = Path(args.out) if args.out else bench.out_dir() / "results.json"
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    if args.only:
        unknown = set(args.only) - {n.removeprefix("bench_") for n in names}
        if unknown:
            parser.error(f"no such bench: {', '.join(sorted(unknown))}")
        names = [n for n in names if n.removeprefix("bench_") in args.only]
    results, failed, skipped, seconds = [], [], [], {}  # seconds: {bench: (wall, CPU)}
    for name in names:
        print(f"== {name}", file=sys.stderr, flush=True)
        t0, c0 = time.perf_counter(), cpu_seconds()
        try:
            figures = importlib.import_module(f"tests.bench.{name}").run()
        except bench.BenchSkipped as e:
            skipped.append(f"{name} ({e})")
            continue
        except Exception:  # noqa: BLE001 - one broken bench must not lose the others' figures
            traceback.print_exc()
            failed.append(f"{name} (failed)")
            continue
        finally:
            seconds[name] = time.perf_counter() - t0, cpu_seconds() - c0
        gaps = [f["name"] for f in figures if bench.missing(f)]
        if not figures or gaps:
            failed.append(f"{name} (missing: {', '.join(gaps) or 'every figure'})")
        results += figures
    write_results(results, out, partial=bool(args.only))
    print_table(results)
    print(f"results: {out}")
    print("seconds (wall/CPU): " + ", ".join(f"{n.removeprefix('bench_')} {w:.0f}/{c:.0f}"
                                          for n, (w, c) in seconds.items()))
    if skipped:
        print(f"skipped: {'; '.join(skipped)}")
    if failed:
        print(f"FAILED: {'; '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
