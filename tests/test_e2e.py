"""The main job end to end on the demo's real inputs: clean -> tokenizer -> shards
-> trainer -> report, with the demo config shrunk to test size."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.core.config import load_config
from pipeline.core.io import sha256_file
from tests.conftest import small_demo_config

ROOT = Path(__file__).resolve().parents[1]


def _config(out: Path, cache: Path, *extra: str):
    return small_demo_config(out, cache, "trainer.steps=120", "trainer.warmup_steps=10", "trainer.ckpt_every=30",
                             *extra)


def _read_docs(out_dir: Path, source: str) -> list[dict]:
    """A source's cleaned Documents, from the files its clean manifest lists."""
    from pipeline.core.schema import clean_files

    rows = []
    for path in clean_files(str(out_dir), sources=[source]).get(source, []):
        with pa.memory_map(path) as f:
            rows += pa.ipc.open_file(f).read_all().to_pylist()
    return rows


def _without_run(entries: list[dict]) -> dict[str, str]:
    """{file name inside its run folder: sha256} of manifest entries."""
    return {e["file"].split("/", 1)[1]: e["sha256"] for e in entries}


@pytest.fixture(scope="module")
def run(small_demo_run):
    """The session's clean, tokenizer and shards of the demo at test size, then
    the trainer and the report."""
    from pipeline.report import write_report
    from trainer.train import train

    # the local runner must not be Beam's Prism (it downloads a binary at start)
    assert "apache_beam.runners.portability.prism_runner" not in sys.modules
    cfg = _config(small_demo_run["out"], small_demo_run["cache"])
    result = {**small_demo_run, "cfg": cfg}
    result["train"] = train(cfg)
    result["report"] = write_report(cfg)[1]
    return result


def test_clean_funnel_on_real_inputs(run):
    c = run["clean"]["counters"]
    # enwiki sample: 206 pages, 1 outside namespace 0; bgwiki: 3 pages, 2 project pages;
    # table-markup dump: 5 articles.
    wiki = c["wikipedia"]
    assert wiki["skip.namespace"] == 1 + 2
    assert wiki["docs_read"] + wiki["skip.redirect"] + wiki.get("skip.empty", 0) == 205 + 1 + 5
    assert c["books"] == {"docs_read": 2, "docs_kept": 2}
    # at.warc.gz: warcinfo, 2 requests, 3 resources, a 301 and one 200 HTML page
    assert c["commoncrawl"]["skip.record_type"] == 6
    assert c["commoncrawl"]["skip.http_status"] == 1
    assert c["commoncrawl"]["docs_kept"] == 1
    for source, counts in c.items():
        dropped = sum(v for k, v in counts.items() if k.startswith("drop."))
        assert counts["docs_read"] - dropped == counts["docs_kept"], source
    files = run["clean"]["files"]
    assert {f["source"] for f in files} == {"books", "commoncrawl", "github", "wikipedia"}
    from pipeline.inputs import list_inputs

    listed = list_inputs(run["cfg"])
    assert run["clean"]["inputs"]["books"] == [str(run["cache"] / "inputs" / "books" / "*.txt")]
    assert run["clean"]["input_files"]["books"] == len(listed["books"]) == 2
    assert run["clean"]["input_bytes"]["books"] == sum(Path(p).stat().st_size for p, _ in listed["books"])
    assert set(run["clean"]["input_bytes"]) == set(run["clean"]["inputs"]) == {s for s in listed if listed[s]}
    assert sum(f["rows"] for f in files) == sum(v["docs_kept"] for v in c.values())


def test_clean_parts_are_sized_and_numbered_without_gaps(run):
    """The demo's 2 MB parts: GitHub's 8.6 MB in five, Wikipedia's 3 MB in two,
    the books and the one web page in one each."""
    target = run["cfg"].clean.part_bytes
    by_source: dict[str, list[dict]] = {}
    for entry in run["clean"]["files"]:
        by_source.setdefault(entry["source"], []).append(entry)
    assert {s: len(v) for s, v in by_source.items()} == {"books": 1, "commoncrawl": 1, "github": 5, "wikipedia": 2}
    for source, entries in by_source.items():
        names = sorted(e["file"].rsplit("/", 1)[1] for e in entries)
        assert names == [f"part-{i:05d}-of-{len(entries):05d}.arrow" for i in range(len(entries))], source
        if len(entries) > 1:
            assert all(target / 2 <= e["bytes"] <= 2 * target for e in entries), (source, entries)


def test_clean_documents_are_real_cleaned_text(run):
    books = {json.loads(d["meta"])["title"]: d for d in _read_docs(run["out"], "books")}
    assert len(books) == 2
    for doc in books.values():
        assert doc["lang"] == "en" and doc["lang_score"] > 0.5
        assert "Project Gutenberg" not in doc["text"][:2000]
    wiki = _read_docs(run["out"], "wikipedia")
    assert {d["lang"] for d in wiki} == {"en", "bg"}
    for d in wiki:
        assert "[[" not in d["text"] and "{{" not in d["text"]
    assert run["clean"]["dead_letters"] == []  # no dead-letter part: nothing failed to parse


def test_clean_output_is_byte_identical_across_runs_and_workers(run, tmp_path):
    from pipeline.clean import run_clean

    cfg = _config(tmp_path, run["cache"], "beam.direct_num_workers=1", "beam.direct_running_mode=in_memory")
    again = run_clean(cfg)
    assert _without_run(again["files"]) == _without_run(run["clean"]["files"])


def test_shards_are_byte_identical_across_runs_and_workers(run, tmp_path):
    """Same cleaned input and tokenizer, one in-process worker instead of two
    worker processes: the same shard files, byte for byte."""
    import shutil

    from pipeline.shards import run_shards

    shutil.copytree(run["out"] / "clean", tmp_path / "clean")
    cfg = _config(tmp_path, run["cache"], "beam.direct_num_workers=1", "beam.direct_running_mode=in_memory",
                  f"tokenizer.model_prefix={run['out']}/tokenizer/m")
    again = run_shards(cfg)
    assert _without_run(again["shards"]) == _without_run(run["shards"]["shards"])


def test_tokenizer_round_trips_cleaned_documents(run):
    import tokenizer

    assert run["tokenizer"]["skipped_lines"] == 0
    sp = tokenizer.load(run["tokenizer"]["model"])
    docs = [d["text"] for s in ("books", "wikipedia", "commoncrawl") for d in _read_docs(run["out"], s)]
    ids = tokenizer.encode_batch(sp, docs)
    assert tokenizer.decode_batch(sp, ids) == docs
    assert all(0 not in x for x in ids)  # byte fallback: no unk


def test_shards_manifest_and_mixture(run):
    m = run["shards"]
    shard_dir = run["out"] / "shards"
    assert set(m["sources"]) == {"books", "commoncrawl", "github", "wikipedia"}
    for s in m["shards"]:
        path = shard_dir / s["file"]
        assert sha256_file(path) == s["sha256"] and path.stat().st_size == s["bytes"]
        with pa.memory_map(str(path)) as f:
            table = pa.ipc.open_file(f).read_all()
        assert table.num_rows == s["rows"]
        assert table.schema.field("input_ids").type == pa.large_list(pa.uint16())
        ids = table.column("input_ids").combine_chunks()
        assert len(ids.flatten()) == s["tokens"]
        first = ids[0].values.to_numpy()
        assert first[0] == m["tokenizer"]["bos_id"] and first[-1] == m["tokenizer"]["eos_id"]
    assert sum(v["share"] for v in m["sources"].values()) == pytest.approx(1.0)


def test_shard_copies_follow_the_computed_epochs_exactly(run):
    """Re-derive every source's training and validation tokens from the cleaned
    documents: floor(f) copies plus one for the seeded token-weighted selection."""
    import tokenizer
    from pipeline.mixture import hash_unit, plan_copies

    cfg, m = run["cfg"], run["shards"]
    sp = tokenizer.load(run["tokenizer"]["model"])
    total = cfg.shards.total_tokens
    for source, info in m["sources"].items():
        docs = _read_docs(run["out"], source)
        lengths = [len(x) + 2 for x in tokenizer.encode_batch(sp, [d["text"] for d in docs])]  # + BOS, EOS
        val = [hash_unit(cfg.seed, "val", d["id"]) < cfg.shards.val_fraction for d in docs]
        assert info["tokens_available"] == sum(n for n, v in zip(lengths, val) if not v)
        assert info["val_tokens"] == sum(n for n, v in zip(lengths, val) if v)
        epochs = min(info["share"] * total / info["tokens_available"], cfg.shards.max_epochs)
        assert info["epochs"] == pytest.approx(epochs, rel=1e-12)
        train = [(d["id"], n) for d, n, v in zip(docs, lengths, val) if not v]
        copies = plan_copies(train, info["epochs"], cfg.seed)
        written = sum(copies[d] * n for d, n in train)
        assert info["tokens_written"] == written, source
    assert m["sources"]["commoncrawl"]["capped"]  # one web page: capped at max_epochs


def test_training_loss_goes_down_and_report_is_written(run):
    t = run["train"]
    assert t["last_loss"] <= 0.7 * t["first_loss"]
    assert Path(t["checkpoint"]).is_file() and Path(t["plot"]).is_file()
    report = run["report"]
    for source in ("books", "commoncrawl", "github", "wikipedia"):
        assert f"| {source} |" in report
    assert "loss: first" in report
    for source in t["val_loss"]:  # validation loss per source, from the held-out shards
        assert f"| {source} | {t['val_loss'][source]:.4f} |" in report


def test_inputs_take_repository_folders(tmp_path):
    from pipeline.inputs import list_inputs

    (tmp_path / "repo-a").mkdir()
    (tmp_path / "notes.md").write_text("x")
    (tmp_path / "table.jsonl.gz").write_bytes(b"")
    cfg = load_config(ROOT / "configs" / "demo.yaml", [f"sources.github.inputs=[{tmp_path}/*]",
                                                      f"sources.books.inputs=[{tmp_path}/*]"])
    files = {s: [p for p, _ in found] for s, found in list_inputs(cfg).items()}
    assert files["github"] == [str(tmp_path / "repo-a"), str(tmp_path / "table.jsonl.gz")]
    # folders only for folder sources; a .md note is a book, not a GitHub table (counted as unread there)
    assert files["books"] == [str(tmp_path / "notes.md"), str(tmp_path / "table.jsonl.gz")]


def test_clean_refuses_to_start_without_inputs_or_model(tmp_path):
    from pipeline.clean import CleanError, run_clean

    (tmp_path / "corpus" / "wiki").mkdir(parents=True)
    cfg = load_config(ROOT / "configs" / "demo.yaml", [
        f"out_dir={tmp_path}/out", f"sources.books.inputs=[{tmp_path}/none/*.txt]",
        f"corpus_dir={tmp_path}/corpus", f"langid.model={tmp_path}/lid.176.ftz",
    ])
    with pytest.raises(CleanError) as e:
        run_clean(cfg)
    message = str(e.value)
    assert "sources.books.inputs" in message and "matches no file" in message
    assert "['wiki'] are not sources" in message
    assert "lid.176.ftz" in message and "pipeline fetch" in message
    assert not (tmp_path / "out").exists()  # nothing started


def test_one_document_per_id_whatever_the_arrival_order():
    """The same arXiv paper as a `.tex` and inside a `.tar.gz`: same id, text and
    (no) timestamp, other url and meta; the kept one must not depend on order."""
    from pipeline.dedup.exact import KeepOnePerId
    from pipeline.sources.base import make_document

    tex = make_document("arxiv", "1602.00123", "Text.", "a/Unconventional_pairing.tex",
                        meta={"files_merged": ["Unconventional_pairing.tex"]})
    tar = make_document("arxiv", "1602.00123", "Text.", "a/arXiv-1602.00123.tar.gz",
                        meta={"files_merged": ["arXiv-1602.00123_Unconventional_pairing.tex"]})
    from pipeline.beam.packed import pack

    keep = KeepOnePerId()
    keep.setup()
    picks = [next(iter(keep.process((tex["id"], map(pack, docs))))) for docs in ([tex, tar], [tar, tex])]
    assert picks == [tex, tex]  # the smaller url ("U" < "a")


def test_one_job_at_a_time_per_output_folder(tmp_path):
    """A second run on the same output folder fails at once, naming the first
    one's pid, instead of deleting its temporary files; the lock dies with it."""
    import os
    import subprocess
    import sys

    from pipeline.core.io import OutputBusy, exclusive_output

    final = tmp_path / "clean"
    with exclusive_output(final):
        with pytest.raises(OutputBusy, match=rf"{final} is being written by another job \(pid {os.getpid()}"):
            with exclusive_output(final):
                pass
    with exclusive_output(final):  # released: free again
        pass
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pipeline.core.io import exclusive_output\n"
        f"with exclusive_output({str(final)!r}):\n    print('held', flush=True); time.sleep(60)")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputBusy, match=f"pid {holder.pid}"):
            with exclusive_output(final):
                pass
    finally:
        holder.kill()
        holder.wait()
    with exclusive_output(final):  # a killed holder leaves no stale lock
        pass


def test_outputs_the_launcher_cannot_see_fail_the_run(tmp_path):
    """Workers that wrote their parts on a disk the launcher does not share (a
    local out_dir on a distributed runner): the run fails, naming the cause,
    instead of committing a manifest with no files."""
    from types import SimpleNamespace

    from pipeline.clean import CleanError, clean_manifest
    from pipeline.core import io

    def counter(ns, name, value):
        return SimpleNamespace(key=SimpleNamespace(metric=SimpleNamespace(namespace=ns, name=name)),
                               committed=value, attempted=value)

    result = SimpleNamespace(metrics=lambda: SimpleNamespace(query=lambda _: {"counters": [
        counter("books", "docs_read", 2), counter("books", "docs_kept", 2), counter("inputs", "books.files", 2)]}))
    cfg = load_config(ROOT / "configs" / "demo.yaml", [f"out_dir={tmp_path}"])
    with io.Run(tmp_path / "clean") as run, pytest.raises(CleanError, match="do not share"):
        clean_manifest(cfg, run, result, 0.0)
    assert not (tmp_path / "clean" / "manifest.json").exists()


def test_readers_check_the_listed_files_before_reading(tmp_path):
    """A clean file deleted or resized after its manifest was written: named at
    once, with what to rerun, before any job reads it."""
    from pipeline.core.schema import ContractError, clean_files, write_clean_output
    from pipeline.sources.base import make_document

    docs = [make_document("books", str(i), f"text {i}", "u") for i in range(4)]
    table = pa.Table.from_pylist(docs)
    manifest = write_clean_output(str(tmp_path), {"books": [table, table.slice(2)]})
    paths = clean_files(str(tmp_path), manifest)["books"]
    Path(paths[1]).write_bytes(Path(paths[1]).read_bytes()[:-8])
    with pytest.raises(ContractError, match=rf"{paths[1]}: \d+ bytes, its manifest says \d+ .*pipeline clean"):
        clean_files(str(tmp_path), manifest)
    Path(paths[0]).unlink()
    with pytest.raises(ContractError, match=rf"{paths[0]}: listed in .*manifest.json but missing"):
        clean_files(str(tmp_path))
