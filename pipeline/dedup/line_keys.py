"""CCNet line-level deduplication keys (Wenzek et al. 2020, Section 3.1;
`cc_net/text_normalizer.py` and `cc_net/dedup.py`).

A line is normalised (lowercase, digits -> 0, punctuation and non-printing
characters removed) and hashed with SHA-1 truncated to 8 bytes; within a shard
group a line whose hash was already seen is removed. The grouping itself runs in
Beam (pipeline/dedup/lines.py); these are the pure pieces: the key of a line, the
shard group of a document (`line_dedup_group`), and the text that survives.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any

HASH_BYTES = 8  # cc_net.dedup.HASH_SIZE
SCOPES = ("run", "dump", "file")  # `clean.line_dedup_scope`
# a Common Crawl crawl (dump) id, as in `crawl-data/CC-MAIN-2024-22/segments/...`
_CRAWL_ID = re.compile(r"CC-MAIN-\d{4}-\d{2}(?!\d)")
_DIGITS = re.compile(r"\d")
# cc_net's PUNCT_OR_NON_PRINTING_CHARS_RE: its unicode punctuation table plus control chars
_UNICODE_PUNCT = "，。、„”“«»１」「《》´∶：？！（）；–—．～’…━〈〉【】％►"  # cc_net UNICODE_PUNCT keys
_PUNCT_OR_NON_PRINTING = re.compile(
    "[" + re.escape(_UNICODE_PUNCT) + "]|[" + "".join(map(chr, list(range(32)) + list(range(127, 160)))) + "]"
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


def keep_first_lines(text: str, keep: set[int]) -> tuple[str, int]:
    """`text` with its blank lines (empty after normalisation) and the non-blank
    lines whose 0-based indices are in `keep`, and the number of lines removed.
    When a line is removed, leading and trailing newlines are stripped too; a text
    that loses nothing comes back as it is."""
    drop = {i for i, line in enumerate(text.split("\n")) if i not in keep and normalize_for_dedup(line)}
    if not drop:
        return text, 0
    return remove_lines(text, drop).strip("\n"), len(drop)


def crawl_id(name: str) -> str | None:
    """The Common Crawl crawl id (`CC-MAIN-2024-22`) named in a file name or path,
    or None. Common Crawl's own WARC/WET names
    (`CC-MAIN-20190717121559-20190717143559-00140.warc.wet.gz`) name a segment's
    time, not the crawl: None (only the full `crawl-data/<crawl>/...` path would)."""
    m = _CRAWL_ID.search(name)
    return m.group(0) if m else None


def line_dedup_group(source: str, meta: dict[str, Any], scope: str) -> tuple[str, bool]:
    """The shard group of a document for line dedup: a line counts as repeated
    only within its group. Returns (group, whether the scope was resolved).

    scope "run": the source, resolved. "file": the input file the document was
    read from (meta `warc_file`, the file name the Common Crawl reader records).
    "dump": the crawl (meta `crawl`, from the input's path, or `crawl_id` of the
    file name); unknown -> the file, unresolved. No file recorded (other
    readers) -> the source, unresolved, for both.

    Raises:
        ValueError: `scope` is not one of SCOPES.
    """
    if scope not in SCOPES:
        raise ValueError(f"line dedup scope {scope!r} is not one of {SCOPES}")
    if scope == "run":
        return source, True
    name = meta.get("warc_file")
    if not isinstance(name, str) or not name:
        return source, False
    if scope == "dump":
        crawl = meta.get("crawl") or crawl_id(name)
        if crawl is not None:
            return f"{source}/dump/{crawl}", True
    return f"{source}/file/{name}", scope == "file"
