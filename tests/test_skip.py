"""Stage skipping: `clean`, `tokenizer train` and `shards` skip a run whose
inputs and settings did not change, each in one line, and leave the outputs
byte for byte as they were; --force reruns; a changed input file or setting
reruns what it changes."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"


def _tree(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of the files under `folder`, run folders' names left out."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.endswith(".lock"):
            rel = "/".join("run-*" if part.startswith("run-") else part for part in path.relative_to(folder).parts)
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory, demo_inputs, lid_model):
    tmp = tmp_path_factory.mktemp("skip")
    (tmp / "corpus" / "books").mkdir(parents=True)
    for name in ("alice29.txt", "plrabn12.txt"):
        shutil.copy(demo_inputs[f"inputs/books/{name}"], tmp / "corpus" / "books" / name)
    sets = [f"corpus_dir={tmp}/corpus", "corpus_only=true", f"out_dir={tmp}/out", f"langid.model={lid_model}",
            "clean.c4.badwords=null", "tokenizer.vocab_size=1000", "shards.total_tokens=200000",
            "shards.shard_tokens=100000", "beam.direct_num_workers=1"]
    return tmp, sets


def _run(sets: list[str], *argv: str) -> str:
    cmd = [sys.executable, "-m", *argv, "--config", str(DEMO)]
    for item in sets:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"{argv}: {proc.stderr[-3000:]}"
    return proc.stdout


STAGES = (("pipeline", "clean"), ("tokenizer", "train"), ("pipeline", "shards"))


def test_a_second_run_skips_every_stage_and_changes_nothing(setup):
    tmp, sets = setup
    first = [_run(sets, *stage) for stage in STAGES]
    assert not any(out.startswith(("clean: skipped", "tokenizer: skipped", "shards: skipped")) for out in first)
    outputs = _tree(tmp / "out")
    manifest = (tmp / "out" / "clean" / "manifest.json").read_text()
    second = [_run(sets, *stage) for stage in STAGES]
    assert [out.splitlines()[0].split(":")[:2] for out in second] == [
        ["clean", " skipped"], ["tokenizer", " skipped"], ["shards", " skipped"]]
    assert all(len(out.splitlines()) == 1 for out in second), second
    assert "(--force reruns it)" in second[0] and "(--force retrains it)" in second[1]
    assert _tree(tmp / "out") == outputs
    assert (tmp / "out" / "clean" / "manifest.json").read_text() == manifest  # the same run, untouched


def test_force_reruns_and_writes_the_same_bytes(setup):
    tmp, sets = setup
    before = _tree(tmp / "out" / "shards")
    out = _run(sets, "pipeline", "shards", "--force")
    assert out.startswith("shards: ") and not out.startswith("shards: skipped")
    assert _tree(tmp / "out" / "shards") == {**before, "manifest.json": _tree(tmp / "out" / "shards")["manifest.json"]}


def test_what_changed_reruns(setup):
    """A share reruns the tokenizer and the shards, not clean; a rewritten
    input file reruns clean."""
    from pipeline.clean import up_to_date

    tmp, sets = setup
    changed = [*sets, "sources.books.share=9"]
    assert _run(changed, "pipeline", "clean").startswith("clean: skipped")
    assert _run(changed, "tokenizer", "train").startswith("model: ")
    assert _run(changed, "pipeline", "shards").startswith("shards: ")
    cfg = load_config(DEMO, sets)
    assert up_to_date(cfg) is not None
    book = tmp / "corpus" / "books" / "alice29.txt"
    stat = book.stat()
    os.utime(book, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert up_to_date(cfg) is None
    os.utime(book, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert up_to_date(cfg) is not None
    (tmp / "corpus" / "books" / "notes.pdf").write_bytes(b"%PDF")  # an unread file changes the listing too
    assert up_to_date(cfg) is None
