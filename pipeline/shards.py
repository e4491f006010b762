"""The shard job (Beam): tokenize the cleaned Documents and write mixture-weighted,
shuffled token shards with a manifest (DESIGN.md, "Token shard", "Mixture").

1. Read every cleaned Arrow file listed in `<out_dir>/clean/manifest.json`.
2. Encode in batches (SentencePiece loads once per worker); BOS/EOS per config.
3. Hold out `val_fraction` of each source's documents by id hash.
4. Count tokens per source; epochs_s = share_s * total / tokens_s (Table 1).
5. Each document is written floor(f) times plus once with probability f - floor(f);
   each copy goes to a uniformly drawn shard and a drawn position in it, so any
   prefix of training sees the target mixture.
6. Shards (uncompressed Arrow IPC) and manifest.json go to a temporary directory
   swapped into place when complete; readers trust only the manifest.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa

from pipeline.beam_util import (
    Counters,
    pipeline_options,
    quiet_beam_logging,
    swap_into_place,
)
from pipeline.config import Config, PipelineError
from pipeline.io import atomic_write, sha256_file
from pipeline.mixture import compute_epochs, hash_unit, repeat_count
from pipeline.schema import token_shard_schema

TRAIN, VAL = "train", "val"


class ShardError(PipelineError):
    """The inputs of the shard job are missing or inconsistent."""


def read_documents(path: str) -> Iterator[tuple[str, str, str]]:
    """(source, doc_id, text) for every row of a cleaned Arrow file, batch by batch."""
    with pa.memory_map(path) as f:
        reader = pa.ipc.open_file(f)
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i).select(["source", "id", "text"]).to_pydict()
            yield from zip(batch["source"], batch["id"], batch["text"])


class Encode(beam.DoFn):
    """Batches of (source, doc_id, text) -> (split, source, doc_id, input_ids uint16/32)."""

    def __init__(self, model_path: str, add_bos: bool, add_eos: bool, val_fraction: float, seed: int):
        self.model_path = model_path
        self.add_bos, self.add_eos = add_bos, add_eos
        self.val_fraction, self.seed = val_fraction, seed

    def setup(self) -> None:
        import tokenizer

        self.sp = tokenizer.load(self.model_path)
        self.encode = tokenizer.encode_batch
        self.dtype = np.uint16 if self.sp.vocab_size() <= 1 << 16 else np.uint32
        self.counters = Counters()

    def process(self, batch: list[tuple[str, str, str]]):
        pieces = self.encode(self.sp, [text for _, _, text in batch], num_threads=1)
        bos = [self.sp.bos_id()] if self.add_bos else []
        eos = [self.sp.eos_id()] if self.add_eos else []
        for (source, doc_id, _), ids in zip(batch, pieces):
            split = VAL if hash_unit(self.seed, "val", doc_id) < self.val_fraction else TRAIN
            self.counters.inc(source, f"docs_{split}")
            yield split, source, doc_id, np.asarray(bos + ids + eos, dtype=self.dtype)


def assign_copies(
    doc: tuple[str, str, str, np.ndarray],
    mixture: dict[str, dict[str, float]],
    seed: int,
    num_shards: int,
) -> Iterator[tuple[tuple[str, int], tuple[float, str, str, np.ndarray]]]:
    """Train document -> its copies keyed by (split, shard), each with a sort key."""
    _, source, doc_id, ids = doc
    for copy in range(repeat_count(mixture[source]["epochs"], seed, doc_id)):
        shard = int(hash_unit(seed, "shard", doc_id, copy) * num_shards)
        yield (TRAIN, shard), (hash_unit(seed, "order", doc_id, copy), source, doc_id, ids)


def assign_val(doc, seed: int, num_shards: int):
    """Validation document -> one copy keyed by (split, shard)."""
    _, source, doc_id, ids = doc
    shard = int(hash_unit(seed, "val_shard", doc_id) * num_shards)
    return (VAL, shard), (hash_unit(seed, "val_order", doc_id), source, doc_id, ids)


def num_val_shards(val_counts: dict[str, int], shard_tokens: int) -> int:
    """Validation shards needed for the held-out tokens (at least one)."""
    return max(1, math.ceil(sum(val_counts.values()) / shard_tokens))


class WriteShard(beam.DoFn):
    """((split, shard), copies) -> one uncompressed Arrow IPC shard; yields its record."""

    def __init__(self, out_dir: str, vocab_size: int, num_train: int, shard_tokens: int):
        self.out_dir, self.vocab_size = out_dir, vocab_size
        self.num_train, self.shard_tokens = num_train, shard_tokens

    def process(self, item, val_counts: dict[str, int]):
        (split, shard), copies = item
        total = self.num_train if split == TRAIN else num_val_shards(val_counts, self.shard_tokens)
        copies = sorted(copies, key=lambda c: (c[0], c[2]))
        schema = token_shard_schema(self.vocab_size)
        id_type = schema.field("input_ids").type.value_type
        lengths = np.fromiter((len(c[3]) for c in copies), dtype=np.int64, count=len(copies))
        offsets = np.zeros(len(copies) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.concatenate([c[3] for c in copies]) if copies else np.zeros(0)
        table = pa.table(
            [
                pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, type=id_type)),
                pa.array([c[1] for c in copies], pa.string()),
                pa.array([c[2] for c in copies], pa.string()),
            ],
            schema=schema,
        )
        name = f"{split}-{shard:05d}-of-{total:05d}.arrow"
        path = Path(self.out_dir) / name
        with atomic_write(path) as f, pa.ipc.new_file(f, schema) as writer:
            writer.write_table(table, max_chunksize=4096)
        per_source: dict[str, int] = {}
        for c, n in zip(copies, lengths.tolist()):
            per_source[c[1]] = per_source.get(c[1], 0) + n
        yield {
            "file": name,
            "split": split,
            "rows": len(copies),
            "tokens": int(offsets[-1]),
            "tokens_per_source": dict(sorted(per_source.items())),
            "bytes": path.stat().st_size,
            "sha256": sha256_file(path),
        }


def _count_tokens(pcoll, label: str):
    return (
        pcoll
        | f"{label}Lengths" >> beam.Map(lambda d: (d[1], len(d[3])))
        | f"{label}Sum" >> beam.CombinePerKey(sum)
    )


def run_shards(cfg: Config, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Run the shard job; returns the manifest written to `<shards.out>/manifest.json`.

    Raises:
        ShardError: no clean manifest or tokenizer model, or no documents.
    """
    import tokenizer

    quiet_beam_logging()
    sc = cfg.shards
    clean_manifest = Path(cfg.out_dir) / "clean" / "manifest.json"
    model_path = Path(cfg.tokenizer.model_prefix + ".model")
    if not clean_manifest.is_file():
        raise ShardError(f"{clean_manifest} not found: run `python -m pipeline clean` first")
    if not model_path.is_file():
        raise ShardError(f"{model_path} not found: run `python -m tokenizer train` first")
    clean = json.loads(clean_manifest.read_text())
    files = [str(clean_manifest.parent / f["file"]) for f in clean["files"]]
    if not files:
        raise ShardError(f"{clean_manifest} lists no document files")
    sp = tokenizer.load(model_path)
    vocab_size = sp.vocab_size()
    tokenizer_info = {
        "path": str(model_path),
        "sha256": sha256_file(model_path),
        "vocab_size": vocab_size,
        "bos_id": sp.bos_id(),
        "eos_id": sp.eos_id(),
    }
    del sp  # not picklable: the workers load their own
    num_train = max(1, math.ceil(sc.total_tokens / sc.shard_tokens))
    shares = {s: c.share for s, c in cfg.sources.items()}

    final = Path(sc.out)
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    t0 = time.time()

    def mixture_of(counts: dict[str, int]) -> dict[str, dict[str, float]]:
        return compute_epochs(shares, counts, sc.total_tokens, sc.max_epochs)

    def write_manifest(infos, train_counts, val_counts):
        mixture = mixture_of(train_counts)
        infos = sorted(infos, key=lambda i: i["file"])
        written: dict[str, int] = {}
        for info in infos:
            if info["split"] == TRAIN:
                for s, n in info["tokens_per_source"].items():
                    written[s] = written.get(s, 0) + n
        total_written = sum(written.values())
        sources = {}
        for s, m in mixture.items():
            sources[s] = {
                **m,
                "tokens_written": written.get(s, 0),
                "achieved_share": written.get(s, 0) / total_written if total_written else 0.0,
                "val_tokens": val_counts.get(s, 0),
            }
        manifest = {
            "format": "llama-token-shards/1",
            "config_digest": cfg.digest(),
            "seed": cfg.seed,
            "total_tokens_target": sc.total_tokens,
            "tokens_written": total_written,
            "tokenizer": tokenizer_info,
            "add_bos": sc.add_bos,
            "add_eos": sc.add_eos,
            "dtype": "uint16" if vocab_size <= 1 << 16 else "uint32",
            "sources": sources,
            "shards": infos,
        }
        with atomic_write(Path(str(tmp)) / "manifest.json") as f:
            f.write(json.dumps(manifest, indent=2, sort_keys=True).encode())

    with beam.Pipeline(options=pipeline_options(cfg, beam_args)) as p:
        encoded = (
            p
            | "ListFiles" >> beam.Create(sorted(files))
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadDocs" >> beam.FlatMap(read_documents)
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=sc.batch_size)
            | "Encode"
            >> beam.ParDo(
                Encode(str(model_path), sc.add_bos, sc.add_eos, sc.val_fraction, cfg.seed)
            )
        )
        train = encoded | "Train" >> beam.Filter(lambda d: d[0] == TRAIN)
        val = encoded | "Val" >> beam.Filter(lambda d: d[0] == VAL)
        train_counts = _count_tokens(train, "Train")
        val_counts = _count_tokens(val, "Val")
        train_copies = train | "Repeat" >> beam.FlatMap(
            lambda d, counts: assign_copies(d, mixture_of(counts), cfg.seed, num_train),
            counts=beam.pvalue.AsDict(train_counts),
        )
        val_copies = val | "ValShard" >> beam.Map(
            lambda d, counts: assign_val(d, cfg.seed, num_val_shards(counts, sc.shard_tokens)),
            counts=beam.pvalue.AsDict(val_counts),
        )
        infos = (
            (train_copies, val_copies)
            | "AllCopies" >> beam.Flatten()
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards"
            >> beam.ParDo(
                WriteShard(str(tmp), vocab_size, num_train, sc.shard_tokens),
                val_counts=beam.pvalue.AsDict(val_counts),
            )
            | "Infos" >> beam.combiners.ToList()
        )
        _ = infos | "Manifest" >> beam.Map(
            write_manifest,
            train_counts=beam.pvalue.AsDict(train_counts),
            val_counts=beam.pvalue.AsDict(val_counts),
        )
    manifest_path = tmp / "manifest.json"
    if not manifest_path.is_file():
        raise ShardError("the shard job wrote no manifest (no documents encoded?)")
    swap_into_place(tmp, final)
    manifest = json.loads((final / "manifest.json").read_text())
    manifest["seconds"] = round(time.time() - t0, 2)
    return manifest

