"""Wikipedia reader on real MediaWiki dumps: the gensim test dumps (demo inputs) and,
when present, the shared corpus. Expected counts come from the raw XML, counted
here with regular expressions (not with the reader's XML parser), and from the
corpus MANIFEST; expected sentences were written by hand from the raw wikitext."""

from __future__ import annotations

import bz2
import collections
import json
import lzma
import re
from pathlib import Path

import pytest

from pipeline.schema import doc_id
from pipeline.sources import wikipedia
from pipeline.sources.base import DeadLetter, Skip

EN = "inputs/wikipedia/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
BG = "inputs/wikipedia/bgwiki-latest-pages-articles-shortened.xml.bz2"
TABLES = "inputs/wikipedia/enwiki-table-markup.xml.bz2"

MARKUP = ("{{", "}}", "[[", "]]", "<ref", "{|", "'''")


class Read:
    """Everything `read` yielded for one file, split by kind."""

    def __init__(self, path: Path):
        self.records = list(wikipedia.read(str(path), None))
        self.docs = [r for r in self.records if isinstance(r, dict)]
        self.skips = collections.Counter(r.reason for r in self.records if isinstance(r, Skip))
        self.dead = [r for r in self.records if isinstance(r, DeadLetter)]
        self.by_title = {json.loads(d["meta"])["title"]: d for d in self.docs}


def _raw_pages(xml: str) -> list[tuple[int, bool, str]]:
    """(ns, has <redirect>, wikitext) of every complete <page>, by regex."""
    pages = []
    for page in re.findall(r"<page>(.*?)</page>", xml, re.S):
        ns = int(re.search(r"<ns>(-?\d+)</ns>", page).group(1))
        text = re.search(r"<text[^>]*>(.*?)</text>|<text[^>]*/>", page, re.S)
        wikitext = (text.group(1) or "") if text else ""
        pages.append((ns, "<redirect" in page, wikitext))
    return pages


def _unescape(xml_text: str) -> str:
    return (
        xml_text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", '"')
        .replace("&amp;", "&")
    )


@pytest.fixture(scope="module")
def en(demo_inputs) -> Read:
    return Read(demo_inputs[EN])


@pytest.fixture(scope="module")
def en_xml(demo_inputs) -> str:
    return bz2.decompress(demo_inputs[EN].read_bytes()).decode("utf-8")


def test_english_dump_counts_match_the_raw_xml(en, en_xml):
    pages = _raw_pages(en_xml)
    # MANIFEST: 206 pages (ns 0: 205, ns 4: 1), 100 redirects; counted again here.
    assert len(pages) == en_xml.count("<page>") == 206
    assert sum(ns == 0 for ns, _, _ in pages) == 205
    assert sum(red for _, red, _ in pages) == 100
    ns0_redirects = sum(ns == 0 and red for ns, red, _ in pages)
    assert ns0_redirects == 99  # the 100th redirect is the ns-4 page

    assert len(en.records) == 206
    assert en.skips == {"namespace": 1, "redirect": 99}
    assert len(en.docs) == 205 - 99 == 106
    assert en.dead == []


def test_redirect_text_rule_agrees_with_the_redirect_element(en_xml):
    pages = _raw_pages(en_xml)
    for _, has_element, wikitext in pages:
        assert wikipedia.is_redirect_text(_unescape(wikitext)) == has_element, wikitext[:80]
    # one of them is lower case: "#redirect [[...]]"
    assert sum(w.startswith("#redirect") for _, _, w in pages) == 1


def test_anarchism_is_cleaned_to_its_prose(en):
    doc = en.by_title["Anarchism"]
    # Raw: '''Anarchism''' is a [[political philosophy]] that advocates
    # [[self-governance|self-governed]] societies ... [[stateless society|stateless
    # societies]],<ref>...</ref> x4 although ... non-[[Hierarchy|hierarchical]]
    # [[Free association (communism and anarchism)|free associations]].<ref>...
    assert doc["text"].startswith(
        "Anarchism is a political philosophy that advocates self-governed societies "
        "based on voluntary institutions. These are often described as stateless "
        "societies, although several authors have defined them more specifically as "
        "institutions based on non-hierarchical free associations. Anarchism considers "
        "the state to be undesirable, unnecessary, and harmful. While anti-statism is "
        "central, anarchism entails opposing authority or hierarchical organisation in the "
        "conduct of all human relations, including, but not limited to, the state system.\n\n"
        "Anarchism draws on many currents of thought and strategy."
    )
    # "==Etymology and terminology==" stays as a plain line of its own
    assert "\n\nEtymology and terminology\n\n" in doc["text"]
    assert doc["id"] == doc_id("wikipedia", "enwiki:12")
    assert doc["url"] == "https://en.wikipedia.org/wiki/Anarchism"
    assert (doc["lang"], doc["lang_score"], doc["source"]) == ("en", 1.0, "wikipedia")
    assert json.loads(doc["meta"]) == {
        "title": "Anarchism",
        "page_id": 12,
        "revision_id": 716551092,
        "timestamp": "2016-04-22T10:19:33Z",
    }


def test_url_replaces_spaces_with_underscores(en):
    doc = en.by_title["Academy Award for Best Production Design"]
    assert doc["url"] == "https://en.wikipedia.org/wiki/Academy_Award_for_Best_Production_Design"


def test_no_markup_left_in_any_demo_document(demo_inputs, en):
    docs = en.docs + Read(demo_inputs[BG]).docs + Read(demo_inputs[TABLES]).docs
    assert len(docs) == 106 + 1 + 5
    for doc in docs:
        for token in MARKUP:
            assert token not in doc["text"], (doc["url"], token)
        assert "\n\n\n" not in doc["text"]
        assert doc["text"] == doc["text"].strip()


def test_bulgarian_utf16_dump(demo_inputs):
    path = demo_inputs[BG]
    assert bz2.decompress(path.read_bytes())[:2] == b"\xff\xfe"  # UTF-16LE with BOM
    bg = Read(path)
    assert bg.skips == {"namespace": 2}
    assert len(bg.docs) == 1
    doc = bg.docs[0]
    assert doc["lang"] == "bg"
    assert doc["url"] == "https://bg.wikipedia.org/wiki/Григориански_календар"
    assert doc["id"] == doc_id("wikipedia", "bgwiki:558")
    # The five [[File:...|thumb|[[Папа]] ...]] images before it are gone, nested links too.
    assert doc["text"].startswith(
        "Григорианският календар (понякога наричан и Грегориански календар, „нов стил“) "
        "е съвременният международно признат светски календар, на който се основава и "
        "международният стандарт ISO 8601.\n"
    )
    # The localised category link ([[Категория:Календари]], ns 14 in siteinfo) is
    # removed, the <timeline> block too; the text ends on the last heading.
    assert "Категория" not in doc["text"]
    assert "barset" not in doc["text"]
    assert doc["text"].endswith("\n\nИзточници")


def test_table_markup_dump_loses_its_tables(demo_inputs):
    path = demo_inputs[TABLES]
    raw = bz2.decompress(path.read_bytes()).decode("utf-8")
    assert "<siteinfo>" not in raw  # language from the file name
    assert raw.count("{|") >= 5 and "Opposition candidate (party)" in raw
    tables = Read(path)
    assert len(tables.records) == len(tables.docs) == raw.count("<page>") == 5
    assert sorted(tables.by_title) == [
        "Academy Award for Best Production Design",
        "Brahui language",
        "Constructive vote of no confidence",
        "Economy of Estonia",
        "List of Prison Break characters",
    ]
    for doc in tables.docs:
        assert doc["lang"] == "en"
        assert doc["id"] == doc_id("wikipedia", f"enwiki:{json.loads(doc['meta'])['page_id']}")
        for line in doc["text"].split("\n"):
            assert not line.startswith(("{|", "|", "!")), (doc["url"], line)
        assert "background:" not in doc["text"]
    text = tables.by_title["Constructive vote of no confidence"]["text"]
    assert "Opposition candidate (party)" not in text  # a header cell of the table
    # the sentence just before the table, and the heading just after it, stay
    assert (
        "Since 1949, only two constructive votes of no confidence have been attempted, "
        "and only one has been successful.\n\n1972 (failed vote)\n" in text
    )


def test_truncated_dump_yields_complete_pages_then_one_dead_letter(en_xml, tmp_path):
    # cut inside the 4th page; before it: 10 (redirect), 12 (Anarchism), 13 (redirect)
    fourth = [m.start() for m in re.finditer("<page>", en_xml)][3]
    path = tmp_path / "enwiki-cut.xml"
    path.write_bytes(en_xml[: fourth + 200].encode("utf-8"))
    records = list(wikipedia.read(str(path), None))
    assert len(records) == 4
    assert records[0] == records[2] == Skip("wikipedia", "redirect")
    assert records[1]["id"] == doc_id("wikipedia", "enwiki:12")
    dead = records[3]
    assert isinstance(dead, DeadLetter)
    assert dead.record == "after page 13"
    assert dead.reason.startswith("truncated dump: ")


def test_truncated_compressed_stream_is_a_dead_letter(demo_inputs, tmp_path):
    data = demo_inputs[EN].read_bytes()
    path = tmp_path / "enwiki-half.xml.bz2"
    path.write_bytes(data[: len(data) // 2])
    records = list(wikipedia.read(str(path), None))
    dead = [r for r in records if isinstance(r, DeadLetter)]
    assert len(dead) == 1 and records[-1] is dead[0]
    assert dead[0].reason.startswith("truncated dump: ")
    assert 0 < len(records) - 1 < 206


def test_not_a_dump_is_a_dead_letter(demo_inputs):
    # a real file that is neither XML nor a dump: a Gutenberg book
    records = list(wikipedia.read(str(demo_inputs["inputs/books/alice29.txt"]), None))
    assert len(records) == 1 and isinstance(records[0], DeadLetter)
    assert records[0].reason.startswith("malformed dump: ")


def test_language_helpers():
    assert wikipedia.lang_from_dbname("bgwiki") == "bg"
    assert wikipedia.lang_from_dbname("zh_min_nanwiki") == "zh-min-nan"
    assert wikipedia.lang_from_dbname("wikidatawiki") == "wikidata"
    assert wikipedia.lang_from_dbname("enwiktionary") == ""
    assert wikipedia.dbname_from_filename("gs://b/enwiki-table-markup.xml.bz2") == "enwiki"
    assert wikipedia.dbname_from_filename("pages.xml") == ""


def test_wikitext_helper_on_real_markup():
    # From the bgwiki page: a file link whose caption holds links, then prose.
    wikitext = (
        "[[File:Christopher Clavius.jpg|thumb|Йезуитът [[Христофор Клавий]] е важен член от "
        "реформната комисия]]\n'''Григорианският календар''' е [[светски]] [[календар]],"
        "<ref>{{cite web | title = Calendars | lang=en}}</ref> на който<!-- c --> ''се'' основава\n"
        "== Вижте също ==\n* [[Високосна година]]\n[[Категория:Календари]]"
    )
    assert wikipedia.wikitext_to_text(wikitext, frozenset({"file", "категория"})) == (
        "Григорианският календар е светски календар, на който се основава\n"
        "Вижте също\nВисокосна година"
    )
    # without the siteinfo names only the canonical File/Image/Category go
    assert wikipedia.wikitext_to_text("[[Категория:Календари]]").endswith("Категория:Календари")


# --- shared corpus (skipped where absent) ---------------------------------------


def test_truncated_mrwiki_gives_its_1820_complete_pages(shared_corpus):
    path = (
        shared_corpus
        / "wikipedia"
        / "mrwiki-pages-articles-multistream.truncated-100k-lines.xml.xz"
    )
    raw = lzma.decompress(path.read_bytes()).decode("utf-8", errors="replace")
    assert raw.count("<page>") == 1821 and raw.count("</page>") == 1820  # MANIFEST
    mr = Read(path)
    assert len(mr.records) == 1820 + 1
    assert len(mr.dead) == 1 and mr.records[-1] is mr.dead[0]
    assert mr.dead[0].reason == "truncated dump: no element found: line 100001, column 0"
    pages = _raw_pages(raw)
    ns0 = [(red, w) for ns, red, w in pages if ns == 0]
    assert mr.skips["namespace"] == len(pages) - len(ns0) == 734
    assert mr.skips["redirect"] == sum(red for red, _ in ns0) == 137
    # redirect keyword in Devanagari (combining marks) is recognised without the element
    assert all(wikipedia.is_redirect_text(_unescape(w)) == red for _, red, w in pages)
    assert len(mr.docs) + mr.skips["empty"] == len(ns0) - 137
    assert {d["lang"] for d in mr.docs} == {"mr"}


def test_bnwiki_namespaces_match_the_manifest(shared_corpus):
    bn = Read(shared_corpus / "wikipedia" / "bnwiki-pages-articles-multistream.fragment.xml.bz2")
    # MANIFEST: 215 pages (ns: 0:19, 4:4, 8:186, 10:6; redirects 4, two of them in ns 4)
    assert len(bn.records) == 215
    assert bn.skips["namespace"] == 4 + 186 + 6
    assert len(bn.docs) + bn.skips["redirect"] + bn.skips["empty"] == 19
    assert bn.skips["redirect"] == 2
    assert {d["lang"] for d in bn.docs} == {"bn"}
    assert all(d["url"].startswith("https://bn.wikipedia.org/wiki/") for d in bn.docs)
