"""The data contracts, written once: the cleaned Document and the token shard.

Every module that reads or writes these files imports the schemas from here.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa

# One row of a cleaned-text Arrow IPC file (`<out>/clean/<source>/part-*.arrow`).
DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),  # sha1(source + native id), hex
        pa.field("source", pa.string(), nullable=False),
        pa.field("text", pa.large_string(), nullable=False),  # UTF-8, cleaned
        pa.field("url", pa.string(), nullable=False),  # URL, or path for files
        pa.field("lang", pa.string(), nullable=False),  # ISO 639-1 code, "" unknown
        pa.field("lang_score", pa.float32(), nullable=False),  # fastText prob, 0..1
        pa.field("meta", pa.string(), nullable=False),  # JSON object as a string
    ]
)
DOCUMENT_FIELDS = tuple(DOCUMENT_SCHEMA.names)

# One row of a dead-letter file: a record that could not be parsed or cleaned.
DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),  # input file
        pa.field("record", pa.string(), nullable=False),  # native id or offset
        pa.field("reason", pa.string(), nullable=False),
    ]
)


def token_shard_schema(vocab_size: int) -> pa.Schema:
    """Schema of a token shard (uncompressed Arrow IPC file, memory-mappable).

    `input_ids` is `large_list<uint16>` when every id fits (vocab_size <= 65536),
    else `large_list<uint32>`; 64-bit offsets, so a shard never overflows.
    """
    id_type = pa.uint16() if vocab_size <= 1 << 16 else pa.uint32()
    return pa.schema(
        [
            pa.field("input_ids", pa.large_list(id_type), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("doc_id", pa.string(), nullable=False),
        ]
    )


def doc_id(source: str, native_id: str) -> str:
    """Stable document id: hex SHA-1 of `source` and the record's native id.

    The native id is what identifies a record in its own format (a WARC-Record-ID,
    a Wikipedia page id, a file path); the same record always gets the same id.
    """
    return hashlib.sha1(f"{source}\x00{native_id}".encode("utf-8")).hexdigest()


# --- the only readers and writers of these files, on any Beam filesystem ---

CLEAN_FORMAT = "llama-clean-documents/1"
SHARDS_FORMAT = "llama-token-shards/1"


class ContractError(RuntimeError):
    """A manifest or data file that is missing or not what its contract says."""


def write_arrow(path: str, schema: pa.Schema, batches) -> dict[str, Any]:
    """Record batches (or tables) -> one Arrow IPC file at `path`, written
    atomically (`pipeline.core.io.atomic_write`), uncompressed so it can be memory-
    mapped. Returns {"rows", "bytes", "sha256"} of what was written, hashed on
    the way out (nothing is read back)."""
    from pipeline.core import io

    rows = 0
    with io.atomic_write(path) as f:
        sink = io.HashingWriter(f)
        with pa.ipc.new_file(sink, schema) as writer:
            for batch in batches:
                if isinstance(batch, pa.Table):
                    writer.write_table(batch, max_chunksize=4096)
                else:
                    writer.write_batch(batch)
                rows += batch.num_rows
                batch = None  # not held while the next one is made
    return {"rows": rows, "bytes": sink.bytes, "sha256": sink.sha256}


def read_batches(path: str, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The record batches of an Arrow IPC file on any filesystem, one at a time
    (read, not memory-mapped: a mapped file's pages stay in RSS until closed)."""
    from pipeline.core import io

    with io.open_read(path) as f:
        reader = pa.ipc.open_file(f)
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            yield batch.select(columns) if columns else batch


def load_manifest(folder: str, fmt: str, hint: str) -> dict[str, Any]:
    """`<folder>/manifest.json`, checked to be of format `fmt`: the commit
    marker of a stage's output (files a manifest does not list are not output).

    Raises:
        ContractError: missing (the message says to run `hint`), unreadable,
            or another format.
    """
    from pipeline.core import io

    path = io.join(folder, io.MANIFEST)
    if not io.exists(path):
        raise ContractError(f"{path} not found: run `{hint}` first")
    try:
        manifest = io.read_json(path)
    except io.StorageError as e:
        raise ContractError(str(e)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ContractError(f"{path}: format {got!r}, expected {fmt!r}")
    return manifest


def clean_dir(out_dir: str) -> str:
    """Where the clean job's output lives: `<out_dir>/clean`."""
    from pipeline.core import io

    return io.join(out_dir, "clean")


def load_clean_manifest(out_dir: str) -> dict[str, Any]:
    """The clean job's manifest under `<out_dir>/clean` (see `load_manifest`)."""
    return load_manifest(clean_dir(out_dir), CLEAN_FORMAT, "python -m pipeline clean")


def clean_files(out_dir: str, manifest: dict[str, Any] | None = None,
                sources: Iterable[str] | None = None) -> dict[str, list[str]]:
    """{source: [full paths of its Document files]} as the clean manifest lists
    them, in manifest order; only `sources` when given. Each is checked to be
    there with the size the manifest gives (one listing, no read).

    Raises:
        ContractError: a listed file is missing or of another size (names it).
    """
    from pipeline.core import io

    manifest = manifest if manifest is not None else load_clean_manifest(out_dir)
    root = clean_dir(out_dir)
    wanted = set(sources) if sources is not None else None
    entries = [e for e in manifest["files"] if wanted is None or e["source"] in wanted]
    check_listed(root, entries, "python -m pipeline clean")
    out: dict[str, list[str]] = {}
    for entry in entries:
        out.setdefault(entry["source"], []).append(io.join(root, entry["file"]))
    return out


def check_listed(root: str, entries: list[dict[str, Any]], hint: str) -> None:
    """Every file a manifest under `root` lists is there, of the listed `bytes`.

    Raises:
        ContractError: the first missing or resized file, and what to rerun.
    """
    from pipeline.core import io

    def norm(path: str) -> str:
        return path if io.is_remote(path) else os.path.normpath(path)

    found = {norm(p): n for p, n in io.list_tree(root)} if entries else {}
    for entry in entries:
        path = io.join(root, entry["file"])
        size = found.get(norm(path))
        if size is None:
            raise ContractError(f"{path}: listed in {io.join(root, io.MANIFEST)} but missing: rerun `{hint}`")
        if "bytes" in entry and size != entry["bytes"]:
            raise ContractError(f"{path}: {size} bytes, its manifest says {entry['bytes']} (corrupt or "
                                f"replaced): rerun `{hint}`")


def write_clean_output(out_dir: str, parts: dict[str, list[pa.Table]], max_chunksize: int | None = None) -> dict[str, Any]:
    """Write Documents one already has as a clean output: `<out_dir>/clean/run-<id>/
    <source>/part-k-of-n.arrow` per table, committed by a manifest listing them
    (no counters: nothing was cleaned here). For Documents cleaned elsewhere,
    and for tests. Returns the manifest."""
    from pipeline.core import io

    with io.Run(clean_dir(out_dir)) as run:
        run_name = io.relative(run.dir, run.final)
        files = []
        for source, tables in parts.items():
            for k, table in enumerate(tables):
                name = f"{source}/part-{k:05d}-of-{len(tables):05d}.arrow"
                batches = table.cast(DOCUMENT_SCHEMA).to_batches(max_chunksize)
                written = write_arrow(io.join(run.dir, *name.split("/")), DOCUMENT_SCHEMA, batches)
                files.append({"source": source, "file": f"{run_name}/{name}", **written})
        manifest = {"format": CLEAN_FORMAT, "run": run.id, "files": files, "counters": {}}
        run.commit(manifest)
    return manifest
