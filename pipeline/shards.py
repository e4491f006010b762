"""The shard job (Beam): tokenize the cleaned Documents and write mixture-weighted,
shuffled token shards with a manifest (`pipeline.core.schema`, `pipeline.mixture`).

1. Read every cleaned Arrow file listed in `<out_dir>/clean/manifest.json`
   (any Beam filesystem; the tokenizer model is copied once per worker).
2. Encode in batches (SentencePiece loads once per worker); BOS/EOS per config.
3. Hold out `val_fraction` of each source's documents by id hash.
4. Count tokens per source; epochs_s = share_s * total / tokens_s (Table 1).
5. Each document is written floor(f) times, and a seeded token-weighted prefix
   of the source's documents once more, holding (f - floor(f)) of its tokens
   within half a document (pipeline/mixture.py; `build_shards_pipeline` says
   how the prefix is found at scale). Each copy goes to a uniformly drawn shard
   and a drawn position in it, so any prefix of training sees the mixture.
6. Shards (uncompressed Arrow IPC) go to the run's folder `<shards.out>/run-<id>/`
   and `<shards.out>/manifest.json`, written last, commits them
   (`pipeline.core.io.Run`); readers trust only the manifest.

The shards are Arrow IPC *file* format: record batches open by index, memory-
mapped (`pa.ipc.open_file(pa.memory_map(path))`). Hugging Face `datasets` reads
them through its Arrow builder, which accepts that format:
`datasets.load_dataset("arrow", data_files=[shard paths from the manifest],
split="train", streaming=True)` reads them in place; without `streaming` it
converts them once into its cache for random access. (`Dataset.from_file`
takes only the IPC stream format, so it does not open them.)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa

from pipeline.beam.packed import INLINE, Packed, Packer, pack_ids, unpack_ids
from pipeline.beam.runner import (
    pipeline_options,
    quiet_beam_logging,
    run_pipeline,
    warn_unshared,
)
from pipeline.beam.steps import Counters, batches
from pipeline.core import io, lineage
from pipeline.core.config import Config
from pipeline.core.contracts import ShardError, shard_name
from pipeline.core.schema import (
    SHARDS_FORMAT,
    ContractError,
    check_listed,
    clean_files,
    load_clean_manifest,
    load_manifest,
    read_batches,
    token_shard_schema,
    write_arrow,
)
from pipeline.mixture import (
    MIXTURE_TOLERANCE,
    REPEAT_BUCKETS,
    boundary_threshold,
    compute_epochs,
    copies_of,
    cutoff_bucket,
    extra_tokens,
    hash_unit,
    repeat_key,
    share_error_bounds,
)

TRAIN, VAL = "train", "val"
RUN_MANIFEST = "_manifest.json"  # the job's manifest in its run folder, before the commit


log = logging.getLogger("pipeline.shards")


def read_documents(path: str) -> Iterator[tuple[str, str, str]]:
    """(source, doc_id, text) for every row of a cleaned Arrow file (any
    filesystem), batch by batch (`pipeline.core.schema.read_batches`)."""
    for batch in read_batches(path, ["source", "id", "text"]):
        cols = batch.to_pydict()
        yield from zip(cols["source"], cols["id"], cols["text"])


class Encode(beam.DoFn):
    """Batches of (source, doc_id, text) -> (split, source, doc_id, number of
    tokens, `pack_ids` of the input_ids as uint16/32, through `packer`)."""

    def __init__(self, model_path: str, add_bos: bool, add_eos: bool, val_fraction: float, seed: int,
                 packer: Packer = INLINE):
        self.model_path, self.packer = model_path, packer
        self.add_bos, self.add_eos = add_bos, add_eos
        self.val_fraction, self.seed = val_fraction, seed

    def setup(self) -> None:
        import tokenizer

        self.sp = tokenizer.load(io.local_copy(self.model_path))
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
            ids = np.asarray(bos + ids + eos, dtype=self.dtype)
            yield split, source, doc_id, len(ids), self.packer.put(pack_ids(ids))


def assign_copies(
    doc: tuple[str, str, str, int, Packed],
    seed: int,
    num_shards: int,
    mixture: dict[str, dict[str, Any]],
    cutoffs: dict[str, tuple[int, tuple[float, str] | None]],
) -> Iterator[tuple[tuple[str, int], tuple[float, str, str, Packed]]]:
    """Train document (`Encode`'s output) -> its copies keyed by (split, shard),
    each (sort key, source, doc_id, packed ids).

    Args:
        mixture: `compute_epochs` of the run.
        cutoffs: {source: (cutoff bucket, boundary threshold)} of the sources
            that take extra copies (`mixture.copies_of`).
    """
    _, source, doc_id, _, ids = doc
    if source not in mixture:  # a share of 0: not trained on
        return
    n = copies_of(mixture[source]["epochs"], repeat_key(seed, doc_id), doc_id, cutoffs.get(source))
    for copy in range(n):
        shard = int(hash_unit(seed, "shard", doc_id, copy) * num_shards)
        yield (TRAIN, shard), (hash_unit(seed, "order", doc_id, copy), source, doc_id, ids)


def assign_val(doc, seed: int, num_shards: int):
    """Validation document -> one copy keyed by (split, shard)."""
    _, source, doc_id, _, ids = doc
    shard = int(hash_unit(seed, "val_shard", doc_id) * num_shards)
    return (VAL, shard), (hash_unit(seed, "val_order", doc_id), source, doc_id, ids)


def num_val_shards(val_counts: dict[str, int], shard_tokens: int) -> int:
    """Validation shards needed for the held-out tokens (at least one)."""
    return max(1, math.ceil(sum(val_counts.values()) / shard_tokens))


class WriteShard(beam.DoFn):
    """((split, shard), copies) -> one uncompressed Arrow IPC shard; yields its record."""

    def __init__(self, out_dir: str, vocab_size: int, num_train: int, shard_tokens: int,
                 packer: Packer = INLINE, prefix: str = ""):
        self.out_dir, self.vocab_size, self.packer = out_dir, vocab_size, packer
        self.prefix = prefix  # the run's folder, as the manifest names files
        self.num_train, self.shard_tokens = num_train, shard_tokens

    def process(self, item, val_counts: dict[str, int]):
        (split, shard), copies = item
        total = self.num_train if split == TRAIN else num_val_shards(val_counts, self.shard_tokens)
        copies = sorted(copies, key=lambda c: (c[0], c[2]))
        schema = token_shard_schema(self.vocab_size)
        id_type = schema.field("input_ids").type.value_type
        dtype = id_type.to_pandas_dtype()
        ids = [unpack_ids(self.packer.get(c[3]), dtype) for c in copies]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(copies))
        offsets = np.zeros(len(copies) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.concatenate(ids) if copies else np.zeros(0)
        table = pa.table(
            [
                pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, type=id_type)),
                pa.array([c[1] for c in copies], pa.string()),
                pa.array([c[2] for c in copies], pa.string()),
            ],
            schema=schema,
        )
        name = shard_name(split, shard, total)
        written = write_arrow(io.join(self.out_dir, name), schema, [table])
        per_source: dict[str, int] = {}
        for c, n in zip(copies, lengths.tolist()):
            per_source[c[1]] = per_source.get(c[1], 0) + n
        yield {
            "file": f"{self.prefix}/{name}" if self.prefix else name,
            "split": split,
            "rows": len(copies),
            "tokens": int(offsets[-1]),
            "tokens_per_source": dict(sorted(per_source.items())),
            "bytes": written["bytes"],
            "sha256": written["sha256"],
        }


def _mixture(counts: dict[str, int], shares: dict[str, float], sc) -> dict[str, dict[str, Any]]:
    """`compute_epochs` of the run; {} when no source has training tokens."""
    if not any(counts.values()):
        return {}
    return compute_epochs(shares, counts, sc.total_tokens, sc.max_epochs)


def _cutoff(item, mixture):
    """(source, [(bucket, tokens)]) -> (source, (cutoff bucket, residual)); none
    when the source takes no extra copy."""
    source, buckets = item
    m = mixture.get(source)
    cut = cutoff_bucket(buckets, extra_tokens(m["epochs"], m["tokens_available"])) if m else None
    if cut is not None:
        yield source, cut


def _in_cutoff_bucket(doc, seed: int, cutoffs: dict[str, tuple[int, float]]):
    """Train document in its source's cutoff bucket -> (source, (u, doc_id, tokens))."""
    _, source, doc_id, n, _ = doc
    cut = cutoffs.get(source)
    if cut is not None:
        bucket, u = repeat_key(seed, doc_id)
        if bucket == cut[0]:
            yield source, (u, doc_id, n)


def _threshold(item, cutoffs: dict[str, tuple[int, float]]):
    """(source, cutoff-bucket docs) -> (source, (cutoff bucket, boundary threshold))."""
    source, docs = item
    bucket, residual = cutoffs[source]
    return source, (bucket, boundary_threshold(docs, residual))


def mixture_report(
    mixture: dict[str, dict[str, Any]],
    written: dict[str, int],
    largest: dict[str, int],
    val_counts: dict[str, int],
) -> dict[str, dict[str, Any]]:
    """Per source: the plan (`compute_epochs`), what was written, and the mixture check.

    Adds to each source's plan: `tokens_written`, `epochs_written` (written /
    available), `planned_tokens` (epochs * available), `planned_share` (the
    share those make: `share` itself unless a source is capped by max_epochs),
    `achieved_share`, `largest_doc_tokens`, `share_error_bound`
    (`mixture.share_error_bounds`; None: unbounded) and `mixture_eligible`:
    the source "has enough tokens", i.e. its bound is within MIXTURE_TOLERANCE
    (0.5 percentage points), so its achieved share is guaranteed to
    be within that of `planned_share`. Every source qualifies once its largest
    document is under 0.5% of its planned tokens and the others' too (the
    production run: a 1M-token book against 63B planned book tokens).
    """
    planned = {s: m["epochs"] * m["tokens_available"] for s, m in mixture.items()}
    boundary = {s: largest.get(s, 0) if m["epochs"] % 1 else 0 for s, m in mixture.items()}
    bounds = share_error_bounds(planned, boundary)
    total_planned = sum(planned.values())
    total_written = sum(written.get(s, 0) for s in mixture)
    out = {}
    for s, m in mixture.items():
        bound = bounds[s]
        out[s] = {
            **m,
            "tokens_written": written.get(s, 0),
            "epochs_written": written.get(s, 0) / m["tokens_available"],
            "planned_tokens": planned[s],
            "planned_share": planned[s] / total_planned,
            "achieved_share": written.get(s, 0) / total_written if total_written else 0.0,
            "largest_doc_tokens": largest.get(s, 0),
            "share_error_bound": None if math.isinf(bound) else bound,
            "mixture_eligible": bound <= MIXTURE_TOLERANCE,
            "val_tokens": val_counts.get(s, 0),
        }
    return out


def write_manifest(infos, out_dir: str, header: dict[str, Any], shares: dict[str, float], sc,
                   train_counts, val_counts, largest) -> None:
    """All shard records -> `<out_dir>/_manifest.json`, which the launcher commits
    as the output's `manifest.json` (`run_shards`)."""
    infos = sorted(infos, key=lambda i: i["file"])
    written: dict[str, int] = {}
    for info in infos:
        if info["split"] == TRAIN:
            for s, n in info["tokens_per_source"].items():
                written[s] = written.get(s, 0) + n
    manifest = {
        **header,
        "tokens_written": sum(written.values()),
        "mixture": {"tolerance": MIXTURE_TOLERANCE, "repeat_buckets": REPEAT_BUCKETS},
        "sources": mixture_report(_mixture(train_counts, shares, sc), written, largest, val_counts),
        "shards": infos,
    }
    io.write_json(io.join(out_dir, RUN_MANIFEST), manifest)


def build_shards_pipeline(
    p: beam.Pipeline, cfg: Config, files: list[str], out_dir: str, tokenizer_info: dict[str, Any],
    spill_dir: str | None = None, prefix: str = "",
):
    """Attach the shard job to pipeline `p` (run by `run_shards`; built alone by
    the portability test). Returns the PCollection of the manifest write.

    Args:
        files: cleaned Arrow files to read.
        out_dir: the run's folder, where shards and `_manifest.json` go (any
            Beam filesystem every worker reaches).
        tokenizer_info: {"path", "sha256", "vocab_size", "bos_id", "eos_id"} of
            the SentencePiece model; workers load `path` themselves.
        spill_dir: where token ids spill between stages (`pipeline.beam.packed`;
            the local runner), or None to carry them in the PCollections.
        prefix: the run folder's name, as the manifest names files.

    The extra copies need a global, token-weighted prefix per source, made in
    three small steps (sizes at 1.4T tokens in brackets): tokens per (source,
    bucket of u) [7 x 65536 integers] -> the cutoff bucket per source -> the
    documents of that one bucket [~N/65536 per source] -> the last one taken.
    Everything else is per document, so cost stays linear and memory flat.
    """
    sc, seed = cfg.shards, cfg.seed
    packer = Packer(spill_dir)
    vocab_size = tokenizer_info["vocab_size"]
    num_train = max(1, math.ceil(sc.total_tokens / sc.shard_tokens))
    shares = {s: c.share for s, c in cfg.sources.items()}
    encoded = (
        p
        | "ListFiles" >> beam.Create(sorted(files))
        | "SpreadFiles" >> beam.Reshuffle()
        | "ReadDocs" >> beam.FlatMap(read_documents)
        | "Batch" >> batches(sc.batch_size)
        | "Encode"
        >> beam.ParDo(Encode(tokenizer_info["path"], sc.add_bos, sc.add_eos, sc.val_fraction, seed, packer))
    )
    train = encoded | "Train" >> beam.Filter(lambda d: d[0] == TRAIN)
    val = encoded | "Val" >> beam.Filter(lambda d: d[0] == VAL)
    bucket_tokens, train_counts, largest, val_counts = _token_counts(train, val, seed)
    mixture = (
        train_counts
        | "CountsDict" >> beam.combiners.ToDict()
        | "Mixture" >> beam.Map(_mixture, shares, sc)
    )
    train_copies = train | "Repeat" >> beam.FlatMap(
        assign_copies,
        seed,
        num_train,
        mixture=beam.pvalue.AsSingleton(mixture),
        cutoffs=beam.pvalue.AsDict(_extra_copy_thresholds(train, bucket_tokens, mixture, seed)),
    )
    val_copies = val | "ValShard" >> beam.Map(
        lambda d, counts: assign_val(d, seed, num_val_shards(counts, sc.shard_tokens)),
        counts=beam.pvalue.AsDict(val_counts),
    )
    infos = (
        (train_copies, val_copies)
        | "AllCopies" >> beam.Flatten()
        | "GroupShards" >> beam.GroupByKey()
        | "WriteShards"
        >> beam.ParDo(
            WriteShard(out_dir, vocab_size, num_train, sc.shard_tokens, packer, prefix),
            val_counts=beam.pvalue.AsDict(val_counts),
        )
        | "Infos" >> beam.combiners.ToList()
    )
    return infos | "Manifest" >> beam.Map(
        write_manifest,
        out_dir,
        shards_header(cfg, tokenizer_info),
        shares,
        sc,
        train_counts=beam.pvalue.AsDict(train_counts),
        val_counts=beam.pvalue.AsDict(val_counts),
        largest=beam.pvalue.AsDict(largest),
    )


def shards_header(cfg: Config, tokenizer_info: dict[str, Any]) -> dict[str, Any]:
    """What the shard manifest says of the run besides its shards."""
    sc = cfg.shards
    return {
        "format": SHARDS_FORMAT,
        "config_digest": cfg.digest(),
        "seed": cfg.seed,
        "total_tokens_target": sc.total_tokens,
        "tokenizer": tokenizer_info,
        "add_bos": sc.add_bos,
        "add_eos": sc.add_eos,
        "dtype": "uint16" if tokenizer_info["vocab_size"] <= 1 << 16 else "uint32",
    }


def _token_counts(train, val, seed: int):
    """Tokens per (source, bucket of the repeat key), per source, the largest
    document per source, and validation tokens per source."""
    bucket_tokens = (
        train
        | "BucketKeys" >> beam.Map(lambda d: ((d[1], repeat_key(seed, d[2])[0]), d[3]))
        | "SumBuckets" >> beam.CombinePerKey(sum)
    )
    train_counts = (
        bucket_tokens
        | "SourceKeys" >> beam.Map(lambda kv: (kv[0][0], kv[1]))
        | "TrainSum" >> beam.CombinePerKey(sum)
    )
    largest = (
        train
        | "DocLengths" >> beam.Map(lambda d: (d[1], d[3]))
        | "LargestDoc" >> beam.CombinePerKey(max)
    )
    val_counts = (
        val
        | "ValLengths" >> beam.Map(lambda d: (d[1], d[3]))
        | "ValSum" >> beam.CombinePerKey(sum)
    )
    return bucket_tokens, train_counts, largest, val_counts


def _extra_copy_thresholds(train, bucket_tokens, mixture, seed: int):
    """Per source, the repeat-key threshold below which a document gets its
    extra copy: the cutoff bucket, then the last document taken in it."""
    cutoffs = (
        bucket_tokens
        | "BucketsBySource" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], kv[1])))
        | "GroupBuckets" >> beam.GroupByKey()
        | "Cutoffs" >> beam.FlatMap(_cutoff, mixture=beam.pvalue.AsSingleton(mixture))
    )
    return (
        train
        | "CutoffBucketDocs" >> beam.FlatMap(_in_cutoff_bucket, seed, cutoffs=beam.pvalue.AsDict(cutoffs))
        | "GroupCutoffBucket" >> beam.GroupByKey()
        | "Thresholds" >> beam.Map(_threshold, cutoffs=beam.pvalue.AsDict(cutoffs))
    )


def describe_tokenizer(model_path: str) -> dict[str, Any]:
    """{"path", "sha256", "vocab_size", "bos_id", "eos_id"} of a SentencePiece
    model on any filesystem."""
    import tokenizer

    sp = tokenizer.load(io.local_copy(model_path))
    return {
        "path": str(model_path),
        "sha256": io.sha256_file(model_path),
        "vocab_size": sp.vocab_size(),
        "bos_id": sp.bos_id(),
        "eos_id": sp.eos_id(),
    }


def up_to_date(cfg: Config, clean: dict[str, Any], tokenizer_sha256: str) -> dict[str, Any] | None:
    """The committed shard manifest when a shard run now would write the same:
    made under the same settings (`Config.shards_digest`) from the clean output
    now committed (`pipeline.core.lineage.made_from`) with this tokenizer (sha256),
    its shards all there; else None."""
    try:
        manifest = load_manifest(cfg.shards.out, SHARDS_FORMAT, "python -m pipeline shards")
        check_listed(cfg.shards.out, manifest["shards"], "python -m pipeline shards")
    except (ContractError, KeyError):
        return None
    same = (manifest.get("shards_digest") == cfg.shards_digest() and lineage.made_from(manifest, "clean", clean)
            and manifest.get("tokenizer", {}).get("sha256") == tokenizer_sha256)
    return manifest if same else None


def run_shards(cfg: Config, beam_args: list[str] | None = None, force: bool = False,
               allow_mixed: bool = False) -> dict[str, Any]:
    """Run the shard job, unless `force` is false and the committed shards are
    `up_to_date` (then their manifest is returned with "skipped": True);
    returns the manifest committed to `<shards.out>/manifest.json`, which adds
    to the job's the run, `shards_digest` and the clean run it was made from.

    Raises:
        ShardError: no clean manifest or tokenizer model, or no documents.
        MixedRuns: the clean output or the tokenizer do not follow this config,
            or the tokenizer was trained on another clean run
            (`pipeline.core.lineage`), unless `allow_mixed`.
        OutputBusy: another job is writing `shards.out` (`pipeline.core.io.Run`).
    """
    quiet_beam_logging()
    sc = cfg.shards
    options = pipeline_options(cfg, beam_args)  # also hands the filesystems their options
    model_path = cfg.tokenizer.model_prefix + ".model"
    try:
        clean = load_clean_manifest(cfg.out_dir)
    except ContractError as e:
        raise ShardError(str(e)) from None
    lineage.check(cfg, "shards", "tokenizer", allow_mixed)
    if not io.exists(model_path):
        raise ShardError(f"{model_path} not found: run `python -m tokenizer train` first")
    try:
        files = [path for paths in clean_files(cfg.out_dir, clean).values() for path in paths]
    except ContractError as e:
        raise ShardError(str(e)) from None
    if not files:
        raise ShardError(f"{io.join(cfg.out_dir, 'clean', io.MANIFEST)} lists no document files")
    info = describe_tokenizer(model_path)
    if not force and (current := up_to_date(cfg, clean, info["sha256"])) is not None:
        return {**current, "skipped": True}
    warn_unshared(options, **{"shards.out": sc.out, "tokenizer.model_prefix": cfg.tokenizer.model_prefix,
                              "out_dir": cfg.out_dir})

    with io.Run(sc.out) as run:
        try:
            t0 = time.time()
            prefix = io.relative(run.dir, run.final)
            run_pipeline(options, run.dir, lambda p, spill: build_shards_pipeline(
                p, cfg, files, run.dir, info, spill_dir=spill, prefix=prefix))
            staged = io.join(run.dir, RUN_MANIFEST)
            if not io.exists(staged):
                raise ShardError(f"the shard job's manifest {staged} is missing: no documents were "
                                 "encoded, or the workers do not share this folder with the launcher (on a "
                                 "distributed runner put shards.out on a bucket: gs://, s3://)")
            manifest = {**io.read_json(staged), "run": run.id, "shards_digest": cfg.shards_digest(),
                        "clean_run": clean.get("run"), "clean_contents": lineage.contents(clean),
                        "clean_config_digest": clean.get("clean_config_digest")}
            io.delete(staged)
            run.commit(manifest)
        except BaseException:
            run.abandon()
            raise
        manifest["seconds"] = round(time.time() - t0, 2)
        return manifest
