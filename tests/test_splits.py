"""Large inputs read in spans by several workers (a source's `split`, then
`read(path, cfg, span)`), on real data: the spans of a file give exactly the
records of its whole read, each once, for every split size tried.

- Wikipedia multistream dumps, built here from the demo's dumps (and the shared
  corpus's when present) as Wikimedia writes them: the root element and
  `<siteinfo>` in a first bz2 stream, then independent streams of 100 pages
  (or fewer), `</mediawiki>` in the last, and an index of `offset:page_id:title`
  lines beside the dump;
- JSON lines by line ranges, WARC/WET gzip files by members (Parquet row
  groups: tests/test_source_github.py);
- the same spans and records through Beam's S3 filesystem (moto's server);
- the clean job with a small `clean.split_bytes`: the same output files, byte
  for byte, as without splits.
"""

from __future__ import annotations

import bz2
import gzip
import itertools
import json
import re
import zlib
from collections import Counter
from pathlib import Path

import pytest

from pipeline.core.config import load_config
from pipeline.core.schema import doc_id
from pipeline.formats.jsonl import iter_json_lines, line_spans
from pipeline.inputs import discover, expand
from pipeline.sources import commoncrawl, source_hook, wikipedia
from pipeline.sources.base import DeadLetter, Skip
from tests.cluster import launcher_filesystems, s3_server  # noqa: F401 - fixtures
from tests.conftest import clean_config

ROOT = Path(__file__).resolve().parents[1]
CFG = load_config(ROOT / "configs" / "demo.yaml")
EN = "inputs/wikipedia/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
BG = "inputs/wikipedia/bgwiki-latest-pages-articles-shortened.xml.bz2"
DEMO_WARC = "inputs/commoncrawl/at.warc.gz"
GITHUB = "inputs/github/site-packages.jsonl.gz"
DATE = "20230501"  # the dumps built here are named like Wikimedia's of that date


def with_split(split_bytes: int):
    """The demo config with `clean.split_bytes` set."""
    return CFG.model_copy(update={"clean": CFG.clean.model_copy(update={"split_bytes": split_bytes})})


def key(record) -> str:
    """A record as comparable text (Documents, Skips and DeadLetters alike)."""
    return json.dumps(record, sort_keys=True) if isinstance(record, dict) else repr(record)


def read_spans(module, path: Path | str, spans) -> list:
    return [r for span in spans for r in module.read(str(path), CFG, span)]


# --- Wikipedia multistream dumps ---------------------------------------------------


def build_multistream(xml: str, pages_per_stream: int = 100, end_alone: bool = False,
                      encoding: str = "utf-8") -> tuple[bytes, str]:
    """(a multistream dump, its index text) made of a whole dump's XML text.

    The lines before the first `<page>` line (root, siteinfo) are the first bz2
    stream; then `pages_per_stream` pages per stream; `</mediawiki>` ends the
    last one, or is a stream of its own (`end_alone`, in no index line). A
    UTF-16 dump keeps its byte-order mark at the file's start only.
    """
    lines = xml.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == "<page>"]
    end = next(i for i in range(len(lines) - 1, -1, -1) if lines[i].strip() == "</mediawiki>")
    bounds = [*starts, end]
    pages = ["".join(lines[a:b]) for a, b in itertools.pairwise(bounds)]
    chunks = ["".join(lines[: starts[0]])]
    chunks += ["".join(pages[i : i + pages_per_stream]) for i in range(0, len(pages), pages_per_stream)]
    tail = "".join(lines[end:])
    if end_alone:
        chunks.append(tail)
    else:
        chunks[-1] += tail
    body = "utf-16-le" if encoding == "utf-16" else encoding
    streams = [bz2.compress(chunks[0].encode(encoding))] + [bz2.compress(c.encode(body)) for c in chunks[1:]]
    index, offset = [], len(streams[0])
    for chunk, stream in zip(chunks[1:], streams[1:]):
        for title, page_id in re.findall(r"<title>(.*?)</title>.*?<id>(\d+)</id>", chunk, re.DOTALL):
            index.append(f"{offset}:{page_id}:{title}\n")
        offset += len(stream)
    return b"".join(streams), "".join(index)


def write_multistream(folder: Path, db: str, xml: str, **kw) -> Path:
    """A multistream dump and its bz2 index under Wikimedia's names in `folder`."""
    dump, index = build_multistream(xml, **kw)
    path = folder / f"{db}-{DATE}-pages-articles-multistream.xml.bz2"
    path.write_bytes(dump)
    Path(wikipedia.index_path(str(path))).write_bytes(bz2.compress(index.encode("utf-8")))
    return path


def stream_offsets(path: Path) -> list[int]:
    """Where each bz2 stream of a file starts, found by decompressing it."""
    data, offsets, pos = path.read_bytes(), [], 0
    while pos < len(data):
        offsets.append(pos)
        d = bz2.BZ2Decompressor()
        d.decompress(data[pos:])
        pos = len(data) - len(d.unused_data)
    return offsets


def page_count(xml: str) -> int:
    return sum(line.strip() == "<page>" for line in xml.splitlines())


@pytest.fixture(scope="module")
def en_xml(demo_inputs) -> str:
    return bz2.decompress(demo_inputs[EN].read_bytes()).decode("utf-8")


@pytest.fixture(scope="module")
def en_whole(demo_inputs) -> list:
    """The demo's English dump read whole, as fetched (one bz2 stream)."""
    return list(wikipedia.read(str(demo_inputs[EN])))


@pytest.fixture(scope="module")
def en_dump(tmp_path_factory, en_xml) -> Path:
    return write_multistream(tmp_path_factory.mktemp("multistream"), "enwiki", en_xml)


def test_multistream_dump_reads_whole_like_the_original(en_dump, en_xml, en_whole):
    # 206 pages: streams of 100, 100 and 6 pages after the header stream
    assert page_count(en_xml) == 206 and len(stream_offsets(en_dump)) == 4
    assert len(en_whole) == 206 and not any(isinstance(r, DeadLetter) for r in en_whole)
    assert list(wikipedia.read(str(en_dump))) == en_whole


@pytest.mark.parametrize("split_bytes, n_spans", [(1, 4), (200_000, 3), (700_000, 2), (10**9, 0)])
def test_multistream_spans_give_every_page_once(en_dump, en_whole, split_bytes, n_spans):
    size = en_dump.stat().st_size
    spans = wikipedia.split(str(en_dump), size, with_split(split_bytes))
    assert len(spans) == n_spans
    if split_bytes == 1:  # one span per stream, the header's included
        offsets = stream_offsets(en_dump)
        assert spans == list(zip(offsets, [*offsets[1:], size]))
    if spans:
        assert spans[0][0] == 0 and spans[-1][1] == size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    records = read_spans(wikipedia, en_dump, spans) if spans else list(wikipedia.read(str(en_dump)))
    assert sorted(map(key, records)) == sorted(map(key, en_whole))
    ids = [r["id"] for r in records if isinstance(r, dict)]
    assert len(ids) == len(set(ids)) == sum(isinstance(r, dict) for r in en_whole) > 90


def test_every_span_finds_the_header(tmp_path, en_xml):
    # named as another wiki's dump: without the siteinfo (<dbname>enwiki) the
    # language would come from the file name
    dump = write_multistream(tmp_path, "frwiki", en_xml)
    spans = wikipedia.split(str(dump), dump.stat().st_size, with_split(1))
    assert len(spans) == 4
    for span in spans[1:]:
        docs = [r for r in wikipedia.read(str(dump), CFG, span) if isinstance(r, dict)]
        assert docs and {d["lang"] for d in docs} == {"en"}
        assert all(d["url"].startswith("https://en.wikipedia.org/wiki/") for d in docs)
        pages = [json.loads(d["meta"])["page_id"] for d in docs]
        assert [d["id"] for d in docs] == [doc_id("wikipedia", f"enwiki:{p}") for p in pages]


@pytest.mark.parametrize("pages_per_stream, end_alone", [(37, False), (100, True), (1, True)])
def test_streams_of_any_size_and_a_closing_stream(tmp_path, en_xml, en_whole, pages_per_stream, end_alone):
    dump = write_multistream(tmp_path, "enwiki", en_xml, pages_per_stream=pages_per_stream, end_alone=end_alone)
    spans = wikipedia.split(str(dump), dump.stat().st_size, with_split(1))
    # one span per stream: the header's, the pages', and `</mediawiki>`'s own (in the last span)
    assert len(spans) == 1 + -(-206 // pages_per_stream) == len(stream_offsets(dump)) - end_alone
    assert sorted(map(key, read_spans(wikipedia, dump, spans))) == sorted(map(key, en_whole))


def test_utf16_dump_in_spans(tmp_path, demo_inputs):
    # bgwiki: UTF-16LE with a byte-order mark; one page per stream
    xml = bz2.decompress(demo_inputs[BG].read_bytes()).decode("utf-16")
    dump = write_multistream(tmp_path, "bgwiki", xml, pages_per_stream=1, encoding="utf-16")
    whole = list(wikipedia.read(str(demo_inputs[BG])))
    spans = wikipedia.split(str(dump), dump.stat().st_size, with_split(1))
    assert len(spans) == 4
    records = read_spans(wikipedia, dump, spans)
    assert sorted(map(key, records)) == sorted(map(key, whole))
    assert [r["lang"] for r in records if isinstance(r, dict)] == ["bg"]
    assert Counter(r.reason for r in records if isinstance(r, Skip)) == {"namespace": 2}


def test_cut_dump_gives_the_same_pages_and_dead_letter(tmp_path, en_dump):
    # the file ends 1000 bytes into its last stream: the spans read what the whole read reads
    offsets = stream_offsets(en_dump)
    cut = tmp_path / en_dump.name
    cut.write_bytes(en_dump.read_bytes()[: offsets[-1] + 1000])
    Path(wikipedia.index_path(str(cut))).write_bytes(Path(wikipedia.index_path(str(en_dump))).read_bytes())
    whole = list(wikipedia.read(str(cut)))
    assert isinstance(whole[-1], DeadLetter) and whole[-1].reason.startswith("truncated dump: EOFError")
    spans = wikipedia.split(str(cut), cut.stat().st_size, with_split(1))
    assert len(spans) == 4
    records = read_spans(wikipedia, cut, spans)
    assert sorted(map(key, records[:-1])) == sorted(map(key, whole[:-1]))
    # the last span was cut before its first page ended: the dead letter names its bytes
    assert records[-1] == whole[-1]._replace(record=f"before the first page of bytes {offsets[-1]}-{len(cut.read_bytes())}")


def test_no_split_without_an_index_or_with_a_wrong_one(tmp_path, en_dump, demo_inputs):
    size = en_dump.stat().st_size
    plain = demo_inputs[EN]
    assert wikipedia.split(str(plain), plain.stat().st_size, with_split(1)) == []  # not a multistream name
    alone = tmp_path / en_dump.name
    alone.write_bytes(en_dump.read_bytes())
    assert wikipedia.split(str(alone), size, with_split(1)) == []  # no index beside it
    offsets = stream_offsets(en_dump)
    Path(wikipedia.index_path(str(alone))).write_bytes(bz2.compress(f"{offsets[1] + 7}:12:Anarchism\n".encode()))
    assert wikipedia.split(str(alone), size, with_split(1)) == []  # not a stream's start: read whole


def test_index_names():
    stem = "gs://mirror/enwiki/20230501/enwiki-20230501-pages-articles-multistream"
    assert wikipedia.index_path(f"{stem}.xml.bz2") == f"{stem}-index.txt.bz2"
    assert wikipedia.index_path(f"{stem}3.xml-p151574p311329.bz2") == f"{stem}-index3.txt-p151574p311329.bz2"
    assert wikipedia.index_path("/d/enwiki-20230501-pages-articles.xml.bz2") is None
    assert wikipedia.is_index(f"{stem}-index.txt.bz2") and wikipedia.is_index(f"{stem}-index3.txt-p1p9.bz2")
    assert not wikipedia.is_index(f"{stem}.xml.bz2")


def test_select_dumps_keeps_one_edition_per_database_and_date():
    d = "s3://mirror/"
    listing = [
        "enwiki-20230501-pages-articles-multistream-index.txt.bz2",
        "enwiki-20230501-pages-articles-multistream-index1.txt-p1p41242.bz2",
        "enwiki-20230501-pages-articles-multistream.xml.bz2",
        "enwiki-20230501-pages-articles-multistream1.xml-p1p41242.bz2",
        "enwiki-20230501-pages-articles-multistream2.xml-p41243p151573.bz2",
        "enwiki-20230501-pages-articles.xml.bz2",
        "enwiki-20230501-pages-articles1.xml-p1p41242.bz2",
        "enwiki-20230601-pages-articles1.xml-p1p41242.bz2",  # another date: its own dump
        "dewiki-20230501-pages-articles-multistream1.xml-p1p297012.bz2",
        "dewiki-20230501-pages-articles-multistream2.xml-p297013p1262093.bz2",
        "dewiki-20230501-pages-articles1.xml-p1p297012.bz2",
        "bgwiki-latest-pages-articles.xml.bz2",
        "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",  # not the convention
    ]
    kept = wikipedia.select_dumps([(d + name, i) for i, name in enumerate(listing)])
    assert [(p.removeprefix(d), i) for p, i in kept] == [(listing[i], i) for i in (2, 7, 8, 9, 11, 12)]


def test_expand_drops_index_files_and_parts(tmp_path):
    names = ["enwiki-20230501-pages-articles-multistream-index.txt.bz2",
             "enwiki-20230501-pages-articles-multistream.xml.bz2",
             "enwiki-20230501-pages-articles-multistream1.xml-p1p41242.bz2",
             "enwiki-20230501-pages-articles-multistream-index1.txt-p1p41242.bz2"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    pattern = str(tmp_path / "*.bz2")
    assert expand("wikipedia", pattern) == [(str(tmp_path / names[1]), 1)]
    assert expand("wikipedia", str(tmp_path / "*-index*"), limit=1) == []
    (first,) = expand("wikipedia", pattern, limit=1)  # a check that the pattern matches a dump
    assert not wikipedia.is_index(first[0])
    books = discover("books", pattern)  # the rule is Wikipedia's: for books the names alone decide
    assert books.records == [(str(tmp_path / names[0]), 1)] and len(books.unread) == 3


SHARED_DUMPS = ["bnwiki", "elwiki", "hywiki", "jawiki", "ukwiki", "viwiki"]


@pytest.mark.parametrize("db", SHARED_DUMPS)
def test_shared_corpus_dumps_in_spans(shared_corpus, tmp_path, db):
    source = shared_corpus / "wikipedia" / f"{db}-pages-articles-multistream.fragment.xml.bz2"
    xml = bz2.decompress(source.read_bytes()).decode("utf-8")
    whole = list(wikipedia.read(str(source)))
    assert len(whole) == page_count(xml)
    for pages_per_stream, thirds in ((100, False), (10, True)):
        dump = write_multistream(tmp_path, db, xml, pages_per_stream=pages_per_stream)
        size, offsets = dump.stat().st_size, stream_offsets(dump)
        assert len(offsets) == 1 + -(-page_count(xml) // pages_per_stream)
        split_bytes = size // 3 if thirds else 1  # spans of several streams, or one per stream
        spans = wikipedia.split(str(dump), size, with_split(split_bytes))
        assert spans == wikipedia.stream_spans(offsets[1:], size, split_bytes)
        assert len(spans) in (2, 3) if thirds else len(spans) == len(offsets)
        assert sorted(map(key, read_spans(wikipedia, dump, spans))) == sorted(map(key, whole))


# --- JSON lines --------------------------------------------------------------------


@pytest.fixture(scope="module")
def github_lines(demo_inputs) -> bytes:
    """The first 300 rows of the demo's GitHub export, uncompressed."""
    with gzip.open(demo_inputs[GITHUB]) as f:
        return b"".join(f.readline() for _ in range(300))


def first_line(data: bytes, start: int) -> int:
    """The number of the first line that starts at or after `start`."""
    return 1 if start == 0 else data.count(b"\n", 0, start - 1) + 2


def test_line_spans_cut_at_line_starts(tmp_path, github_lines):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(github_lines)
    size = len(github_lines)
    assert line_spans(str(path), size) == [] and line_spans(str(path), 10 * size) == []
    for split_bytes in (1, 5000, size // 3):
        spans = line_spans(str(path), split_bytes)
        assert spans[0][0] == 0 and spans[-1][1] == size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
        for start, end, line in spans:
            assert start == 0 or github_lines[start - 1 : start] == b"\n"
            assert line == first_line(github_lines, start)
            assert end - start >= split_bytes or end == size
    assert len(line_spans(str(path), 1)) == 300  # one line per span


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_line_ranges_at_any_boundary(tmp_path, github_lines, trailing_newline):
    lines = github_lines.splitlines(keepends=True)[:40]
    lines[7] = b"\n"  # a blank line: no record
    lines[12] = lines[12][:50] + b"\n"  # a broken row: a dead letter naming line 13
    data = b"".join(lines)
    data = data if trailing_newline else data[:-1]
    path = tmp_path / "rows.jsonl"
    path.write_bytes(data)
    whole = list(iter_json_lines(str(path), "github"))
    assert len(whole) == 39 and whole[11] == DeadLetter("github", str(path), "line 13", whole[11].reason)
    starts = [0, *(i + 1 for i, b in enumerate(data) if b == 10)]
    cuts = [
        (0, starts[3]),  # ends at a line start
        (starts[3], starts[5] + 17),  # ends inside a line: that line is this span's
        (starts[5] + 17, starts[12] + 1),  # starts inside a line (the previous span's)
        (starts[12] + 1, starts[13]),  # starts inside the broken line, ends where the next begins
        (starts[13], starts[13]),  # empty
        (starts[13], len(data) - 2),  # ends inside the last line
        (len(data) - 2, len(data)),  # up to the end: nothing starts here
    ]
    got = [r for a, b in cuts for r in iter_json_lines(str(path), "github", (a, b, first_line(data, a)))]
    assert got == whole


def test_c4_plain_jsonl_in_spans(shared_corpus, tmp_path):
    from pipeline.sources import c4

    data = gzip.decompress((shared_corpus / "c4" / "c4-en-sample.00000-of-00001.json.gz").read_bytes())
    # rows without url or id: their ids are `<file>:<line>`, which spans must number alike
    rows = [json.loads(line) for line in data.splitlines()]
    plain = tmp_path / "c4.jsonl"
    plain.write_bytes(b"".join(json.dumps({"text": r["text"]}).encode() + b"\n" for r in rows[:400]))
    whole = list(c4.read(str(plain), CFG))
    assert len(whole) == 400 and json.loads(whole[399]["meta"]) == {"timestamp": ""}
    for split_bytes in (1, 100_000):
        spans = c4.split(str(plain), plain.stat().st_size, with_split(split_bytes))
        assert len(spans) == 400 if split_bytes == 1 else len(spans) >= 3
        assert read_spans(c4, plain, spans) == whole  # in file order, ids by line number
    gz = shared_corpus / "c4" / "c4-en-sample.00000-of-00001.json.gz"
    assert c4.split(str(gz), gz.stat().st_size, with_split(1)) == []  # one gzip member: read whole


# --- WARC / WET: gzip members ---------------------------------------------------------


def member_starts(data: bytes) -> list[int]:
    starts, pos = [], 0
    while pos < len(data):
        starts.append(pos)
        d = zlib.decompressobj(31)
        d.decompress(data[pos:])
        pos = len(data) - len(d.unused_data)
    return starts


def check_warc_spans(path: Path, split_sizes, members: list[int] | None = None) -> None:
    """The spans of a WARC file start at its (valid) members and read what the whole read reads."""
    whole = list(commoncrawl.read(str(path), CFG))
    data = path.read_bytes()
    members = member_starts(data) if members is None else members
    for split_bytes in split_sizes:
        spans = commoncrawl.split(str(path), len(data), with_split(split_bytes))
        if split_bytes == 1:  # one record per member: a span per member
            assert [a for a, _ in spans] == members
        for start, end in spans:
            assert start in members and zlib.decompressobj(31).decompress(data[start:end]).startswith(b"WARC/")
        records = read_spans(commoncrawl, path, spans) if spans else whole
        assert sorted(map(key, records)) == sorted(map(key, whole)), (path.name, split_bytes)


def test_demo_warc_in_spans(demo_inputs):
    check_warc_spans(demo_inputs[DEMO_WARC], (1, 1000, 3000, 10**9))
    # members at 0 410 811 1523 1948 10343 10657 11003: a span ends at the
    # first member at or past its start + split_bytes
    split = commoncrawl.split
    assert split(str(demo_inputs[DEMO_WARC]), 11668, with_split(1000)) == [(0, 1523), (1523, 10343), (10343, 11668)]
    assert split(str(demo_inputs[DEMO_WARC]), 11668, with_split(3000)) == [(0, 10343), (10343, 11668)]


@pytest.mark.parametrize("name", [
    "CC-MAIN-2020-34_sample16.warc.gz",
    "CC-MAIN-2024-22_an.wikipedia_Escopete.warc.wet.gz",
    "clueweb09-ja_quirky-headers.warc.gz",
    "wget-crawl_2024-04-25_sample-0000.warc.gz",
])
def test_shared_corpus_warc_and_wet_in_spans(shared_corpus, name):
    check_warc_spans(shared_corpus / "commoncrawl" / name, (1, 20_000, 60_000))


def test_corrupt_member_inside_a_span(demo_inputs, tmp_path):
    data = demo_inputs[DEMO_WARC].read_bytes()
    starts = [*member_starts(data), len(data)]
    broken = bytearray(data)
    mid = (starts[2] + starts[3]) // 2  # inside the 301 response's deflate stream
    broken[mid : mid + 8] = b"\xff" * 8
    path = tmp_path / "corrupt.warc.gz"
    path.write_bytes(bytes(broken))
    whole = list(commoncrawl.read(str(path), CFG))
    assert sum(isinstance(r, DeadLetter) for r in whole) == 1
    check_warc_spans(path, (1, 2000), members=[m for m in starts[:-1] if m != starts[2]])


def test_single_member_and_plain_warc_are_read_whole(demo_inputs, tmp_path):
    raw = gzip.decompress(demo_inputs[DEMO_WARC].read_bytes())
    one = tmp_path / "one.warc.gz"
    one.write_bytes(gzip.compress(raw))
    plain = tmp_path / "plain.warc"
    plain.write_bytes(raw)
    assert commoncrawl.split(str(one), one.stat().st_size, with_split(1)) == []
    assert commoncrawl.split(str(plain), len(raw), with_split(1)) == []


# --- on an object store ---------------------------------------------------------------


def test_spans_read_from_s3(s3_server, tmp_path, en_dump, demo_inputs, github_lines):  # noqa: F811
    """The same spans and records through Beam's S3 filesystem (moto's server)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.sources import github

    folder = tmp_path / "in"
    folder.mkdir()
    for path in (en_dump, Path(wikipedia.index_path(str(en_dump))), demo_inputs[DEMO_WARC]):
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "rows.jsonl").write_bytes(github_lines)
    bucket = s3_server.make_bucket("splits")
    s3_server.upload_tree(folder, f"{bucket}/in")
    with launcher_filesystems(PipelineOptions(s3_server.beam_args())):
        for module, name, split_bytes, n_spans in ((wikipedia, en_dump.name, 1, 4), (commoncrawl, "at.warc.gz", 1000, 3),
                                                   (github, "rows.jsonl", 500_000, 7)):
            local, remote = folder / name, f"{bucket}/in/{name}"
            spans = module.split(remote, local.stat().st_size, with_split(split_bytes))
            assert spans == module.split(str(local), local.stat().st_size, with_split(split_bytes))
            assert len(spans) == n_spans, (name, spans)
            whole = list(module.read(remote, CFG))
            assert sorted(map(key, read_spans(module, remote, spans))) == sorted(map(key, whole))
            assert len(whole) > 7


# --- through the clean job -----------------------------------------------------------


def test_clean_job_in_spans_writes_the_same_bytes(tmp_path, demo_inputs, en_dump, github_lines):
    from pipeline import clean

    cache = demo_inputs["models/lid.176.ftz"].parents[1]
    github = tmp_path / "rows.jsonl"
    github.write_bytes(github_lines)
    inputs = {"wikipedia": en_dump, "commoncrawl": demo_inputs[DEMO_WARC], "github": github}
    whole = clean.run_clean(clean_config(tmp_path / "whole", cache, inputs))
    assert whole["input_splits"] == {}
    split_bytes = 3000
    spans = {s: len(source_hook(s, "split")(str(p), p.stat().st_size, with_split(split_bytes)))
             for s, p in inputs.items()}
    assert spans["wikipedia"] == 3 and spans["commoncrawl"] == 2 and spans["github"] > 100
    split = clean.run_clean(clean_config(
        tmp_path / "split", cache, inputs, f"clean.split_bytes={split_bytes}",
        "beam.direct_num_workers=1", "beam.direct_running_mode=in_memory"))
    assert split["input_splits"] == spans

    def files(manifest):
        return {e["file"].split("/", 1)[1]: (e["rows"], e["sha256"]) for e in manifest["files"]}

    assert files(split) == files(whole)
    assert {f.split("/")[0] for f in files(whole)} == set(inputs)
    assert split["counters"] == whole["counters"]
    assert split["counters"]["wikipedia"]["docs_read"] == sum(isinstance(r, dict) for r in wikipedia.read(str(en_dump)))
