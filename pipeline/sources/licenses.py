"""Licences of code: what a licence name or SPDX-style expression is
(`license_family`, `classify_license`: kept or not under a list of families),
which licence a licence file's text holds (`detect_license_text`), and a local
repository's or installed distribution's licence (`repository_license`,
`distribution_license`).

LLaMA (2023), Section 2.1 "Github": only projects under the Apache, BSD and MIT
licences are kept; BigQuery's `licenses` table, the source LLaMA filtered on,
names a repository's licence from its licence file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

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
    Apache, BSD and MIT licenses"; `keep` is sources.github.licenses):
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
    ("Apache-2.0", (r"apache license,? version 2\.0"
                   r"|version 2\.0, january 2004 https?://www\.apache\.org/licenses")),
    ("MIT", r"permission is hereby granted, free of charge, to any person obtaining a copy"),
    ("BSD", (r"redistribution and use in source and binary forms, with or without "
            r"modification, are permitted")),
    ("ISC", (r"permission to use, copy, modify, and(?:/or)? distribute this software for any purpose "
            r"with or without fee is hereby granted, provided that the above copyright notice")),
    ("0BSD", (r"permission to use, copy, modify, and/or distribute this software for any purpose "
             r"with or without fee is hereby granted\. the software is provided")),
    # Historical Permission Notice and Disclaimer (PIL's "MIT-CMU" text among others):
    # not MIT, BSD or Apache, so not kept under LLaMA's rule
    ("HPND", (r"permission to use, copy, modify,? and distribute this software and its "
             r"(?:associated )?documentation for any purpose and without fee is hereby granted")),
    ("PSF-2.0", r"python software foundation license"),
    ("Unlicense", r"this is free and unencumbered software released into the public domain"),
    ("BSL-1.0", r"boost software license,? (?:- )?version 1\.0"),
    ("Zlib", (r"altered source versions must be plainly marked as such, and must not be "
             r"misrepresented")),
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


# A main licence file: LICENSE, LICENCE or COPYING, with an extension or none
# (LICENSE.txt, COPYING.md); LICENSE-MIT, LICENSE.APACHE are variants.
_MAIN_LICENSE_FILE = re.compile(r"^(?:LICEN[CS]E|COPYING)(?:\.(?:txt|md|rst|markdown))?$", re.IGNORECASE)


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
