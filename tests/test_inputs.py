"""Input discovery: each source's accepted formats (`FORMATS`), recursive
folders, files no reader takes counted and named, JSON-lines books, the
"only my data" switch, and the corpus layouts the clean job refuses."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.core.config import SOURCES, ConfigError, load_config
from pipeline import inputs
from pipeline.inputs import (
    discover,
    formats_table,
    listing,
    source_formats,
    source_patterns,
)

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"


def test_each_source_states_its_formats_by_name():
    accepts = {s: source_formats(s).accepts for s in SOURCES}
    assert accepts["books"]("alice29.txt") and accepts["books"]("Vol1.TXT.gz") and accepts["books"]("notes.md")
    assert accepts["books"]("books.jsonl.xz") and not accepts["books"]("paper.pdf")
    assert not accepts["books"]("at.warc.gz")
    assert accepts["commoncrawl"]("CC-MAIN-2024-22_x.warc.wet.gz") and accepts["commoncrawl"]("0.html")
    assert accepts["commoncrawl"]("x.dolma.jsonl.gz") and accepts["commoncrawl"]("x.json.gz")
    assert not accepts["commoncrawl"]("x.json") and not accepts["commoncrawl"]("x.json.bz2")  # read as WARC there
    assert accepts["c4"]("c4-train.00000-of-01024.json.gz") and accepts["c4"]("page.html")
    assert accepts["wikipedia"]("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    assert not accepts["wikipedia"]("enwiki-20230501-pages-articles-multistream-index.txt.bz2")
    assert source_formats("wikipedia").is_companion("enwiki-20230501-pages-articles-multistream-index.txt.bz2")
    assert accepts["stackexchange"]("beer.stackexchange.com_2017-03_Posts.xml")
    assert not accepts["stackexchange"]("Users.xml")  # a dump's other table: no posts
    assert accepts["arxiv"]("arXiv-1602.00123_src.tar.gz") and accepts["arxiv"]("1602.00123.gz")
    assert accepts["github"]("site-packages.jsonl.gz") and not accepts["github"]("README.md")
    assert source_formats("github").is_record_folder(["src", "LICENSE"])
    assert not source_formats("github").is_record_folder(["src", "a.py"])
    assert source_formats("arxiv").is_record_folder(["main.tex", "fig.png"])


def test_the_readme_table_is_the_sources_own():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = re.search(r"<!-- formats:[^\n]*-->\n(.*?)\n<!-- /formats -->", readme, re.DOTALL)
    assert table is not None and table.group(1) == formats_table()
    for source in SOURCES:
        assert f"| {source} | {source_formats(source).describe} |" in table.group(1)


@pytest.fixture()
def corpus(tmp_path, demo_inputs) -> Path:
    """A user's folder: books nested two deep, a .md book, books as JSON lines,
    a PDF and a WARC among them, a repository and a stray file beside GitHub
    tables, a paper folder one level down, a file outside any source folder."""
    root = tmp_path / "corpus"
    (root / "books" / "vol1" / "part2").mkdir(parents=True)
    shutil.copy(demo_inputs["inputs/books/alice29.txt"], root / "books" / "vol1" / "alice29.txt")
    shutil.copy(demo_inputs["inputs/books/plrabn12.txt"], root / "books" / "vol1" / "part2" / "paradise.md")
    rows = [{"id": "b1", "title": "One", "text": "The first book. " * 30},
            {"id": "b2", "text": "   "},
            {"title": "no text"}]
    (root / "books" / "more.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "books" / "scan.pdf").write_bytes(b"%PDF-1.5\n")
    shutil.copy(demo_inputs["inputs/commoncrawl/at.warc.gz"], root / "books" / "at.warc.gz")
    repo = root / "github" / "someone" / "tool"
    (repo / "src").mkdir(parents=True)
    (repo / "LICENSE").write_text("MIT License\n")
    (repo / "src" / "tool.py").write_text("def main():\n    return 1\n")
    (root / "github" / "README.md").write_text("notes\n")
    (root / "arxiv" / "2301" / "paper").mkdir(parents=True)
    (root / "arxiv" / "2301" / "paper" / "main.tex").write_text("\\documentclass{article}\n")
    (root / "loose.txt").write_text("not in a source folder\n")
    return root


def test_folders_are_searched_and_unread_files_named(corpus):
    books = discover("books", f"{corpus}/books/")
    assert [p for p, _ in books.records] == [str(corpus / "books" / n) for n in
                                             ("more.jsonl", "vol1/alice29.txt", "vol1/part2/paradise.md")]
    assert [(Path(p).name, r) for p, _, r in books.unread] == [
        ("at.warc.gz", "not a books input: commoncrawl and c4 read this format"),
        ("scan.pdf", "not a books input")]
    assert books.records[1][1] == (corpus / "books" / "vol1" / "alice29.txt").stat().st_size
    github = discover("github", f"{corpus}/github/")
    assert github.records == [(str(corpus / "github" / "someone" / "tool"), 12 + 25)]  # the repository, whole
    assert [(Path(p).name, r) for p, _, r in github.unread] == [("README.md", "not a github input: books reads this format")]
    assert discover("arxiv", f"{corpus}/arxiv/").records == [(str(corpus / "arxiv" / "2301" / "paper"), 24)]
    # a pattern that names a folder: searched for a file source, one record for a folder source
    assert discover("books", str(corpus / "books" / "vol1")).records == books.records[1:]
    assert discover("github", str(corpus / "github" / "someone")).records == [(str(corpus / "github" / "someone"), 37)]


def test_corpus_only_reads_the_corpus_alone(corpus):
    cfg = load_config(DEMO, [f"corpus_dir={corpus}", "corpus_only=true"])
    assert source_patterns(cfg) == [(s, f"{corpus}/{s}/") for s in SOURCES]
    found = listing(cfg)
    assert {s: len(f.records) for s, f in found.items() if f.records} == {"github": 1, "books": 3, "arxiv": 1}
    with_demo = source_patterns(load_config(DEMO, [f"corpus_dir={corpus}"]))
    assert ("books", ".cache/inputs/books/*.txt") in with_demo and ("books", f"{corpus}/books/") in with_demo
    with pytest.raises(ConfigError, match="corpus_only needs corpus_dir"):
        load_config(DEMO, ["corpus_only=true"])


def test_clean_refuses_layouts_it_would_not_read(tmp_path, lid_model):
    from pipeline.clean import CleanError, check_inputs

    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.txt").write_text("a book\n")
    base = [f"out_dir={tmp_path}/out", f"langid.model={lid_model}", "clean.c4.badwords=null"]
    with pytest.raises(CleanError, match=r"holds no source folder.*books/; 1 file at its top would not be read"):
        check_inputs(load_config(DEMO, [*base, f"corpus_dir={flat}", "corpus_only=true"]))
    (tmp_path / "pdfs").mkdir()
    (tmp_path / "pdfs" / "a.pdf").write_bytes(b"%PDF")
    with pytest.raises(CleanError, match=r"'.*pdfs/\*' matches only files no books reader takes, e.g. .*a.pdf "
                                         r"\(not a books input\)"):
        check_inputs(load_config(DEMO, [*base, f"sources.books.inputs=[{tmp_path}/pdfs/*]"]))


def test_books_as_json_lines(tmp_path):
    from pipeline.sources import books
    from pipeline.sources.base import DeadLetter, Skip

    path = tmp_path / "books.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": 7, "title": "Seven", "text": "  A whole book.\n", "url": "https://example.org/7"},
        {"text": ""}, {"text": 3}, {"text": "Second."}]) + "not json\n")
    out = list(books.read(str(path)))
    assert [type(r).__name__ for r in out] == ["dict", "Skip", "DeadLetter", "dict", "DeadLetter"]
    assert out[0]["text"] == "A whole book." and out[0]["url"] == "https://example.org/7"
    assert json.loads(out[0]["meta"]) == {"title": "Seven"}
    assert out[1] == Skip("books", "empty")
    assert out[2] == DeadLetter("books", str(path), "line 3", "no string 'text' field (a JSON-lines book is one "
                                                            "row with its text in \"text\")")
    assert out[3]["url"] == str(path) and out[3]["id"] != out[0]["id"]
    assert out[4].record == "line 5" and out[4].reason.startswith("bad JSON")


def test_clean_job_reads_a_corpus_alone_and_names_what_it_did_not_read(corpus, tmp_path, lid_model):
    """`corpus_only`: the demo's inputs are left out; the nested books, the
    .md book and the JSON-lines rows are read; the PDF, the WARC among books and
    the README beside GitHub's repositories are counted, named in the manifest,
    in one warning line and in the report."""
    out = tmp_path / "out"
    sets = [f"corpus_dir={corpus}", "corpus_only=true", f"out_dir={out}", f"langid.model={lid_model}",
            "clean.c4.badwords=null", "beam.direct_num_workers=1"]
    cmd = [sys.executable, "-m", "pipeline", "clean", "--config", str(DEMO)]
    for item in sets:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if "not read" in line]
    loose = f"WARNING pipeline.clean: corpus_dir {corpus}: 1 file outside the source folders is not read: loose.txt"
    unread = ("WARNING pipeline.clean: 3 input files found but not read (a format no reader takes, or a name that "
              "is not UTF-8): github: 1 "
              "(README.md); books: 2 (at.warc.gz, scan.pdf); each is named with the reason in the clean manifest "
              "(unread_inputs) and the report; `clean --help` lists the formats")
    assert warnings == [loose, unread]
    manifest = json.loads((out / "clean" / "manifest.json").read_text())
    assert manifest["input_files"] == {"github": 1, "books": 3, "arxiv": 1}
    assert manifest["unread_inputs"]["files"] == {"github": 1, "books": 2}
    assert [(Path(e["path"]).name, e["reason"]) for e in manifest["unread_inputs"]["listed"]] == [
        ("at.warc.gz", "not a books input: commoncrawl and c4 read this format"),
        ("scan.pdf", "not a books input"), ("README.md", "not a github input: books reads this format")]
    assert manifest["counters"]["books"]["docs_read"] == 3  # two files, one JSON row with text
    assert manifest["counters"]["books"]["skip.empty"] == 1 and manifest["counters"]["books"]["dead_letter"] == 1
    docs = []
    for entry in manifest["files"]:
        with pa.memory_map(str(out / "clean" / entry["file"])) as f:
            docs += pa.ipc.open_file(f).read_all().to_pylist()
    assert {Path(d["url"]).name for d in docs if d["source"] == "books"} >= {"alice29.txt", "paradise.md"}
    from pipeline.report import build_report

    report = build_report(load_config(DEMO, sets))
    assert "Input files found but not read: 3 (github: 1, books: 2)" in report
    assert f"| books | `{corpus}/books/scan.pdf` | not a books input |" in report


def test_a_file_name_that_is_not_utf8_is_unread_and_named(tmp_path):
    """Such a name reaches Python with lone surrogates, which Beam's coders
    refuse: the file is unread, with its reason, and everything listed encodes."""
    from apache_beam.coders.coders import FastPrimitivesCoder

    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "alice.txt").write_text("Alice was beginning to get very tired.", encoding="utf-8")
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.txt"), "wb") as f:
        f.write(b"Latin-1 name.")
    found = discover("books", f"{folder}/")
    assert [(Path(p).name, n) for p, n in found.records] == [("alice.txt", 38)]
    assert [(Path(p).name, n, r) for p, n, r in found.unread] == [("caf\\xe9.txt", 13, inputs.NOT_UTF8)]
    coder = FastPrimitivesCoder()
    for item in [*found.records, *found.unread]:
        assert coder.decode(coder.encode(("books", *item))) == ("books", *item)
    assert discover("books", f"{folder}/*.txt").unread == found.unread  # a glob finds it the same way
