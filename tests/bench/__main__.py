"""Run the benchmarks: `python -m tests.bench [--only NAME ...]`."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import traceback
from pathlib import Path

import tests.bench as bench
from pipeline.io import atomic_write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="Run the benchmarks, print a table, write out/bench/results.json.",
    )
    parser.add_argument("--only", nargs="*", default=[], help="module names, e.g. tokenizer dedup; their figures replace those of the same "
                        "name in --out, the others stay")
    parser.add_argument("--out", default="out/bench/results.json")
    args = parser.parse_args(argv)
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    if args.only:
        names = [n for n in names if n.removeprefix("bench_") in args.only]
    results, failed = [], []
    for name in names:
        print(f"== {name}", file=sys.stderr, flush=True)
        try:
            results += importlib.import_module(f"tests.bench.{name}").run()
        except Exception:  # noqa: BLE001 - one broken bench must not lose the others' figures
            traceback.print_exc()
            failed.append(name)
    out = Path(args.out)
    if args.only and out.is_file():  # a partial run updates its figures, keeps the others
        fresh = {r["name"] for r in results}
        results = [r for r in json.loads(out.read_text()) if r["name"] not in fresh] + results
    with atomic_write(out) as f:
        f.write(json.dumps(results, indent=2).encode())
    print(f"{'figure':<34} {'value':>14} {'unit':<12} {'reference':<28} {'ratio':>7} {'goal':>6}  met")
    for r in results:
        goal = "" if r["goal"] is None else f"{r['goal']:.2f}"
        met = "" if r["met"] is None else ("yes" if r["met"] else "NO")
        print(f"{r['name']:<34} {r['value']:>14.4g} {r['unit']:<12} {r['reference'][:28]:<28} "
              f"{r['ratio']:>7.3f} {goal:>6}  {met}")
    print(f"results: {args.out}")
    if failed:
        print(f"FAILED (no figures): {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
