"""The tokenizer's training sample: cleaned text drawn with the mixture's shares.

LLaMA trains its tokenizer on data of the training mixture (Table 1). Each
configured source with cleaned files contributes `share / sum(shares present)`
of `tokenizer.sample_bytes`; inside a source, documents are taken in increasing
order of a seeded hash of their id until the byte budget is met (the document
that crosses it only up to the line that reaches it, so one long book cannot
tilt the mixture), so the sample is a uniform random subset that does not
depend on file order or on how many files the pipeline wrote. The files are those
the clean manifest lists, on any Beam filesystem, streamed record batch by record
batch (memory-mapped when local); memory stays flat however large the corpus.

The sample is a text file of one SentencePiece sentence per line. SentencePiece
silently skips a training line longer than `max_sentence_length` bytes, and a
line holding U+2585 (its reserved "unknown" marker); `cut_line` and
`RESERVED_CHAR` make sure nothing is skipped.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core import io
from pipeline.core.config import Config
from pipeline.core.schema import ContractError, load_clean_manifest
from pipeline.core.schema import clean_files as manifest_files

log = logging.getLogger(__name__)

# SentencePiece's marker for rare characters (kUNKChar in trainer_interface.cc):
# a training line containing it is skipped, so lines are split there instead.
RESERVED_CHAR = "\u2585"

# Whitespace bytes a long line is cut after. ASCII only: these bytes never occur
# inside a multi-byte UTF-8 sequence, so a cut after one is a character boundary.
# Not "\r": SentencePiece strips it from the end of a line.
_CUT_BYTES = (b" ", b"\t", b"\x0b", b"\x0c")

# Smallest useful cut length: one UTF-8 character is up to 4 bytes.
_MIN_CUT_BYTES = 4

# Histogram of document bytes over the top bits of the 64-bit sample key: two
# streaming passes find the key cutoff with 512 KiB of memory per source.
_KEY_BUCKET_BITS = 16


def clean_files(cfg: Config) -> dict[str, list[str]]:
    """Cleaned Arrow files per configured source, as `<out_dir>/clean/manifest.json`
    lists them (any Beam filesystem).

    Returns:
        {source: sorted paths} for sources of `cfg.sources` (in config order)
        with a share > 0 and at least one file; sources without files are absent.
    Raises:
        FileNotFoundError: there is no clean manifest (names it).
    """
    try:
        listed = manifest_files(cfg.out_dir, load_clean_manifest(cfg.out_dir))
    except ContractError as e:
        raise FileNotFoundError(str(e)) from None
    return {name: sorted(listed[name]) for name, source in cfg.sources.items()
            if listed.get(name) and source.share > 0}


def sample_key(seed: int, doc_id: str) -> int:
    """The document's place in the sampling order: a 64-bit unsigned int.

    BLAKE2b-64 of the seed and the document id, so the order is uniform random,
    reproducible for a seed, and independent of file layout. One Python call
    per document (about 1 us): fine for the tokenizer's sample, which reads ids
    three times; a vectorised hash would be the next step at corpus scale.
    """
    digest = hashlib.blake2b(f"{seed}\x00{doc_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def cut_line(line: str, max_bytes: int) -> list[str]:
    """Cut one line into pieces of at most `max_bytes` UTF-8 bytes each.

    A piece ends just after the last ASCII whitespace that fits, so the next
    piece starts with a word, as SentencePiece's dummy prefix expects; with no
    whitespace in reach the cut falls on the last character boundary that fits.
    `"".join(cut_line(s, n)) == s` always holds.

    Args:
        line: text without "\\n".
        max_bytes: SentencePiece's `max_sentence_length` (bytes, not characters:
            `trainer_interface.cc` compares `sentence.size()`).
    Returns:
        The pieces, in order; `[]` for an empty line, `[line]` if it fits.
    Raises:
        ValueError: `max_bytes` < 4 (a single character may need 4 bytes).
    """
    if max_bytes < _MIN_CUT_BYTES:
        raise ValueError(f"max_bytes must be >= {_MIN_CUT_BYTES}, got {max_bytes}")
    data = line.encode("utf-8")
    if len(data) <= max_bytes:
        return [line] if line else []
    pieces = []
    start = 0
    while len(data) - start > max_bytes:
        end = start + max_bytes
        cut = max(data.rfind(b, start, end) for b in _CUT_BYTES) + 1
        if cut <= start:
            cut = end
            while data[cut] & 0xC0 == 0x80:  # a continuation byte: back to the lead byte
                cut -= 1
        pieces.append(data[start:cut].decode("utf-8"))
        start = cut
    pieces.append(data[start:].decode("utf-8"))
    return pieces


def document_lines(text: str, max_bytes: int) -> Iterator[str]:
    """A document's training lines: split at "\\n" (and U+2585), cut to `max_bytes`.

    Only "\\n" ends a line; other control characters stay in the text. Trailing
    "\\r" is removed from every line, because SentencePiece's sentence reader
    removes it (a CRLF line end); a line left empty is dropped, as SentencePiece
    would silently drop it, so every line written reaches the trainer.
    """
    for line in text.split("\n"):
        for part in line.split(RESERVED_CHAR):
            for piece in cut_line(part, max_bytes):
                if piece := piece.rstrip("\r"):
                    yield piece


def _open_batches(path: str) -> Iterator[pa.RecordBatch]:
    """Record batches of a cleaned Arrow IPC file (memory-mapped when local, else
    streamed); checks the columns."""
    try:
        with (io.open_read(path) if io.is_remote(path) else pa.memory_map(str(path), "r")) as source:
            reader = pa.ipc.open_file(source)
            for column in ("id", "text"):
                if column not in reader.schema.names:
                    raise ValueError(f"{path}: no {column!r} column in {reader.schema.names}")
                kind = reader.schema.field(column).type
                if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                    raise ValueError(f"{path}: column {column!r} is {kind}, expected a string")
            for i in range(reader.num_record_batches):
                batch = reader.get_batch(i)
                if batch.column("id").null_count or batch.column("text").null_count:
                    raise ValueError(f"{path}: record batch {i} has a null id or text")
                yield batch
    except (pa.ArrowInvalid, pa.ArrowIOError) as e:
        raise ValueError(f"{path}: not a readable Arrow IPC file: {e}") from e


def _keys_and_sizes(
    paths: list[str], seed: int
) -> Iterator[tuple[pa.RecordBatch, np.ndarray, np.ndarray]]:
    """Per batch: the batch, its sample keys (uint64) and its text sizes (int64 bytes)."""
    for path in paths:
        for batch in _open_batches(path):
            keys = np.fromiter(
                (sample_key(seed, i) for i in batch.column("id").to_pylist()),
                dtype=np.uint64,
                count=batch.num_rows,
            )
            sizes = pc.binary_length(batch.column("text")).to_numpy().astype(np.int64)
            yield batch, keys, sizes


def key_cutoff(paths: list[str], seed: int, target_bytes: int) -> tuple[int, int, int | None]:
    """The largest key to take so the documents with key <= it hold >= `target_bytes`.

    Two streaming passes: a histogram of bytes over the keys' top bits finds the
    bucket where the budget runs out; the second pass sorts that bucket alone.

    Returns:
        (cutoff key, total text bytes of the source, bytes of the cutoff
        document still needed: `target_bytes` minus those of the smaller keys).
        The cutoff is 2**64 - 1 (take everything; needed None) when the source
        holds no more than the target, and -1 (take nothing; None) when the
        target is 0.
    """
    shift = np.uint64(64 - _KEY_BUCKET_BITS)
    hist = np.zeros(1 << _KEY_BUCKET_BITS, dtype=np.int64)
    for _, keys, sizes in _keys_and_sizes(paths, seed):
        np.add.at(hist, (keys >> shift).astype(np.intp), sizes)
    total = int(hist.sum())
    if total <= target_bytes:
        return (1 << 64) - 1, total, None
    if target_bytes <= 0:
        return -1, total, None
    cumulative = np.cumsum(hist)
    bucket = int(np.searchsorted(cumulative, target_bytes))  # first bucket reaching it
    taken = int(cumulative[bucket - 1]) if bucket else 0
    in_bucket: list[tuple[int, int]] = []
    for _, keys, sizes in _keys_and_sizes(paths, seed):
        rows = np.nonzero((keys >> shift) == np.uint64(bucket))[0]
        in_bucket.extend(zip(keys[rows].tolist(), sizes[rows].tolist()))
    for key, size in sorted(in_bucket):
        if taken + size >= target_bytes:
            return key, total, target_bytes - taken
        taken += size
    raise AssertionError("the byte histogram and the bucket disagree")  # unreachable


def write_training_sample(cfg: Config, out_path: str | Path) -> dict[str, dict[str, Any]]:
    """Write the mixture-weighted training sample for SentencePiece.

    Sources are those of `cfg.sources` with cleaned files; their shares (Table 1,
    percent) are renormalised over them. A source contributes the documents with
    the smallest `sample_key(cfg.seed, id)` until their UTF-8 text reaches
    `share * cfg.tokenizer.sample_bytes` (all of it if it has less), written in
    file order as `document_lines`; of the document that crosses the target,
    only the lines up to the one that reaches it (so a source overshoots by
    less than one line, `max_sentence_length` bytes). The file is written
    atomically; the same files and config give the same bytes.

    Args:
        cfg: the job config (`out_dir`, `seed`, `sources`, `tokenizer`).
        out_path: the text file to write (UTF-8, one line per sentence, "\\n").
    Returns:
        {source: {"share": renormalised fraction, "target_bytes", "source_bytes":
        text bytes in the cleaned files, "docs", "lines", "bytes": UTF-8 bytes
        written without the newlines}}.
    Raises:
        FileNotFoundError: no configured source has cleaned files.
        ValueError: a cleaned file is not a readable Arrow file with string `id`
            and `text` columns (the message names the file).
    """
    files = clean_files(cfg)
    if not files:
        raise FileNotFoundError(
            f"{io.join(cfg.out_dir, 'clean', io.MANIFEST)} lists no Document files for any configured "
            f"source ({', '.join(cfg.sources)}); run the cleaning pipeline first"
        )
    tok = cfg.tokenizer
    total_share = sum(cfg.sources[name].share for name in files)
    stats: dict[str, dict[str, Any]] = {}
    with io.atomic_write(out_path, "wb") as out:
        for name, paths in files.items():
            share = cfg.sources[name].share / total_share
            target = round(share * tok.sample_bytes)
            cutoff, source_bytes, needed = key_cutoff(paths, cfg.seed, target)
            docs = lines = written = 0
            for batch, keys, _ in _keys_and_sizes(paths, cfg.seed) if cutoff >= 0 else ():
                take = keys <= np.uint64(cutoff)
                texts = pc.filter(batch.column("text"), pa.array(take)).to_pylist()
                for key, text in zip(keys[take].tolist(), texts):
                    docs += 1
                    limit = needed if key == cutoff else None
                    doc_bytes = 0
                    for line in document_lines(text, tok.max_sentence_length):
                        data = line.encode("utf-8")
                        out.write(data + b"\n")
                        lines += 1
                        doc_bytes += len(data)
                        if limit is not None and doc_bytes >= limit:
                            break
                    written += doc_bytes
            stats[name] = {
                "share": share,
                "target_bytes": target,
                "source_bytes": source_bytes,
                "docs": docs,
                "lines": lines,
                "bytes": written,
            }
            log.info("sample %s: %d docs, %d lines, %d bytes", name, docs, lines, written)
    return stats
