"""What every source reader shares: the Document constructor and the skip and
dead-letter records.

A reader is a generator `read(path, cfg, span=None) -> Iterator[dict | Skip |
DeadLetter | Count | Part]`:
- a Document is a plain dict with the fields of `pipeline.core.schema.DOCUMENT_SCHEMA`;
- `Skip(source, reason)` says a record was read and deliberately left out
  (a redirect, a licence not kept, a binary file); the Beam layer counts it;
- `DeadLetter(source, path, record, reason)` says a record could not be parsed;
  it goes to the dead-letter output, never crashes the job, never vanishes
  (defined with the format readers, `pipeline.formats.errors`, which yield it);
- `Count(source, name, n)` asks for counter `<source>/<name>` to grow by n:
  what a reader noticed about a record it still yields (an arXiv `\\input`
  missing from a paper kept without it);
- `Part(source, key, value)` is a piece of a document whose other pieces may be
  anywhere in the input (a StackExchange answer and its question): the Beam
  layer groups Parts by (source, key) and hands each group to the source
  module's `assemble(key, values, cfg)`, which yields what a reader yields
  (Parts aside).

Each source module states the inputs its reader accepts in `FORMATS` (a
`Formats`). It may also define `split(path, nbytes, cfg) -> list[span]`: an
input larger than `clean.split_bytes` is then read as those spans, each by any
worker (`read(path, cfg, span)`); a span is a tuple of ints whose meaning the
module alone knows (byte ranges, bz2 stream offsets, Parquet row groups).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable
from typing import Any, NamedTuple

from pipeline.core.schema import doc_id
from pipeline.formats.errors import DeadLetter

__all__ = ["COMPRESSION_SUFFIXES", "Count", "DeadLetter", "Formats", "Part", "Skip", "make_document"]

# What `pipeline.core.io.open_input` decompresses (by magic bytes): a name may end in one
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz")


class Formats(NamedTuple):
    """The inputs a source's reader accepts: its module's `FORMATS`, the one
    statement of them that input discovery (`pipeline.inputs`), `clean --help`
    and the README use. A file whose name it does not accept is not read, but
    counted and listed as unread, never left out silently.

    Name patterns are `fnmatch` patterns matched against a file's lower-case
    name, whole or without one compression suffix (`COMPRESSION_SUFFIXES`): "*.txt"
    takes `a.txt` and `a.txt.gz`; a pattern ending in a compression suffix
    ("*.json.gz") takes that name only.
    """

    describe: str  # the accepted inputs, for people (one line)
    names: tuple[str, ...]  # a file with a name like these is a record
    # a local folder that holds an entry named like these is one record (a
    # repository, a paper); other folders are searched for records
    folders: tuple[str, ...] = ()
    companions: tuple[str, ...] = ()  # files read beside a record, never records (a dump's index)

    def accepts(self, name: str) -> bool:
        """Whether a file of this name is a record of the source."""
        return _matches(name, self.names)

    def is_companion(self, name: str) -> bool:
        """Whether a file of this name is read beside a record (not one itself)."""
        return _matches(name, self.companions)

    def is_record_folder(self, entries: Iterable[str]) -> bool:
        """Whether a folder with these entries (names) is one record."""
        return bool(self.folders) and any(_matches(e, self.folders, compressed=False) for e in entries)


def _matches(name: str, patterns: tuple[str, ...], compressed: bool = True) -> bool:
    name = name.lower()
    names = [name]
    if compressed and name.endswith(COMPRESSION_SUFFIXES):
        names.append(name.rsplit(".", 1)[0])
    return any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)


class Skip(NamedTuple):
    """A record read and deliberately dropped, with its reason (counted)."""

    source: str
    reason: str


class Count(NamedTuple):
    """A counter the Beam layer increments for a reader (module doc)."""

    source: str
    name: str
    n: int = 1


class Part(NamedTuple):
    """A piece of a document, grouped with the others of the same key before
    the source's `assemble` builds the document (module doc)."""

    source: str
    key: str
    value: Any


def make_document(
    source: str,
    native_id: str,
    text: str,
    url: str,
    lang: str = "",
    lang_score: float = 0.0,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a Document row (see `pipeline.core.schema.DOCUMENT_SCHEMA`).

    Args:
        source: one of `pipeline.core.config.SOURCES`.
        native_id: what identifies the record in its own format; hashed into `id`.
        text: the cleaned UTF-8 text; leading and trailing whitespace is
            stripped (as CCNet strips each line): it carries no content, and a
            leading space would change the first token (SentencePiece's dummy
            prefix makes " x" start with two "▁", which transformers 5's
            `LlamaTokenizer` encodes as one).
        url: the record's URL, or its path for files.
        lang, lang_score: set by readers that know the language (Wikipedia: the
            dump's language, score 1.0); otherwise filled in by language ID.
        meta: JSON-serialisable extras (licence, title, timestamp, ...), stored
            as a JSON string with sorted keys so output bytes are reproducible.
    """
    return {
        "id": doc_id(source, native_id),
        "source": source,
        "text": text.strip(),
        "url": url,
        "lang": lang,
        "lang_score": float(lang_score),
        "meta": json.dumps(meta or {}, sort_keys=True, ensure_ascii=False),
    }
