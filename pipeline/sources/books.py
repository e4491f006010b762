"""Books: Project Gutenberg plain text (and Books3-like plain text) to Documents.

LLaMA (paper, 2.1): "the Gutenberg Project, which contains books that are in the
public domain [...]". The reader removes what Project Gutenberg wraps around a
book: the header before the START marker and the licence footer from the END
marker on, in the variants used since 1991:

- `*** START OF THE PROJECT GUTENBERG EBOOK <TITLE> ***` (current) and
  `*** START OF THIS PROJECT GUTENBERG EBOOK` (2000s), possibly wrapped over
  two lines; `*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*...` closing the
  1990s small-print header; the title line of 1990s etexts, `The Project
  Gutenberg Etext of <Title>` (also `**...**`, `EBook`, `Project Gutenberg's
  Etext of`), which is the whole header of some and is repeated above the
  book in others (looked for in the first `MAX_TITLE_LINE` lines);
- `*** END OF THE/THIS PROJECT GUTENBERG EBOOK ...`, `End of the Project
  Gutenberg EBook of ...`, `End of Project Gutenberg's ...`, the 1990s `*End of
  The Project Gutenberg Etext of ...` (any asterisks, any case), and the German
  and French `Ende dieses Project Gutenberg ...`, `Fin de Project Gutenberg ...`;
- the free-form preamble of the first releases (1991-1993), `This is the
  February 1992 Project Gutenberg release of: <Title> by <Author>`, which ends
  where the book repeats its title (no end marker in those files).

A file with none of these (Books3-like) is kept whole. One Document per file;
the language is left to language ID.

Books in JSON lines (a `.jsonl`/`.json` file, one book or text per row, as
datasets of books are often published) are read row by row: a row's `text`
is one Document, taken as it is (no Gutenberg markers are looked for); its
`id` (else `<file name>:<line>`) identifies it, and `title` and `url` are kept
when present. A row without a string `text` is a dead letter.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

from pipeline.core.io import read_input
from pipeline.formats.decode import Decoded, decode_text
from pipeline.formats.jsonl import iter_text_rows, json_lines_spans, line_id
from pipeline.sources.base import DeadLetter, Formats, Skip, make_document

SOURCE = "books"
JSON_LINES = ("*.jsonl", "*.json")  # read row by row (module doc), any compression
FORMATS = Formats(
    describe=("plain text (.txt, .md), Project Gutenberg's or not; JSON lines (.jsonl, .json) "
              'with a "text" field per row, a book each; gzip, bzip2 or xz compressed too'),
    names=("*.txt", "*.md", *JSON_LINES),
)

# Header and footer markers: matched at a line start, case-insensitive. Each
# names Project Gutenberg or its small print, so prose never matches them.
_START_RE = re.compile(
    r"^\s*(?:\*+\s*START OF (?:THE|THIS) (?:COPYRIGHTED )?PROJECT GUTENBERG"  # 2000s to today
    r"|\*?\s*END\s*\*?\s*THE SMALL PRINT)",  # 1990s: *END*THE SMALL PRINT! ...*END*
    re.IGNORECASE,
)
_END_RE = re.compile(
    # "*** END OF THE PROJECT GUTENBERG EBOOK", "End of Project Gutenberg's ...",
    # "*End of The Project Gutenberg Etext of ..." (1990s)
    r"^[\s*]*(?:END OF (?:THE |THIS )?(?:COPYRIGHTED )?PROJECT GUTENBERG"
    r"|Ende diese[sr]? Proje[ck]t Gutenberg|Fin de Project Gutenberg)",
    re.IGNORECASE,
)
_EARLY_RELEASE_RE = re.compile(r"^\s*This is the .{0,60}Project Gutenberg release of\b", re.IGNORECASE)
_TITLE_RE = re.compile(r"^Title:\s*(.*\S)", re.IGNORECASE)
# The title line: "The Project Gutenberg Etext of <title>, by <author>" (1990s),
# "**The Project Gutenberg Etext of <title>**", "Project Gutenberg's Etext of ...",
# "The Project Gutenberg EBook of ..." (2000s on, above the START marker).
_PG_FIRST_LINE_RE = re.compile(
    r"^\W*(?:The )?Project Gutenberg(?:'s)? (?:e-?book|e-?text) of\s+", re.IGNORECASE
)
_LEADING_BLANK_LINES_RE = re.compile(r"\A(?:[ \t]*\n)+")

MAX_MARKER_WRAP_LINES = 2  # a START marker wrapped by a long title ends "***" within 2 lines
MAX_EARLY_HEADER_LINES = 500  # the 1991-93 preambles run to about 60 lines
# A title line counts as header this near the top only (as far as the `gutenberg`
# package's strip_headers looks), so a book that quotes one keeps its text.
MAX_TITLE_LINE = 600


class BookSpan(NamedTuple):
    """Where the book is inside a normalised Gutenberg file."""

    start: int  # offset of the first character of the body
    end: int  # offset just past the body (start of the footer, or the text's end)
    markers: bool  # a Gutenberg header or footer marker was found
    title: str  # from the header's "Title:" line (or the early-release announcement), "" if none


def decode_book(data: bytes, final: bool = True) -> Decoded:
    """Decode a plain-text book (`pipeline.formats.decode.decode_text`: byte-order mark,
    UTF-16/32 byte pattern, UTF-8 with a few bad bytes replaced, else the
    detected legacy encoding; Project Gutenberg files are UTF-8 today, those of
    the 1990s and early 2000s ISO-8859-1 or ASCII).

    Args:
        data: the file's bytes; `final` False when they stop at damage.
    Returns:
        Decoded(text, encoding, replacements).
    Raises:
        ValueError: `pipeline.formats.decode.Undecodable`, or the text holds NUL
            characters (a binary file).
    """
    decoded = decode_text(data, final=final)
    nul = decoded.text.find("\x00")
    if nul >= 0:
        raise ValueError(f"NUL character at offset {nul} ({decoded.encoding}): binary, not plain text")
    return decoded


def normalize_text(text: str) -> str:
    """CRLF and lone CR to LF; drop DOS end-of-file characters (SUB, 0x1A).

    Old Gutenberg files were written on DOS: CRLF line ends and a trailing ^Z.
    """
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x1a", "")


def _line_offsets(lines: list[str]) -> list[int]:
    offsets, pos = [], 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    offsets.append(pos)  # one past the text's end (for the last line's "+1")
    return offsets


def _header_title(lines: list[str]) -> str:
    """Title from a "Title:" line (with its indented continuation lines), or
    from a "The Project Gutenberg EBook of <title>, by <author>" first line."""
    for i, line in enumerate(lines):
        m = _TITLE_RE.match(line)
        if m:
            parts = [m.group(1)]
            for cont in lines[i + 1 :]:
                if not cont.strip() or not cont[:1].isspace():
                    break
                parts.append(cont.strip())
            return " ".join(parts)
    for line in lines:
        if line.strip():
            m = _PG_FIRST_LINE_RE.match(line)
            if m is None:
                return line.strip()
            return re.split(r",\s+by\s+", line[m.end() :], maxsplit=1)[0].strip(" *")
    return ""


def _early_release(lines: list[str]) -> tuple[int, str] | None:
    """(index of the body's first line, title) for a 1991-93 release preamble, else None.

    The preamble opens with "This is the <Month Year> Project Gutenberg release
    of:", names "<Title> by <Author>" on the next non-empty line, and the book
    starts where its title is repeated on a line of its own.
    """
    nonempty = [i for i, line in enumerate(lines[:MAX_EARLY_HEADER_LINES]) if line.strip()]
    if len(nonempty) < 2 or not _EARLY_RELEASE_RE.match(lines[nonempty[0]]):
        return None
    title = re.split(r"\s+by\s+", lines[nonempty[1]].strip(), maxsplit=1)[0]
    for i in nonempty[2:]:
        if lines[i].strip().casefold() == title.casefold():
            return i, title
    return None


def gutenberg_span(text: str) -> BookSpan:
    """Locate the book inside a normalised (LF) Project Gutenberg file.

    The body starts on the line after the last START-type marker that comes
    before any END-type marker (a 2000s file can carry the small print *after*
    its END marker; a 1990s etext's title line is one, and may be the only
    one); it ends at the first END-type marker after that. Without markers,
    the 1991-93 preamble rule is tried, then the whole text is the body.
    Rules: the header and footer conventions Project Gutenberg used over the
    years, as listed in the module docstring.

    Args:
        text: the file's text after `normalize_text`.
    Returns:
        A BookSpan; `text[span.start:span.end]` is the book.
    """
    lines = text.split("\n")
    offsets = _line_offsets(lines)
    ends = [i for i, line in enumerate(lines) if _END_RE.match(line)]
    first_end = ends[0] if ends else len(lines)
    starts = [
        i
        for i, line in enumerate(lines[:first_end])
        if _START_RE.match(line) or (i < MAX_TITLE_LINE and _PG_FIRST_LINE_RE.match(line))
    ]
    start_line = 0
    title = ""
    if starts:
        marker = starts[-1]
        start_line = marker + 1
        wrappable = lines[marker].lstrip(" \t*").upper().startswith("START OF")
        if wrappable and lines[marker].count("***") < 2:
            # a long title wraps the marker: it ends on the line closing with ***
            for j in range(marker + 1, min(marker + 1 + MAX_MARKER_WRAP_LINES, first_end)):
                if lines[j].rstrip().endswith("***"):
                    start_line = j + 1
                    break
        title_line = _PG_FIRST_LINE_RE.match(lines[marker]) is not None
        title = _header_title(lines[: marker + 1] if title_line else lines[:marker])
    elif not ends and (early := _early_release(lines)) is not None:
        start_line, title = early
        return BookSpan(offsets[start_line], len(text), True, title)
    end_line = next((i for i in ends if i >= start_line), len(lines))
    start = min(offsets[start_line], len(text))
    end = min(offsets[end_line], len(text)) if end_line < len(lines) else len(text)
    return BookSpan(start, end, bool(starts or ends), title)


def strip_gutenberg(text: str) -> str:
    """The book without Gutenberg header and footer, leading blank lines and
    trailing whitespace (str -> str; see `gutenberg_span` for the rules).

    Args:
        text: the file's text after `normalize_text` (LF line ends).
    Returns:
        The body; "" if nothing is left.
    """
    return _body(text, gutenberg_span(text))


def _body(text: str, span: BookSpan) -> str:
    return _LEADING_BLANK_LINES_RE.sub("", text[span.start : span.end]).rstrip()


def is_json_lines(path: str) -> bool:
    """Whether a books input is JSON lines (a book per row), by its name."""
    return Formats("", JSON_LINES).accepts(posixpath.basename(path))


def split(path: str, nbytes: int, cfg: Any) -> list[tuple[int, int, int]]:
    """Line ranges of about `clean.split_bytes` of a large plain JSON-lines file
    (`pipeline.formats.jsonl.json_lines_spans`); [] (read whole) for a book."""
    return json_lines_spans(path, cfg.clean.split_bytes) if is_json_lines(path) else []


def read_json_lines(path: str, span: tuple[int, int, int] | None = None) -> Iterator[dict[str, Any] | Skip | DeadLetter]:
    """Books as JSON lines (module doc): a Document per row with a string
    `text` (native id its `id`, else `<file name>:<line>`; url its `url`, else
    the path; meta {"title"} when it has one), Skip "empty" for a blank text,
    DeadLetter (record "line N") for a row without a string `text` and where
    the file's lines cannot be read (`pipeline.formats.jsonl.iter_text_rows`)."""
    no_text = "no string 'text' field (a JSON-lines book is one row with its text in \"text\")"
    for item in iter_text_rows(path, SOURCE, no_text, span):
        if isinstance(item, DeadLetter):
            yield item
            continue
        line, row, text = item
        if not text.strip():
            yield Skip(SOURCE, "empty")
            continue
        native = str(row["id"]) if row.get("id") not in (None, "") else line_id(path, line)
        url = row["url"] if isinstance(row.get("url"), str) and row["url"] else path
        meta = {"title": row["title"]} if isinstance(row.get("title"), str) else {}
        yield make_document(SOURCE, native, text, url, meta=meta)


def read(path: str, cfg: Any = None, span: tuple[int, int, int] | None = None) -> Iterator[dict[str, Any] | Skip | DeadLetter]:
    """Read one plain-text book file; yield one Document, Skip("empty") or
    DeadLetter, then for a damaged compressed file one DeadLetter naming the
    damage. A JSON-lines file is read by `read_json_lines` (a line range of
    `split` when `span` is given).

    Document: native_id the file name, url the path, lang "" (set by language
    ID), meta {"title", "encoding", "replacements", "truncated",
    "gutenberg_markers", "header_chars_removed", "footer_chars_removed"}:
    `encoding` and `replacements` as `decode_book` decided (U+FFFD inserted);
    the two counts are characters of the normalised (LF) text before the body
    start and from the footer marker on (blank lines and whitespace trimmed
    around the body are not counted).

    A truncated compressed file keeps the text decoded before the cut, with
    meta `truncated` true, and adds a DeadLetter whose reason gives the byte
    offsets (`pipeline.core.io.Decompressed`). A book is one record, so that text
    is the record decoded before the damage: the book without its end, still
    good pretraining text, whose Gutenberg header is removed if the cut spared
    its marker (the footer is what the cut took). Nothing else would keep it,
    and the dead letter says the file is damaged. A corrupt one is the
    DeadLetter only: the bytes before a checksum fails are not checked.

    Args:
        path: a book (`FORMATS`: .txt, .md), optionally gzip/bzip2/xz-compressed,
            or JSON lines (any Beam filesystem).
        cfg: the job's `pipeline.core.config.Config` (unused: nothing is configurable).
        span: a line range of `split` (JSON lines only), or None.
    Yields:
        A Document; Skip("books", "empty") when nothing is left after stripping;
        DeadLetter when the file cannot be read, or decoded (binary), or is damaged.
    Raises:
        Nothing from the data: every failure becomes a DeadLetter.
    """
    if is_json_lines(path):
        yield from read_json_lines(path, span)
        return
    name = posixpath.basename(path)
    try:
        data, damage = read_input(path)  # one Document per file: the whole book is needed anyway
    except OSError as e:  # missing, unreadable
        yield DeadLetter(SOURCE, path, name, f"cannot read: {type(e).__name__}: {e}")
        return
    truncated = isinstance(damage, EOFError)  # corrupt data: what came before is unchecked
    if damage is None or (truncated and data):
        yield _book(path, name, data, truncated=truncated)
    if damage is not None:
        kept = f"the {len(data)} bytes before it are read" if truncated and data else "nothing is read"
        yield DeadLetter(SOURCE, path, name, f"damaged: {type(damage).__name__}: {damage}; {kept}")


def _book(path: str, name: str, data: bytes, truncated: bool) -> dict[str, Any] | Skip | DeadLetter:
    try:
        decoded = decode_book(data, final=not truncated)
    except ValueError as e:
        return DeadLetter(SOURCE, path, name, f"undecodable: {e}")
    text = normalize_text(decoded.text)
    span = gutenberg_span(text)
    body = _body(text, span)
    if not body:
        return Skip(SOURCE, "empty")
    title = span.title or body.lstrip().split("\n", 1)[0].strip()
    meta = {
        "title": title,
        "encoding": decoded.encoding,
        "replacements": decoded.replacements,
        "truncated": truncated,
        "gutenberg_markers": span.markers,
        "header_chars_removed": span.start,
        "footer_chars_removed": len(text) - span.end,
    }
    return make_document(SOURCE, name, body, path, meta=meta)
