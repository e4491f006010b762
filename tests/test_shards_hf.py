"""Hugging Face `datasets` opens the shard job's shards as they are.

The shards are Arrow IPC *file* format (random access to record batches,
memory-mapped by the trainer). `datasets`' packaged "arrow" builder reads that
format (it tries the stream format, then the file format); `Dataset.from_file`
reads only the stream format, so it is not the way in.
"""

from __future__ import annotations

from pathlib import Path

import datasets  # pinned in requirements-dev.txt: a missing install must fail, not skip
import pyarrow as pa
import pytest


@pytest.fixture(scope="module")
def shards(shard_run) -> tuple[Path, dict]:
    return Path(shard_run["cfg"].shards.out), shard_run["manifest"]


def _pyarrow_table(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as f:
        return pa.ipc.open_file(f).read_all()


def test_streaming_reads_a_shard_in_place(shards):
    shard_dir, manifest = shards
    entry = next(s for s in manifest["shards"] if s["split"] == "val")
    ds = datasets.load_dataset("arrow", data_files={"val": str(shard_dir / entry["file"])}, split="val", streaming=True)
    rows = list(ds)
    expected = _pyarrow_table(shard_dir / entry["file"]).to_pydict()
    assert len(rows) == entry["rows"] == 3
    assert [r["doc_id"] for r in rows] == expected["doc_id"]
    assert [r["source"] for r in rows] == expected["source"]
    assert [r["input_ids"] for r in rows] == expected["input_ids"]
    assert sum(len(r["input_ids"]) for r in rows) == entry["tokens"]


def test_map_style_dataset_over_all_shards_of_a_split(shards, tmp_path):
    """Random access over every train shard listed in the manifest (datasets
    converts them once into its own cache folder, here tmp_path)."""
    shard_dir, manifest = shards
    entries = [s for s in manifest["shards"] if s["split"] == "train"]
    files = [str(shard_dir / s["file"]) for s in entries]
    ds = datasets.load_dataset("arrow", data_files=files, split="train", cache_dir=str(tmp_path))
    assert ds.num_rows == sum(s["rows"] for s in entries) == 4232
    assert ds.features["input_ids"] == datasets.LargeList(datasets.Value("uint16"))
    expected = pa.concat_tables([_pyarrow_table(Path(f)) for f in files])
    got = ds.with_format("arrow")[:]
    assert got.column("doc_id").to_pylist() == expected.column("doc_id").to_pylist()
    assert got.column("input_ids").equals(expected.column("input_ids"))
    assert got.column("input_ids").combine_chunks().values.to_numpy().size == manifest["tokens_written"]
    bos, eos = manifest["tokenizer"]["bos_id"], manifest["tokenizer"]["eos_id"]
    assert ds[0]["input_ids"][0] == bos and ds[ds.num_rows - 1]["input_ids"][-1] == eos
