"""Output parts sized by bytes (`pipeline.beam.parts`) and the external sort they are
written from (`pipeline.beam.extsort`), on real Documents."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.clean import DeadLetterPart, DocumentPart, document_bytes, sized_dead_letter, sized_document
from pipeline.core.config import load_config
from pipeline.beam.extsort import sort_pairs
from pipeline.beam.packed import INLINE, pack
from pipeline.beam.parts import WriteSizedParts, _numbering, part_count, part_index
from pipeline.sources import github, wikipedia

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def docs(demo_inputs) -> list[dict]:
    """Real Documents of two sources: the demo's Wikipedia pages and Python files."""
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    out = [r for k, path in demo_inputs.items() if k.startswith("inputs/wikipedia/")
           for r in wikipedia.read(str(path)) if isinstance(r, dict)]
    out += [r for k, path in demo_inputs.items() if k.startswith("inputs/github/")
            for r in github.read(str(path), cfg) if isinstance(r, dict)]
    return out


def test_sort_pairs_merges_spilled_runs_into_key_order(docs):
    pairs = [(d["id"], pack(d)) for d in docs]
    for budget in (1, 50_000, 1 << 30):  # a run per pair, a few runs, all in memory
        assert list(sort_pairs(iter(pairs), budget)) == sorted(pairs)


def test_parts_are_contiguous_id_ranges_numbered_without_gaps():
    assert part_count(0, 100) == 1 and part_count(100, 100) == 1 and part_count(101, 100) == 2
    assert part_index("00000000", 7) == 0 and part_index("ffffffff", 7) == 6
    ids = [f"{i:08x}" for i in range(0, 1 << 32, 1 << 24)]
    assert [part_index(k, 4) for k in ids] == sorted(part_index(k, 4) for k in ids)  # ranges, in order
    assert _numbering([("a", 5), ("b", 0), ("a", 2)]) == {("a", 2): (0, 2), ("a", 5): (1, 2), ("b", 0): (0, 1)}


def test_sized_parts_of_real_documents(docs, tmp_path):
    target = 1_000_000
    dead = [{"source": "books", "path": f"b{i}.txt", "record": "", "reason": "cannot open"} for i in range(30)]
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        written = p | "Docs" >> beam.Create(docs) | beam.Map(sized_document, INLINE) | WriteSizedParts(
            target, DocumentPart(str(tmp_path)), count_as="docs_kept")
        dead_written = p | "Dead" >> beam.Create(dead) | beam.Map(sized_dead_letter) | "WriteDead" >> WriteSizedParts(
            target, DeadLetterPart(str(tmp_path)))
        (written, dead_written) | beam.Flatten() | beam.combiners.ToList() | beam.Map(
            lambda entries: (tmp_path / "entries.json").write_text(json.dumps(entries)))
    entries = json.loads((tmp_path / "entries.json").read_text())
    for source in ("wikipedia", "github"):
        mine = sorted((e for e in entries if e.get("source") == source), key=lambda e: e["file"])
        total = sum(document_bytes(d) for d in docs if d["source"] == source)
        assert len(mine) == part_count(total, target) > 1
        assert [e["file"] for e in mine] == [f"{source}/part-{i:05d}-of-{len(mine):05d}.arrow" for i in range(len(mine))]
        assert all(target / 2 <= e["bytes"] <= 2 * target for e in mine), [e["bytes"] for e in mine]
        rows = []
        for e in mine:  # the parts in order: every document once, sorted by id throughout
            with pa.memory_map(str(tmp_path / e["file"])) as f:
                rows += pa.ipc.open_file(f).read_all().column("id").to_pylist()
        assert rows == sorted(d["id"] for d in docs if d["source"] == source)
    (dead_entry,) = [e for e in entries if "source" not in e]
    assert dead_entry["file"] == "dead_letter/part-00000-of-00001.jsonl" and dead_entry["rows"] == 30
    lines = (tmp_path / dead_entry["file"]).read_text().splitlines()
    assert lines == sorted(json.dumps(r, sort_keys=True) for r in dead)
