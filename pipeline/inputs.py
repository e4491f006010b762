"""A run's inputs: each source's file patterns, and how one pattern expands.

The clean job expands patterns on its workers (a production listing is millions
of paths: never pickled into the job graph, never copied into a manifest); the
launcher only checks that each pattern matches something, and the planner sizes
the same listing. One rule for all three, here.
"""

from __future__ import annotations

import glob
import os

from pipeline import io
from pipeline.config import SOURCES, Config

FOLDER_SOURCES = ("github", "arxiv")  # a record can be a local folder: a repository, a paper
SKIPPED_SUFFIXES = (".md",)  # a sample folder's README or MANIFEST, never a record


def source_patterns(cfg: Config) -> list[tuple[str, str]]:
    """(source, pattern) for every configured input pattern, plus
    `<corpus_dir>/<source>/*` per source when a corpus folder is given."""
    out = []
    for source in SOURCES:
        src = cfg.sources.get(source)
        if src is None:
            continue
        out += [(source, p) for p in src.inputs]
        if cfg.corpus_dir:
            out.append((source, io.join(cfg.corpus_dir, source, "*")))
    return out


def expand(source: str, pattern: str, limit: int | None = None) -> list[tuple[str, int]]:
    """(path, bytes as stored) of the records a pattern names, sorted: files on
    any filesystem, and for a folder source also local folders (their files'
    bytes summed). `limit` stops the listing early (a check, not a count).

    Wikipedia: index files are not dumps, and of the editions of one dump the
    pattern matches (combined or parts, multistream or not) only one is read
    (`pipeline.sources.wikipedia.select_dumps`); a dump matched by two
    patterns is read twice, its pages then kept once by id."""
    found = dict(io.match(pattern, limit))
    if source in FOLDER_SOURCES and not io.is_remote(pattern):
        for path in glob.glob(pattern):
            if os.path.isdir(path):
                found[path] = sum(n for _, n in io.list_tree(path))
    records = sorted((p, n) for p, n in found.items() if not p.endswith(SKIPPED_SUFFIXES))
    if source == "wikipedia":  # the dump naming is the source's
        from pipeline.sources.wikipedia import select_dumps

        records = select_dumps(records)
    if limit and found and not records:  # the first files listed were no records: look further
        return expand(source, pattern)[:limit]
    return records


def list_inputs(cfg: Config) -> dict[str, list[tuple[str, int]]]:
    """{source: [(path, bytes)]} of the whole run, listed here (the planner and
    tests; the clean job lists on its workers)."""
    out: dict[str, dict[str, int]] = {s: {} for s in SOURCES}
    for source, pattern in source_patterns(cfg):
        out[source].update(expand(source, pattern))
    return {s: sorted(found.items()) for s, found in out.items()}
