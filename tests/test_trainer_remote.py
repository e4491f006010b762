"""Shards, checkpoints and logs on an object store (moto's S3 server): the stream and
the training run are those of local folders, a corrupt remote shard is named, and a
run killed mid-way resumes from its S3 checkpoint exactly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from apache_beam.io.filesystems import FileSystems

from pipeline.core import io as pio
from tests.cluster import s3_server  # noqa: F401 (fixture)
from tests.conftest import ROOT, SEQ, windows
from tests.conftest import trainer_config as config
from trainer.checkpoint import (
    CheckpointError,
    checkpoint_path,
    fetch_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_sharded_checkpoint,
    save_sharded_checkpoint,
)
from trainer.data import ShardError, TokenLoader, TokenStream, source_windows
from trainer.storage import staging_dir
from trainer.train import train

TIMING = ("tokens_per_s", "mfu")  # the only fields of a log record that may differ


@pytest.fixture(scope="module")
def bucket(s3_server) -> str:  # noqa: F811
    """'s3://trainer', with this process's S3 options pointed at the server."""
    previous = FileSystems._pipeline_options
    pio.configure(s3_server.beam_args(), force=True)
    yield s3_server.make_bucket("trainer")
    if previous is None:
        pio.configure(force=True)  # the environment's defaults, as in a fresh process
    else:
        FileSystems.set_options(previous)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A machine cache of this test's own (shards, staging folders)."""
    monkeypatch.setenv(pio.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def upload(server, local: Path, url: str) -> str:
    """A copy of a shard folder at `url`, its shards moved into a run folder as the
    pipeline's shard job writes them ("file": "run-.../name" in the manifest)."""
    manifest = json.loads((local / "manifest.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "run-test").mkdir()
        for entry in manifest["shards"]:
            shutil.copy(local / entry["file"], Path(tmp) / "run-test" / entry["file"])
            entry["file"] = f"run-test/{entry['file']}"
        (Path(tmp) / "manifest.json").write_text(json.dumps(manifest))
        server.upload_tree(tmp, url)
    return url


def records(log: bytes) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in log.decode().splitlines()]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_stream_over_s3_equals_local(shards, s3_server, bucket, cache):  # noqa: F811
    remote = upload(s3_server, shards, f"{bucket}/stream")

    def epoch(shard_dir):  # 2 DataLoader workers: each opens (and fetches) shards
        return windows(TokenLoader(TokenStream(shard_dir, "train", SEQ, seed=7, num_workers=2,
                                               infinite=False, shuffle_block=16), 3))

    assert epoch(remote) == epoch(shards)
    got, want = source_windows(remote, SEQ, 100), source_windows(shards, SEQ, 100)
    assert got.keys() == want.keys() and all(torch.equal(got[s], want[s]) for s in want)
    # Downloaded once into the machine cache, then memory-mapped there: 5 shards.
    assert len(list(cache.rglob("*.arrow"))) == 5 and not list(cache.rglob("*.tmp"))


def test_corrupt_remote_shard_is_named(shards, s3_server, bucket):  # noqa: F811
    remote = upload(s3_server, shards, f"{bucket}/corrupt")
    manifest = json.loads((shards / "manifest.json").read_text())
    name = manifest["shards"][2]["file"]
    data = bytearray((shards / name).read_bytes())
    data[len(data) // 2] ^= 0xFF  # the same size: only the sha256 tells
    client = s3_server.client()
    client.put_object(Bucket="trainer", Key=f"corrupt/run-test/{name}", Body=bytes(data))
    with pytest.raises(ShardError, match=f"shard run-test/{name}: .*sha256 .*corrupt"):
        windows(TokenStream(remote, "train", SEQ, infinite=False))
    client.delete_object(Bucket="trainer", Key=f"corrupt/run-test/{name}")
    with pytest.raises(ShardError, match=f"shard run-test/{name}: listed in manifest.json but missing"):
        windows(TokenStream(remote, "train", SEQ, infinite=False))
    with pytest.raises(ShardError, match="manifest.json: cannot read the shard manifest"):
        TokenStream(f"{bucket}/nothing-here", "train", SEQ)


@pytest.fixture(scope="module")
def remote_books(book_shards, s3_server, bucket) -> str:  # noqa: F811
    return upload(s3_server, book_shards, f"{bucket}/books")


STEPS = dict(steps=8, ckpt_every=4, keep_checkpoints=1)


@pytest.fixture(scope="module")
def reference(book_shards, tmp_path_factory) -> tuple[list[dict], dict]:
    """The log records and final checkpoint of the run on local folders."""
    out = tmp_path_factory.mktemp("local")
    summary = train(config(book_shards, out, **STEPS))
    return records((out / "log.jsonl").read_bytes()), load_checkpoint(summary["checkpoint"])


def same_weights(got: dict, want: dict) -> bool:
    return (got["step"] == want["step"] and got["data"] == want["data"]
            and all(torch.equal(got["model"][k], v) for k, v in want["model"].items())
            and all(torch.equal(got["optimizer"]["state"][i]["exp_avg_sq"], s["exp_avg_sq"])
                    for i, s in want["optimizer"]["state"].items()))


def test_training_on_s3_equals_local(remote_books, reference, s3_server, bucket):  # noqa: F811
    """Shards and trainer.out on S3, checkpoints at 4 and 8 (the newest kept): the
    log and weights of the same run on local folders."""
    out = f"{bucket}/run"
    summary = train(config(remote_books, out, **STEPS))
    assert s3_server.list(f"{out}/") == ["run/checkpoints/step-000008.pt",  # step 4: pruned
                                         "run/log.jsonl", "run/loss.png"]
    assert summary["checkpoint"] == f"{out}/checkpoints/step-000008.pt"
    assert (summary["log"], summary["plot"]) == (f"{out}/log.jsonl", f"{out}/loss.png")
    assert s3_server.read(f"{out}/loss.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert records(s3_server.read(f"{out}/log.jsonl")) == reference[0]
    assert same_weights(load_checkpoint(pio.local_copy(summary["checkpoint"])), reference[1])
    staged = staging_dir(out) / "checkpoints"  # where the run wrote it
    assert [p.name for p in staged.iterdir()] == ["step-000008.pt"]


def test_sigkill_then_resume_from_s3(remote_books, reference, s3_server, bucket):  # noqa: F811
    """`python -m trainer --no-resume`, the S3 options in the config's beam.extra_args
    (none in the environment), killed with SIGKILL after step 5, then run again: the
    log and weights of an uninterrupted run. The older run's checkpoint is removed;
    left as a kill mid-upload leaves them, a sharded folder without `.metadata` and
    a log past the last checkpoint are not taken."""
    out = f"{bucket}/killed"
    sets = {"shards.out": remote_books, "trainer.out": out, "trainer.model": "demo",
            "trainer.seq_len": 64, "trainer.batch_size": 8, "trainer.grad_accum": 1,
            "trainer.lr": 3e-3, "trainer.warmup_steps": 10, "trainer.log_every": 1,
            "trainer.num_threads": 1, **{f"trainer.{k}": v for k, v in STEPS.items()},
            "beam.extra_args": json.dumps(s3_server.beam_args())}
    cmd = [sys.executable, "-m", "trainer", "--config", str(ROOT / "configs" / "demo.yaml")]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = str(ROOT)
    client = s3_server.client()
    client.put_object(Bucket="trainer", Key="killed/checkpoints/step-000100.pt", Body=b"old")
    staged_log = staging_dir(out) / "log.jsonl"

    proc = subprocess.Popen([*cmd, "--no-resume"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if staged_log.is_file() and any(json.loads(line)["step"] >= 5 for line in
                                        staged_log.read_text().splitlines() if line.strip()):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-3000:]
    assert list_checkpoints(f"{out}/checkpoints") == [f"{out}/checkpoints/step-000004.pt"]
    client.put_object(Bucket="trainer", Key="killed/checkpoints/step-000006/__0_0.distcp", Body=b"x")
    client.put_object(Bucket="trainer", Key="killed/log.jsonl", Body=staged_log.read_bytes())

    run = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    assert f"checkpoint: {out}/checkpoints/step-000008.pt" in run.stdout.decode()
    assert records(s3_server.read(f"{out}/log.jsonl")) == reference[0]  # no step twice
    got = load_checkpoint(pio.local_copy(f"{out}/checkpoints/step-000008.pt"))
    assert same_weights(got, reference[1])


def test_sharded_checkpoint_is_committed_by_its_metadata(s3_server, bucket, tmp_path, monkeypatch):  # noqa: F811
    """A DCP folder (a process group of one) goes up file by file, `.metadata` last, and
    only once every file it names is there; it comes back and loads."""
    import torch.distributed as dist

    from trainer import checkpoint

    remote, local = f"{bucket}/sharded", tmp_path / "checkpoints"
    weights = {"model": {"w": torch.arange(6.0).reshape(2, 3)}}
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        saved = save_sharded_checkpoint(checkpoint_path(local, 1, sharded=True), weights,
                                        {"step": 1}, rank=0, keep=1, remote_dir=remote)
        real_upload = checkpoint.upload
        monkeypatch.setattr(checkpoint, "upload", lambda f, dest: None if f.name.endswith(
            ".distcp") else real_upload(f, dest))  # a data file lost on the way
        with pytest.raises(CheckpointError, match="step-000002: not uploaded: __0_0.distcp"):
            save_sharded_checkpoint(checkpoint_path(local, 2, sharded=True), weights,
                                    {"step": 2}, rank=0, keep=1, remote_dir=remote)
    finally:
        dist.destroy_process_group()
    assert saved == f"{remote}/step-000001"
    assert s3_server.list(f"{remote}/") == ["sharded/step-000001/.metadata",
                                            "sharded/step-000001/__0_0.distcp",
                                            "sharded/step-000001/rank-00000.pt",
                                            "sharded/step-000002/rank-00000.pt"]
    assert list_checkpoints(remote) == [saved]  # step 2 has no .metadata: not taken
    fetched = fetch_checkpoint(saved, tmp_path / "fetched")
    into = {"model": {"w": torch.zeros(2, 3)}}
    assert load_sharded_checkpoint(fetched, into, rank=0, no_dist=True) == {"step": 1}
    assert torch.equal(into["model"]["w"], weights["model"]["w"])
