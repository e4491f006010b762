"""GitHub reader: BigQuery-style tables of files, and local repositories.

LLaMA (2023), Section 2.1 "Github": the public GitHub dataset on Google BigQuery,
keeping only projects under the Apache, BSD and MIT licences, filtering
low-quality files with heuristics on line length and the proportion of
alphanumeric characters, and removing boilerplate such as headers with regular
expressions (file-level exact dedup is a later stage). Here: the licence rule
(`pipeline.sources.licenses`), the file rules and heuristics, whose thresholds
are RedPajama's reproduction of that step (`pipeline.filters.github`), and the
header removal (`strip_license_header`).

Input rows follow BigQuery's `github_repos` tables (`contents` joined with
`files` and `licenses`): `{"repo_name", "path", "license", "language",
"content", "size"}`, as JSON lines (any compression) or Parquet. A local
repository (a directory with its LICENSE/COPYING files, or an installed Python
distribution with its licence metadata) is read too (`read_repository`), its
licence detected from the licence text (`detect_license_text`). The demo builds
such a table from the installed Python distributions (`pipeline.fetch`).
"""

from __future__ import annotations

import csv
import email.parser
import importlib.metadata
import os
import posixpath
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pipeline.core.config import Config, GithubSourceConfig
from pipeline.filters.github import (
    CODE_EXTENSIONS,
    LICENSE_FILE,
    MAX_FILE_BYTES,
    binary_reason,
    path_reason,
    quality_reason,
)
from pipeline.formats.jsonl import iter_json_lines, json_lines_spans
from pipeline.formats.parquet import iter_parquet_rows, parquet_spans
from pipeline.sources.base import DeadLetter, Formats, Skip, make_document
from pipeline.sources.licenses import classify_license, repository_license

SOURCE = "github"
FORMATS = Formats(
    describe=("BigQuery-style tables (repo_name, path, license, content): JSON lines (.jsonl, .json; "
              "gzip, bzip2, xz) or Parquet; local repository folders (one holding a LICENSE, COPYING, "
              "README, PKG-INFO or METADATA file, or .git), an installed package's .dist-info"),
    names=("*.jsonl", "*.json", "*.parquet"),
    folders=("licen[cs]e*", "copying*", "readme*", "pkg-info", "metadata", ".git"),
)

# Comment syntax of the header a licence notice sits in.
HASH_COMMENT_EXTENSIONS = frozenset({".py", ".pyi", ".pyx", ".sh"})
DOCSTRING_EXTENSIONS = frozenset({".py", ".pyi", ".pyx"})


# --------------------------------------------------------------------------
# Licence header removal (pure functions)


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
    rules: GithubSourceConfig | None = None,
) -> dict | Skip | DeadLetter:
    """One `github_repos`-style row -> Document, Skip or DeadLetter.

    Checks, in order (each a Skip reason): licence family not in `keep`
    ("license"); a LICENSE/COPYING/NOTICE file ("license_file") or an
    extension not in CODE_EXTENSIONS ("extension"), `path_reason`; NUL bytes
    or null content with `binary: true` ("binary"); nothing left after the
    licence header is removed ("empty"); then the RedPajama heuristics
    (`quality_reason`) on the stripped text, with the thresholds of `rules`
    (the `sources.github` block; None: the defaults). A row without string `repo_name`, `path` and `content` ->
    DeadLetter (record "line N"). `extra_meta` is added to the Document's meta.
    """
    repo, file_path, content = row.get("repo_name"), row.get("path"), row.get("content")
    if not isinstance(repo, str) or not repo or not isinstance(file_path, str) or not file_path:
        return DeadLetter(SOURCE, path, f"line {line}", "row without repo_name and path")
    license_name = row.get("license") or "UNKNOWN"
    kept, family = classify_license(str(license_name), keep)
    if not kept:
        return Skip(SOURCE, "license")
    reason = path_reason(file_path)
    if reason:
        return Skip(SOURCE, reason)
    if content is None and row.get("binary"):
        return Skip(SOURCE, "binary")
    if not isinstance(content, str):
        return DeadLetter(SOURCE, path, f"line {line}", "row without string content")
    reason = binary_reason(content)
    if reason:
        return Skip(SOURCE, reason)
    text = strip_license_header(content, file_path)
    if not text.strip():
        return Skip(SOURCE, "empty")
    reason = quality_reason(text, rules)
    if reason:
        return Skip(SOURCE, reason)
    meta = {
        "repo_name": repo,
        "path": file_path,
        "license": str(license_name),
        "license_family": family,
        "language": str(row.get("language") or CODE_EXTENSIONS[posixpath.splitext(file_path)[1].lower()]),
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
        cfg: the job config; its `sources.github` block: `licenses`, the licence
            families kept (LLaMA: mit, bsd, apache), and the file rules' thresholds.
        span: a piece of `split` (row groups or a line range), or None.
    Yields: Documents with lang "" (no language ID for code), url
        `github://<repo>/<path>`, meta {repo_name, path, license,
        license_family, language}; Skips and DeadLetters as in `row_to_document`.
    Never raises.
    """
    if os.path.isdir(path):
        yield from read_repository(path, cfg)
        return
    rules = cfg.sources[SOURCE]
    rows = (
        iter_parquet_rows(path, SOURCE, span=span)
        if path.lower().endswith(".parquet")
        else iter_json_lines(path, SOURCE, span)
    )
    for item in rows:
        if isinstance(item, DeadLetter):
            yield item
        else:
            yield row_to_document(item[1], rules.licenses, path, item[0], rules=rules)


# --------------------------------------------------------------------------
# Local repositories


_METADATA_FILES = ("PKG-INFO", "METADATA")  # sdist root, or *.dist-info / *.egg-info
# Folders that are not the project's code: version control, caches, virtual
# environments, installed dependencies, packaging metadata.
_SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", "__pycache__", "node_modules", ".tox", ".nox", ".venv", "venv",
     ".mypy_cache", ".pytest_cache", ".ruff_cache"}
)


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
    files = distribution_files(dist) or []
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
    rules = cfg.sources[SOURCE]
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
            # a NUL byte is what `binary_reason` looks for; other bytes as BigQuery stores them
            "content": data.decode("utf-8", errors="replace"),
        }
        yield row_to_document(row, rules.licenses, path, number, {"license_source": source}, rules)


def distribution_files(dist: importlib.metadata.Distribution) -> list[str] | None:
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
    return [p for p in paths if not (p.startswith(("../", "/")) or "/../" in p)]
