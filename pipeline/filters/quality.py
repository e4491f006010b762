"""Document-level quality rules: pure predicates that return a drop reason or None.

Each rule is a named, documented threshold from the config (TFDS C4 style), so
every drop is counted under its reason.
"""

from __future__ import annotations

from typing import Any

# UTF-8 bytes are counted this many characters at a time (a bounded copy)
_COUNT_CHARS = 1 << 20


def utf8_size(text: str, limit: int | None = None) -> int:
    """The length of `text` in UTF-8 ("surrogatepass": a lone surrogate counts
    3 bytes), counted a piece at a time rather than on a copy of the whole
    encoding; once the count passes `limit`, a partial count above it."""
    if text.isascii():
        return len(text)
    n = 0
    for lo in range(0, len(text), _COUNT_CHARS):
        piece = text[lo : lo + _COUNT_CHARS]
        n += len(piece) if piece.isascii() else len(piece.encode("utf-8", "surrogatepass"))
        if limit is not None and n > limit:
            break
    return n


def too_large(doc: dict[str, Any], max_bytes: int) -> str | None:
    """"too_large" when the text has more than `max_bytes` UTF-8 bytes
    (`sources.<name>.max_doc_bytes`), so that no stage holds a document larger
    than that. Decided from the character count when it can be (1 to 4 bytes
    a character), else counted without encoding a copy of the text.
    """
    text = doc["text"]
    if len(text) * 4 <= max_bytes:
        return None
    if len(text) > max_bytes:
        return "too_large"
    return "too_large" if utf8_size(text, max_bytes) > max_bytes else None


def too_short(doc: dict[str, Any], min_chars: int) -> str | None:
    """"too_short" when the text has fewer than `min_chars` characters (after strip).

    CCNet drops documents under 300 characters; the demo config uses less.
    """
    return "too_short" if len(doc["text"].strip()) < min_chars else None


def language_rejected(
    doc: dict[str, Any], langs: list[str], min_lang_score: float
) -> str | None:
    """"lang" when the source keeps only some languages and this one is not kept.

    An empty `langs` means annotate only (Books, ArXiv, StackExchange,
    GitHub). CCNet/LLaMA keep English with fastText probability >= 0.5 for
    CommonCrawl and C4; Wikipedia keeps its 20 languages.
    """
    if not langs:
        return None
    if doc["lang"] not in langs or doc["lang_score"] < min_lang_score:
        return "lang"
    return None
