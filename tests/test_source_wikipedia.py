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

from pipeline.core.schema import doc_id
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


# A German article whose text opens with a numbered list item, and an old-style
# redirect without the <redirect> element (dumps before export-0.4 have none).
NUMBERED_LIST_DUMP = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" xml:lang="de">
  <siteinfo>
    <dbname>dewiki</dbname>
  </siteinfo>
  <page>
    <title>Zwei Gründe</title>
    <ns>0</ns>
    <id>1</id>
    <revision>
      <id>11</id>
      <text xml:space="preserve">#Erstens [[Berlin]] ist die Hauptstadt.
#Zweitens liegt es an der [[Spree]].</text>
    </revision>
  </page>
  <page>
    <title>Hauptstadt Deutschlands</title>
    <ns>0</ns>
    <id>2</id>
    <revision>
      <id>12</id>
      <text xml:space="preserve">#WEITERLEITUNG [[Berlin]]</text>
    </revision>
  </page>
</mediawiki>
"""


def test_numbered_list_opening_is_an_article_not_a_redirect(tmp_path):
    path = tmp_path / "dewiki-numbered-list.xml"
    path.write_text(NUMBERED_LIST_DUMP, encoding="utf-8")
    records = list(wikipedia.read(str(path), None))
    assert len(records) == 2
    doc = records[0]
    assert doc["text"] == "Erstens Berlin ist die Hauptstadt.\nZweitens liegt es an der Spree."
    assert doc["id"] == doc_id("wikipedia", "dewiki:1")
    assert doc["url"] == "https://de.wikipedia.org/wiki/Zwei_Gründe"
    assert records[1] == Skip("wikipedia", "redirect")


@pytest.mark.parametrize(
    "wikitext, lang, expected",
    [
        ("#Erstens [[Berlin]] ist die Hauptstadt.", "de", False),
        ("#Erstens [[Berlin]] ist die Hauptstadt.", "", False),
        ("#REDIRECT [[Berlin]]", "de", True),  # the English word works on every wiki
        ("#redirect:[[Berlin]]", "en", True),  # any case, an optional colon
        ("\n  #Weiterleitung : \t[[Berlin|die Stadt]]", "de", True),
        ("#WEITERLEITUNG [[Berlin]]", "en", False),  # another wiki's word
        ("#WEITERLEITUNG [[Berlin]]", "", True),  # wiki unknown: any word of the table
        ("#WEITERLEITUNG [[Berlin]]", "ko", True),  # a wiki not in the table: the same
        ("＃転送 [[東京都]]", "ja", True),  # the full-width number sign of jawiki
        ("#ĐỔI [[Hà Nội]]", "vi", True),
        ("#tam [[Hà Nội]]", "vi", False),  # plwiki's #TAM ("there"), a numeral in Vietnamese
        ("#TAM [[Warszawa]]", "pl", True),
        ("#REDIRECT [[Berlin", "en", False),  # the link must close on its line
        ("#REDIRECT\n[[Berlin]]", "en", True),
        ("# [[Berlin]]", "", False),
        ("Text\n#REDIRECT [[Berlin]]", "en", False),  # only at the start
    ],
)
def test_redirect_needs_the_magic_word_then_a_link(wikitext, lang, expected):
    assert wikipedia.is_redirect_text(wikitext, lang) is expected


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
        "dropped_sentences": 0,
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
    # the 1821st <page> (id 3186) is cut at line 100,000; 3183 is the last whole one
    page_ids = re.findall(r"<page>\s*<title>.*?</title>\s*<ns>-?\d+</ns>\s*<id>(\d+)</id>", raw)
    assert page_ids[-2:] == ["3183", "3186"]
    assert mr.dead[0] == DeadLetter(
        "wikipedia", str(path), "after page 3183", "truncated dump: the file ends inside page 3186"
    )
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


# --- tables and inline templates ------------------------------------------------


def test_table_between_two_paragraphs():
    # Two sentences of the demo dump's "Alabama" article around a small table.
    wikitext = (
        "'''Alabama''' is a state in the [[Southeastern United States|southeastern region]] "
        "of the [[United States]].\n"
        '{| class="wikitable"\n'
        '!colspan="2"|Header\n'
        "|-\n"
        "| 1 || 2\n"
        "|}\n"
        "Alabama is nicknamed the ''Yellowhammer State'', after the [[Northern flicker|state bird]]."
    )
    assert wikipedia.wikitext_to_text(wikitext) == (
        "Alabama is a state in the southeastern region of the United States.\n\n"
        "Alabama is nicknamed the Yellowhammer State, after the state bird."
    )


def test_convert_leaves_no_hole():
    text = "At {{convert|1300|mi|km}}, Alabama has one of the longest navigable inland waterways."
    assert wikipedia.convert_wikitext(text) == (
        "At 1300 mi, Alabama has one of the longest navigable inland waterways.",
        0,
    )


def test_convert_on_the_real_alabama_article(en, en_xml):
    raw = "At {{convert|1300|mi|km}}, Alabama has one of the longest navigable inland waterways"
    assert raw in en_xml
    alabama = en.by_title["Alabama"]["text"]
    assert "At 1300 mi, Alabama has one of the longest navigable inland waterways in the nation." in alabama
    # no removed template or formula leaves "At , " or "of ." anywhere (". . ."
    # is an ellipsis in a quotation of the Algorithm article)
    hole = re.compile(r"\b(?:At|In|of|is|was|are|by) (?:[,;:]|\.(?! \.))")
    for doc in en.docs:
        assert not hole.search(doc["text"]), doc["url"]


@pytest.mark.parametrize(
    "wikitext, text, dropped",
    [
        # rendered (INLINE_TEMPLATES)
        ("A {{convert|5|to|10|km|abbr=on}} walk.", "A 5 to 10 km walk.", 0),
        ("A {{convert|5|-|10|km}} walk.", "A 5–10 km walk.", 0),
        ("Called {{lang|fr|je ne sais quoi}} there.", "Called je ne sais quoi there.", 0),
        ("From {{lang-de|Staat}} and {{IPA-de|ʃtaːt}}.", "From Staat and [ʃtaːt].", 0),
        ("It is {{nowrap|1=E = mc<sup>2</sup>}} here.", "It is E = mc2 here.", 0),
        ("{{as of|2010|5|lc=y}} it was open.", "as of May 2010 it was open.", 0),
        ("Add {{frac|3|1|2}} cups of {{chem|H|2|O}}.", "Add 3 1/2 cups of H2O.", 0),
        ("{{nihongo|Tokyo|東京|Tōkyō}} is large.", "Tokyo (東京, Tōkyō) is large.", 0),
        ("Born {{birth date|1809|2|12}} in a cabin.", "Born February 12, 1809 in a cabin.", 0),
        ("It weighs {{val|1.5|u=kg}}.", "It weighs 1.5 kg.", 0),
        # silent: footnote marks, maintenance tags, pronunciation keys in brackets
        ("Water boils.{{sfn|Smith|2000|p=4}} It is hot{{citation needed|date=May 2020}}.",
         "Water boils. It is hot.", 0),
        ("'''Anarchism''' ({{IPAc-en|ˈ|æ|n|ər|k|ɪ|z|əm}}; from Greek) is a philosophy.",
         "Anarchism (from Greek) is a philosophy.", 0),
        ("'''Aristotle''' ({{IPAc-en|ˈ|ær|ɪ|s|t|ɒ|t|əl}}) was a philosopher.",
         "Aristotle was a philosopher.", 0),
        # unknown: a hole inside a sentence costs that sentence, not the line
        ("First sentence. It costs {{inflation|US|5|1900}} today. Last sentence.",
         "First sentence. Last sentence.", 1),
        ("{{flag|Albania}} is in the Balkans. It is small.", "It is small.", 1),
        # unknown, but not inside prose: goes alone
        ("It ended in 1945.{{Unknown footnote}} Peace followed.", "It ended in 1945. Peace followed.", 0),
        ("{{Infobox country\n|name = Albania\n}}\nAlbania is a country.", "Albania is a country.", 0),
        ("Albania ({{Unknown}}) is a country.", "Albania is a country.", 0),
        # Japanese sentences end with 。 and no space
        ("東京は大きい。人口は{{unknown}}人である。", "東京は大きい。", 1),
    ],
)
def test_inline_templates(wikitext, text, dropped):
    assert wikipedia.convert_wikitext(wikitext) == (text, dropped)


def test_dropped_sentences_are_counted_in_meta(en):
    # The demo's 106 English articles: 65 lose no sentence; the most, Atlantic
    # Ocean (33), loses list items made of a flag template and a country code.
    dropped = {doc["url"]: json.loads(doc["meta"])["dropped_sentences"] for doc in en.docs}
    assert sum(dropped.values()) == 182
    assert sum(d == 0 for d in dropped.values()) == 65
    assert dropped["https://en.wikipedia.org/wiki/Atlantic_Ocean"] == 33
    assert dropped["https://en.wikipedia.org/wiki/Alabama"] == 0


# --- one bad page never loses the rest of the dump -------------------------------


def first_pages(en_xml: str, n: int) -> str:
    """The demo dump cut after its n-th page, closed again: a well-formed dump."""
    end = [m.end() for m in re.finditer("</page>\n", en_xml)][n - 1]
    return en_xml[:end] + "</mediawiki>\n"


def test_malformed_page_is_a_dead_letter_and_the_next_pages_come(en_xml, tmp_path):
    # The first 20 pages; page 12 (Anarchism) made ill-formed, its </title> misspelt.
    intact = first_pages(en_xml, 20)
    broken = intact.replace("<title>Anarchism</title>", "<title>Anarchism</titel>")
    assert broken != intact
    (tmp_path / "intact.xml").write_text(intact, encoding="utf-8")
    (tmp_path / "broken.xml").write_text(broken, encoding="utf-8")
    expected = list(wikipedia.read(str(tmp_path / "intact.xml"), None))
    records = list(wikipedia.read(str(tmp_path / "broken.xml"), None))
    assert len(records) == len(expected) == 20  # one outcome per page
    assert records[1] == DeadLetter(
        "wikipedia", str(tmp_path / "broken.xml"), "page 12",
        "malformed page: mismatched tag: line 2, column 22 of the page",
    )
    assert expected[1]["id"] == doc_id("wikipedia", "enwiki:12")
    assert records[:1] + records[2:] == expected[:1] + expected[2:]  # the pages after it


def test_undecodable_bytes_cost_only_their_page(en_xml, tmp_path):
    # The dump's first 20 pages, a byte that is not UTF-8 put into Anarchism's text.
    data = first_pages(en_xml, 20).encode("utf-8")
    at = data.index("Anarchism draws on many currents".encode("utf-8"))
    path = tmp_path / "enwiki-bad-byte.xml"
    path.write_bytes(data[:at] + b"\xff" + data[at:])
    records = list(wikipedia.read(str(path), None))
    assert len(records) == 20
    (dead,) = [r for r in records if isinstance(r, DeadLetter)]
    assert dead.record == "page 12"
    assert dead.reason == "malformed page: bytes not valid in the dump's encoding (utf-8)"
    intact_path = tmp_path / "intact.xml"
    intact_path.write_bytes(data)
    intact = list(wikipedia.read(str(intact_path), None))
    assert [r for r in records if not isinstance(r, DeadLetter)] == [
        r for r in intact if not (isinstance(r, dict) and r["id"] == doc_id("wikipedia", "enwiki:12"))
    ]


# MANIFEST rows of the other dump fragments: (language, pages, pages in ns 0),
# and the first article of each, its text as it begins (checked by hand
# against the raw wikitext).
FRAGMENTS = [
    ("el", 108, 95, "Ελληνικός", "Σαν επίθετο ελληνικά/ελληνικός σημαίνει από, ή σχετικά με την Ελλάδα"),
    ("hy", 120, 33, "Հայաստան", "«Հայաստան» անվանումը վերաբերում է նաև ողջ Հայկական լեռնաշխարհին"),
    ("ja", 53, 46, "アンパサンド", "アンパサンド（&, ampersand）は、並立助詞「…と…」を意味する記号である。"),
    ("uk", 85, 83, "Географія", "Геогра́фія, або заст. земле́пис (від γεωγραφία\xa0— опис Землі;"),
    ("vi", 37, 31, "Internet Society", "Internet Society hay ISOC là một tổ chức quốc tế hoạt động phi lợi nhuận"),
]


# Redirects whose text uses the wiki's own magic word, per fragment (counted with
# grep on the raw XML: #ΑΝΑΚΑΤΕΥΘΥΝΣΗ, #ՎԵՐԱՀՂՈՒՄ, #перенаправлення, #đổi).
LOCAL_REDIRECTS = {"el": 1, "hy": 10, "ja": 0, "uk": 1, "vi": 1}


@pytest.mark.parametrize("lang", sorted(LOCAL_REDIRECTS))
def test_redirect_text_rule_agrees_with_the_element_in_each_language(shared_corpus, lang):
    path = shared_corpus / "wikipedia" / f"{lang}wiki-pages-articles-multistream.fragment.xml.bz2"
    raw = _raw_pages(bz2.decompress(path.read_bytes()).decode("utf-8"))
    texts = [(red, _unescape(w)) for _, red, w in raw]
    assert all(wikipedia.is_redirect_text(w, lang) == red for red, w in texts)
    # the local word is the wiki's own: the English wiki would not take it
    local = [w for red, w in texts if red and not wikipedia.is_redirect_text(w, "en")]
    assert len(local) == LOCAL_REDIRECTS[lang]


@pytest.mark.parametrize("lang, pages, articles, title, opening", FRAGMENTS, ids=[f[0] for f in FRAGMENTS])
def test_dump_fragments_match_the_manifest(shared_corpus, lang, pages, articles, title, opening):
    path = shared_corpus / "wikipedia" / f"{lang}wiki-pages-articles-multistream.fragment.xml.bz2"
    raw = _raw_pages(bz2.decompress(path.read_bytes()).decode("utf-8"))
    assert (len(raw), sum(ns == 0 for ns, _, _ in raw)) == (pages, articles)
    redirects = sum(ns == 0 and red for ns, red, _ in raw)
    dump = Read(path)
    assert len(dump.records) == pages and dump.dead == []
    assert dump.skips["namespace"] == pages - articles
    assert dump.skips["redirect"] == redirects
    assert len(dump.docs) + dump.skips["empty"] == articles - redirects
    assert {d["lang"] for d in dump.docs} == {lang}
    first = dump.docs[0]
    assert json.loads(first["meta"])["title"] == title
    assert first["url"] == f"https://{lang}.wikipedia.org/wiki/{title.replace(' ', '_')}"
    assert first["text"].startswith(opening)


# --- truncated compressed dumps ------------------------------------------------------


def test_truncated_one_block_bz2_dump_is_one_dead_letter(demo_inputs, tmp_path):
    # 246 KiB of XML in one bzip2 block (of at most 900 KB): a block decodes only
    # whole, so nothing comes before the cut. It raised EOFError from the
    # reader's first read.
    data = demo_inputs["inputs/wikipedia/enwiki-table-markup.xml.bz2"].read_bytes()
    assert data.startswith(b"BZh9") and len(bz2.decompress(data)) == 251853  # blocks of 900 KB
    path = tmp_path / "enwiki-table-markup.xml.bz2"
    path.write_bytes(data[: len(data) // 2])
    assert list(wikipedia.read(str(path), None)) == [
        DeadLetter(
            "wikipedia", str(path), "before the first page",
            "truncated dump: EOFError: bzip2 stream truncated: the input ends at byte 32053 "
            "inside the stream that starts at byte 0",
        )
    ]


def test_truncated_bz2_dump_gives_every_page_of_its_whole_blocks(demo_inputs, tmp_path):
    data = demo_inputs[EN].read_bytes()
    cut = data[: len(data) // 2]
    path = tmp_path / "enwiki-half.xml.bz2"
    path.write_bytes(cut)
    prefix = tmp_path / "enwiki-prefix.xml"
    prefix.write_bytes(bz2.BZ2Decompressor().decompress(cut))  # its whole blocks
    records = list(wikipedia.read(str(path), None))
    expected = list(wikipedia.read(str(prefix), None))
    # the pages before the cut, as the decodable part read as plain XML gives them
    assert records[:-1] == expected[:-1]
    assert collections.Counter(type(r).__name__ for r in records) == {"Skip": 77, "dict": 38, "DeadLetter": 1}
    assert expected[-1] == DeadLetter(
        "wikipedia", str(prefix), "after page 626", "truncated dump: the file ends inside page 627"
    )
    assert records[-1] == DeadLetter(
        "wikipedia", str(path), "after page 626",
        "truncated dump: EOFError: bzip2 stream truncated: the input ends at byte 847935 "
        "inside the stream that starts at byte 0",
    )
