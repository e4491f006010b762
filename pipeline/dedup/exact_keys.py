"""Exact deduplication keys (LLaMA 2.1: exact dedup for Wikipedia, books, arXiv,
StackExchange; file-level exact dedup for GitHub).

A document of any size is hashed in pieces (`text_chunks`), so its key costs a
bounded amount of memory beyond the text itself.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterator

# Texts are normalised and hashed this many characters (about) at a time.
CHUNK_CHARS = 1 << 20
_WHITESPACE = re.compile(r"\s")  # str.isspace() characters, the separators of str.split()


def text_chunks(text: str, size: int = CHUNK_CHARS) -> Iterator[str]:
    """`text` in consecutive pieces of at least `size` characters (the last one
    shorter), each cut just before a whitespace character; the text itself
    when it is not longer than `size` (no copy).

    Cut there, a piece's Unicode NFC, `str.lower()` and `str.split()` are those
    of the whole text: no whitespace character composes with a neighbour or
    changes class under NFC (U+2000/U+2001 become U+2002/U+2003), and
    whitespace ends the context of a final sigma. A piece runs past `size` to
    the next whitespace, so a text without any is one piece.
    """
    if len(text) <= size:
        yield text
        return
    lo = 0
    while lo < len(text):
        m = _WHITESPACE.search(text, lo + size) if lo + size < len(text) else None
        hi = m.start() if m else len(text)
        yield text[lo:hi]
        lo = hi


def normalize_for_hash(text: str) -> str:
    """NFC, whitespace runs collapsed to one space, stripped: two copies of a text
    that differ only in line endings or spacing get the same key."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def content_hash(text: str) -> str:
    """Hex SHA-1 of the normalised text (the UTF-8 of `normalize_for_hash(text)`):
    the exact-duplicate key of a document. Computed piece by piece
    (`text_chunks`), so memory stays O(`CHUNK_CHARS`) however long the text."""
    sha = hashlib.sha1()
    sep = b""
    for piece in text_chunks(text, CHUNK_CHARS):
        words = normalize_for_hash(piece)
        if words:
            sha.update(sep)
            sha.update(words.encode("utf-8"))
            sep = b" "
    return sha.hexdigest()
