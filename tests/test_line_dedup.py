"""CCNet line dedup (pipeline.dedup.lines) against a plain in-memory reference, on
real documents with injected boilerplate, in each shard-group scope."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from pipeline.dedup.line_keys import (
    crawl_id,
    keep_first_lines,
    line_dedup_group,
    line_hash,
)
from pipeline.dedup.lines import LineDedup
from pipeline.sources import commoncrawl, wikipedia
from pipeline.sources.base import make_document

BANNER = "This site uses cookies to improve your experience. By continuing you accept our use of cookies."
NEWSLETTER = "Subscribe to our newsletter for the latest updates!"
# Common Crawl file names as found in the shared corpus: two of one crawl, one of
# another, and one of Common Crawl's own segment names, which names no crawl
FILES = (
    "CC-MAIN-2024-22_an.wikipedia_Escopete.warc.gz",
    "CC-MAIN-2024-22_an.wikipedia_Escopete.warc.wet.gz",
    "CC-MAIN-2020-34_sample16.warc.gz",
    "CC-MAIN-20190717121559-20190717143559-00140.dolma.jsonl.gz",
)
CRAWL_OF = {FILES[0]: "CC-MAIN-2024-22", FILES[1]: "CC-MAIN-2024-22", FILES[2]: "CC-MAIN-2020-34"}


def reference(docs: list[dict[str, Any]], group_of: Callable[[dict[str, Any]], str]) -> tuple[dict[str, str], int]:
    """({doc id: text}, lines removed) after line dedup of the Common Crawl
    documents, the plain way: documents in id order, lines in order, a
    non-blank line kept the first time its (group, hash) is seen; a document
    left with no text is dropped."""
    seen: set[tuple[str, bytes]] = set()
    out, total = {}, 0
    for doc in sorted(docs, key=lambda d: d["id"]):
        if doc["source"] != "commoncrawl":
            out[doc["id"]] = doc["text"]
            continue
        kept, removed = [], 0
        for line in doc["text"].split("\n"):
            key = (group_of(doc), line_hash(line))
            if key[1] is not None and key in seen:
                removed += 1
                continue
            seen.add(key)
            kept.append(line)
        total += removed
        if removed and not "\n".join(kept).strip():
            continue  # nothing left: dropped (drop.line_dedup_empty)
        out[doc["id"]] = "\n".join(kept).strip("\n") if removed else doc["text"]
    return out, total


def group_of(scope: str) -> Callable[[dict[str, Any]], str]:
    """The reference's shard group of a document: written out from FILES, not
    computed by the code under test."""
    def file_of(doc):
        return json.loads(doc["meta"])["warc_file"]

    if scope == "run":
        return lambda doc: ""
    if scope == "file":
        return file_of
    return lambda doc: CRAWL_OF.get(file_of(doc), file_of(doc))


def inject(docs: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Each document with BANNER at a seeded line (in another case every third
    time: the normalised form is what repeats), and every second one with
    NEWSLETTER three times."""
    rng = random.Random(seed)
    out = []
    for n, doc in enumerate(docs):
        lines = doc["text"].split("\n")
        lines.insert(rng.randrange(len(lines) + 1), BANNER.upper() if n % 3 == 0 else BANNER)
        if n % 2 == 0:
            for _ in range(3):
                lines.insert(rng.randrange(len(lines) + 1), NEWSLETTER)
        out.append({**doc, "text": "\n".join(lines)})
    return out


def run_scopes(docs: list[dict[str, Any]], scopes: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """LineDedup of every scope on `docs` in one FnApiRunner pipeline, each
    output asserted equal to `reference`; {scope: {counter: value}}."""
    p = beam.Pipeline(runner="FnApiRunner")
    created = p | beam.Create(docs)
    for scope in scopes:
        out = (created | f"Dedup_{scope}" >> LineDedup(["commoncrawl"], scope=scope)
               | f"Texts_{scope}" >> beam.Map(lambda d: (d["id"], d["text"])))
        assert_that(out, equal_to(list(reference(docs, group_of(scope))[0].items())), label=f"Check_{scope}")
    result = p.run()
    result.wait_until_finish()
    counters: dict[str, dict[str, int]] = {s: {} for s in scopes}
    for c in result.metrics().query(MetricsFilter())["counters"]:
        for scope in scopes:
            if c.key.step.startswith(f"Dedup_{scope}/"):
                name = c.key.metric.name
                counters[scope][name] = counters[scope].get(name, 0) + c.committed
    return counters


def with_banner(survivors: dict[str, str]) -> int:
    """Documents in which a BANNER line survived (any case)."""
    return sum(1 for t in survivors.values() if any(line.lower() == BANNER.lower() for line in t.split("\n")))


@pytest.fixture(scope="module")
def demo_docs(demo_inputs) -> list[dict[str, Any]]:
    """The demo's Common Crawl page and English Wikipedia articles as Common
    Crawl pages spread over FILES (their section headings repeat for real), with
    BANNER and NEWSLETTER injected; two Wikipedia articles stay Wikipedia."""
    cc = [d for d in commoncrawl.read(str(demo_inputs["inputs/commoncrawl/at.warc.gz"]), None) if isinstance(d, dict)]
    wiki_path = demo_inputs["inputs/wikipedia/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"]
    wiki = [d for d in wikipedia.read(str(wiki_path)) if isinstance(d, dict)]
    pages = [
        make_document("commoncrawl", f"page:{i}", d["text"], d["url"], meta={"warc_file": FILES[i % len(FILES)]})
        for i, d in enumerate(cc + wiki[:-2])
    ]
    return inject(pages + wiki[-2:], seed=1)


def test_pure_pieces():
    assert keep_first_lines("a\n\nb\n ！\nc\n", {0}) == ("a\n\n ！", 2)  # blank lines are never removed
    assert keep_first_lines("a\nb", {0, 1}) == ("a\nb", 0)
    assert crawl_id("s3://commoncrawl/crawl-data/CC-MAIN-2019-30/segments/1/wet/x.warc.wet.gz") == "CC-MAIN-2019-30"
    assert crawl_id(FILES[2]) == "CC-MAIN-2020-34"
    assert crawl_id(FILES[3]) is None  # a segment's time, not a crawl
    meta = {"warc_file": FILES[0]}
    assert line_dedup_group("commoncrawl", meta, "run") == ("commoncrawl", True)
    assert line_dedup_group("commoncrawl", meta, "file") == (f"commoncrawl/file/{FILES[0]}", True)
    assert line_dedup_group("commoncrawl", meta, "dump") == ("commoncrawl/dump/CC-MAIN-2024-22", True)
    assert line_dedup_group("commoncrawl", {"warc_file": FILES[3]}, "dump") == (
        f"commoncrawl/file/{FILES[3]}", False)  # falls back to the file
    # the reader records the crawl from the input's path (crawl-data/<crawl>/segments/...)
    assert line_dedup_group("commoncrawl", {"warc_file": FILES[3], "crawl": "CC-MAIN-2019-30"}, "dump") == (
        "commoncrawl/dump/CC-MAIN-2019-30", True)
    assert line_dedup_group("c4", {}, "file") == ("c4", False)  # no file recorded: the source
    with pytest.raises(ValueError, match="crawl"):
        LineDedup(["commoncrawl"], scope="crawl")


def test_survivors_equal_the_reference_in_every_scope(demo_docs):
    pages = [d for d in demo_docs if d["source"] == "commoncrawl"]
    assert len(pages) == 105
    counters = run_scopes(demo_docs, ("run", "file", "dump"))
    expected, removed = {}, {}
    for s in ("run", "file", "dump"):
        expected[s], removed[s] = reference(demo_docs, group_of(s))
    # the banner survives once per shard group, the first occurrence in id order
    assert [with_banner(expected[s]) for s in ("run", "dump", "file")] == [1 + 2, 3 + 2, 4 + 2]  # + Wikipedia's
    first = min(pages, key=lambda d: d["id"])
    assert BANNER.lower() in expected["run"][first["id"]].lower()
    for scope in ("run", "file", "dump"):
        assert counters[scope].get("line_dedup.lines_removed") == removed[scope]
    # 3 newsletters in 53 pages and a banner in 105, all but the groups' firsts; and
    # the articles' repeated headings ("References", "See also", ...)
    assert removed["run"] == 53 * 3 - 1 + 105 - 1 + 813
    assert counters["run"].get("line_dedup.scope_fallback") is None
    assert counters["dump"]["line_dedup.scope_fallback"] == sum(
        json.loads(p["meta"])["warc_file"] == FILES[3] for p in pages)
    for wiki in demo_docs[-2:]:  # other sources untouched
        assert expected["run"][wiki["id"]] == wiki["text"]


def test_survivors_equal_the_reference_on_the_shared_crawl(shared_corpus):
    """Every Common Crawl file of the shared corpus through the reader (its own
    `warc_file` meta): two files of CC-MAIN-2024-22 (the same page as WARC and
    WET), one of CC-MAIN-2020-34, the others named by no crawl."""
    docs = []
    for path in sorted((shared_corpus / "commoncrawl").iterdir()):
        docs += [d for d in commoncrawl.read(str(path), None) if isinstance(d, dict)]
    docs = inject(docs, seed=2)
    counters = run_scopes(docs, ("run", "file", "dump"))
    removed = {s: reference(docs, group_of(s))[1] for s in counters}
    assert removed["run"] > removed["dump"] > removed["file"] > len(docs)
    for scope, n in removed.items():
        assert counters[scope]["line_dedup.lines_removed"] == n
        emptied = len(docs) - len(reference(docs, group_of(scope))[0])
        assert counters[scope].get("drop.line_dedup_empty", 0) == emptied
