"""The shape of the code: imports form no cycle, between modules or between
packages, and the tokenizer and the trainer run without Beam (they import only
`pipeline.core` from the pipeline)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("pipeline", "tokenizer", "trainer")
# A package imports only packages before it here (ARCHITECTURE.md)
LAYERS = ("pipeline.core", "pipeline.formats", "pipeline.filters", "pipeline.beam", "pipeline.dedup",
          "pipeline.sources", "tokenizer", "trainer", "pipeline")


def _modules() -> dict[str, Path]:
    mods = {}
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _package(module: str, mods: dict[str, Path]) -> str:
    return module if mods[module].name == "__init__.py" else module.rsplit(".", 1)[0]


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, anywhere in its body (an import
    inside a function counts: it is a dependency all the same)."""
    mods = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = _package(name, mods).split(".")
                    base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return {m: graph.get(m, set()) for m in mods}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    graph = import_graph()
    assert "pipeline.core.io" in graph["trainer.storage"]  # the graph sees imports in functions
    assert cycles(graph) == []


def test_no_import_cycle_between_packages():
    graph = import_graph()
    mods = _modules()
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph.items():
        for target in targets:
            a, b = _package(module, mods), _package(target, mods)
            if a != b:
                packages[a].add(b)
    assert "pipeline.core" in packages["tokenizer"] and "pipeline.sources" in packages["pipeline"]
    assert cycles(packages) == []
    assert set(packages) <= set(LAYERS)  # every package has its layer
    downwards = {(a, b) for a, used in packages.items() for b in used if LAYERS.index(b) > LAYERS.index(a)}
    assert downwards == set()
    for top in ("tokenizer", "trainer"):
        used = {p for p in packages[top] if p.startswith("pipeline")}
        assert used <= {"pipeline.core"}, f"{top} imports {used}"


NO_BEAM = """
import importlib, pkgutil, sys, tempfile, os
import tokenizer, trainer, pipeline.core, pipeline.formats, pipeline.sources, pipeline.filters
for pkg in (tokenizer, trainer, pipeline.core, pipeline.formats, pipeline.sources, pipeline.filters):
    for info in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(info.name)
from pipeline.core import io
d = tempfile.mkdtemp()
path = os.path.join(d, "a", "b.txt")
with io.atomic_write(path) as f:
    f.write(b"x\\n")
assert io.exists(path) and io.read_bytes(path) == b"x\\n"
assert io.match(os.path.join(d, "a", "*.txt")) == [(path, 2)]
io.delete(path)
assert not io.exists(path)
beam = sorted(m for m in sys.modules if m.split(".")[0] == "apache_beam")
print(len(beam), beam[:5])
"""


def test_tokenizer_trainer_and_the_pure_pipeline_packages_load_no_beam():
    """The readers, formats and filters run in Beam workers but are plain Python:
    a notebook or the tokenizer can use them without Beam."""
    out = subprocess.run([sys.executable, "-c", NO_BEAM], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "0 []"


def _imported_modules(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_no_test_module_imports_another_test_or_a_benchmark():
    """Tests share fixtures and helpers through tests/conftest.py (and helper modules
    such as tests/cluster.py), never by importing a test or benchmark module."""
    assert {"tests.test_trainer", "tests.bench.bench_dedup"} <= _imported_modules(
        ast.parse("from tests import test_trainer\nimport tests.bench.bench_dedup"))
    offending = {}
    for path in sorted((ROOT / "tests").glob("*.py")):
        bad = sorted(m for m in _imported_modules(ast.parse(path.read_text(encoding="utf-8")))
                     if m.startswith(("tests.test_", "tests.bench")))
        if bad:
            offending[path.name] = bad
    assert offending == {}


MAX_FUNCTION_LINES = 80


def long_functions(source: str) -> list[tuple[str, int]]:
    """(name, lines) of every function longer than MAX_FUNCTION_LINES."""
    return [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(ast.parse(source))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]


def test_no_product_function_is_over_80_lines():
    assert long_functions("def f():\n" + "    x = 1\n" * 80) == [("f", 81)]
    assert long_functions("def f():\n" + "    x = 1\n" * 79) == []
    found = {str(path.relative_to(ROOT)): long for path in _modules().values()
             if (long := long_functions(path.read_text(encoding="utf-8")))}
    assert found == {}
