"""Book-level dedup (LLaMA 2.1: a book with more than 90% content overlap with
another is removed), on the real Gutenberg books."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.beam.packed import INLINE
from pipeline.core.config import load_config
from pipeline.dedup.near import NearDedup
from pipeline.sources.base import make_document

ROOT = Path(__file__).resolve().parents[1]


def test_an_edited_copy_of_a_book_is_removed_an_other_book_kept(demo_inputs):
    alice = demo_inputs["inputs/books/alice29.txt"].read_text(encoding="latin-1")
    poem = demo_inputs["inputs/books/plrabn12.txt"].read_text(encoding="latin-1")
    lines = alice.split("\n")
    edited = "\n".join(line + " (edited)" if i % 100 == 0 else line for i, line in enumerate(lines))
    docs = [
        make_document("books", "alice29.txt", alice, "alice29.txt"),
        make_document("books", "alice-copy.txt", edited, "alice-copy.txt"),
        make_document("books", "plrabn12.txt", poem, "plrabn12.txt"),
        make_document("wikipedia", "w", alice, "w"),  # other sources are not book-deduplicated
    ]
    survivor = min(docs[0]["id"], docs[1]["id"])
    settings, sources = load_config(ROOT / "configs" / "demo.yaml").near_dedup_groups()["books"]
    assert sources == ["books"] and settings.threshold == 0.9
    with BeamPipeline(runner="FnApiRunner") as p:
        carried = p | beam.Create(docs) | beam.Map(INLINE.carry)
        out = carried | NearDedup(settings, sources) | beam.MapTuple(lambda _, packed: INLINE.unpack(packed)["id"])
        assert_that(out, equal_to([survivor, docs[2]["id"], docs[3]["id"]]))
