"""GitHub's file rules (LLaMA 2.1; RedPajama's reproduction, rp_v1
`data_prep/github`): pure functions of a file's path or text -> the reason it
is left out, or None.

- `path_reason`: a licence or notice file ("license_file"), a file that is not
  code (not in CODE_EXTENSIONS: "extension");
- `binary_reason`: a binary blob ("binary");
- `quality_reason`: RedPajama's heuristics on the text left once the licence
  header is removed ("max_line_length", "mean_line_length", "alnum_fraction",
  "alpha_per_token"), with the thresholds of the `sources.github` block.

The reader (`pipeline.sources.github`) applies them in that order, to the
text as the source holds it (before the text hygiene every document goes
through), and counts a file left out as `skip.<reason>`.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from pipeline.core.config import GithubSourceConfig

# Code files kept, with the language each extension is counted as.
CODE_EXTENSIONS = {
    ".py": "Python", ".pyi": "Python", ".pyx": "Cython",
    ".c": "C", ".h": "C", ".cpp": "C++",
    ".js": "JavaScript", ".ts": "TypeScript", ".sh": "Shell",
    ".rs": "Rust", ".go": "Go", ".java": "Java",
}

# Licence and notice files, by name.
LICENSE_FILE = re.compile(r"^(LICEN[CS]E|COPYING|NOTICE)", re.IGNORECASE)

# Files larger than this are neither read nor exported: generated code and
# data tables, which the heuristics would drop anyway.
MAX_FILE_BYTES = 1 << 20

# RedPajama's GitHub file filters (rp_v1 data_prep/github), the defaults of the
# `sources.github` fields of the same names (what each means: GithubSourceConfig)
_RULES = GithubSourceConfig.model_fields
MAX_LINE_LENGTH = _RULES["max_line_length"].default
MAX_MEAN_LINE_LENGTH = _RULES["max_mean_line_length"].default
MIN_ALNUM_FRACTION = _RULES["min_alnum_fraction"].default
MIN_ALPHA_PER_TOKEN = _RULES["min_alpha_per_token"].default


def is_license_file(path: str) -> bool:
    """LICENSE, LICENCE.txt, COPYING, NOTICE... (by file name, any folder)."""
    return bool(LICENSE_FILE.match(posixpath.basename(path)))


def is_binary(content: str) -> bool:
    """A NUL character means a binary blob (git's own test, on the whole file)."""
    return "\x00" in content


def max_line_length(text: str) -> int:
    """Length of the longest line (lines as `str.splitlines`), 0 for no text."""
    return max(map(len, text.splitlines()), default=0)


def mean_line_length(text: str) -> float:
    """Characters per line: len(text) / number of lines (RedPajama's definition,
    newlines included), 0.0 for no text."""
    lines = len(text.splitlines())
    return len(text) / lines if lines else 0.0


# ASCII bytes that are not alphanumeric / not alphabetic, for bytes.translate.
_ASCII_NOT_ALNUM = bytes(b for b in range(128) if not chr(b).isalnum())
_ASCII_NOT_ALPHA = bytes(b for b in range(128) if not chr(b).isalpha())


def _count(text: str, ascii_drop: bytes, predicate: Any) -> int:
    """Characters of `text` for which `predicate` holds; ASCII text (most code)
    is counted in C by deleting the other bytes, 30x faster than a loop."""
    if text.isascii():
        return len(text.encode("ascii").translate(None, ascii_drop))
    return sum(map(predicate, text))


def alnum_fraction(text: str) -> float:
    """Share of characters that are alphanumeric (`str.isalnum`, Unicode)."""
    return _count(text, _ASCII_NOT_ALNUM, str.isalnum) / len(text) if text else 0.0


def alpha_per_token(text: str) -> float:
    """Alphabetic characters per token, tokens being whitespace-separated words
    (RedPajama counts tokenizer tokens; whitespace words are a cheaper, stable
    stand-in of the same order). 0.0 for a file with no token."""
    tokens = len(text.split())
    return _count(text, _ASCII_NOT_ALPHA, str.isalpha) / tokens if tokens else 0.0


def path_reason(path: str) -> str | None:
    """"license_file" for a licence or notice file (`is_license_file`),
    "extension" for a file whose extension is not in CODE_EXTENSIONS, else None."""
    if is_license_file(path):
        return "license_file"
    return None if posixpath.splitext(path)[1].lower() in CODE_EXTENSIONS else "extension"


def binary_reason(content: str) -> str | None:
    """"binary" for a binary blob (`is_binary`), else None."""
    return "binary" if is_binary(content) else None


def quality_reason(text: str, rules: GithubSourceConfig | None = None) -> str | None:
    """The first RedPajama GitHub heuristic `text` fails, as a reason
    ("max_line_length", "mean_line_length", "alnum_fraction",
    "alpha_per_token"), or None when the file passes them all; thresholds
    from `rules` (the `sources.github` block), else the defaults."""
    max_line, max_mean, min_alnum, min_alpha = (
        (rules.max_line_length, rules.max_mean_line_length, rules.min_alnum_fraction, rules.min_alpha_per_token)
        if rules else (MAX_LINE_LENGTH, MAX_MEAN_LINE_LENGTH, MIN_ALNUM_FRACTION, MIN_ALPHA_PER_TOKEN))
    if max_line_length(text) > max_line:
        return "max_line_length"
    if mean_line_length(text) > max_mean:
        return "mean_line_length"
    if alnum_fraction(text) < min_alnum:
        return "alnum_fraction"
    if alpha_per_token(text) < min_alpha:
        return "alpha_per_token"
    return None
