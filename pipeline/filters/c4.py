"""The C4 page-cleaning heuristics (Raffel et al. 2020, Section 2.2; TFDS `c4_utils.clean_page`),
and the DataTrove/FineWeb variant of its thresholds.

`clean_c4_page` is a pure function: text in, cleaned text (or None) out, with the
reason of every removed line and of a removed page, so the Beam layer counts them.
It reads a page a piece at a time and never lists a line's words, so a page of
any size costs about its kept text beyond itself.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

END_MARKS = (".", "?", "!", '"')  # TFDS _END_MARKS
ELLIPSIS = "..."
POLICY_SUBSTRINGS = (  # TFDS _POLICY_SUBSTRINGS
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)
CITATION_RE = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")  # TFDS _CITATION_REGEX
_POLICY = re.compile("|".join(map(re.escape, POLICY_SUBSTRINGS)))  # any of them: one search
# TFDS counts sentences with NLTK's punkt model, which must be downloaded; a
# terminal mark followed by a space or the end of the line is the offline stand-in.
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)")
_WORD = re.compile(r"\S+")  # a word of str.split()
# the line boundaries of str.splitlines()
_LINE_BREAK = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
LINES_CHUNK_CHARS = 1 << 20  # a page is split into lines about this many characters at a time


@dataclass(frozen=True)
class C4Params:
    """Thresholds of the C4 rules (named constants, as in TFDS)."""

    name: str
    min_words_per_line: int
    min_sentences: int
    max_word_length: int = 1000


C4_T5 = C4Params("t5", min_words_per_line=5, min_sentences=3)  # T5 paper / TFDS
C4_FINEWEB = C4Params("fineweb", min_words_per_line=3, min_sentences=5)  # DataTrove C4QualityFilter as FineWeb set it
C4_VARIANTS = {p.name: p for p in (C4_T5, C4_FINEWEB)}


def count_sentences(line: str) -> int:
    """Sentences in a line: runs of terminal punctuation followed by whitespace or the end."""
    return len(_SENTENCE_END.findall(line))


def iter_lines(text: str, size: int = LINES_CHUNK_CHARS) -> Iterator[str]:
    """`text.splitlines()`, one line at a time: the text is split a piece of
    about `size` characters at a time, each piece ending just after a line
    boundary (never between the CR and LF of a CRLF), so the lines are
    those of the whole text and only one piece's lines are held."""
    lo = 0
    while len(text) - lo > size:
        m = _LINE_BREAK.search(text, lo + size)
        if m is None:
            break
        hi = m.end() + (text.startswith("\r\n", m.start()))
        yield from text[lo:hi].splitlines()
        lo = hi
    yield from (text[lo:] if lo else text).splitlines()


@functools.lru_cache(maxsize=8)
def _long_word(max_length: int) -> re.Pattern[str]:
    """Matches a word (of `str.split()`) longer than `max_length` characters;
    tried only where a word starts, so a search is linear in the line."""
    return re.compile(rf"(?<!\S)\S{{{max_length + 1}}}")


def _fewer_words(line: str, n: int) -> bool:
    """`len(line.split()) < n`, counting no further than n words."""
    return n > 0 and next(islice(_WORD.finditer(line), n - 1, None), None) is None


# Languages written without spaces between words: TFDS matches their entries anywhere.
UNSPACED_LANGS = ("ja", "th", "zh")


def badwords_pattern(words: list[str], lang: str = "en") -> re.Pattern[str] | None:
    """The C4 bad-words regex (TFDS `get_badwords_filter_fn`): an entry, words
    or a phrase (`2 girls 1 cup`: a literal space), matches between non-word
    characters or the text's ends, `(?:\\W|^)` and `(?:\\W|$)`, except in
    UNSPACED_LANGS, where it matches anywhere. Case-insensitive, as TFDS's
    search of the lowercased text. Entries are stripped and lowercased (TFDS
    takes them as listed, so its few upper-case ones, none in English, never
    match). None for an empty list.
    """
    words = sorted({w.strip().lower() for w in words if w.strip()})
    if not words:
        return None
    alternatives = "|".join(map(re.escape, words))
    if lang.split("-")[0] in UNSPACED_LANGS:
        return re.compile(alternatives, re.IGNORECASE)
    return re.compile(r"(?<!\w)(?:" + alternatives + r")(?!\w)", re.IGNORECASE)


def load_badwords(path: str | Path | None) -> re.Pattern[str] | None:
    """`badwords_pattern` of a list file: LDNOOBW's JSON array (`en.json` of
    npm's `naughty-words`, which C4 used), or one entry per line. The language
    is the file's name (`ja.json`: no word boundaries).

    Raises: FileNotFoundError naming the file; ValueError for a JSON file that
    is not an array of strings.
    """
    if not path:
        return None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bad-words list not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        words = json.loads(text)
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError(f"{path}: a bad-words list in JSON must be an array of strings")
    else:
        words = text.splitlines()
    return badwords_pattern(words, path.name.split(".")[0])


def clean_c4_page(
    text: str, params: C4Params = C4_T5, badwords: re.Pattern[str] | None = None
) -> tuple[str | None, Counter[str]]:
    """Apply the C4 rules to one page.

    Line rules (the line goes, the page stays): a word longer than
    `max_word_length` ("too_long_word"); after removing citation markers, no
    terminal punctuation or an ellipsis at the end ("no_endmark"); fewer than
    `min_words_per_line` words ("too_few_words"); mentions javascript
    ("javascript"); a cookie/policy notice ("policy").
    Page rules (the page goes): "lorem ipsum" ("lorem_ipsum"); a curly bracket
    ("curly_bracket"); fewer than `min_sentences` sentences in the kept lines
    ("too_few_sentences"); an entry of the bad-words list in the kept text
    ("badwords"; `badwords_pattern`).

    Returns:
        (cleaned text, or None when the page is dropped; Counter of reasons:
        "line.<reason>" per removed line and the page reason when dropped).
    """
    reasons: Counter[str] = Counter()
    kept: list[str] = []  # kept lines not yet joined into a block
    blocks: list[str] = []  # kept lines joined, about LINES_CHUNK_CHARS at a time
    kept_chars = 0
    sentences = 0
    long_word = _long_word(params.max_word_length)
    for line in iter_lines(text):
        line = line.strip()
        if long_word.search(line):
            reasons["line.too_long_word"] += 1
            continue
        if "[" in line:  # every citation marker starts so
            line = CITATION_RE.sub("", line)
        if not line.endswith(END_MARKS) or line.endswith(ELLIPSIS):
            reasons["line.no_endmark"] += 1
            continue
        if _fewer_words(line, params.min_words_per_line):
            reasons["line.too_few_words"] += 1
            continue
        lower = line.lower()
        if "lorem ipsum" in lower:
            reasons["lorem_ipsum"] += 1
            return None, reasons
        if "javascript" in lower:
            reasons["line.javascript"] += 1
            continue
        if "{" in line:
            reasons["curly_bracket"] += 1
            return None, reasons
        if _POLICY.search(lower):
            reasons["line.policy"] += 1
            continue
        if sentences < params.min_sentences:  # enough is enough: the count is only compared
            sentences += count_sentences(line)
        kept.append(line)
        kept_chars += len(line)
        if kept_chars >= LINES_CHUNK_CHARS:  # one string instead of thousands of lines
            blocks.append("\n".join(kept))
            kept, kept_chars = [], 0
    if sentences < params.min_sentences:
        reasons["too_few_sentences"] += 1
        return None, reasons
    if kept:
        blocks.append("\n".join(kept))
    del kept
    cleaned = "\n".join(blocks).strip()
    if badwords is not None and badwords.search(cleaned):
        reasons["badwords"] += 1
        return None, reasons
    return cleaned, reasons
