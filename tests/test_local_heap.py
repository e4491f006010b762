"""Memory of the local Beam runner: the glibc heap settings that
`pipeline_options` applies with a local runner, and the per-role peak RSS that
the scaling benchmark reads from `tests.proc_tree`."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys

import pytest

from pipeline.beam.runner import ARROW_POOL_ENV, MALLOC_ENV, pipeline_options
from pipeline.core.config import load_config
from tests.conftest import ROOT

DEMO = ROOT / "configs" / "demo.yaml"
glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not ctypes.util.find_library("c"), reason="glibc only"
)


@glibc
def test_local_runner_sets_heap_variables_for_its_workers(monkeypatch):
    import pyarrow as pa

    monkeypatch.setattr(pa, "set_memory_pool", lambda pool: chosen.append(pool.backend_name))
    chosen: list[str] = []
    for name in (*MALLOC_ENV, *ARROW_POOL_ENV):
        monkeypatch.delenv(name, raising=False)
    pipeline_options(load_config(DEMO), ["--runner=DataflowRunner", "--project=p", "--region=r"])
    assert [n for n in (*MALLOC_ENV, *ARROW_POOL_ENV) if n in os.environ] == []  # a remote runner: untouched
    assert chosen == []
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")  # the user's own setting wins
    pipeline_options(load_config(DEMO))  # the demo's FnApiRunner: this process is the runner
    assert {n: os.environ[n] for n in MALLOC_ENV} == {
        "MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072",
    }
    assert os.environ["ARROW_DEFAULT_MEMORY_POOL"] == "system" and chosen == ["system"]
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")  # so here too
    pipeline_options(load_config(DEMO))
    assert chosen == ["system"]


def test_proc_tree_reports_peak_rss_by_role(tmp_path):
    # 300 MiB written (every page resident), held 0.6 s: several 0.1 s samples see it
    code = "import time; b = b'x' * (300 * 2**20); time.sleep(0.6)"
    # measured from a small fresh interpreter, as the bench does: a child forked from
    # this (large) test process would inherit its peak RSS as its own starting peak
    probe = (f"import json, sys; from tests.proc_tree import measure; "
             f"print(json.dumps(measure([sys.executable, '-c', {code!r}], {str(tmp_path / 'log')!r})))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    m = json.loads(out.strip().splitlines()[-1])
    assert m["returncode"] == 0
    assert set(m["peak_mb_by_role"]) == {"main"}
    assert 300 <= m["peak_mb_by_role"]["main"] < 360  # the string plus the interpreter
    assert 300 <= m["max_process_mb"] < 360  # the kernel's high-water mark agrees


def test_local_scratch_is_removed_however_the_run_ends(tmp_path, monkeypatch):
    """The spill folder and the workers' options file exist only while the job
    runs, and PIPELINE_OPTIONS_FILE is restored, also after Ctrl-C."""
    from pipeline.beam.runner import local_scratch
    from pipeline.beam.packed import Packer
    from pipeline.sources.base import make_document

    monkeypatch.setenv("PIPELINE_OPTIONS_FILE", "users-own.json")
    cfg = load_config(DEMO)
    with pytest.raises(KeyboardInterrupt):
        with local_scratch(pipeline_options(cfg, ["--sdk_harness_log_level_overrides={\"a\": \"INFO\"}"]),
                           tmp_path) as spill:
            assert spill == str(tmp_path / "_spill")
            Packer(spill).pack(make_document("books", "b", "text", "u"))  # a worker spilled
            written = json.loads(open(os.environ["PIPELINE_OPTIONS_FILE"]).read())
            # the job's own options (FnApiRunner gives its workers none), log level included
            assert written["options"]["default_sdk_harness_log_level"] == "WARNING"
            assert written["options"]["sdk_harness_log_level_overrides"] == {"a": "INFO"}
            assert written["options"]["direct_num_workers"] == cfg.beam.direct_num_workers
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    assert os.environ["PIPELINE_OPTIONS_FILE"] == "users-own.json"
    with local_scratch(pipeline_options(cfg, ["--runner=DataflowRunner", "--project=p", "--region=r"]),
                       tmp_path) as spill:
        assert spill is None and os.environ["PIPELINE_OPTIONS_FILE"] == "users-own.json"
