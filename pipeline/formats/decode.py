"""Bytes of a text file -> str: the encoding decided once per file, and recorded.

Readers record what `decode_text` returns in a Document's meta: "encoding" (the
codec that decoded the bytes) and "replacements" (how many U+FFFD it inserted).
Nothing is decoded silently in a wrong encoding: the choice, in order, is

1. a byte-order mark (UTF-8, UTF-16 or UTF-32, either byte order);
2. the UTF-16/32 byte pattern (`sniff_wide`): text of mostly ASCII or Latin
   letters in UTF-16 has a NUL in every other byte, in UTF-32 two NULs in
   every four; no ASCII-compatible encoding writes NULs in such a pattern;
3. UTF-8, when the bytes are valid UTF-8, or hold at least as many valid
   multi-byte characters as invalid sequences (a legacy 8-bit text holds none
   of the first and one of the second per accented letter) with at most
   MAX_REPLACED_SHARE of the bytes invalid: a stray bad byte costs one
   character (U+FFFD), not the file. More invalid bytes than that make UTF-8
   text too damaged to keep, not text in another encoding;
4. otherwise, the file being not UTF-8 at all, the detector (uchardet,
   through resiliparse, given the whole file) names the legacy encoding
   (windows-1252 for ISO-8859-1, windows-1251, Shift JIS...); where it finds
   none, UTF-8 with at most MAX_REPLACED_SHARE of the bytes replaced.

The chosen codec must decode with at most MAX_REPLACED_SHARE of the bytes
replaced, else the bytes are `Undecodable` (a binary file, or text too damaged
to trust). Each undecodable byte sequence becomes one U+FFFD, as in a browser,
and is counted.
"""

from __future__ import annotations

import codecs
import threading
from typing import NamedTuple

from resiliparse.parse.encoding import detect_encoding

# Most replaced bytes per byte of the file for a codec to be the file's. A
# UTF-8 file damaged by a bad copy or edit has a handful of bad bytes (the
# German Faust of Project Gutenberg with one: 1 in 218,485), while a file in a
# legacy 8-bit encoding read as UTF-8 has one per accented letter: 1-3% of a
# German, French or Spanish text, most of a Russian or Greek one. 1e-3 lies
# between, with an order of magnitude on either side.
MAX_REPLACED_SHARE = 1e-3

# Byte-order marks, longest first (the UTF-32 LE mark starts with UTF-16 LE's):
# (mark, the codec that decodes and drops it, the encoding it names).
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32", "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32", "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8-sig", "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16", "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16", "utf-16-be"),
)

# The UTF-16/32 byte pattern (`sniff_wide`), looked for in the first bytes.
WIDE_SAMPLE_BYTES = 4096
# A UTF-16 text's high bytes are NUL for every character below U+0100: all of
# ASCII (spaces, digits, punctuation, markup) and the Latin-1 letters. A
# quarter of the characters there is the least for it to be seen; a text in
# another script with less is left to the later rules.
MIN_WIDE_NUL_SHARE = 0.25
# The other bytes are NUL only for U+xx00 characters (rare) and in binary data.
MAX_WIDE_OTHER_NUL_SHARE = 0.05
# UTF-32 keeps two NUL bytes in every character of the Basic Multilingual Plane.
MIN_UTF32_NUL_SHARE = 0.9
# Binary data (arrays of small 16-bit numbers) can show the same NULs; decoded,
# it is mostly control characters, which text is not.
MAX_WIDE_CONTROL_SHARE = 0.01
_TEXT_CONTROLS = frozenset("\t\n\v\f\r")


class Undecodable(ValueError):
    """Bytes that no encoding decodes with few enough replacements (module doc)."""


class Decoded(NamedTuple):
    """A file's text and how it was decoded."""

    text: str
    encoding: str  # the codec (Python's name) that decoded the bytes after any byte-order mark
    replacements: int  # U+FFFD inserted for bytes the codec could not decode


_replaced = threading.local()


def _count_and_replace(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: what errors="replace" does (one U+FFFD per
    undecodable sequence), counted in a thread-local (Beam may run DoFns in
    threads): sequences and their bytes."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    _replaced.count += 1
    _replaced.bytes += error.end - error.start
    return "\ufffd", error.end


codecs.register_error("pipeline.count_replace", _count_and_replace)


def _decode(data: bytes, codec: str, final: bool = True) -> tuple[str, int, int]:
    """(text, U+FFFD inserted, bytes they replaced). `final=False`: the data
    was cut short, so an incomplete character at its end is dropped, not replaced."""
    _replaced.count = _replaced.bytes = 0
    if final:
        text = data.decode(codec, errors="pipeline.count_replace")
    else:
        text = codecs.getincrementaldecoder(codec)(errors="pipeline.count_replace").decode(data, final=False)
    return text, _replaced.count, _replaced.bytes


def decode_counting(data: bytes, codec: str, final: bool = True) -> tuple[str, int]:
    """`data.decode(codec, errors="replace")` and the number of U+FFFD it inserted
    (a U+FFFD already in the data is text, not counted)."""
    text, replacements, _ = _decode(data, codec, final)
    return text, replacements


def sniff_bom(data: bytes) -> str | None:
    """The codec that decodes `data` after its byte-order mark (and drops the
    mark), or None without one (WHATWG "BOM sniff")."""
    for bom, codec, _ in BOMS:
        if data.startswith(bom):
            return codec
    return None


def _nul_shares(sample: bytes) -> list[float]:
    """Share of NUL bytes at each position modulo 4."""
    quarter = len(sample) // 4
    return [sample[r::4].count(0) / quarter for r in range(4)]


def sniff_wide(data: bytes) -> str | None:
    """"utf-16-le", "utf-16-be", "utf-32-le" or "utf-32-be" when the first
    WIDE_SAMPLE_BYTES show that encoding's NUL bytes (module doc, rule 2) and
    decode to text, not control characters; else None. Text in UTF-16 with
    under MIN_WIDE_NUL_SHARE characters below U+0100 (most CJK text) is not
    recognised: it needs a byte-order mark or a declared charset."""
    sample = data[:WIDE_SAMPLE_BYTES]
    sample = sample[: len(sample) - len(sample) % 4]  # whole UTF-32 characters
    if len(sample) < 8:
        return None
    z = _nul_shares(sample)
    codec = None
    if min(z[2], z[3]) >= MIN_UTF32_NUL_SHARE and z[0] <= MAX_WIDE_OTHER_NUL_SHARE:
        codec = "utf-32-le"
    elif min(z[0], z[1]) >= MIN_UTF32_NUL_SHARE and z[3] <= MAX_WIDE_OTHER_NUL_SHARE:
        codec = "utf-32-be"
    elif min(z[1], z[3]) >= MIN_WIDE_NUL_SHARE and max(z[0], z[2]) <= MAX_WIDE_OTHER_NUL_SHARE:
        codec = "utf-16-le"
    elif min(z[0], z[2]) >= MIN_WIDE_NUL_SHARE and max(z[1], z[3]) <= MAX_WIDE_OTHER_NUL_SHARE:
        codec = "utf-16-be"
    if codec is None:
        return None
    text, _, replaced = _decode(sample, codec, final=False)
    controls = sum(1 for ch in text if ch < " " and ch not in _TEXT_CONTROLS)
    if replaced > MAX_REPLACED_SHARE * len(sample) or controls > MAX_WIDE_CONTROL_SHARE * len(text):
        return None
    return codec


def detect_legacy(data: bytes) -> str | None:
    """The codec uchardet names for the whole of `data` (Python's name), as
    WHATWG maps it (ISO-8859-1 -> cp1252, GB2312 -> GBK: the encodings of the
    web, where "utf-8" also says that none was found; without this mapping a
    few accented bytes in ASCII text come out as DOS code pages), or None
    when it names none Python knows."""
    label = detect_encoding(data, max_len=0)
    if not label:
        return None
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def _checked(data: bytes, codec: str, final: bool, how: str) -> Decoded:
    text, replacements, replaced = _decode(data, codec, final)
    if replaced > MAX_REPLACED_SHARE * len(data):
        raise Undecodable(
            f"{replaced} of {len(data)} bytes not valid {codec} ({how}; more than {MAX_REPLACED_SHARE:g})"
        )
    return Decoded(text, codec, replacements)


def decode_text(data: bytes, final: bool = True) -> Decoded:
    """Decode a whole text file by the rules of the module doc.

    Args:
        data: the file's bytes (decompressed).
        final: False when `data` is the part of a file read before damage:
            an incomplete character at its end is dropped, not replaced.
    Returns:
        Decoded(text without any byte-order mark, codec, replacements).
    Raises:
        Undecodable: more than MAX_REPLACED_SHARE of the bytes replaced in the
            chosen encoding, or not UTF-8 and no other encoding detected.
    """
    for bom, _, codec in BOMS:
        if data.startswith(bom):
            return _checked(data[len(bom) :], codec, final, "byte-order mark")
    wide = sniff_wide(data)
    if wide:
        return _checked(data, wide, final, "UTF-16/32 byte pattern")
    text, replacements, replaced = _decode(data, "utf-8", final)
    if not replacements:
        return Decoded(text, "utf-8", 0)
    why = f"{replaced} of {len(data)} bytes not valid UTF-8"
    # valid multi-byte characters: all non-ASCII ones, less the U+FFFD just inserted
    multibyte = len(text) - len(text.encode("ascii", "ignore")) - replacements
    if multibyte < replacements:  # nothing says UTF-8
        legacy = detect_legacy(data)
        if legacy is not None and legacy != "utf-8":
            return _checked(data, legacy, final, f"{why}; detected")
        how = "no other encoding detected"
    else:  # no legacy text holds as many valid UTF-8 sequences
        how = "UTF-8 with bytes damaged"
    if replaced > MAX_REPLACED_SHARE * len(data):
        raise Undecodable(f"{why} ({how}; more than {MAX_REPLACED_SHARE:g})")
    return Decoded(text, "utf-8", replacements)
