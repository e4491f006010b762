"""Text hygiene at the reader boundary: what no Document may hold, and when its
text is too damaged to keep.

Every Document passes `clean_document` as it leaves its reader (or its source's
assembler), so later stages (hashing, fastText, Arrow) never meet:

- a lone surrogate (U+D800-U+DFFF): JSON's `\\ud83d` escapes decode to one when
  a scraped text was cut in the middle of an emoji, and no UTF-8 encoder
  accepts it. Replaced with U+FFFD. A high surrogate followed by a low one
  (two halves decoded apart) is joined into the character they encode.
- a control character other than tab and line feed. Line ends of other
  conventions become a line feed (CR LF, CR; VT and FF, line and page breaks).
  A C1 control (U+0080-U+009F) in text is a windows-1252 byte read as Latin-1
  (the real C4 sample has "\\x93I think\\x94" and "Preparation\\x97"): it
  becomes the windows-1252 character (curly quotes, dashes, the euro sign), as
  browsers decode "latin1"; removing it would glue words together. The other
  C0 controls, DEL and the five C1 positions windows-1252 leaves undefined are
  removed.

A text with more U+FFFD than `MAX_REPLACED_SHARE` of its characters (the share
`pipeline.formats.decode` allows a file's bytes) is corrupted, not text with a flaw:
`replacement_rejected` drops it, whatever the length: the same rule for every
document, so no kept text holds a larger share of damage than a kept file.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.formats.decode import MAX_REPLACED_SHARE

REPLACEMENT = "\ufffd"

# Anything clean_text changes; searched first, so a clean text costs one scan.
_SUSPECT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATES = re.compile("[\ud800-\udbff][\udc00-\udfff]|[\ud800-\udfff]")
_LINE_BREAKS = re.compile("\r\n?|[\x0b\x0c]")
_C1 = re.compile("[\x80-\x9f]")
# after _LINE_BREAKS and the C1 repair: what is left to remove
_CONTROLS = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_CP1252 = {chr(c): bytes([c]).decode("cp1252") for c in range(0x80, 0xA0) if c not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)}

# The counts `clean_text` reports, by name (each a `text.<name>` counter).
SURROGATES_REPLACED = "surrogates_replaced"
SURROGATE_PAIRS_JOINED = "surrogate_pairs_joined"
LINE_BREAKS_NORMALISED = "line_breaks_normalised"
C1_CONTROLS_AS_CP1252 = "c1_controls_as_cp1252"
CONTROL_CHARS_REMOVED = "control_chars_removed"


def clean_text(text: str) -> tuple[str, dict[str, int]]:
    """`text` without lone surrogates or control characters (module doc), and
    what changed: {name: count} of the non-zero counts among
    SURROGATES_REPLACED, SURROGATE_PAIRS_JOINED, LINE_BREAKS_NORMALISED,
    C1_CONTROLS_AS_CP1252, CONTROL_CHARS_REMOVED; `text` itself and {} when
    nothing had to change."""
    if _SUSPECT.search(text) is None:
        return text, {}
    counts: dict[str, int] = {}

    def surrogate(m: re.Match) -> str:
        pair = m.group()
        if len(pair) == 1:
            counts[SURROGATES_REPLACED] = counts.get(SURROGATES_REPLACED, 0) + 1
            return REPLACEMENT
        counts[SURROGATE_PAIRS_JOINED] = counts.get(SURROGATE_PAIRS_JOINED, 0) + 1
        return pair.encode("utf-16-le", "surrogatepass").decode("utf-16-le")

    def cp1252(m: re.Match) -> str:
        ch = _CP1252.get(m.group())
        if ch is None:
            return m.group()  # undefined in windows-1252: removed below
        counts[C1_CONTROLS_AS_CP1252] = counts.get(C1_CONTROLS_AS_CP1252, 0) + 1
        return ch

    text = _SURROGATES.sub(surrogate, text)
    for pattern, replace, name in ((_LINE_BREAKS, "\n", LINE_BREAKS_NORMALISED), (_C1, cp1252, None),
                                   (_CONTROLS, "", CONTROL_CHARS_REMOVED)):
        text, n = pattern.subn(replace, text)
        if n and name:
            counts[name] = n
    return text, counts


def clean_document(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    """`clean_text` over a Document's free-text fields (text, url, meta: a lone
    surrogate in a JSON string's text becomes U+FFFD, still valid JSON), the
    text stripped again when it changed (as `make_document` leaves it); returns
    (the Document, or the same one when nothing changed; the summed counts)."""
    changed: dict[str, Any] = {}
    total: dict[str, int] = {}
    for field in ("text", "url", "meta"):
        value, counts = clean_text(doc[field])
        if counts:
            changed[field] = value.strip() if field == "text" else value
            for name, n in counts.items():
                total[name] = total.get(name, 0) + n
    return ({**doc, **changed} if changed else doc), total


def replacement_rejected(doc: dict[str, Any]) -> str | None:
    """"replacement_ratio" when U+FFFD makes up more than MAX_REPLACED_SHARE of
    the text's characters."""
    text = doc["text"]
    if text.count(REPLACEMENT) > MAX_REPLACED_SHARE * len(text):
        return "replacement_ratio"
    return None
