"""The local runner's worker processes share the launcher's stderr: while a
job runs, a thread copies it line by line without the workers' start-up noise
(`pipeline.beam.runner.quiet_worker_stderr`, on `pipeline.core.io.in_background`)."""

from __future__ import annotations

import subprocess
import sys
import threading

from pipeline.core.io import in_background
from tests.conftest import ROOT

SCRIPT = r"""
import os, subprocess, sys
from pipeline.beam.runner import quiet_worker_stderr

with quiet_worker_stderr():
    os.write(2, b"INFO:__main__:Logging handler created.\nlauncher line\n")
    subprocess.run([sys.executable, "-c", "import os; os.write(2, b'WARNING:root:apitools not found\\nworker line\\n')"])
os.write(2, b"INFO: after the block, every line\n")
"""


def test_worker_noise_is_left_out_and_the_rest_copied_in_order():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], check=False, capture_output=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b"launcher line\nworker line\nINFO: after the block, every line\n"


def test_in_background_stops_and_joins_its_thread_however_the_block_ends():
    stop = threading.Event()
    seen = []

    def work() -> None:
        seen.append(threading.current_thread().name)
        stop.wait()

    try:
        with in_background(work, "beside", stop.set):
            raise KeyError("the block fails")
    except KeyError:
        pass
    assert stop.is_set() and seen == ["beside"]
    assert not any(t.name == "beside" for t in threading.enumerate())
