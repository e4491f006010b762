"""Documents of any size: the stages that stream over a text (content hash,
MinHash, C4 rules, packing) give exactly what they give on the whole text, at
any piece size; language ID reads a bounded sample of a text past SAMPLE_CHARS;
`too_large` counts UTF-8 bytes without encoding a copy."""

from __future__ import annotations

import hashlib
import unicodedata

import numpy as np
import pytest

from pipeline.beam.packed import _CODEC, _HEAD, LZ4, pack, unpack
from pipeline.dedup import exact_keys as dedup
from pipeline.dedup import minhash
from pipeline.dedup.exact_keys import content_hash, normalize_for_hash, text_chunks
from pipeline.dedup.minhash import signatures
from pipeline.filters import c4, quality
from pipeline.filters.c4 import C4_FINEWEB, C4_T5, clean_c4_page, iter_lines
from pipeline.filters.langid import (
    SAMPLE_CHARS,
    LanguageIdentifier,
    lid_sample,
)
from pipeline.filters.quality import too_large, utf8_size
from tests.conftest import book_paragraphs, datasketch_minhash, json_texts

# Cut points that would break a naive split: NFC across a cut (a combining mark
# after a space), spaces that NFC rewrites (U+2000 -> U+2002), a final sigma,
# CRLF and the other line boundaries, a lone surrogate, a word with no space.
EDGES = [
    "Caf\u0065\u0301 \u0301x \u2000\u0301 \u2001y \u00a0z",
    "\u039f\u0394\u039f\u03a3 \u03a3\u03a3 \u03b1\u03a3. \u03a3",
    "one\r\ntwo\rthree\n\nfour\x1c\x85five\u2028six\u2029\x0b\x0c",
    "lone \ud800 and \udfff surrogates,\ttabs\u3000ideographic space",
    "x" * 40 + " " + "y" * 3,
    " \n leading and trailing \t",
    "",
]


@pytest.fixture(scope="module")
def alice(demo_inputs) -> list[str]:
    """The demo book's paragraphs, each on one line (as C4 pages hold them)."""
    return [" ".join(p.split()) for p in book_paragraphs(demo_inputs["inputs/books/alice29.txt"], min_words=1)]


@pytest.fixture(scope="module")
def pages(alice, shared_corpus) -> list[str]:
    """Real pages: the shared C4 sample's first 150, and the edge cases."""
    c4_pages = json_texts(shared_corpus / "c4" / "c4-en-sample.00000-of-00001.json.gz", min_words=0)[:150]
    return c4_pages + ["\n".join(alice[:40])] + EDGES


def test_text_chunks_cut_before_whitespace(alice):
    book = "\n".join(alice)
    pieces = list(text_chunks(book, 1000))
    assert "".join(pieces) == book and len(pieces) == 143  # 142430 characters
    assert all(len(p) >= 1000 for p in pieces[:-1])
    assert all(p[0].isspace() for p in pieces[1:])
    assert next(text_chunks(book, len(book))) is book  # short enough: the text itself
    assert list(text_chunks("x" * 50, 10)) == ["x" * 50]  # no whitespace: one piece


@pytest.mark.parametrize("size", [1, 7, 64, 1 << 20])
def test_content_hash_equals_the_whole_text_hash(pages, monkeypatch, size):
    monkeypatch.setattr(dedup, "CHUNK_CHARS", size)
    texts = [t for t in pages if "\ud800" not in t]  # strict UTF-8, as content_hash always was
    for text in texts:
        whole = hashlib.sha1(normalize_for_hash(text).encode("utf-8")).hexdigest()
        assert content_hash(text) == whole, text[:60]
    # piece by piece, NFC and str.split() see what they see on the whole text
    for text in EDGES:
        words = [w for p in text_chunks(text, size) for w in unicodedata.normalize("NFC", p).split()]
        assert words == unicodedata.normalize("NFC", text).split()


def test_content_hash_of_a_text_of_several_pieces(alice):
    book = "\n\n".join(alice)  # 0.14 MB: one piece
    many = book * 20  # 2.9 MB: pieces of 1 MiB
    assert len(list(text_chunks(many, dedup.CHUNK_CHARS))) == 3
    assert content_hash(book) == "0bd50716b38daa7a92a51f4c0dbf7a6d523f202e"
    assert content_hash(many) == "1f928323e8aa9cd1c04b2078650c84c88a2766ba"
    assert content_hash(many) == hashlib.sha1(normalize_for_hash(many).encode()).hexdigest()


@pytest.mark.parametrize("group", [1, 13, 500, 1 << 20])
def test_signatures_do_not_depend_on_groups_or_pieces(pages, monkeypatch, group):
    reference, has_reference = signatures(pages)  # default groups: every page whole
    monkeypatch.setattr(minhash, "_GROUP_CHARS", group)
    sigs, has_shingles = signatures(pages)
    assert np.array_equal(sigs, reference) and np.array_equal(has_shingles, has_reference)
    assert has_shingles.tolist()[-len(EDGES):] == [True] * (len(EDGES) - 1) + [False]


@pytest.mark.parametrize("ngram", [1, 3, 5])
def test_streamed_signature_equals_datasketch(alice, monkeypatch, ngram):
    monkeypatch.setattr(minhash, "_GROUP_CHARS", 300)  # a paragraph or two per piece
    long_doc = "\n".join(alice[:60])
    short = "two words"  # fewer words than n, in pieces of their own
    texts = [long_doc, short, "\u2014 !", "Caf\u0065\u0301 " * 200]
    sigs, has_shingles = signatures(texts, num_perm=64, ngram=ngram, seed=3)
    assert has_shingles.tolist() == [True, True, False, True]
    for text, sig in zip(texts, sigs):
        assert np.array_equal(sig, datasketch_minhash(text, 64, ngram, 3).hashvalues), text[:40]


def test_iter_lines_is_splitlines():
    tricky = ["a\r\nb", "a\r\n\r\nb\r", "\n\n", "a\x85b\u2028c\u2029\x1c\x1d\x1e\x0b\x0c", "abc", "", "\r\n" * 5]
    for text in tricky:
        for size in (1, 2, 3, 100):
            assert list(iter_lines(text, size)) == text.splitlines(), (text, size)
    block = "\r\n".join(tricky) * 50
    assert list(iter_lines(block, 17)) == block.splitlines()


@pytest.mark.parametrize("params", [C4_T5, C4_FINEWEB])
def test_c4_rules_do_not_depend_on_blocks(pages, monkeypatch, params):
    whole = [clean_c4_page(t, params) for t in pages]
    monkeypatch.setattr(c4, "LINES_CHUNK_CHARS", 50)  # kept lines joined in blocks of ~50 characters
    assert [clean_c4_page(t, params) for t in pages] == whole
    kept = [t for t, _ in whole if t is not None]
    assert len(kept) > 50


def test_c4_word_rules_count_like_split():
    long_word = c4._long_word(5)
    for line in ["abcde fgh", "abcdef", "ab\u3000abcdef", "abcde\u00a0abcde", "", "  x  "]:
        assert bool(long_word.search(line)) == any(len(w) > 5 for w in line.split()), line
        for n in range(4):
            assert c4._fewer_words(line, n) == (len(line.split()) < n), (line, n)


def test_c4_rules_on_a_page_of_one_long_line(alice):
    passing = [p for p in alice if not any(k.startswith("line.") for k in clean_c4_page(p)[1])]
    line = " ".join(passing * 3)  # one line of 0.3 MB, no newline
    text, reasons = clean_c4_page(line)
    assert text == line and reasons == {}


def test_lid_sample_leaves_every_sample_document_whole(alice):
    book = "\n".join(alice)
    assert lid_sample(book) is book
    exact = ("x " * SAMPLE_CHARS)[:SAMPLE_CHARS]
    assert lid_sample(exact) is exact


def test_lid_sample_of_a_long_text(alice):
    text = "\n".join(alice) * 2
    sample = lid_sample(text, max_chars=8000, windows=4)
    assert 7000 < len(sample) <= 8000 + 3  # 4 windows of 2000, less the words cut at their edges
    assert sample.startswith(text[:1000])  # the first window is the start
    assert text.endswith(sample[-1000:])  # the last one the end
    assert sample.split() == [w for part in sample.split("  ") for w in part.split()]
    assert all(f" {w} " in f" {text} ".replace("\n", " ") for w in set(sample.split()))  # whole words only


def test_language_of_a_text_longer_than_the_sample(lid_model, alice):
    lid = LanguageIdentifier(lid_model)
    book = "\n".join(alice)
    long_text = "\n".join([book] * (SAMPLE_CHARS // len(book) + 2))  # 4.5 MB
    assert len(long_text) > SAMPLE_CHARS
    [(lang, score)] = lid.predict([long_text])
    [(sample_lang, sample_score)] = lid.predict([lid_sample(long_text)])
    assert (lang, score) == (sample_lang, sample_score)
    assert lang == "en" and score > 0.9


def test_utf8_size_and_too_large(monkeypatch):
    texts = ["plain ascii", "caf\u00e9 \u20ac \U0001f600", "lone \ud800", "", "\u00e9" * 100]
    for size in (1, 3, 1 << 20):
        monkeypatch.setattr(quality, "_COUNT_CHARS", size)
        for text in texts:
            assert utf8_size(text) == len(text.encode("utf-8", "surrogatepass")), text
    monkeypatch.setattr(quality, "_COUNT_CHARS", 4)
    text = "caf\u00e9 \u20ac \U0001f600"  # 5 + 1 + 3 + 1 + 4 = 14 bytes, 8 characters
    assert utf8_size(text) == 14
    assert too_large({"text": text}, 14) is None
    assert too_large({"text": text}, 13) == "too_large"
    assert too_large({"text": text}, 32) is None  # 8 * 4 <= 32: no counting
    assert too_large({"text": text}, 7) == "too_large"  # more characters than bytes allowed
    assert too_large({"text": "x" * 1000}, 999) == "too_large"
    assert too_large({"text": "x" * 1000}, 1000) is None
    assert too_large({"text": "\u00e9" * 1000}, 1999) == "too_large"
    assert too_large({"text": "\u00e9" * 1000}, 2000) is None


def test_pack_of_a_long_document_round_trips(alice):
    book = "\n".join(alice)
    doc = {"id": "a" * 40, "source": "books", "text": (book + " \u00e9\u20ac\U0001f600 \ud800 ") * 25,
           "url": "u", "lang": "en", "lang_score": 0.75, "meta": "{\"title\": \"Alice\"}"}
    packed = pack(doc)
    assert unpack(packed) == doc
    assert len(packed) < len(doc["text"]) / 2  # compressed, in several frames
    spilled = pack(doc, LZ4)
    assert unpack(spilled) == doc
    assert len(spilled) < len(doc["text"]) / 1.5  # in several blocks, each with its sizes
    small = {**doc, "text": book}  # one frame: the layout of a single compressed block
    raw = b"".join(small[f].encode("utf-8", "surrogatepass") for f in ("id", "source", "text", "url", "lang", "meta"))
    head = _HEAD.pack(1, len(raw), 0.75, *(len(small[f].encode()) for f in ("id", "source", "text", "url", "lang", "meta")))
    assert pack(small) == head + _CODEC.compress(raw, asbytes=True)
