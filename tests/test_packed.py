"""Documents and token ids packed between Beam stages (`pipeline.beam.packed`), and
the Document writer that unpacks one bounded record batch at a time."""

from __future__ import annotations

import hashlib

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipeline.beam.extsort import sort_pairs
from pipeline.beam.packed import (
    LZ4,
    ZSTD,
    MergeDocuments,
    Packer,
    SpillError,
    pack,
    pack_ids,
    unpack,
    unpack_ids,
)
from pipeline.clean import (
    WRITE_BATCH_CHARS,
    WRITE_BATCH_ROWS,
    DocumentPart,
    record_batches,
)
from pipeline.core.schema import DOCUMENT_FIELDS, DOCUMENT_SCHEMA
from pipeline.sources import wikipedia
from pipeline.sources.base import make_document

DUMPS = ("inputs/wikipedia/bgwiki-latest-pages-articles-shortened.xml.bz2",
         "inputs/wikipedia/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")


@pytest.fixture(scope="module")
def wiki_docs(demo_inputs) -> list[dict]:
    """Real Wikipedia Documents: one Bulgarian (Cyrillic, 2-byte UTF-8), 106 English."""
    docs = [r for d in DUMPS for r in wikipedia.read(str(demo_inputs[d])) if isinstance(r, dict)]
    assert len(docs) == 107
    return docs


@pytest.mark.parametrize(("codec", "ratio"), [(ZSTD, 2.3), (LZ4, 1.6)])
def test_pack_round_trips_real_documents_and_shrinks_them(wiki_docs, codec, ratio):
    packed = [pack(d, codec) for d in wiki_docs]
    assert {p[0] for p in packed} == {codec}  # the version byte names the codec
    assert [unpack(p) for p in packed] == wiki_docs
    assert all(list(unpack(p)) == list(DOCUMENT_FIELDS) for p in packed)  # schema order
    raw = sum(len(d[f].encode()) for d in wiki_docs for f in DOCUMENT_FIELDS if f != "lang_score")
    assert sum(map(len, packed)) < raw / ratio  # measured 2.37 (zstd), 1.65 (LZ4) on this prose


@pytest.mark.parametrize("codec", [ZSTD, LZ4])
def test_pack_is_lossless_on_awkward_text(codec):
    doc = make_document("github", "a/b.py", "x\ud800y \U0001F600 é\x00z", "a/b.py", "bg", 0.123456789,
                        meta={"licence": "MIT"})
    assert unpack(pack(doc, codec)) == doc  # lone surrogate, emoji, NUL, float64 score
    empty = make_document("books", "e", "", "", "", 0.0)
    assert unpack(pack(empty, codec)) == empty


def test_pack_rejects_what_is_not_a_document():
    doc = make_document("books", "e", "text", "u")
    with pytest.raises(ValueError, match="not a Document.*extra"):
        pack({**doc, "extra": 1})
    with pytest.raises(ValueError, match="no field 'url'"):
        pack({**{k: v for k, v in doc.items() if k != "url"}, "x": ""})
    with pytest.raises(ValueError, match="version 9"):
        unpack(b"\x09" + pack(doc)[1:])


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_pack_ids_round_trips(dtype):
    ids = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, 5000).astype(dtype)
    back = unpack_ids(pack_ids(ids), dtype)
    assert back.dtype == dtype and np.array_equal(back, ids)
    assert unpack_ids(pack_ids(ids[:0]), dtype).size == 0


def test_record_batches_bound_rows_and_bytes(wiki_docs):
    many = [dict(d, id=f"{i:05d}") for i in range(2) for d in wiki_docs] * 3  # 642 rows, 17 MB
    batches = list(record_batches(iter(many)))
    assert sum(b.num_rows for b in batches) == len(many)
    chars = [sum(map(len, b.column("text").to_pylist())) for b in batches]
    longest = max(len(d["text"]) for d in many)
    assert all(c < WRITE_BATCH_CHARS + longest for c in chars) and min(chars[:-1]) >= WRITE_BATCH_CHARS
    assert len(batches) > 1 and batches[0].schema == DOCUMENT_SCHEMA
    assert pa.Table.from_batches(batches).to_pylist() == many
    small = [make_document("books", str(i), f"line {i}", "u") for i in range(WRITE_BATCH_ROWS + 76)]
    assert [b.num_rows for b in record_batches(small)] == [WRITE_BATCH_ROWS, 76]


def test_a_document_part_from_sorted_runs_is_sorted_by_id_and_complete(wiki_docs, tmp_path):
    items = [(d["id"], pack(d)) for d in reversed(wiki_docs)]
    # a budget of 200 kB: the part's 1.1 MB of packed documents sort as several runs
    entry = DocumentPart(str(tmp_path))("wikipedia", 0, 1, (p for _, p in sort_pairs(items, 200_000)))
    path = tmp_path / entry["file"]
    assert entry["file"] == "wikipedia/part-00000-of-00001.arrow" and entry["rows"] == len(wiki_docs)
    # the writer describes its file as written: nothing is read back to hash it
    assert entry["bytes"] == path.stat().st_size
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    with pa.memory_map(str(path)) as f:
        rows = pa.ipc.open_file(f).read_all().to_pylist()
    assert rows == sorted(wiki_docs, key=lambda d: d["id"])
    # one part's bytes depend only on its documents, not on their arrival order
    again = DocumentPart(str(tmp_path / "again"))("wikipedia", 0, 1, (p for _, p in sort_pairs(sorted(items))))
    assert again["sha256"] == entry["sha256"]


def test_merge_documents_in_a_pipeline(wiki_docs):
    from apache_beam.options.pipeline_options import PipelineOptions

    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        a = p | "A" >> beam.Create(wiki_docs[:20])
        b = p | "B" >> beam.Create(wiki_docs[20:]) | beam.Reshuffle()  # another stage
        merged = (a, b) | MergeDocuments()
        assert_that(merged | beam.Map(lambda d: (d["id"], d["text"])),
                    equal_to([(d["id"], d["text"]) for d in wiki_docs]))


def test_spilled_documents_read_back_in_another_process(wiki_docs, tmp_path):
    """The local runner's form: bytes in a spill file, a reference in the PCollection."""
    import pickle
    import subprocess
    import sys

    packer = Packer(str(tmp_path / "spill"))
    refs = [packer.pack(d) for d in wiki_docs]
    assert all(isinstance(r, tuple) and len(pickle.dumps(r)) < 120 for r in refs)
    assert {packer.get(r)[0] for r in refs} == {LZ4} and Packer().pack(wiki_docs[0])[0] == ZSTD
    assert [packer.unpack(r) for r in reversed(refs)] == wiki_docs[::-1]
    assert len({r[0] for r in refs}) == 1  # one append-only file per process
    code = ("import pickle, sys; from pipeline.beam.packed import Packer; "
            "p, refs = pickle.loads(sys.stdin.buffer.read()); "
            "print(sum(len(p.unpack(r)['text']) for r in refs))")
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps((packer, refs)),
                         capture_output=True, check=True).stdout
    assert int(out) == sum(len(d["text"]) for d in wiki_docs)
    assert Packer().unpack(pack(wiki_docs[0])) == wiki_docs[0]  # inline bytes still read
    with pytest.raises(SpillError, match="no spill folder"):
        Packer().unpack(refs[0])
    name, offset, n = refs[-1]
    with pytest.raises(SpillError, match="expected"):
        packer.unpack((name, offset, n + 10))
    with pytest.raises(SpillError, match="cannot be opened"):
        packer.unpack(("missing.spill", 0, 10))


def test_a_spill_folder_deleted_and_made_again_gets_a_new_file(wiki_docs, tmp_path):
    """Two jobs in one process (in-memory workers) spilling to the same path."""
    import shutil

    from pipeline.beam.packed import release_spill

    folder = str(tmp_path / "spill")
    first = Packer(folder).pack(wiki_docs[0])
    shutil.rmtree(folder)  # the first job ended without releasing
    second = Packer(folder).pack(wiki_docs[1])
    assert second[0] != first[0] and Packer(folder).unpack(second) == wiki_docs[1]
    release_spill(folder)
    release_spill(folder)
    assert Packer(folder).unpack(second) == wiki_docs[1]  # reopened on demand
