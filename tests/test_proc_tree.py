"""Process roles of `tests.proc_tree`: Beam's SDK workers are told apart
from the runner by how Beam itself starts them, on a real two-worker job."""

from __future__ import annotations

import json
import subprocess
import sys

from pipeline.beam.forkserver import SERVER_NAME, WORKER_NAME
from tests.conftest import ROOT
from tests.proc_tree import (
    FORK_SERVER_NAME,
    SDK_WORKER_MAIN,
    process_role,
    python_entry,
    role,
)

# Two SDK worker processes (FnApiRunner, multi_processing); the stage sleeps in
# the workers long enough for several 0.1 s samples to see them
JOB = """
import time
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

def slow(x):
    time.sleep(1.0)
    return x

opts = PipelineOptions(["--runner=FnApiRunner", "--direct_num_workers=2",
                        "--direct_running_mode=multi_processing"])
with beam.Pipeline(options=opts) as p:
    _ = p | beam.Create(range(8)) | beam.Reshuffle() | beam.Map(slow)
"""


def _measured(job: str, tmp_path) -> dict:
    """`measure` of `python -c job`, from a fresh small interpreter (as in the benches)."""
    probe = ("import json, sys; from tests.proc_tree import measure; "
             f"print(json.dumps(measure([sys.executable, '-c', {job!r}], {str(tmp_path / 'log')!r})))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    m = json.loads(out.strip().splitlines()[-1])
    assert m["returncode"] == 0, (tmp_path / "log").read_text()
    return m


def test_beam_workers_are_workers_and_the_launcher_is_main(tmp_path):
    m = _measured(JOB, tmp_path)
    assert m["processes_by_role"]["worker"] == 2
    assert m["processes_by_role"]["main"] == 1  # the launcher, which runs the runner
    assert set(m["processes_by_role"]) <= {"main", "worker", "shell"}
    # each worker imported Beam (tens of MiB) and did the stage's work
    assert m["peak_mb_by_role"]["worker"] > 30
    assert m["cpu_by_role"]["worker"] > 0.5


# The same on this project's runner (`run_pipeline`): the workers forked by its fork server
FORKED_JOB = """
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from pipeline.beam.runner import run_pipeline

def busy(x):
    return x + sum(i * i for i in range(3_000_000)) % 2

opts = PipelineOptions(["--runner=FnApiRunner", "--direct_num_workers=2",
                        "--direct_running_mode=multi_processing", "--local_workers=fork"])
run_pipeline(opts, {tmp!r}, lambda p, _spill: p | beam.Create(range(8)) | beam.Reshuffle() | beam.Map(busy))
"""


def test_forked_workers_are_workers_and_their_server_a_pool(tmp_path):
    m = _measured(FORKED_JOB.format(tmp=str(tmp_path)), tmp_path)
    assert m["processes_by_role"]["worker"] == 2
    assert m["processes_by_role"]["pool"] == 1
    assert m["processes_by_role"]["main"] == 2  # the launcher, and its Ctrl-C sentinel
    assert m["processes_by_role"]["shell"] == 4  # each worker's `sh -c` and fork client
    assert m["cpu_by_role"]["worker"] > 0.5  # the stage's work
    assert m["cpu_by_role"]["pool"] < 1.0  # forked from the launcher: Beam was imported there


def test_roles_of_the_commands_beam_starts_workers_with():
    # FnApiRunner (multi_processing): `sh -c "<python> -m ...sdk_worker_main"`
    command = f"{sys.executable} -m {SDK_WORKER_MAIN}"
    assert python_entry(command.split()) == ("module", SDK_WORKER_MAIN)
    assert role(command) == "worker"
    assert role(["/bin/sh", "-c", command]) == "shell"
    assert process_role(command.split(), parent_role="shell") == "worker"  # a shell that forks
    assert role(["/opt/venv/bin/python3.11", "-u", "-X", "dev", "-m", SDK_WORKER_MAIN]) == "worker"
    # the worker pool, and its children whatever they run (a boot program, `python -c`)
    assert role([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", "--service_port=0"]) == "pool"
    assert process_role([sys.executable, "boot.py", "--id=1"], parent_role="pool") == "worker"
    assert process_role(["python", "-c", "from apache_beam.runners.worker.sdk_worker import SdkHarness"],
                        parent_role="pool") == "worker"
    assert process_role(["sort", "-u"], parent_role="worker") == "worker"  # what a worker starts
    # this project's forked workers: the fork server, its children (with its command
    # line), and the client the runner starts for each
    launcher = [sys.executable, "-m", "pipeline", "clean"]
    assert process_role(launcher, name=SERVER_NAME) == "pool" and FORK_SERVER_NAME == SERVER_NAME
    assert process_role(launcher, parent_role="pool", name=WORKER_NAME) == "worker"
    assert process_role(launcher, name="python") == "main"
    assert role([sys.executable, "-I", "-S", "/src/pipeline/beam/forkclient.py", "/tmp/f/workers.sock"]) == "shell"
    # launchers, also when a path or an argument merely names the harness
    assert role([sys.executable, "-m", "pipeline", "clean", "--config", "configs/demo.yaml"]) == "main"
    assert role([sys.executable, "-m", "pipeline", "clean", "--set", f"out_dir=/x/{SDK_WORKER_MAIN}"]) == "main"
    assert role(["/srv/sdk_worker_main/bin/python", "job.py"]) == "main"
    assert python_entry(["sh", "-c", "true"]) is None


def test_cpu_of_a_process_that_outlives_the_command_is_counted(tmp_path):
    # the command starts a child that spins for 1 CPU-second and exits at once itself,
    # as a pool leaves its forkserver behind: without the wrapper adopting the
    # orphan, its CPU time would go to init, uncounted
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass"
    cmd = ("import subprocess, sys; "
           f"subprocess.Popen([sys.executable, '-c', {spin!r}])")
    out = subprocess.run([sys.executable, "-m", "tests.proc_tree", "--log", str(tmp_path / "log"),
                          "--", sys.executable, "-c", cmd], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    m = json.loads(out.strip().splitlines()[-1])
    assert m["returncode"] == 0 and m["orphans_killed"] == 0
    assert m["orphans"] == 1
    # the orphan's CPU second (it spins until its own CPU clock says so), and two
    # interpreters' start-up
    assert 1.0 <= m["cpu_seconds"] < 3.0
