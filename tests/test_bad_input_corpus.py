"""The clean job on a corpus of bad inputs of every source (`tests.badinput`),
as one job from the command line: it must finish, account for every record
(a Document kept or dropped, a skip or a dead letter, each by reason), let
nothing from outside its input folder into its output, and write only clean
text (no control characters but tab and newline, no lone surrogates, no more
U+FFFD than `pipeline.formats.decode` accepts)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest

from pipeline.core.config import SOURCES
from pipeline.formats.decode import MAX_REPLACED_SHARE
from pipeline.core.schema import DOCUMENT_FIELDS, clean_dir, clean_files, load_clean_manifest
from tests import badinput

ROOT = Path(__file__).resolve().parents[1]
# Small enough that the larger inputs (plain JSON lines, Parquet, per-record gzip
# WARCs, the multistream dump with its index) are read as spans, as at scale.
SPLIT_BYTES = 16384
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # Unicode Cc but tab and newline
SURROGATE = re.compile(r"[\ud800-\udfff]")


@pytest.fixture(scope="module")
def run(tmp_path_factory, demo_inputs):
    """The corpus written, `python -m pipeline clean` run on it, its output read."""
    tmp = tmp_path_factory.mktemp("badinput")
    corpus, out = tmp / "corpus", tmp / "out"
    cases = badinput.write_corpus(demo_inputs, corpus, tmp / "outside")
    cache = demo_inputs["models/lid.176.ftz"].parents[1]
    sets = [*(f"sources.{s}.inputs=[]" for s in SOURCES), f"corpus_dir={corpus}", f"out_dir={out}",
            f"cache_dir={cache}", f"langid.model={cache}/models/lid.176.ftz", f"clean.split_bytes={SPLIT_BYTES}"]
    cmd = [sys.executable, "-m", "pipeline", "clean", "--config", str(ROOT / "configs" / "demo.yaml")]
    for item in sets:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    result = SimpleNamespace(proc=proc, cases=cases, corpus=corpus, out=out, manifest=None, docs=[], dead=[])
    if proc.returncode == 0:
        result.manifest = load_clean_manifest(str(out))
        for paths in clean_files(str(out), result.manifest).values():
            for path in paths:
                with pa.memory_map(path) as f:
                    result.docs += pa.ipc.open_file(f).read_all().to_pylist()
        for entry in result.manifest["dead_letters"]:
            lines = (Path(clean_dir(str(out))) / entry["file"]).read_text("utf-8", "surrogatepass").split("\n")
            result.dead += [json.loads(line) for line in lines if line]
    return result


def _finished(run) -> None:
    if run.proc.returncode != 0:
        pytest.fail(f"the clean job failed (exit {run.proc.returncode}):\n{run.proc.stderr[-6000:]}")


def test_clean_job_finishes(run):
    """It exits 0, having read every file of the corpus (a dump's index is not an input)."""
    _finished(run)
    files = Counter(c.source for c in run.cases for e in c.entries if not e.endswith("-index.txt.bz2"))
    assert run.manifest["input_files"] == dict(files)


def _stage_failures(run) -> list[dict]:
    """Dead letters of a stage that raised on a Document ("<stage>: <error>"),
    not of a reader that could not parse a record."""
    stages = {"read"} | {k.split(".", 1)[1] for counts in run.manifest["counters"].values()
                         for k in counts if k.startswith("dead_letter.")}
    return [d for d in run.dead if d["reason"].split(": ", 1)[0] in stages]


def test_every_record_counted_once_by_reason(run):
    """Per source: the readers' Documents, skips by reason and dead letters are
    what each case says of itself; every record is kept, dropped, skipped or
    dead-lettered, each by reason, exactly once; the kept are the rows written."""
    _finished(run)
    problems = [f"a stage raised: {d}" for d in _stage_failures(run)]
    by_case: dict[str, list[str]] = {c.name: [] for c in run.cases}
    for letter in run.dead:
        if letter in _stage_failures(run):
            continue
        owner = badinput.case_of(run.cases, run.corpus, letter["path"])
        if owner is None or owner.source != letter["source"]:
            problems.append(f"dead letter of no case: {letter}")
        else:
            by_case[owner.name].append(letter["reason"][:150])
    for case in run.cases:
        if len(by_case[case.name]) != case.expect.dead:
            problems.append(f"{case.name} ({case.doc}): {len(by_case[case.name])} dead letters, "
                            f"expected {case.expect.dead}: {by_case[case.name]}")
    rows = Counter()
    for entry in run.manifest["files"]:
        rows[entry["source"]] += entry["rows"]
    for source in SOURCES:
        cases = [c for c in run.cases if c.source == source]
        got = run.manifest["counters"].get(source, {})
        skips, counts = Counter(), Counter()
        for c in cases:
            skips.update(c.expect.skips)
            counts.update(c.expect.counts)
        want = {"docs_read": sum(c.expect.docs for c in cases),
                **{f"skip.{k}": v for k, v in skips.items()}, **counts}
        for key, value in want.items():
            if got.get(key, 0) != value:
                problems.append(f"{source}: {key} is {got.get(key, 0)}, expected {value}")
        problems += [f"{source}: unexpected {k} = {v}" for k, v in got.items() if k.startswith("skip.") and k not in want]
        def total(prefix: str, got: dict = got) -> int:
            return sum(v for k, v in got.items() if k.startswith(prefix))

        letters = sum(d["source"] == source for d in run.dead)
        if got.get("dead_letter", 0) != letters:
            problems.append(f"{source}: counter dead_letter {got.get('dead_letter', 0)}, {letters} in the files")
        records = sum(c.expect.records for c in cases)
        notices = sum(c.expect.notices for c in cases)
        accounted = got.get("docs_kept", 0) + total("drop.") + total("skip.") + letters - notices
        if records != accounted:
            problems.append(f"{source}: {records} records in, {accounted} kept, dropped, skipped or "
                            f"dead-lettered ({got})")
        if got.get("docs_read", 0) != got.get("docs_kept", 0) + total("drop.") + total("dead_letter."):
            problems.append(f"{source}: docs_read is not kept + dropped + failed in a stage ({got})")
        if got.get("docs_kept", 0) != rows[source]:
            problems.append(f"{source}: docs_kept {got.get('docs_kept', 0)}, {rows[source]} rows written")
    assert not problems, "\n".join(problems)


def test_nothing_from_outside_the_input_folder(run):
    """Links and external entities point at a file beside the corpus: its text
    is in no Document, no dead letter, no file of the output."""
    _finished(run)
    leaks = [d["id"] for d in run.docs if any(badinput.CANARY in str(d[f]) for f in DOCUMENT_FIELDS)]
    leaks += [str(d) for d in run.dead if badinput.CANARY in json.dumps(d, ensure_ascii=False)]
    marker = badinput.CANARY.encode()
    leaks += [str(p) for p in run.out.rglob("*") if p.is_file() and marker in p.read_bytes()]
    assert not leaks


def test_documents_are_clean_text(run):
    """No control character but tab and newline, no lone surrogate, and at most
    MAX_REPLACED_SHARE of a text's characters U+FFFD, in any Document."""
    _finished(run)
    bad = []
    for d in run.docs:
        text = d["text"]
        where = f"{d['source']} {d['url'] or d['id']}"
        if m := CONTROL.search(text):
            bad.append(f"{where}: control character {m.group()!r} at {m.start()}")
        if m := SURROGATE.search(text):
            bad.append(f"{where}: lone surrogate {m.group()!r} at {m.start()}")
        if text.count("\ufffd") > MAX_REPLACED_SHARE * len(text):
            bad.append(f"{where}: {text.count(chr(0xFFFD))} U+FFFD in {len(text)} characters")
    assert run.docs, "no Document was written"
    assert not bad, "\n".join(bad)
