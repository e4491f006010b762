"""A run's inputs: each source's patterns, what one pattern expands to, and
which of the files found no reader takes.

The clean job expands patterns on its workers (a production listing is millions
of paths: never pickled into the job graph, never copied into a manifest); the
launcher only checks that each pattern matches something, and the planner sizes
the same listing. One rule for all three, here:

- A source's accepted inputs are its module's `FORMATS`
  (`pipeline.sources.base.Formats`). A file found whose name it does not
  accept is unread: counted and listed with its reason, never dropped silently.
- A pattern (`sources.<name>.inputs`) names files, and folders: a folder of a
  source whose records can be folders (GitHub's repositories, arXiv's papers)
  is one record; any other folder is searched, as below.
- A folder to search (`<corpus_dir>/<source>/`, a pattern ending in "/") is
  read recursively (books/vol1/*.txt too): each file is a record or unread; a
  local sub-folder holding what `FORMATS.folders` names is one record; a
  hidden folder or a link to a folder is unread, not searched.
- A local file whose name is not UTF-8 (Python holds it with lone surrogates,
  which no Beam coder encodes) is unread, named with its bytes escaped.
"""

from __future__ import annotations

import glob
import hashlib
import os
import posixpath
import textwrap
from collections.abc import Iterable
from typing import NamedTuple

from pipeline.core import io
from pipeline.core.config import SOURCES, Config
from pipeline.sources import source_hook
from pipeline.sources.base import COMPRESSION_SUFFIXES, Formats


class Listing(NamedTuple):
    """What a pattern expands to: records, sorted (path, bytes as stored: a
    folder's files summed), and the files no reader takes (path, bytes, reason)."""

    records: list[tuple[str, int]]
    unread: list[tuple[str, int, str]]


def source_formats(source: str) -> Formats:
    """The `FORMATS` of a source's module."""
    return source_hook(source, "FORMATS")


def corpus_folder(corpus_dir: str, source: str) -> str:
    """`<corpus_dir>/<source>/`: the pattern of a folder searched recursively."""
    return io.join(corpus_dir, source) + "/"


def source_patterns(cfg: Config) -> list[tuple[str, str]]:
    """(source, pattern) for every configured input pattern (none with
    `corpus_only`), plus `<corpus_dir>/<source>/` per source when a corpus
    folder is given."""
    out = []
    for source in SOURCES:
        src = cfg.sources.get(source)
        if src is None:
            continue
        if not cfg.corpus_only:
            out += [(source, p) for p in src.inputs]
        if cfg.corpus_dir:
            out.append((source, corpus_folder(cfg.corpus_dir, source)))
    return out


def unread_reason(source: str, name: str) -> str:
    """Why a file is not a record of `source`, naming the sources whose
    formats take its name, if any (by a pattern more telling than a bare
    compression suffix: arXiv takes any `<id>.gz`)."""
    bare = {f"*{z}" for z in COMPRESSION_SUFFIXES}
    others = [s for s in SOURCES if s != source
              and Formats("", tuple(p for p in source_formats(s).names if p not in bare)).accepts(name)]
    hint = f": {' and '.join(others)} {'reads' if len(others) == 1 else 'read'} this format" if others else ""
    return f"not a {source} input{hint}"


def expand(source: str, pattern: str, limit: int | None = None) -> list[tuple[str, int]]:
    """The records a pattern names (`discover(...).records`)."""
    return discover(source, pattern, limit).records


NOT_UTF8 = "its name is not UTF-8: rename it to read it"


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escaped(path: str) -> str:
    """A path holding lone surrogates (bytes that were not UTF-8) -> the same
    path with those bytes as \\xNN."""
    try:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        return path.encode("utf-8", "backslashreplace").decode("utf-8")


def discover(source: str, pattern: str, limit: int | None = None) -> Listing:
    """What a pattern names for `source` (module doc): files on any filesystem,
    local folders. `limit` stops once that many records are found (a check,
    not a count).

    Wikipedia: index files are not dumps, and of the editions of one dump the
    pattern matches (combined or parts, multistream or not) only one is read
    (`pipeline.sources.wikipedia.select_dumps`; the others are unread, with that
    reason); a dump matched by two patterns is read twice, its pages then kept
    once by id."""
    fmt = source_formats(source)
    found, matched = _Found(source, fmt, limit), []
    if pattern.endswith("/"):
        found.search(pattern.rstrip("/"))
    else:
        matched = io.match(pattern, limit)
        for path, nbytes in matched:
            if io.is_remote(path) or not os.path.isdir(path):
                found.file(path, nbytes)
        if not io.is_remote(pattern):
            for path in sorted(glob.glob(pattern)):
                if os.path.isdir(path) and not found.full():
                    if fmt.folders:  # named by the pattern: one record
                        found.records[path] = _tree_bytes(path)
                    else:
                        found.search(path)
    records, unread = [], []
    for path, nbytes in sorted(found.records.items()):
        if _utf8(path):
            records.append((path, nbytes))
        else:
            unread.append((_escaped(path), nbytes, NOT_UTF8))
    unread = sorted(unread + [(p, n, r) if _utf8(p) else (_escaped(p), n, NOT_UTF8) for p, n, r in found.unread])
    if source == "wikipedia":  # the dump naming is the source's
        from pipeline.sources.wikipedia import select_dumps

        kept = select_dumps(records)
        unread = sorted(unread + [(p, n, "another edition of the same dump is read") for p, n in records
                                  if (p, n) not in kept])
        records = kept
    if limit and not records and (found.records or found.unread or matched):  # the first files were no records
        whole = discover(source, pattern)
        return Listing(whole.records[:limit], whole.unread)
    return Listing(records[:limit] if limit else records, unread)


class _Found:
    """Records and unread files as a listing finds them (`discover`)."""

    def __init__(self, source: str, fmt: Formats, limit: int | None):
        self.source, self.fmt, self.limit = source, fmt, limit
        self.records: dict[str, int] = {}
        self.unread: list[tuple[str, int, str]] = []

    def full(self) -> bool:
        return bool(self.limit) and len(self.records) >= self.limit

    def file(self, path: str, nbytes: int) -> None:
        name = posixpath.basename(path.replace(os.sep, "/"))
        if self.fmt.accepts(name):
            self.records[path] = nbytes
        elif not self.fmt.is_companion(name):
            self.unread.append((path, nbytes, unread_reason(self.source, name)))

    def search(self, folder: str) -> None:
        """Every file under `folder` (module doc), children in name order."""
        if io.is_remote(folder):
            for path, nbytes in io.list_tree(folder):
                if self.full():
                    return
                self.file(path, nbytes)
            return
        if not os.path.isdir(folder):  # a corpus without this source's folder
            return

        def unlisted(e: OSError) -> None:
            self.unread.append((e.filename or folder, 0, f"cannot list: {e.strerror}"))

        for root, dirs, files in os.walk(folder, onerror=unlisted):
            if self.full():
                return
            keep = []
            for name in sorted(dirs):
                path = os.path.join(root, name)
                if os.path.islink(path) or name.startswith("."):
                    what = "a link to a folder" if os.path.islink(path) else "a hidden folder"
                    self.unread.append((path, 0, f"{what}: not searched"))
                elif self.fmt.folders and self._record_folder(path):
                    self.records[path] = _tree_bytes(path)
                else:
                    keep.append(name)
            dirs[:] = keep
            for name in sorted(files):
                path = os.path.join(root, name)
                self.file(path, os.path.getsize(path) if os.path.exists(path) else 0)


    def _record_folder(self, path: str) -> bool:
        try:
            return self.fmt.is_record_folder(os.listdir(path))
        except OSError:
            return False  # searched: os.walk names what it cannot list


def _tree_bytes(folder: str) -> int:
    return sum(n for _, n in io.list_tree(folder))


def listing(cfg: Config) -> dict[str, Listing]:
    """{source: Listing} of the whole run, listed here (the planner, the clean
    job's up-to-date check and tests; the clean job lists on its workers)."""
    records: dict[str, dict[str, int]] = {s: {} for s in SOURCES}
    unread: dict[str, set[tuple[str, int, str]]] = {s: set() for s in SOURCES}
    for source, pattern in source_patterns(cfg):
        found = discover(source, pattern)
        records[source].update(found.records)
        unread[source].update(found.unread)
    return {s: Listing(sorted(records[s].items()), sorted(unread[s])) for s in SOURCES}


def list_inputs(cfg: Config) -> dict[str, list[tuple[str, int]]]:
    """{source: [(path, bytes)]} of the records of the whole run (`listing`)."""
    return {s: found.records for s, found in listing(cfg).items()}


FINGERPRINT_BITS = 64


def file_key(source: str, path: str, nbytes: int) -> int:
    """One input file's share of `fingerprint`: a 64-bit hash of its source,
    path, size and, for a local file, modification time (for a local folder,
    its newest file's); an object store's size alone stands for its content."""
    mtime = 0
    if not io.is_remote(path) and os.path.exists(path):
        if os.path.isdir(path):
            mtime = max((os.stat(os.path.join(r, f)).st_mtime_ns for r, _, fs in os.walk(path) for f in fs),
                        default=0)
        else:
            mtime = os.stat(path).st_mtime_ns
    digest = hashlib.blake2b(f"{source}\0{path}\0{nbytes}\0{mtime}".encode("utf-8", "surrogateescape"),
                             digest_size=FINGERPRINT_BITS // 8).digest()
    return int.from_bytes(digest, "big")


def combine_keys(keys: Iterable[int]) -> int:
    """`file_key`s summed modulo 2**64: the same for any order or grouping (a
    Beam combiner's partial sums too)."""
    return sum(keys) % (1 << FINGERPRINT_BITS)


def fingerprint(found: dict[str, Listing]) -> str:
    """The run's input files, records and unread alike, as 16 hex digits: it
    changes when a file is added, removed, resized or (locally) rewritten."""
    keys = [file_key(s, p, n) for s, f in found.items() for p, n in [*f.records, *((p, n) for p, n, _ in f.unread)]]
    return f"{combine_keys(keys):016x}"


def formats_table() -> str:
    """The accepted inputs per source as a Markdown table (the README's)."""
    rows = ["| source | accepted inputs (`pipeline/sources/<source>.py`, `FORMATS`) |", "|---|---|"]
    rows += [f"| {s} | {source_formats(s).describe} |" for s in SOURCES]
    return "\n".join(rows)


def formats_help(width: int = 88) -> str:
    """The accepted inputs per source and where they are looked for, for `clean --help`."""
    paragraphs = [
        ("Inputs: each source's `inputs` patterns (a folder they name is searched recursively; for github "
         "and arxiv it is one repository or paper), and with corpus_dir (make demo CORPUS=DIR) every file "
         "under DIR/<source>/, sub-folders too; corpus_only: "
         "true (make demo CORPUS=DIR ONLY=1) reads DIR alone. A file of a format its source does not "
         "take is not read, but counted and named (a warning, the manifest's unread_inputs, the report). "
         "Accepted, per source:"),
        *(textwrap.fill(f"{s}: {source_formats(s).describe}", width, initial_indent="  ",
                        subsequent_indent="      ") for s in SOURCES),
    ]
    return "\n".join([textwrap.fill(paragraphs[0], width), *paragraphs[1:]])
