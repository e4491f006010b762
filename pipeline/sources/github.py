"""GitHub reader, and the exporter of the demo's GitHub-style sample.

LLaMA (2023), Section 2.1 "Github": the public GitHub dataset on Google BigQuery,
keeping only projects under the Apache, BSD and MIT licences, filtering
low-quality files with heuristics on line length and the proportion of
alphanumeric characters, and removing boilerplate such as headers with regular
expressions (file-level exact dedup is a later stage). The heuristics' thresholds
are RedPajama's reproduction of that step (`data_prep/github`, rp_v1).

Input rows follow BigQuery's `github_repos` tables (`contents` joined with
`files` and `licenses`): `{"repo_name", "path", "license", "language",
"content", "size"}`, as JSON lines (any compression) or Parquet. A local
repository (a directory with its LICENSE/COPYING files, or an installed Python
distribution with its licence metadata) is read too (`read_repository`), its
licence detected from the licence text (`detect_license_text`). The demo builds
such a table from the installed Python distributions
(`export_installed_distributions`).
"""

from __future__ import annotations

import csv
import email.parser
import gzip
import hashlib
import importlib.metadata
import json
import os
import posixpath
import re
import sysconfig
from pathlib import Path
from typing import Any, Iterable, Iterator

from pipeline.core.config import Config
from pipeline.core.io import atomic_write
from pipeline.sources.base import DeadLetter, Formats, Skip, make_document
from pipeline.sources.records import (
    iter_json_lines,
    iter_parquet_rows,
    json_lines_spans,
    parquet_spans,
)

SOURCE = "github"
FORMATS = Formats(
    describe=("BigQuery-style tables (repo_name, path, license, content): JSON lines (.jsonl, .json; "
              "gzip, bzip2, xz) or Parquet; local repository folders (one holding a LICENSE, COPYING, "
              "README, PKG-INFO or METADATA file, or .git), an installed package's .dist-info"),
    names=("*.jsonl", "*.json", "*.parquet"),
    folders=("licen[cs]e*", "copying*", "readme*", "pkg-info", "metadata", ".git"),
)

# Code files kept, with the language each extension is counted as.
CODE_EXTENSIONS = {
    ".py": "Python", ".pyi": "Python", ".pyx": "Cython",
    ".c": "C", ".h": "C", ".cpp": "C++",
    ".js": "JavaScript", ".ts": "TypeScript", ".sh": "Shell",
    ".rs": "Rust", ".go": "Go", ".java": "Java",
}
# Comment syntax of the header a licence notice sits in.
HASH_COMMENT_EXTENSIONS = frozenset({".py", ".pyi", ".pyx", ".sh"})
DOCSTRING_EXTENSIONS = frozenset({".py", ".pyi", ".pyx"})

# Licence and notice files, by name.
LICENSE_FILE = re.compile(r"^(LICEN[CS]E|COPYING|NOTICE)", re.IGNORECASE)

# Files larger than this are not exported: generated code and data tables,
# which the heuristics would drop anyway, would dominate a small sample.
MAX_FILE_BYTES = 1 << 20
MAX_LICENSE_FILES_PER_REPO = 3

# RedPajama's GitHub file filters (rp_v1 data_prep/github): a file is dropped when
MAX_LINE_LENGTH = 1000  # its longest line is longer than this (minified, generated),
MAX_MEAN_LINE_LENGTH = 100  # its mean line length is larger (data tables),
MIN_ALNUM_FRACTION = 0.25  # fewer of its characters are alphanumeric (ASCII art),
MIN_ALPHA_PER_TOKEN = 1.5  # it has fewer letters per token (numeric arrays).

STDLIB_REPO = "cpython-stdlib"
STDLIB_LICENSE = "PSF-2.0"
_STDLIB_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})


# --------------------------------------------------------------------------
# Licences


# Single licence names (SPDX ids, trove classifiers, free text) -> family.
# First match wins, so the narrower name comes first (LGPL before GPL).
_FAMILIES = tuple(
    (family, re.compile(pattern, re.IGNORECASE))
    for family, pattern in (
        ("lgpl", r"\blgpl|lesser general public|library general public"),
        ("agpl", r"\bagpl|affero"),
        ("gpl", r"\bgpl|general public licen[cs]e"),
        ("apache", r"\bapache"),
        ("mpl", r"\bmpl\b|mozilla public"),
        ("bsd", r"\b0?bsd"),
        ("mit", r"\bmit\b|\bexpat\b|\bx11\b"),
        ("isc", r"\biscl?\b"),
        ("psf", r"\bpsf\b|python software foundation|\bpython-2\.0"),
        ("zlib", r"\bzlib\b"),
        ("cc0", r"\bcc0\b"),
        ("unlicense", r"\bunlicense\b"),
        ("bsl", r"\bbsl-1\.0\b|boost software"),
        ("public-domain", r"public domain"),
        ("hpnd", r"\bhpnd\b|historical permission notice"),
    )
)

_OPERATOR = re.compile(r"(\(|\)|\bAND\b|\bOR\b|;)")
_NAME_PARENS = re.compile(r"\(([^()]*)\)")


def license_family(name: str) -> str:
    """Family of one licence name: "mit", "bsd", "apache", "mpl", "gpl", "lgpl",
    "agpl", "isc", "psf", "zlib", "cc0", "unlicense", "bsl", "public-domain",
    "hpnd", or "unknown".

    Accepts SPDX ids ("BSD-3-Clause", "MIT-0", "Apache-2.0 WITH LLVM-exception"),
    trove classifiers ("License :: OSI Approved :: MIT License") and the free
    text of PyPI's License field ("3-Clause BSD License", "Apache 2.0"). Variants
    count as their family (0BSD is BSD, MIT-0 and MIT-CMU are MIT), which is how
    BigQuery's `licenses` table, the source LLaMA filtered on, names them too.
    """
    for family, pattern in _FAMILIES:
        if pattern.search(name):
            return family
    return "unknown"


def _parse_expression(expression: str) -> Any:
    """SPDX-style expression -> nested ("or"|"and", [...]) tuples and name strings.

    AND binds tighter than OR (SPDX spec, annex D); `;` (free-text lists such as
    "BSD; GPL; PSF") reads as AND. Parentheses that hold no operator belong to a
    name ("Mozilla Public License 2.0 (MPL 2.0)"). Raises ValueError if unbalanced.
    """
    protected = _NAME_PARENS.sub(
        lambda m: m.group(0) if _OPERATOR.search(m.group(1)) else f"[{m.group(1)}]",
        expression,
    )
    tokens = [t.strip() for t in _OPERATOR.split(protected) if t.strip()]
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def parse_or() -> Any:
        nonlocal pos
        terms = [parse_and()]
        while peek() == "OR":
            pos += 1
            terms.append(parse_and())
        return terms[0] if len(terms) == 1 else ("or", terms)

    def parse_and() -> Any:
        nonlocal pos
        terms = [parse_atom()]
        while peek() in ("AND", ";"):
            pos += 1
            if peek() in (None, ")"):  # trailing "a; b;" separator
                break
            terms.append(parse_atom())
        return terms[0] if len(terms) == 1 else ("and", terms)

    def parse_atom() -> Any:
        nonlocal pos
        token = peek()
        if token is None or token in ("AND", "OR", ";", ")"):
            raise ValueError(f"licence expression {expression!r}: name expected")
        pos += 1
        if token != "(":
            return token
        node = parse_or()
        if peek() != ")":
            raise ValueError(f"licence expression {expression!r}: unbalanced '('")
        pos += 1
        return node

    node = parse_or()
    if pos != len(tokens):
        raise ValueError(f"licence expression {expression!r}: unexpected {tokens[pos]!r}")
    return node


def classify_license(expression: str, keep: Iterable[str]) -> tuple[bool, str]:
    """Whether a licence (or licence expression) is kept, and its family.

    Rules (LLaMA 2.1: "we only kept projects that are distributed under the
    Apache, BSD and MIT licenses"; `keep` is cfg.clean.github.licenses):
      - a single name is kept when its family (`license_family`) is in `keep`;
      - `A OR B` (dual licensing: the user may choose) is kept when any option is
        kept: "Apache-2.0 OR BSD-3-Clause" is kept, family "apache";
      - `A AND B` (or `A; B`: different parts under different licences, and a
        per-file licence is not known) is kept only when every part is kept.
        So numpy's "BSD-3-Clause AND 0BSD AND MIT AND Zlib AND CC0-1.0" is
        dropped under LLaMA's list (family "zlib", the first part not kept):
        the strict reading; add "zlib" and "cc0" to the list to keep it.
    An empty or unparsable expression is "unknown" and dropped.

    Returns: (kept, family): the family of the option that decided.
    """
    keep = {k.lower() for k in keep}
    try:
        node = _parse_expression(expression or "")
    except ValueError:
        return False, "unknown"

    def evaluate(node: Any) -> tuple[bool, str]:
        if isinstance(node, str):
            family = license_family(node)
            return family in keep, family
        op, terms = node
        results = [evaluate(t) for t in terms]
        wanted = op == "or"  # OR: first kept option decides; AND: first refused part
        for kept, family in results:
            if kept == wanted:
                return kept, family
        return results[0]

    return evaluate(node)


def distribution_license(metadata: Any) -> str:
    """The licence of an installed distribution, in this order:
    `License-Expression` (PEP 639); else the licence trove classifiers, joined
    with " OR " (several classifiers conventionally mean a choice, e.g.
    python-dateutil "Dual License"); else the first line of the `License` field;
    else "UNKNOWN"."""
    expression = (metadata.get("License-Expression") or "").strip()
    if expression:
        return expression
    classifiers = [
        c.strip()
        for c in metadata.get_all("Classifier") or []
        if c.startswith("License ::") and c.strip() != "License :: OSI Approved"
    ]
    if classifiers:
        return " OR ".join(classifiers)
    for line in (metadata.get("License") or "").splitlines():
        if line.strip():
            return line.strip()[:200]
    return "UNKNOWN"


# Licence texts -> SPDX id, by phrases that only the licence's own text holds
# (its title line, or its grant sentence), matched on the normalised text
# (`_normalise_license_text`). Sources: the texts at spdx.org/licenses/<id>.
# The GNU titles carry their dates, because other licences name the GNU
# licences in passing (MPL-2.0's "Secondary License" clause does).
_LICENSE_TEXT_PHRASES = (
    ("AGPL-3.0", r"gnu affero general public license version 3, 19 november 2007"),
    ("LGPL-3.0", r"gnu lesser general public license version 3, 29 june 2007"),
    ("LGPL-2.1", r"gnu lesser general public license version 2\.1, february 1999"),
    ("LGPL-2.0", r"gnu library general public license version 2, june 1991"),
    ("GPL-3.0", r"gnu general public license version 3, 29 june 2007"),
    ("GPL-2.0", r"gnu general public license version 2, june 1991"),
    ("MPL-2.0", r"mozilla public license,? (?:version|v\.) 2\.0"),
    # the title line, or (a copy without it) the version line and URL
    ("Apache-2.0", r"apache license,? version 2\.0"
                   r"|version 2\.0, january 2004 https?://www\.apache\.org/licenses"),
    ("MIT", r"permission is hereby granted, free of charge, to any person obtaining a copy"),
    ("BSD", r"redistribution and use in source and binary forms, with or without "
            r"modification, are permitted"),
    ("ISC", r"permission to use, copy, modify, and(?:/or)? distribute this software for any purpose "
            r"with or without fee is hereby granted, provided that the above copyright notice"),
    ("0BSD", r"permission to use, copy, modify, and/or distribute this software for any purpose "
             r"with or without fee is hereby granted\. the software is provided"),
    # Historical Permission Notice and Disclaimer (PIL's "MIT-CMU" text among others):
    # not MIT, BSD or Apache, so not kept under LLaMA's rule
    ("HPND", r"permission to use, copy, modify,? and distribute this software and its "
             r"(?:associated )?documentation for any purpose and without fee is hereby granted"),
    ("PSF-2.0", r"python software foundation license"),
    ("Unlicense", r"this is free and unencumbered software released into the public domain"),
    ("BSL-1.0", r"boost software license,? (?:- )?version 1\.0"),
    ("Zlib", r"altered source versions must be plainly marked as such, and must not be "
             r"misrepresented"),
    ("CC0-1.0", r"cc0 1\.0 universal"),
)
_LICENSE_TEXT_RES = tuple((spdx, re.compile(p)) for spdx, p in _LICENSE_TEXT_PHRASES)
# The clauses that tell the BSD variants apart, looked for after the grant.
_BSD_ADVERTISING = re.compile(r"all advertising materials mentioning features")
_BSD_ENDORSEMENT = re.compile(
    r"neither the name|names? of (?:its|the|any) (?:copyright holders?|contributors?|authors?)"
    r"|name of the (?:author|copyright holder)s? may not be used"
)
_BSD_CLAUSES_SPAN = 3000  # characters after the grant in which its clauses stand
# A project's licence starts within this many characters of its licence file
# (after a history or a list of copyright holders: typing_extensions' PSF text
# at 2,458, torch's BSD text at 1,873); what only comes later is bundled code's
# licence (matplotlib's file names MIT at 15,274 for a bundled font).
LICENSE_TEXT_WINDOW = 5000
_COMMENT_MARKS = re.compile(r"(?m)^[ \t]*(?:#+|//+|/?\*+/?|;+|--+)")


def _normalise_license_text(text: str) -> str:
    """Casefolded text with comment marks at line starts removed, typographic
    quotes made plain and every run of blanks one space (licences are re-wrapped
    and commented freely; their words are not)."""
    text = text.replace("\u2018", "'").replace("\u2019", "'")
    text = text.replace("\u201c", '"').replace("\u201d", '"')
    return re.sub(r"\s+", " ", _COMMENT_MARKS.sub(" ", text)).casefold()


def detect_license_text(text: str) -> str:
    """The SPDX id of the licence a LICENSE/COPYING text holds, or "UNKNOWN".

    Recognised: the permissive licences LLaMA keeps (MIT, BSD-2-Clause,
    BSD-3-Clause, BSD-4-Clause, 0BSD, Apache-2.0) and the common others (ISC,
    HPND, MPL-2.0, the GNU licences, PSF-2.0, Unlicense, BSL-1.0, Zlib, CC0-1.0), by
    `_LICENSE_TEXT_PHRASES`. BSD variants by their clauses: the advertising
    clause makes BSD-4-Clause, the endorsement clause ("Neither the name of
    ...") BSD-3-Clause, neither BSD-2-Clause. When a text holds several
    licences (a project's licence followed by those of bundled third-party
    code, as numpy's and scipy's do), the one that comes first is the
    project's, if it starts within LICENSE_TEXT_WINDOW characters. A notice
    that only names a licence ("Licensed under the MIT licence") is not a
    licence text: "UNKNOWN" (and so dropped, unless metadata says more).
    """
    norm = _normalise_license_text(text)[:LICENSE_TEXT_WINDOW]
    best: tuple[int, str] | None = None
    for spdx, pattern in _LICENSE_TEXT_RES:
        m = pattern.search(norm)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), spdx)
    if best is None:
        return "UNKNOWN"
    start, spdx = best
    if spdx == "BSD":
        clauses = norm[start : start + _BSD_CLAUSES_SPAN]
        if _BSD_ADVERTISING.search(clauses):
            return "BSD-4-Clause"
        return "BSD-3-Clause" if _BSD_ENDORSEMENT.search(clauses) else "BSD-2-Clause"
    return spdx




# --------------------------------------------------------------------------
# File filters and header removal (pure functions)


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


def quality_skip_reason(text: str) -> str | None:
    """The first RedPajama GitHub heuristic `text` fails, as a Skip reason
    ("max_line_length", "mean_line_length", "alnum_fraction",
    "alpha_per_token"), or None when the file passes them all."""
    if max_line_length(text) > MAX_LINE_LENGTH:
        return "max_line_length"
    if mean_line_length(text) > MAX_MEAN_LINE_LENGTH:
        return "mean_line_length"
    if alnum_fraction(text) < MIN_ALNUM_FRACTION:
        return "alnum_fraction"
    if alpha_per_token(text) < MIN_ALPHA_PER_TOKEN:
        return "alpha_per_token"
    return None


# A notice worth removing: what licence headers say (MIT's grant, SPDX tags...).
_NOTICE = re.compile(
    r"copyright|licen[cs]e|permission is hereby granted|all rights reserved"
    r"|spdx-license-identifier",
    re.IGNORECASE,
)
# Lines that must stay first: a shebang, a PEP 263 encoding declaration.
_PRESERVED = re.compile(r"^(#!|[ \t\f]*#.*coding[:=][ \t]*[-\w.]+)")
_DOCSTRING_OPEN = re.compile(r"^[rRuU]?(\"\"\"|''')")


def _header_end(lines: list[str], start: int, ext: str) -> int | None:
    """Index just past the comment block or docstring starting at `lines[start]`,
    or None if none starts there. The block may hold blank lines."""
    first = lines[start].lstrip()
    prefixes = ("#",) if ext in HASH_COMMENT_EXTENSIONS else ("//",)
    if first.startswith(prefixes):
        end = start
        while end < len(lines) and (
            not lines[end].strip() or lines[end].lstrip().startswith(prefixes)
        ):
            end += 1
        while end > start and not lines[end - 1].strip():
            end -= 1
        return end
    if ext not in HASH_COMMENT_EXTENSIONS and first.startswith("/*"):
        closing = "*/"
        body_from = 2
    elif ext in DOCSTRING_EXTENSIONS and (m := _DOCSTRING_OPEN.match(first)):
        closing = m.group(1)
        body_from = m.end()
    else:
        return None
    if closing in first[body_from:]:
        return start + 1
    for end in range(start + 1, len(lines)):
        if closing in lines[end]:
            return end + 1
    return None  # unterminated: not a header, leave the file alone


def strip_license_header(text: str, path: str) -> str:
    """Remove leading licence/copyright comments from a source file.

    A leading block is removed when it mentions copyright, a licence, "all
    rights reserved", MIT's "permission is hereby granted" or an SPDX tag:
    a run of `#` comment lines (Python, Cython, shell), a run of `//` lines or a
    `/* ... */` comment (C family, JS, TS, Rust, Go, Java), or a Python module
    docstring. Repeated while the next leading block is another notice. A
    shebang and a PEP 263 encoding line stay first. Blank lines after a removed
    header go too; a file without such a header is returned unchanged.
    (LLaMA 2.1: "removed boilerplate, such as headers, with regular expressions";
    RedPajama rp_v1 drops a leading comment that mentions copyright.)
    """
    ext = posixpath.splitext(path)[1].lower()
    lines = text.splitlines(keepends=True)
    head = 0
    while head < min(2, len(lines)) and _PRESERVED.match(lines[head]):
        head += 1
    pos = head
    while True:
        start = pos
        while start < len(lines) and not lines[start].strip():
            start += 1
        if start == len(lines):
            break
        end = _header_end(lines, start, ext)
        if end is None or not _NOTICE.search("".join(lines[start:end])):
            break
        pos = end
    if pos == head:
        return text
    while pos < len(lines) and not lines[pos].strip():
        pos += 1
    return "".join(lines[:head] + lines[pos:])


# --------------------------------------------------------------------------
# Reader


def row_to_document(
    row: dict[str, Any],
    keep: Iterable[str],
    path: str,
    line: int,
    extra_meta: dict[str, Any] | None = None,
) -> dict | Skip | DeadLetter:
    """One `github_repos`-style row -> Document, Skip or DeadLetter.

    Checks, in order (each a Skip reason): licence family not in `keep`
    ("license"); a LICENSE/COPYING/NOTICE file ("license_file"); extension not
    in CODE_EXTENSIONS ("extension"); NUL bytes or null content with
    `binary: true` ("binary"); nothing left after the licence header is removed
    ("empty"); then the RedPajama heuristics (`quality_skip_reason`) on the
    stripped text. A row without string `repo_name`, `path` and `content` ->
    DeadLetter (record "line N"). `extra_meta` is added to the Document's meta.
    """
    repo, file_path, content = row.get("repo_name"), row.get("path"), row.get("content")
    if not isinstance(repo, str) or not repo or not isinstance(file_path, str) or not file_path:
        return DeadLetter(SOURCE, path, f"line {line}", "row without repo_name and path")
    license_name = row.get("license") or "UNKNOWN"
    kept, family = classify_license(str(license_name), keep)
    if not kept:
        return Skip(SOURCE, "license")
    if is_license_file(file_path):
        return Skip(SOURCE, "license_file")
    ext = posixpath.splitext(file_path)[1].lower()
    if ext not in CODE_EXTENSIONS:
        return Skip(SOURCE, "extension")
    if content is None and row.get("binary"):
        return Skip(SOURCE, "binary")
    if not isinstance(content, str):
        return DeadLetter(SOURCE, path, f"line {line}", "row without string content")
    if is_binary(content):
        return Skip(SOURCE, "binary")
    text = strip_license_header(content, file_path)
    if not text.strip():
        return Skip(SOURCE, "empty")
    reason = quality_skip_reason(text)
    if reason:
        return Skip(SOURCE, reason)
    meta = {
        "repo_name": repo,
        "path": file_path,
        "license": str(license_name),
        "license_family": family,
        "language": str(row.get("language") or CODE_EXTENSIONS[ext]),
        **(extra_meta or {}),
    }
    return make_document(
        SOURCE, f"{repo}/{file_path}", text, f"github://{repo}/{file_path}", meta=meta
    )


def split(path: str, nbytes: int, cfg: Config) -> list[tuple[int, ...]]:
    """Pieces of a large table file, read by several workers: Parquet by row
    groups (`parquet_spans`), plain JSON lines by line ranges
    (`json_lines_spans`), of about `clean.split_bytes` each; [] (read whole)
    for compressed JSON lines and repository folders."""
    if os.path.isdir(path):
        return []
    if path.lower().endswith(".parquet"):
        return parquet_spans(path, cfg.clean.split_bytes)
    return json_lines_spans(path, cfg.clean.split_bytes)


def read(path: str, cfg: Config, span: tuple[int, ...] | None = None) -> Iterator[dict | Skip | DeadLetter]:
    """Read one GitHub input: a table file, JSON lines (plain, gzip, bzip2, xz)
    or, by a `.parquet` name, Parquet; or a local repository directory or
    installed distribution (`read_repository`).

    Args:
        path: a local or Beam-filesystem path (a directory: local only).
        cfg: the job config; cfg.clean.github.licenses are the licence families
            kept (LLaMA: mit, bsd, apache).
        span: a piece of `split` (row groups or a line range), or None.
    Yields: Documents with lang "" (no language ID for code), url
        `github://<repo>/<path>`, meta {repo_name, path, license,
        license_family, language}; Skips and DeadLetters as in `row_to_document`.
    Never raises.
    """
    if os.path.isdir(path):
        yield from read_repository(path, cfg)
        return
    keep = cfg.clean.github.licenses
    rows = (
        iter_parquet_rows(path, SOURCE, span=span)
        if path.lower().endswith(".parquet")
        else iter_json_lines(path, SOURCE, span)
    )
    for item in rows:
        if isinstance(item, DeadLetter):
            yield item
        else:
            yield row_to_document(item[1], keep, path, item[0])


# --------------------------------------------------------------------------
# Local repositories


# A main licence file: LICENSE, LICENCE or COPYING, with an extension or none
# (LICENSE.txt, COPYING.md); LICENSE-MIT, LICENSE.APACHE are variants.
_MAIN_LICENSE_FILE = re.compile(r"^(?:LICEN[CS]E|COPYING)(?:\.(?:txt|md|rst|markdown))?$", re.I)
_METADATA_FILES = ("PKG-INFO", "METADATA")  # sdist root, or *.dist-info / *.egg-info
# Folders that are not the project's code: version control, caches, virtual
# environments, installed dependencies, packaging metadata.
_SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", "__pycache__", "node_modules", ".tox", ".nox", ".venv", "venv",
     ".mypy_cache", ".pytest_cache", ".ruff_cache"}
)


def repository_license(
    license_files: dict[str, str], metadata: Any | None = None
) -> tuple[str, str]:
    """The licence of a local repository, and where it was read.

    Rules, in order (GitHub's and BigQuery's licences come from the licence
    file, so the text decides first):
      1. a main licence file at the top (LICENSE, LICENCE, COPYING, with an
         extension or none) whose text `detect_license_text` recognises;
      2. else the other licence files at the top (LICENSE-MIT and
         LICENSE-APACHE, LICENSE.APACHE and LICENSE.BSD): their recognised
         licences joined with " OR ", the dual-licence convention of the Rust
         and PyCA projects;
      3. else a Python distribution's metadata (`distribution_license`:
         License-Expression, classifiers, License);
      4. else "UNKNOWN" (dropped).

    Args:
        license_files: {file name: text} of the licence files at the top.
        metadata: a parsed PKG-INFO/METADATA (email.message.Message), or None.
    Returns: (licence expression, "file:<name>" | "files:<a>,<b>" |
        "metadata" | "none").
    """
    for name in sorted(license_files):
        if _MAIN_LICENSE_FILE.match(name):
            spdx = detect_license_text(license_files[name])
            if spdx != "UNKNOWN":
                return spdx, f"file:{name}"
    found: dict[str, str] = {}
    for name in sorted(license_files):
        if not _MAIN_LICENSE_FILE.match(name):
            spdx = detect_license_text(license_files[name])
            if spdx != "UNKNOWN":
                found.setdefault(spdx, name)
    if found:
        return " OR ".join(found), "files:" + ",".join(found.values())
    if metadata is not None:
        expression = distribution_license(metadata)
        if expression != "UNKNOWN":
            return expression, "metadata"
    return "UNKNOWN", "none"


def _read_metadata(folder: str) -> Any | None:
    """The distribution metadata in `folder`: its own PKG-INFO or METADATA (an
    sdist tree or a .dist-info folder), else that of a *.dist-info or
    *.egg-info folder directly inside it; None if there is none."""
    candidates = [os.path.join(folder, name) for name in _METADATA_FILES]
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        return None
    for entry in entries:
        if entry.endswith((".dist-info", ".egg-info")):
            candidates += [os.path.join(folder, entry, name) for name in _METADATA_FILES]
    for candidate in candidates:
        if os.path.isfile(candidate):
            with open(candidate, encoding="utf-8", errors="replace") as f:
                return email.parser.Parser().parse(f, headersonly=True)
    return None


def _top_license_files(folder: str) -> dict[str, str]:
    """{name: text} of the licence files at the top of `folder` and, for a
    .dist-info folder, in its licenses/ (PEP 639), up to MAX_FILE_BYTES each."""
    files: dict[str, str] = {}
    for where in (folder, os.path.join(folder, "licenses")):
        try:
            names = sorted(os.listdir(where))
        except OSError:
            continue
        for name in names:
            full = os.path.join(where, name)
            if (
                LICENSE_FILE.match(name)
                and not name.upper().startswith("NOTICE")
                and os.path.isfile(full)
                and not os.path.islink(full)
                and os.path.getsize(full) <= MAX_FILE_BYTES
            ):
                with open(full, encoding="utf-8", errors="replace") as f:
                    files.setdefault(name, f.read())
        if not folder.endswith(".dist-info"):
            break
    return files


def _walk_files(root: str) -> Iterator[str]:
    """Posix paths, relative to `root`, of the files under it, sorted, in
    neither _SKIP_DIRS nor packaging-metadata folders; links included (the
    caller skips them), never followed."""
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(
            d for d in dirs if d not in _SKIP_DIRS and not d.endswith((".dist-info", ".egg-info"))
        )
        rel_folder = os.path.relpath(folder, root).replace(os.sep, "/")
        for name in sorted(names):
            yield name if rel_folder == "." else f"{rel_folder}/{name}"


def _distribution_rows(dist_info: str) -> tuple[str, str, Path, list[str]]:
    """(repo name, licence folder, root, file paths) of an installed
    distribution given by its .dist-info folder: its files from RECORD, under
    the folder that holds the .dist-info (site-packages), less the metadata
    and what _SKIP_DIRS names (the __pycache__ bytecode RECORD lists)."""
    dist = importlib.metadata.PathDistribution(Path(dist_info))
    files = _distribution_files(dist) or []
    files = [
        f for f in files
        if not f.split("/", 1)[0].endswith(".dist-info")
        and not _SKIP_DIRS.intersection(f.split("/"))
    ]
    name = dist.metadata["Name"] or os.path.basename(dist_info)
    return name, dist_info, Path(dist_info).parent, files


def read_repository(path: str, cfg: Config) -> Iterator[dict | Skip | DeadLetter]:
    """Read a local repository: a directory (a checkout, an unpacked sdist) or
    an installed Python distribution (its `*.dist-info` folder).

    The licence comes from `repository_license` (licence files first, then
    the distribution metadata); each file then goes through `row_to_document`
    like a table row: licence kept or not, licence files, extensions, binary
    files, header removal, RedPajama heuristics. Repository name: the
    metadata's Name, else the directory's name. Files: every file under the
    directory (for a .dist-info, those its RECORD lists), sorted, except
    version-control, cache and virtual-environment folders (_SKIP_DIRS) and
    packaging metadata; meta adds "license_source".

    Yields: one Document or Skip per file ("link" for a symbolic link, never
        followed; "too_large" over MAX_FILE_BYTES; the `row_to_document`
        reasons), a DeadLetter (record: the file's path in the repository)
        for a file that cannot be read. Never raises.
    """
    keep = cfg.clean.github.licenses
    folder = path.rstrip("/" + os.sep)
    if folder.endswith(".dist-info"):
        repo, license_folder, root, files = _distribution_rows(folder)
        metadata = _read_metadata(folder)
    else:
        metadata = _read_metadata(folder)
        repo = (metadata.get("Name") if metadata is not None else None) or os.path.basename(folder)
        license_folder, root, files = folder, Path(folder), list(_walk_files(folder))
    license_name, source = repository_license(_top_license_files(license_folder), metadata)
    for number, rel in enumerate(files, 1):
        full = root / rel
        try:
            if full.is_symlink():
                yield Skip(SOURCE, "link")
                continue
            if full.stat().st_size > MAX_FILE_BYTES:
                yield Skip(SOURCE, "too_large")
                continue
            data = full.read_bytes()
        except OSError as e:
            yield DeadLetter(SOURCE, path, rel, f"cannot read: {type(e).__name__}: {e}")
            continue
        row = {
            "repo_name": repo,
            "path": rel,
            "license": license_name,
            # a NUL byte is what `is_binary` looks for; other bytes as BigQuery stores them
            "content": data.decode("utf-8", errors="replace"),
        }
        yield row_to_document(row, keep, path, number, {"license_source": source})


# --------------------------------------------------------------------------
# Demo sample: a BigQuery-style table from the installed distributions


def sample_order(paths: Iterable[str]) -> list[str]:
    """Paths in sampling order: by SHA-1 of the path, ties by path. Taking the
    first k is a uniform-looking sample that is the same for the same installed
    files, whatever order the filesystem lists them in."""
    return sorted(set(paths), key=lambda p: (hashlib.sha1(p.encode("utf-8")).hexdigest(), p))


def _read_small(file: Path) -> bytes | None:
    """The bytes of a regular file of at most MAX_FILE_BYTES, else None."""
    try:
        if not file.is_file() or file.stat().st_size > MAX_FILE_BYTES:
            return None
        return file.read_bytes()
    except OSError:
        return None


def _repo_rows(
    repo: str, license_name: str, root: Path, files: list[str], max_files: int
) -> tuple[list[dict], int]:
    """Rows of one "repository" whose files (posix paths relative to `root`)
    are `files`: up to `max_files` code files in `sample_order` plus up to
    MAX_LICENSE_FILES_PER_REPO licence files (shortest paths first), sorted by
    path. Returns (rows, files passed over as too large or unreadable)."""
    rows, passed_over = [], 0

    def add(rel: str, language: str) -> bool:
        nonlocal passed_over
        data = _read_small(root / rel)
        if data is None:
            passed_over += 1
            return False
        rows.append({
            "repo_name": repo,
            "path": rel,
            "license": license_name,
            "language": language,
            # BigQuery's `content` is a UTF-8 string too; the rare non-UTF-8
            # byte becomes U+FFFD.
            "content": data.decode("utf-8", errors="replace"),
            "size": len(data),
        })
        return True

    code = [
        p for p in files
        if posixpath.splitext(p)[1].lower() in CODE_EXTENSIONS and not is_license_file(p)
    ]
    taken = 0
    for rel in sample_order(code):
        if taken == max_files:
            break
        taken += add(rel, CODE_EXTENSIONS[posixpath.splitext(rel)[1].lower()])
    licenses = sorted((p for p in files if is_license_file(p)), key=lambda p: (p.count("/"), p))
    for rel in licenses[:MAX_LICENSE_FILES_PER_REPO]:
        add(rel, "")
    rows.sort(key=lambda r: r["path"])
    return rows, passed_over


def _distribution_files(dist: importlib.metadata.Distribution) -> list[str] | None:
    """Paths a distribution installed (relative to its site-packages), from its
    RECORD (PEP 627) read directly, which is several times faster than
    `dist.files`; `dist.files` for other layouts. None when it lists none.
    Paths that leave site-packages (console scripts in bin/) are left out."""
    record = dist.read_text("RECORD")
    if record is not None:
        paths = [row[0] for row in csv.reader(record.splitlines()) if row]
    elif dist.files is not None:
        paths = [f.as_posix() for f in dist.files]
    else:
        return None
    return [p for p in paths if not (p.startswith("../") or "/../" in p or p.startswith("/"))]


def _installed_repos() -> dict[str, tuple[str, Path, list[str]]]:
    """{repo_name: (licence, root, [paths under root])} for every installed
    distribution that lists its files, plus the standard library as
    `cpython-stdlib` (PSF-2.0, its site-packages left out)."""
    repos: dict[str, tuple[str, Path, list[str]]] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name or name in repos:
            continue  # first on sys.path wins, as for imports
        files = _distribution_files(dist)
        if files is None:
            continue
        repos[name] = (distribution_license(dist.metadata), Path(dist.locate_file("")), files)
    stdlib = sysconfig.get_paths()["stdlib"]
    if os.path.isdir(stdlib) and STDLIB_REPO not in repos:
        files = []
        for root, dirs, names in os.walk(stdlib):
            dirs[:] = [d for d in dirs if d not in _STDLIB_SKIP_DIRS]
            rel_root = os.path.relpath(root, stdlib).replace(os.sep, "/")
            files.extend(n if rel_root == "." else f"{rel_root}/{n}" for n in names)
        repos[STDLIB_REPO] = (STDLIB_LICENSE, Path(stdlib), files)
    return repos


def export_installed_distributions(
    out_path: str | Path, max_files_per_repo: int = 40, repos: Iterable[str] | None = None
) -> dict:
    """Write a BigQuery `github_repos`-style JSONL.gz sample of the code installed
    in the running interpreter's environment: one "repository" per distribution
    (`importlib.metadata`) and one for the standard library.

    One row per file: {"repo_name", "path", "license", "language", "content",
    "size"}; licence per `distribution_license`; at most `max_files_per_repo`
    code files per repository (extensions in CODE_EXTENSIONS, at most 1 MiB),
    chosen by `sample_order`, plus up to 3 LICENSE/COPYING/NOTICE rows so a
    reader can be tested on skipping them. Rows sorted by (repo_name, path),
    keys sorted, gzip with mtime 0 and no file name: the same installed files
    give the same bytes. Written atomically (`pipeline.core.io.atomic_write`).

    `repos`: only these repository names (distribution names, `cpython-stdlib`);
    None: every installed one. A fixed list keeps the sample the same when other
    packages are installed beside it.

    Returns: {"repos", "files", "code_files", "license_files", "passed_over",
    "bytes"}. Raises: OSError if `out_path` cannot be written.
    """
    counts = {"repos": 0, "files": 0, "code_files": 0, "license_files": 0,
              "passed_over": 0, "bytes": 0}
    wanted = None if repos is None else set(repos)
    found = {name: repo for name, repo in _installed_repos().items()
             if wanted is None or name in wanted}
    with atomic_write(out_path, "wb") as f:
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=6, mtime=0) as gz:
            for repo in sorted(found):
                license_name, root, files = found[repo]
                rows, passed_over = _repo_rows(repo, license_name, root, files, max_files_per_repo)
                counts["passed_over"] += passed_over
                if rows:
                    counts["repos"] += 1
                for row in rows:
                    gz.write(json.dumps(row, sort_keys=True, ensure_ascii=False).encode("utf-8"))
                    gz.write(b"\n")
                    counts["files"] += 1
                    counts["license_files" if row["language"] == "" else "code_files"] += 1
                    counts["bytes"] += row["size"]
    return counts
