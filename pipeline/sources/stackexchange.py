"""StackExchange: a data-dump `Posts.xml` to one Document per question.

LLaMA (paper, 2.1): "We kept the data from the 28 largest websites, removed the
HTML tags from text and sorted the answers by score (from highest to lowest)."
Choosing the 28 sites is a matter of which dumps the config lists as inputs;
this reader turns one site's `Posts.xml` into documents: the question's title,
a blank line, its body as text, then each answer's text, highest score first
(ties: lower Id first), all separated by blank lines.

HTML becomes text with resiliparse's `extract_plain_text` (`html_to_text`):
`preserve_formatting=True` keeps paragraphs, list items and `<pre><code>`
blocks with their line breaks and indentation (without it, code collapses to
one line); image alt texts ("enter image description here") and link targets
are left out.

Memory: a dump is sorted by Id, so a question's answers come after it, often
years later, anywhere in the file. The reader keeps, for the whole file, each
question's title, text, score and tags and each answer's text and score (the
HTML is converted as it is read and dropped), then writes the documents in
question-Id order at the end: memory grows with the site's text, which is
fine for a site that fits a worker (the largest of LLaMA's 28 besides Stack
Overflow are a few GB). Scale-out: for Stack Overflow itself, key each post
by its question id (its own Id, or ParentId) in a Beam `GroupByKey` and build
the document per group; the pure helpers here (`html_to_text`,
`build_text`) do the rest.

The dump's data-dump archives are `.7z`, which neither Beam nor the standard
library reads: extract `Posts.xml` first (a 7z input is a DeadLetter saying so).
"""

from __future__ import annotations

import lzma
import re
import xml.etree.ElementTree as ET
import zlib
from typing import IO, Any, Iterator, NamedTuple

from resiliparse.extract.html2text import extract_plain_text

from pipeline.io import open_input
from pipeline.sources.base import DeadLetter, Skip, make_document

SOURCE = "stackexchange"

QUESTION = "1"  # PostTypeId values of the data dump (meta.stackexchange.com, "Database schema")
ANSWER = "2"
SEVEN_Z_MAGIC = b"7z\xbc\xaf\x27\x1c"

# Site names end in one of these (beer.stackexchange.com, mathoverflow.net,
# superuser.com, stackoverflow.com...).
_SITE_RE = re.compile(r"^((?:[a-z0-9-]+\.)+(?:com|net|org))(?![a-z0-9-])", re.IGNORECASE)
_TAG_RE = re.compile(r"<([^<>]+)>")


def site_from_path(path: str) -> str:
    """The site's host name from the file name or, failing that, its folder.

    "beer.stackexchange.com_2017-03_Posts.xml" -> "beer.stackexchange.com";
    ".../mathoverflow.net/Posts.xml" -> "mathoverflow.net"; otherwise "unknown".
    """
    parts = path.replace("\\", "/").rstrip("/").split("/")
    for name in (parts[-1], parts[-2] if len(parts) > 1 else ""):
        m = _SITE_RE.match(name)
        if m:
            return m.group(1).lower()
    return "unknown"


def parse_tags(tags: str) -> list[str]:
    """Tags of a question: "<storage><whole-bean>" (older dumps) or
    "|storage|whole-bean|" (dumps from 2024 on) -> ["storage", "whole-bean"]."""
    found = _TAG_RE.findall(tags)
    return found if found else [t for t in tags.split("|") if t]


def html_to_text(html: str) -> str:
    """Text of a post body (LLaMA 2.1: "removed the HTML tags from text").

    resiliparse `extract_plain_text` with `preserve_formatting=True`: block
    elements become lines and blank lines, list items get bullets, `<pre>`
    code keeps its line breaks and indentation; inline markup (`<code>`,
    `<em>`, links) keeps only its text; alt texts and URLs are dropped.
    Entities are decoded. Blank lines at either end and blanks at the end are
    stripped; blank lines inside and a list's indentation are kept (they may be
    part of a code block).

    Raises:
        resiliparse.parse.html.HTMLParserException (rare): the reader turns it
            into a DeadLetter.
    """
    if not html:
        return ""
    text = extract_plain_text(
        html,
        preserve_formatting=True,
        main_content=False,
        list_bullets=True,
        alt_texts=False,
        links=False,
        form_fields=False,
        noscript=False,
    )
    return text.strip("\n").rstrip()


def build_text(title: str, question: str, answers: list[tuple[int, int, str]]) -> str:
    """The document text: title, blank line, question, then the answers sorted
    by score, highest first (LLaMA 2.1), ties by lower Id, blank-line separated.

    Args:
        title: the question's title (plain text in the dump).
        question: the question's body as text.
        answers: (score, id, text) of each answer, in any order.
    """
    ranked = sorted(answers, key=lambda a: (-a[0], a[1]))
    parts = [title.strip(), question] + [text for _, _, text in ranked]
    return "\n\n".join(part for part in parts if part)


class _Question(NamedTuple):
    title: str
    text: str
    score: int
    tags: list[str]


def _int(row: ET.Element, field: str) -> int:
    """An integer attribute; ValueError naming it if missing or not an integer."""
    value = row.get(field)
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"bad {field} {value!r}" if value is not None else f"no {field}") from None


def read(path: str, cfg: Any = None) -> Iterator[dict[str, Any] | Skip | DeadLetter]:
    """Read a StackExchange `Posts.xml` (LLaMA 2.1 StackExchange; module doc).

    Documents: one per question (PostTypeId 1) with its answers (PostTypeId 2,
    matched by ParentId); native_id "<site>/<question id>", url
    "https://<site>/questions/<question id>", lang "", meta {site, question_id,
    title, score, answers (how many), tags}. Documents come after all Skips
    and DeadLetters, in question-Id order.
    Skip reasons: "post_type" (tag wikis 4/5, wiki placeholders, moderator
    nominations...), "orphan_answer" (an answer whose question is not in the file).

    Args:
        path: a `Posts.xml`, plain or gzip/bzip2/xz-compressed (any Beam filesystem).
        cfg: the job's `pipeline.config.Config` (unused).
    Yields:
        Skips and DeadLetters as rows are read, then the Documents. DeadLetter
        reasons: "row N: no Id" (N counts rows from 1), "Id I: bad Score 'x'",
        "Id I: no PostTypeId", "Id I: duplicate Id", "Id I: html: ...",
        "Id I: malformed XML on line L...: ..." (a row that is not well-formed,
        or never closes; "row N: ..." when its Id cannot be read), "7z archive:
        extract Posts.xml first", "cannot open: ...", "unreadable compressed
        stream: ..." (the documents read before are still written). Each row
        is parsed on its own (`_row_lines`): a bad row never costs the rows
        after it.
    Raises:
        Nothing from the data: every failure becomes a DeadLetter.
    """
    site = site_from_path(path)
    try:
        stream = open_input(path)
    except OSError as e:
        yield DeadLetter(SOURCE, path, "", f"cannot open: {e}")
        return
    with stream:
        head = stream.read(len(SEVEN_Z_MAGIC))
        if head == SEVEN_Z_MAGIC:
            yield DeadLetter(SOURCE, path, "", "7z archive: extract Posts.xml first")
            return
        stream.seek(0)
        questions: dict[int, _Question] = {}
        answers: dict[int, list[tuple[int, int, str]]] = {}
        yield from _read_rows(stream, path, questions, answers)
    for qid in sorted(answers.keys() - questions.keys()):
        for _ in answers[qid]:
            yield Skip(SOURCE, "orphan_answer")
    for qid in sorted(questions):
        q = questions[qid]
        replies = answers.get(qid, [])
        meta = {
            "site": site,
            "question_id": qid,
            "title": q.title,
            "score": q.score,
            "answers": len(replies),
            "tags": q.tags,
        }
        text = build_text(q.title, q.text, replies)
        yield make_document(
            SOURCE, f"{site}/{qid}", text, f"https://{site}/questions/{qid}", meta=meta
        )


# Lines of a Posts.xml that are not rows: the declaration, the root, comments.
_NOT_ROW_PREFIXES = (b"<?xml", b"<posts", b"</posts", b"<!--")
_ID_RE = re.compile(rb"""\sId\s*=\s*["'](-?\d+)["']""")
MAX_ROW_LINES = 10_000  # a row split over more lines than this is not a row


def _row_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes | None, bytes]]:
    """(line number, `<row .../>` bytes or None, raw text) of each row of a Posts.xml.

    The data dump writes one `<row .../>` element per line (newlines inside
    attribute values are escaped as `&#xA;`), so each row is parsed on its own
    and a malformed one costs only itself. A row split over several lines (a
    hand-edited file) is joined until its `/>`; None marks a row that never
    closes (the file ends first, or MAX_ROW_LINES pass) and a line that is
    not a row. Blank lines, the XML declaration, `<posts>`, `</posts>` and
    comments are passed over.
    """
    number = 0
    pending: list[bytes] = []
    start = 0
    while True:
        line = stream.readline()
        if not line:
            break
        number += 1
        if number == 1:
            line = line.removeprefix(b"\xef\xbb\xbf")  # UTF-8 byte-order mark
        text = line.strip()
        if pending:
            pending.append(text)
            if text.endswith(b"/>"):
                yield start, b" ".join(pending), b" ".join(pending)
                pending = []
            elif len(pending) > MAX_ROW_LINES:
                yield start, None, pending[0]
                pending = []
            continue
        if not text or text.startswith(_NOT_ROW_PREFIXES):
            continue
        if text.startswith(b"<row"):
            if text.endswith(b"/>"):
                yield number, text, text
            else:
                pending, start = [text], number
            continue
        yield number, None, text
    if pending:
        yield start, None, pending[0]


def _read_rows(
    stream: IO[bytes],
    path: str,
    questions: dict[int, _Question],
    answers: dict[int, list[tuple[int, int, str]]],
) -> Iterator[Skip | DeadLetter]:
    """Read the rows into `questions` and `answers`; yield Skips and
    DeadLetters as they come. One bad row is one DeadLetter (record "Id I", or
    "row N" when its Id cannot be read); reading goes on with the next row."""
    seen: set[int] = set()
    n = 0
    last = "before the first row"
    try:
        for line_number, xml, raw in _row_lines(stream):
            n += 1
            found = _ID_RE.search(raw)
            record = f"Id {int(found.group(1))}" if found else f"row {n}"
            if xml is None:
                what = "not a <row> element" if not raw.startswith(b"<row") else "row never closed"
                reason = f"{record}: malformed XML on line {line_number}: {what}"
                yield DeadLetter(SOURCE, path, record, reason)
                continue
            try:
                row = ET.fromstring(xml)
            except ET.ParseError as e:
                message = str(e).rsplit(": line ", 1)[0]
                where = f"line {line_number}, column {e.position[1]} of the row"
                reason = f"{record}: malformed XML on {where}: {message}"
                yield DeadLetter(SOURCE, path, record, reason)
                continue
            try:
                post_id = _int(row, "Id")
                record = f"Id {post_id}"
                last = f"after {record}"
                if post_id in seen:
                    raise ValueError("duplicate Id")
                seen.add(post_id)
                kind = row.get("PostTypeId")
                if kind is None:
                    raise ValueError("no PostTypeId")
                if kind == QUESTION:
                    questions[post_id] = _Question(
                        (row.get("Title") or "").strip(),
                        _convert(row),
                        _int(row, "Score"),
                        parse_tags(row.get("Tags") or ""),
                    )
                elif kind == ANSWER:
                    parent = _int(row, "ParentId")
                    answers.setdefault(parent, []).append((_int(row, "Score"), post_id, _convert(row)))
                else:
                    yield Skip(SOURCE, "post_type")
            except ValueError as e:
                yield DeadLetter(SOURCE, path, record, f"{record}: {e}")
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:  # truncated or corrupt compression
        yield DeadLetter(SOURCE, path, last, f"unreadable compressed stream: {e}")


def _convert(row: ET.Element) -> str:
    try:
        return html_to_text(row.get("Body") or "")
    except Exception as e:  # resiliparse's parser errors, per post
        raise ValueError(f"html: {type(e).__name__}: {e}") from None
