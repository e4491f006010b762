"""Books reader on real Project Gutenberg files: the two 1990s texts of the demo
(brotli's test data: the Canterbury corpus alice29.txt and plrabn12.txt), the
1992 etext lcet10.txt from the same package and, when present, the modern
Gutenberg files of the shared corpus. Expected lines and
counts were read off the raw files (`head`, `tail`, `grep -n`, `wc -c`)."""

from __future__ import annotations

import gzip
import json
import posixpath
import re
import zlib

import pytest

from pipeline import fetch
from pipeline.core.schema import doc_id
from pipeline.sources import books
from pipeline.sources.base import DeadLetter, Skip

ALICE = "inputs/books/alice29.txt"
MILTON = "inputs/books/plrabn12.txt"


@pytest.fixture(scope="module")
def lcet10(demo_inputs, tmp_path_factory):
    """lcet10.txt of the Canterbury corpus (the 1992 Project Gutenberg etext of a
    Library of Congress workshop), from the brotli sdist that holds alice29.txt."""
    requirement, flags, member, _ = next(f for f in fetch.DEMO_FILES if f[3] == ALICE)
    cache = demo_inputs[ALICE].parents[2]
    archive = fetch._download(requirement, flags, cache / "packages")
    target = tmp_path_factory.mktemp("books") / "lcet10.txt"
    fetch._extract(archive, posixpath.join(posixpath.dirname(member), "lcet10.txt"), target)
    return target


def _read_one(path) -> dict:
    records = list(books.read(str(path), None))
    assert len(records) == 1
    assert isinstance(records[0], dict), records[0]
    return records[0]


def _lines(doc: dict) -> list[str]:
    return doc["text"].split("\n")


def test_alice29_has_no_gutenberg_wrapper_and_is_kept_whole(demo_inputs):
    path = demo_inputs[ALICE]
    raw = path.read_bytes()
    # The Canterbury-corpus copy: no PG header or footer, CRLF, a DOS ^Z at the end.
    assert b"Gutenberg" not in raw and raw.endswith(b"THE END\r\n\x1a")
    doc = _read_one(path)
    # raw line 5, its centring spaces stripped with the document's edges
    assert _lines(doc)[0] == "ALICE'S ADVENTURES IN WONDERLAND"
    assert _lines(doc)[-1] == "                             THE END"
    assert _lines(doc)[:5] == [
        "ALICE'S ADVENTURES IN WONDERLAND",
        "",
        "                          Lewis Carroll",
        "",
        "               THE MILLENNIUM FULCRUM EDITION 2.9",
    ]
    # everything but the 4 leading blank lines and the title's 16 centring
    # spaces, the CRs, the final LF and ^Z
    assert len(doc["text"]) == len(raw) - raw.count(b"\r") - 4 - 16 - 1 - 1 == 148459
    assert "\r" not in doc["text"] and "\x1a" not in doc["text"]
    assert json.loads(doc["meta"]) == {
        "title": "ALICE'S ADVENTURES IN WONDERLAND",
        "encoding": "utf-8",
        "replacements": 0,
        "truncated": False,
        "gutenberg_markers": False,
        "header_chars_removed": 0,
        "footer_chars_removed": 0,
    }
    assert doc["id"] == doc_id("books", "alice29.txt")
    assert (doc["source"], doc["url"], doc["lang"]) == ("books", str(path), "")


def test_plrabn12_loses_its_1992_release_preamble(demo_inputs):
    path = demo_inputs[MILTON]
    raw = path.read_bytes()
    assert raw.startswith(b"\r\nThis is the February 1992 Project Gutenberg release of: \r\n")
    raw_lines = raw.decode("ascii").replace("\r\n", "\n").split("\n")
    assert raw_lines[62] == "Paradise Lost "  # line 63 of the file: the book's own title
    doc = _read_one(path)
    assert _lines(doc)[0] == "Paradise Lost "
    assert _lines(doc)[5:8] == ["Book I ", " ", " "]  # the 1992 file pads blank lines
    assert _lines(doc)[8] == "Of Man's first disobedience, and the fruit "
    assert _lines(doc)[-1] == "[The End]"  # the raw file ends "[The End]^Z^Z\r\n"
    # `head -62 plrabn12.txt | tr -d '\r' | wc -c` = 2961
    header = sum(len(line) + 1 for line in raw_lines[:62])
    assert header == 2961
    assert re.search("gutenberg|etext", doc["text"], re.I) is None
    assert raw.count(b"Gutenberg") == 6  # all of them in the preamble
    assert json.loads(doc["meta"]) == {
        "title": "Paradise Lost",
        "encoding": "utf-8",
        "replacements": 0,
        "truncated": False,
        "gutenberg_markers": True,
        "header_chars_removed": 2961,
        "footer_chars_removed": 0,
    }


def test_lcet10_loses_its_etext_title_line_and_closing_line(lcet10):
    raw = lcet10.read_bytes()
    # the etext's whole header is its title line (raw line 3), its footer the last line
    assert raw.startswith(b"\r\n\r\nThe Project Gutenberg Etext of LOC WORKSHOP ON ELECTRONIC TEXTS\r\n")
    assert raw.endswith(
        b"\r\n*End of The Project Gutenberg Etext of LOC WORKSHOP ON ELECTRONIC ETEXTS\r\n\r\n"
    )
    assert raw.count(b"Gutenberg") == 2  # those two lines only
    doc = _read_one(lcet10)
    assert _lines(doc)[0] == "WORKSHOP ON ELECTRONIC TEXTS"  # raw line 8, centred
    assert _lines(doc)[2] == "                               PROCEEDINGS"
    assert _lines(doc)[-1] == "[A few of the italics (when used for emphasis) were replaced by CAPS mh]"
    assert "Gutenberg" not in doc["text"]
    raw_lines = raw.decode("ascii").replace("\r\n", "\n").split("\n")
    assert raw_lines[7517].startswith("*End of The Project Gutenberg Etext")  # line 7518
    # raw lines 4 to 7517, without the whitespace at their edges
    assert doc["text"] == "\n".join(raw_lines[3:7517]).strip()
    header = 2 + len(raw_lines[2]) + 1  # two blank lines, then the title line
    footer = len(raw_lines[7517]) + 2  # the closing line and a blank line
    assert (header, footer) == (66, 74)
    assert json.loads(doc["meta"]) == {
        "title": "LOC WORKSHOP ON ELECTRONIC TEXTS",
        "encoding": "utf-8",
        "replacements": 0,
        "truncated": False,
        "gutenberg_markers": True,
        "header_chars_removed": header,
        "footer_chars_removed": footer,
    }


@pytest.mark.parametrize(
    "header, footer",
    [
        (  # 1990s etexts: the title line is all the header, "*End of ..." the footer
            "The Project Gutenberg Etext of LOC WORKSHOP ON ELECTRONIC TEXTS\n",
            "*End of The Project Gutenberg Etext of LOC WORKSHOP ON ELECTRONIC ETEXTS\n",
        ),
        (  # the title line repeated above the book, after the announcements
            (
                "The Project Gutenberg Etext of Moby Dick, by Herman Melville\n"
                "#3 in our series by Herman Melville\n\n"
                "Please take a look at the important information in this header.\n\n"
                "The Project Gutenberg Etext of Moby Dick, by Herman Melville\n"
            ),
            "**End of Project Gutenberg Etext of Moby Dick**\n",
        ),
        (  # German etexts of the 1990s and 2000s
            "**Project Gutenberg's Etext of Alice's Abenteuer im Wunderland**\n",
            'Ende dieses Project Gutenberg Etextes "Alice\'s Abenteuer im Wunderland"\n',
        ),
        (  # copyrighted books
            "*** START OF THE COPYRIGHTED PROJECT GUTENBERG EBOOK ALICE ***\n",
            "*** END OF THE COPYRIGHTED PROJECT GUTENBERG EBOOK ALICE ***\n",
        ),
        (  # 2006-2010 releases
            (
                "The Project Gutenberg EBook of Alice's Adventures in Wonderland, "
                "by Lewis Carroll\n\n"
                "*** START OF THIS PROJECT GUTENBERG EBOOK ALICE'S ADVENTURES IN WONDERLAND ***\n"
            ),
            (
                "End of Project Gutenberg's Alice's Adventures in Wonderland, by Lewis Carroll\n\n"
                "*** END OF THIS PROJECT GUTENBERG EBOOK ALICE'S ADVENTURES IN WONDERLAND ***\n"
            ),
        ),
        (  # 1990s: small print first, no START marker
            (
                "**The Project Gutenberg Etext of Alice's Adventures in Wonderland**\n"
                "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n"
            ),
            "End of the Project Gutenberg EBook of Alice's Adventures in Wonderland\n",
        ),
        (  # 2000s: small print *after* the END marker
            "*** START OF THE PROJECT GUTENBERG EBOOK, ALICE'S ADVENTURES IN WONDERLAND ***\n",
            (
                "*** END OF THE PROJECT GUTENBERG EBOOK ***\n"
                "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN EBOOKS*Ver.02/11/02*END*\n"
            ),
        ),
        (  # a long title wraps the START marker
            "*** START OF THE PROJECT GUTENBERG EBOOK ALICE'S ADVENTURES IN\nWONDERLAND ***\n",
            "*** END OF THE PROJECT GUTENBERG EBOOK ALICE'S ADVENTURES IN\nWONDERLAND ***\n",
        ),
    ],
)
def test_marker_variants(header, footer):
    body = "CHAPTER I.\nDown the Rabbit-Hole\n\nAlice was beginning to get very tired"
    text = f"{header}\n\n{body}\n\n\n{footer}"
    span = books.gutenberg_span(text)
    assert span.markers
    assert books.strip_gutenberg(text) == body
    assert text[: span.start] == header


def test_title_line_deep_in_a_book_is_text():
    # past MAX_TITLE_LINE lines, a quoted title line is no header
    body = "Chapter 1\n" + "line\n" * books.MAX_TITLE_LINE + "The Project Gutenberg Etext of X\nmore"
    text = "*** START OF THE PROJECT GUTENBERG EBOOK X ***\n" + body
    assert books.strip_gutenberg(text) == body
    assert books.gutenberg_span(text).title == ""


def test_title_from_the_first_header_line():
    text = (
        "**The Project Gutenberg Etext of Alice's Adventures in Wonderland**\n"
        "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\nAlice\n"
    )
    assert books.gutenberg_span(text).title == "Alice's Adventures in Wonderland"


def test_decode_book():
    # a title from the corpus (PG #2229); Latin-1 files: test_latin1_copy_reads_the_same
    title = "Faust: Der Tragödie erster Teil"
    assert books.decode_book(b"\xef\xbb\xbf" + title.encode("utf-8")) == (title, "utf-8", 0)
    assert books.decode_book(title.encode("utf-16")) == (title, "utf-16-le", 0)  # with a BOM
    # without a BOM, UTF-16 is known by its NUL bytes (it was "NUL byte at offset 1: binary")
    assert books.decode_book(title.encode("utf-16-le")) == (title, "utf-16-le", 0)
    with pytest.raises(ValueError, match="NUL character at offset 5 "):
        books.decode_book(b"Faust\x00: Der Trag\xc3\xb6die")


def test_binary_file_is_a_dead_letter(lid_model):
    records = list(books.read(str(lid_model), None))  # fastText's lid.176.ftz
    assert len(records) == 1 and isinstance(records[0], DeadLetter)
    assert records[0].record == "lid.176.ftz"
    # neither UTF-8 nor anything uchardet knows (it was "NUL byte at offset ...")
    assert records[0].reason == (
        "undecodable: 278007 of 938013 bytes not valid UTF-8 (no other encoding detected; more than 0.001)"
    )


def test_missing_file_is_a_dead_letter(tmp_path):
    records = list(books.read(str(tmp_path / "absent.txt"), None))
    assert len(records) == 1 and isinstance(records[0], DeadLetter)
    assert records[0].reason.startswith("cannot read: ")


def test_blank_file_is_skipped(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_bytes(b"\r\n \r\n\x1a")
    assert list(books.read(str(path), None)) == [Skip("books", "empty")]


# --- shared corpus (skipped where absent) ---------------------------------------

START_LINE = re.compile(r"^\*\*\* START OF THE PROJECT GUTENBERG EBOOK [^\n]*\*\*\*\n", re.M)
END_LINE = re.compile(
    r"^(?:\*\*\* END OF THE PROJECT GUTENBERG EBOOK|End of Project Gutenberg's)", re.M
)
TITLES = {
    "pg11_en_alice.txt": "Alice's Adventures in Wonderland",
    "pg19778_de_alice.txt": "Alice's Abenteuer im Wunderland",
    "pg2000_es_don_quijote.txt.gz": "Don Quijote",
    "pg2229_de_faust_1.txt": "Faust: Der Tragödie erster Teil",
    "pg500_en_pinocchio.txt": "The Adventures of Pinocchio",
    "pg52484_it_pinocchio.txt": "Le avventure di Pinocchio: Storia di un burattino",
    "pg55456_fr_alice.txt": "Aventures d'Alice au pays des merveilles",
    "pg68566_es_faust_1.txt": "Fausto: Primera parte",
}


def _raw_text(path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data  # MANIFEST: BOM, CRLF
    return data[3:].decode("utf-8").replace("\r\n", "\n")


def test_every_corpus_book_is_cut_at_its_markers(shared_corpus):
    paths = sorted(p for p in (shared_corpus / "books").iterdir() if ".txt" in p.name)
    assert [p.name for p in paths] == sorted(TITLES)
    for path in paths:
        text = _raw_text(path)
        start = START_LINE.search(text)
        end = END_LINE.search(text, start.end())
        doc = _read_one(path)
        meta = json.loads(doc["meta"])
        assert meta == {
            "title": TITLES[path.name],
            "encoding": "utf-8",
            "replacements": 0,
            "truncated": False,
            "gutenberg_markers": True,
            "header_chars_removed": start.end(),
            "footer_chars_removed": len(text) - end.start(),
        }, path.name
        # the text between the markers, without the whitespace at its edges
        assert doc["text"] == text[start.end() : end.start()].strip(), path.name
        assert "Project Gutenberg" not in doc["text"]
        assert "PROJECT GUTENBERG" not in doc["text"]


def test_gutenberg_in_a_book_body_is_kept(shared_corpus):
    # The Spanish Faust's preface names Johannes Gutenberg three times (raw lines
    # 381, 392, 404); the licence that follows the END marker is gone.
    doc = _read_one(shared_corpus / "books" / "pg68566_es_faust_1.txt")
    assert doc["text"].count("Gutenberg") == 3
    assert "colega de\nGutenberg en el invento de la imprenta" in doc["text"]


def test_latin1_copy_reads_the_same(shared_corpus, tmp_path):
    # pg19778 between its markers is all latin-1: a 1990s-style ISO-8859-1 copy of it
    text = _raw_text(shared_corpus / "books" / "pg19778_de_alice.txt")
    start, end = START_LINE.search(text), END_LINE.search(text)
    excerpt = text[start.start() : end.end()]
    path = tmp_path / "de_alice_latin1.txt"
    path.write_bytes(excerpt.replace("\n", "\r\n").encode("latin-1"))
    doc = _read_one(path)
    original = _read_one(shared_corpus / "books" / "pg19778_de_alice.txt")
    # detected, and read as browsers read ISO-8859-1 (it was "latin-1", the
    # fallback for anything not UTF-8)
    assert json.loads(doc["meta"])["encoding"] == "cp1252"
    assert doc["text"] == original["text"]
    assert "Schwester" in doc["text"] and "ä" in doc["text"]


def test_header_and_footer_only_is_skipped(shared_corpus, tmp_path):
    text = _raw_text(shared_corpus / "books" / "pg11_en_alice.txt")
    start, end = START_LINE.search(text), END_LINE.search(text)
    path = tmp_path / "no_body.txt"
    path.write_text(text[: start.end()] + "\n\n" + text[end.start() :], encoding="utf-8")
    assert list(books.read(str(path), None)) == [Skip("books", "empty")]


# --- damaged compressed books -------------------------------------------------------


def test_truncated_gzip_book_keeps_what_decoded(demo_inputs, tmp_path):
    alice = demo_inputs[ALICE].read_bytes()
    whole = gzip.compress(alice, mtime=0)
    cut = whole[: len(whole) // 2]
    path = tmp_path / "alice29.txt.gz"
    path.write_bytes(cut)
    prefix = zlib.decompressobj(31).decompress(cut)  # all that the cut stream decodes
    assert len(prefix) > 70_000 and alice.startswith(prefix)
    plain = tmp_path / "alice29-prefix.txt"
    plain.write_bytes(prefix)
    expected = _read_one(plain)
    # it was the dead letter alone, "cannot read: EOFError: Compressed file ended ..."
    doc, dead = books.read(str(path), None)
    assert doc["text"] == expected["text"]
    assert doc["text"].endswith(_lines(expected)[-1]) and doc["text"] in _read_one(demo_inputs[ALICE])["text"]
    assert json.loads(doc["meta"]) == {**json.loads(expected["meta"]), "truncated": True}
    assert dead == DeadLetter(
        "books", str(path), "alice29.txt.gz",
        f"damaged: EOFError: gzip stream truncated: the input ends at byte {len(cut)} inside the "
        f"stream that starts at byte 0; the {len(prefix)} bytes before it are read",
    )


def test_corrupt_gzip_book_is_a_dead_letter_only(demo_inputs, tmp_path):
    whole = bytearray(gzip.compress(demo_inputs[ALICE].read_bytes(), mtime=0))
    whole[len(whole) // 2] ^= 0xFF  # found at the member's CRC, after bytes that may be wrong
    path = tmp_path / "alice29.txt.gz"
    path.write_bytes(bytes(whole))
    (dead,) = books.read(str(path), None)
    assert isinstance(dead, DeadLetter) and dead.record == "alice29.txt.gz"
    assert dead.reason.startswith("damaged: OSError: corrupt gzip data in the stream that starts at byte 0 ")
    assert dead.reason.endswith("; nothing is read")


def test_truncated_gzip_book_cc(shared_corpus, tmp_path):
    # Don Quijote as the corpus has it (.txt.gz), cut at a third: its header
    # is removed, the text decoded before the cut kept, the rest a dead letter
    src = shared_corpus / "books" / "pg2000_es_don_quijote.txt.gz"
    cut = src.read_bytes()[: src.stat().st_size // 3]
    path = tmp_path / src.name
    path.write_bytes(cut)
    doc, dead = books.read(str(path), None)
    whole = _read_one(src)
    prefix = zlib.decompressobj(31).decompress(cut)
    assert whole["text"].startswith(doc["text"][:-100]) and len(doc["text"]) > 700_000
    meta = json.loads(doc["meta"])
    assert meta == {**json.loads(whole["meta"]), "truncated": True, "footer_chars_removed": 0}
    assert dead.reason == (
        f"damaged: EOFError: gzip stream truncated: the input ends at byte {len(cut)} inside the "
        f"stream that starts at byte 0; the {len(prefix)} bytes before it are read"
    )


def test_a_missing_input_is_one_cannot_open_dead_letter_for_every_reader(tmp_path):
    """Books as JSON lines, Dolma web text, a WARC file and a Wikipedia dump
    share one "cannot open" dead letter (record "file")."""
    from pipeline.sources import commoncrawl, wikipedia

    for source, read, name in (("books", books.read, "gone.jsonl"), ("commoncrawl", commoncrawl.read, "gone.jsonl"),
                               ("commoncrawl", commoncrawl.read, "gone.warc.gz"),
                               ("wikipedia", wikipedia.read, "gone-pages-articles.xml.bz2")):
        path = str(tmp_path / name)
        (dead,) = list(read(path, None))
        assert dead == DeadLetter(source, path, "file", dead.reason), name
        assert dead.reason.startswith("cannot open: FileNotFoundError"), dead.reason
