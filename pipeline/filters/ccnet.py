"""CCNet line-level deduplication keys (Wenzek et al. 2020, Section 3.1;
`cc_net/text_normalizer.py` and `cc_net/dedup.py`).

A line is normalised (lowercase, digits -> 0, punctuation and non-printing
characters removed) and hashed with SHA-1 truncated to 8 bytes; within a shard
group a line whose hash was already seen is removed. The grouping itself runs in
Beam (pipeline/line_dedup.py); these are the pure pieces.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

HASH_BYTES = 8  # cc_net.dedup.HASH_SIZE
_DIGITS = re.compile(r"\d")
# cc_net's PUNCT_OR_NON_PRINTING_CHARS_RE: its unicode punctuation table plus control chars
_UNICODE_PUNCT = "，。、„”“«»１」「《》´∶：？！（）；–—．～’…━〈〉【】％►"  # cc_net UNICODE_PUNCT keys
_PUNCT_OR_NON_PRINTING = re.compile(
    "[" + re.escape(_UNICODE_PUNCT) + "]|[" + "".join(map(chr, list(range(0, 32)) + list(range(127, 160)))) + "]"
)


def normalize_for_dedup(line: str) -> str:
    """CCNet's `normalize_for_dedup`: strip, lowercase, digits -> 0, drop its
    unicode punctuation and non-printing characters. NFC first, so composed and
    decomposed forms of a line hash alike."""
    line = unicodedata.normalize("NFC", line.strip())
    if not line:
        return line
    line = _DIGITS.sub("0", line.lower())
    return _PUNCT_OR_NON_PRINTING.sub("", line)


def line_hash(line: str) -> bytes | None:
    """8-byte SHA-1 prefix of the normalised line; None for a line that is empty
    after normalisation (blank lines are never deduplicated)."""
    norm = normalize_for_dedup(line)
    if not norm:
        return None
    return hashlib.sha1(norm.encode("utf-8")).digest()[:HASH_BYTES]


def remove_lines(text: str, drop: set[int]) -> str:
    """The text without the lines whose 0-based indices (in `text.split("\\n")`) are in `drop`."""
    if not drop:
        return text
    return "\n".join(line for i, line in enumerate(text.split("\n")) if i not in drop)
