"""C4 reader: JSON lines as released (`text`, `url`, `timestamp`), plain or
compressed; or web pages (WET, WARC, saved HTML) to rebuild C4 from.

LLaMA (2023), Section 2.1 "C4": the publicly available C4 dataset (Raffel et
al., 2020), already cleaned by its own heuristics, so the released JSON is
taken as it is. Tolerated variants of the release schema: `date` instead of
`timestamp` (AllenAI/OLMo's copy) and no `url` at all (Paloma's
`c4_100_domains`).

Rebuilding C4 from a crawl: any other input (WET, WARC, `.html`) is read by
the CommonCrawl reader as "c4" Documents, and the config runs the C4 rules on
them (`sources.c4.c4_rules`, `pipeline.filters.c4`) in a later stage, not here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pipeline.core.config import Config
from pipeline.formats.jsonl import iter_json_lines, json_lines_spans, line_id
from pipeline.sources import commoncrawl
from pipeline.sources.base import DeadLetter, Formats, Skip, make_document

SOURCE = "c4"
# The release's files (`c4-train.00000-of-01024.json.gz`), and any JSON lines.
JSON_SUFFIXES = tuple(f"{ext}{z}" for ext in (".json", ".jsonl") for z in ("", ".gz", ".bz2", ".xz"))
FORMATS = Formats(  # the release's JSON lines, else CommonCrawl's formats (module doc)
    describe=("released C4 JSON lines (.json, .jsonl; gzip, bzip2, xz), or web pages to rebuild C4 "
              "from: CommonCrawl's formats (WARC, WET, saved .html)"),
    names=(*(f"*{s}" for s in JSON_SUFFIXES), *commoncrawl.FORMATS.names),
)


def is_released(path: str) -> bool:
    """Whether a C4 input is the released JSON (else web pages to rebuild from)."""
    return path.lower().endswith(JSON_SUFFIXES)


def native_id(row: dict[str, Any], path: str, line: int) -> str:
    """What identifies a C4 row: `url timestamp` when the row has a URL (C4 has
    one page per URL and crawl time), else its `id` field (Paloma), else
    `<file name>:<line>`."""
    url = row.get("url")
    if isinstance(url, str) and url:
        return f"{url} {timestamp(row)}"
    if row.get("id") not in (None, ""):
        return str(row["id"])
    return line_id(path, line)


def timestamp(row: dict[str, Any]) -> str:
    """The crawl time: C4's `timestamp`, else OLMo's `date`, else ""."""
    value = row.get("timestamp") or row.get("date") or ""
    return str(value)


def row_to_document(row: dict[str, Any], path: str, line: int) -> dict | Skip | DeadLetter:
    """One parsed C4 row -> Document; Skip "empty" for blank text; DeadLetter
    (record "line N") when `text` is missing or not a string."""
    text = row.get("text")
    if not isinstance(text, str):
        return DeadLetter(SOURCE, path, f"line {line}", "no string 'text' field")
    text = text.strip()
    if not text:
        return Skip(SOURCE, "empty")
    url = row.get("url") if isinstance(row.get("url"), str) else ""
    return make_document(
        SOURCE, native_id(row, path, line), text, url, meta={"timestamp": timestamp(row)}
    )


def split(path: str, nbytes: int, cfg: Config) -> list[tuple[int, ...]]:
    """Line ranges of about `clean.split_bytes` of a large plain JSON-lines file,
    read by several workers (`pipeline.formats.jsonl.line_spans`); [] (read
    whole) for a compressed one: the released `c4-*.json.gz` are single gzip
    members, which cannot be entered in the middle. Web pages: the CommonCrawl
    reader's spans (`commoncrawl.split`)."""
    if not is_released(path):
        return commoncrawl.split(path, nbytes, cfg)
    return json_lines_spans(path, cfg.clean.split_bytes)


def read(
    path: str, cfg: Config, span: tuple[int, ...] | None = None
) -> Iterator[dict | Skip | DeadLetter]:
    """Read one C4 JSON-lines file (plain, gzip, bzip2 or xz), or by any other
    name a web file to rebuild C4 from (`commoncrawl.read`, as "c4").

    Args:
        path: a local or Beam-filesystem path.
        cfg: the job config (unused: C4 needs no reader options).
        span: a line range of `split` (the lines that start in it), or None.
    Yields: a Document per row (meta {"timestamp"}), Skip "empty" for a blank
        text, DeadLetter naming the file and line for a line that is not a JSON
        object with a string `text`, or where a compressed stream breaks. For
        web files, what `commoncrawl.read` yields, of source "c4".
    Never raises.
    """
    if not is_released(path):
        yield from commoncrawl.read(path, cfg, span, as_source=SOURCE)
        return
    for item in iter_json_lines(path, SOURCE, span):
        if isinstance(item, DeadLetter):
            yield item
        else:
            yield row_to_document(item[1], path, item[0])
