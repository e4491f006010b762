"""Document-level quality rules: pure predicates that return a drop reason or None.

Each rule is a named, documented threshold from the config (TFDS C4 style), so
every drop is counted under its reason.
"""

from __future__ import annotations

from typing import Any


def too_short(doc: dict[str, Any], min_chars: int) -> str | None:
    """"too_short" when the text has fewer than `min_chars` characters (after strip).

    CCNet drops documents under 300 characters; the demo config uses less.
    """
    return "too_short" if len(doc["text"].strip()) < min_chars else None


def language_rejected(
    doc: dict[str, Any], keep_langs: list[str], min_lang_score: float
) -> str | None:
    """"lang" when the source keeps only some languages and this one is not kept.

    An empty `keep_langs` means annotate only (Books, ArXiv, StackExchange,
    GitHub). CCNet/LLaMA keep English with fastText probability >= 0.5 for
    CommonCrawl and C4; Wikipedia keeps its 20 languages.
    """
    if not keep_langs:
        return None
    if doc["lang"] not in keep_langs or doc["lang_score"] < min_lang_score:
        return "lang"
    return None
