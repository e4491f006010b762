"""Exact deduplication keys (LLaMA 2.1: exact dedup for Wikipedia, books, arXiv,
StackExchange; file-level exact dedup for GitHub)."""

from __future__ import annotations

import hashlib
import unicodedata


def normalize_for_hash(text: str) -> str:
    """NFC, whitespace runs collapsed to one space, stripped: two copies of a text
    that differ only in line endings or spacing get the same key."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def content_hash(text: str) -> str:
    """Hex SHA-1 of the normalised text: the exact-duplicate key of a document."""
    return hashlib.sha1(normalize_for_hash(text).encode("utf-8")).hexdigest()
