"""The data contracts, written once: the cleaned Document and the token shard.

Every module that reads or writes these files imports the schemas from here
(DESIGN.md, "Data contracts").
"""

from __future__ import annotations

import hashlib

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
