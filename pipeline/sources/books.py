"""Books: Project Gutenberg plain text (and Books3-like plain text) to Documents.

LLaMA (paper, 2.1): "the Gutenberg Project, which contains books that are in the
public domain [...]". The reader removes what Project Gutenberg wraps around a
book: the header before the START marker and the licence footer from the END
marker on, in the variants used since 1991:

- `*** START OF THE PROJECT GUTENBERG EBOOK <TITLE> ***` (current) and
  `*** START OF THIS PROJECT GUTENBERG EBOOK` (2000s), possibly wrapped over
  two lines; `*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*...` closing the
  1990s small-print header;
- `*** END OF THE/THIS PROJECT GUTENBERG EBOOK ...`, `End of the Project
  Gutenberg EBook of ...`, `End of Project Gutenberg's ...`;
- the free-form preamble of the first releases (1991-1993), `This is the
  February 1992 Project Gutenberg release of: <Title> by <Author>`, which ends
  where the book repeats its title (no end marker in those files).

A file with none of these (Books3-like) is kept whole. One Document per file;
the language is left to language ID.
"""

from __future__ import annotations

import lzma
import posixpath
import re
import zlib
from typing import Any, Iterator, NamedTuple

from pipeline.io import open_input
from pipeline.sources.base import DeadLetter, Skip, make_document

SOURCE = "books"

# Header and footer markers: matched at a line start, case-insensitive. The
# asterisks are required, so prose never matches them.
_START_RE = re.compile(
    r"^\s*(?:\*+\s*START OF (?:THE|THIS) PROJECT GUTENBERG"  # 2000s to today
    r"|\*?\s*END\s*\*?\s*THE SMALL PRINT)",  # 1990s: *END*THE SMALL PRINT! ...*END*
    re.I,
)
_END_RE = re.compile(
    r"^\s*(?:\*+\s*END OF (?:THE|THIS) PROJECT GUTENBERG"
    # "End of the Project Gutenberg EBook of ...", "End of Project Gutenberg's ..."
    r"|End of (?:the |this )?Project Gutenberg)",
    re.I,
)
_EARLY_RELEASE_RE = re.compile(r"^\s*This is the .{0,60}Project Gutenberg release of\b", re.I)
_TITLE_RE = re.compile(r"^Title:\s*(.*\S)", re.I)
_PG_FIRST_LINE_RE = re.compile(r"^\W*The Project Gutenberg (?:e-?book|e-?text) of\s+", re.I)
_LEADING_BLANK_LINES_RE = re.compile(r"\A(?:[ \t]*\n)+")

MAX_MARKER_WRAP_LINES = 2  # a START marker wrapped by a long title ends "***" within 2 lines
MAX_EARLY_HEADER_LINES = 500  # the 1991-93 preambles run to about 60 lines


class BookSpan(NamedTuple):
    """Where the book is inside a normalised Gutenberg file."""

    start: int  # offset of the first character of the body
    end: int  # offset just past the body (start of the footer, or the text's end)
    markers: bool  # a Gutenberg header or footer marker was found
    title: str  # from the header's "Title:" line (or the early-release announcement), "" if none


def decode_book(data: bytes) -> tuple[str, str]:
    """Decode a plain-text book: UTF-8 (BOM stripped), UTF-16 with BOM, else latin-1.

    Project Gutenberg files are UTF-8 today; files of the 1990s and early 2000s
    are ISO-8859-1 (or ASCII), hence the latin-1 fallback (PG's own rule: the
    "Character set encoding:" line says which).

    Returns:
        (text, encoding), encoding one of "utf-8", "utf-16", "latin-1".
    Raises:
        ValueError: the bytes hold NUL characters (a binary file, or UTF-16
            without a BOM), or a UTF-16 BOM is followed by invalid UTF-16.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as e:
            raise ValueError(f"UTF-16 BOM but invalid UTF-16: {e}") from None
    nul = data.find(b"\x00")
    if nul >= 0:
        raise ValueError(f"NUL byte at offset {nul}: binary, not plain text")
    try:
        return data.removeprefix(b"\xef\xbb\xbf").decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


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
    its END marker); it ends at the first END-type marker after that. Without
    markers, the 1991-93 preamble rule is tried, then the whole text is the body.
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
    starts = [i for i, line in enumerate(lines[:first_end]) if _START_RE.match(line)]
    start_line = 0
    title = ""
    if starts:
        marker = starts[-1]
        start_line = marker + 1
        if "START" in lines[marker].upper() and lines[marker].count("***") < 2:
            # a long title wraps the marker: it ends on the line closing with ***
            for j in range(marker + 1, min(marker + 1 + MAX_MARKER_WRAP_LINES, first_end)):
                if lines[j].rstrip().endswith("***"):
                    start_line = j + 1
                    break
        title = _header_title(lines[:marker])
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


def read(path: str, cfg: Any = None) -> Iterator[dict[str, Any] | Skip | DeadLetter]:
    """Read one plain-text book file; yield one Document, Skip("empty") or DeadLetter.

    Document: native_id the file name, url the path, lang "" (set by language
    ID), meta {"title", "encoding", "gutenberg_markers", "header_chars_removed",
    "footer_chars_removed"}; the two counts are characters of the normalised
    (LF) text before the body start and from the footer marker on (blank lines
    and whitespace trimmed around the body are not counted).

    Args:
        path: a .txt file, optionally gzip/bzip2/xz-compressed (any Beam filesystem).
        cfg: the job's `pipeline.config.Config` (unused: nothing is configurable).
    Yields:
        A Document; Skip("books", "empty") when nothing is left after stripping;
        DeadLetter when the file cannot be read or decoded (binary).
    Raises:
        Nothing from the data: every failure becomes a DeadLetter.
    """
    name = posixpath.basename(path)
    try:
        with open_input(path) as f:
            data = f.read()  # one Document per file: the whole book is needed anyway
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:  # missing, truncated, corrupt
        yield DeadLetter(SOURCE, path, name, f"cannot read: {type(e).__name__}: {e}")
        return
    try:
        raw, encoding = decode_book(data)
    except ValueError as e:
        yield DeadLetter(SOURCE, path, name, f"undecodable: {e}")
        return
    text = normalize_text(raw)
    span = gutenberg_span(text)
    body = _body(text, span)
    if not body:
        yield Skip(SOURCE, "empty")
        return
    title = span.title or body.lstrip().split("\n", 1)[0].strip()
    meta = {
        "title": title,
        "encoding": encoding,
        "gutenberg_markers": span.markers,
        "header_chars_removed": span.start,
        "footer_chars_removed": len(text) - span.end,
    }
    yield make_document(SOURCE, name, body, path, meta=meta)
