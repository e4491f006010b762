"""C4 page heuristics and CCNet line dedup, on real text with exact expected output."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.filters.c4 import C4_FINEWEB, C4_T5, clean_c4_page, count_sentences, load_badwords
from pipeline.dedup.line_keys import line_hash, normalize_for_dedup
from pipeline.dedup.lines import LineDedup
from pipeline.sources.base import make_document


@pytest.fixture(scope="module")
def alice_sentences(demo_inputs) -> list[str]:
    """Real prose lines: sentences of Alice's first chapter, one per line."""
    raw = demo_inputs["inputs/books/alice29.txt"].read_text(encoding="latin-1")
    body = " ".join(raw[raw.index("Alice was beginning") :].split()[:600])
    sentences = [s.strip() + "." for s in body.split(".") if len(s.split()) >= 6]
    return [s for s in sentences if "!" not in s and "?" not in s][:12]  # one sentence each


def test_c4_keeps_real_prose_and_removes_each_kind_of_line(alice_sentences):
    prose = alice_sentences[:4]
    page = "\n".join(
        [
            "Home | About | Contact",  # no terminal punctuation
            prose[0],
            "Click here.",  # fewer than 5 words
            prose[1] + "[1]",  # citation marker removed, line kept
            "Please enable JavaScript to view the comments powered by Disqus.",
            prose[2],
            "This site uses cookies to improve your experience, see our policy.",
            "Read more...",  # ellipsis
            prose[3],
        ]
    )
    text, reasons = clean_c4_page(page, C4_T5)
    assert text == "\n".join(prose)
    assert reasons == {
        "line.no_endmark": 2,
        "line.too_few_words": 1,
        "line.javascript": 1,
        "line.policy": 1,
    }


def test_c4_page_rules(alice_sentences):
    prose = "\n".join(alice_sentences[:4])
    assert clean_c4_page(prose + "\nLorem ipsum dolor sit amet, consectetur adipiscing.", C4_T5)[0] is None
    text, reasons = clean_c4_page(prose + "\nfunction f() { return 1; } is a nice snippet here.", C4_T5)
    assert text is None and reasons["curly_bracket"] == 1
    two = "\n".join(alice_sentences[:2])
    assert count_sentences(two) == 2
    assert clean_c4_page(two, C4_T5)[1]["too_few_sentences"] == 1
    # FineWeb's variant: 5 sentences and 3 words per line
    assert clean_c4_page("\n".join(alice_sentences[:4]), C4_FINEWEB)[0] is None
    assert clean_c4_page("\n".join(alice_sentences[:5] + ["It was late."]), C4_FINEWEB)[0].endswith("It was late.")


def test_c4_badwords_whole_words(tmp_path, alice_sentences):
    words = tmp_path / "badwords.txt"
    words.write_text("rabbit-hole\nearth\n", encoding="utf-8")
    pattern = load_badwords(words)
    prose = "\n".join(alice_sentences[:6])
    assert "rabbit-hole" in prose and "earth" in prose
    assert clean_c4_page(prose, C4_T5, pattern)[1]["badwords"] == 1
    assert pattern.search("earthly") is None and pattern.search("EARTH.")  # whole words, any case
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_badwords(tmp_path / "missing.txt")


def test_ccnet_normalisation_and_hash():
    assert normalize_for_dedup("  Copyright © 2019 ACME！\t") == "copyright © 0000 acme"
    assert line_hash("Copyright 2019") == line_hash("copyright 2023")
    assert len(line_hash("x")) == 8 and line_hash(" \t ") is None


def test_line_dedup_removes_repeats_after_the_first(alice_sentences):
    boiler = "Share this page on Facebook and Twitter"
    a = make_document("commoncrawl", "a", "\n".join([alice_sentences[0], boiler, alice_sentences[1]]), "u:a")
    b = make_document("commoncrawl", "b", "\n".join([boiler.upper(), alice_sentences[2], "", alice_sentences[2]]), "u:b")
    w = make_document("wikipedia", "w", "\n".join([boiler, alice_sentences[3]]), "u:w")
    assert a["id"] < b["id"]  # so a's lines are the first occurrences
    with BeamPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create([a, b, w]) | LineDedup(["commoncrawl"]) | beam.Map(lambda d: (d["id"], d["text"]))
        assert_that(
            out,
            equal_to([
                (a["id"], a["text"]),
                (b["id"], alice_sentences[2]),  # boilerplate and the repeated line gone
                (w["id"], w["text"]),  # other sources untouched
            ]),
        )
    assert json.loads(a["meta"]) == {}
