"""StackExchange: a data-dump `Posts.xml` to one Document per question.

LLaMA (paper, 2.1): "We kept the data from the 28 largest websites, removed the
HTML tags from text and sorted the answers by score (from highest to lowest)."
Choosing the 28 sites is a matter of which dumps the config lists as inputs;
this module turns one site's `Posts.xml` into documents: the question's title,
a blank line, its body as text, then each answer's text, highest score first
(ties: lower Id first), all separated by blank lines.

HTML becomes text with resiliparse's `extract_plain_text` (`html_to_text`):
`preserve_formatting=True` keeps paragraphs, list items and `<pre><code>`
blocks with their line breaks and indentation (without it, code collapses to
one line); image alt texts ("enter image description here") and link targets
are left out.

Memory: a dump is sorted by Id, so a question's answers come after it, often
years later, anywhere in the file (Stack Overflow's `Posts.xml` is about
100 GB). So `read` holds nothing of a file beyond the row it is on: it converts
each row as it is read (HTML to text) and yields it as a `Part` keyed by its
question, "<site>/<question id>" (a question's own Id, an answer's ParentId),
with a small value (a plain tuple, laid out above `read`). The clean job
groups the Parts by key (`GroupByKey`, `pipeline.sources.base`) and `assemble`
builds one question's document from its group: what a worker holds is one row
while reading and one question with its answers while assembling, whatever
the size of the site. The grouping also joins posts across input files (a
site split into several files). `read_documents` does the same in memory for
one file, for tests and tools.

The dump's data-dump archives are `.7z`, which neither Beam nor the standard
library reads: extract `Posts.xml` first (a 7z input is a DeadLetter saying so).
"""

from __future__ import annotations

import lzma
import re
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, Any

from resiliparse.extract.html2text import extract_plain_text

from pipeline.core.io import open_input
from pipeline.sources.base import DeadLetter, Formats, Part, Skip, make_document

SOURCE = "stackexchange"
FORMATS = Formats(  # the dump's other tables (Users.xml, Comments.xml...) hold no posts
    describe=("a site's Posts.xml from the data dump (any name ending in Posts.xml; gzip, bzip2, xz; "
              "a .7z archive is reported: extract Posts.xml first)"),
    names=("*posts.xml", "*.7z"),
)

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


# The value of a post's Part, a plain tuple (cheap for Beam's coders): kind,
# Id, where it was read (path, line: the first copy of a duplicate Id wins),
# Score, body as text; a question adds its title and tags.
#   question: (QUESTION, id, path, line, score, text, title, tags)
#   answer:   (ANSWER, id, path, line, score, text)
def _where(value: tuple) -> tuple[str, int]:
    return value[2], value[3]


def _int(row: ET.Element, field: str) -> int:
    """An integer attribute; ValueError naming it if missing or not an integer."""
    value = row.get(field)
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"bad {field} {value!r}" if value is not None else f"no {field}") from None


def read(path: str, cfg: Any = None, span: Any = None) -> Iterator[Part | Skip | DeadLetter]:
    """Read a StackExchange `Posts.xml` into Parts (LLaMA 2.1 StackExchange; module doc).

    Parts: one per question (PostTypeId 1) and one per answer (PostTypeId 2),
    keyed "<site>/<question id>" (an answer's ParentId), the body already
    converted to text; `assemble` makes each question's Document of them.
    Skip reason: "post_type" (tag wikis 4/5, wiki placeholders, moderator
    nominations...).

    Args:
        path: a `Posts.xml`, plain or gzip/bzip2/xz-compressed (any Beam filesystem).
        cfg: the job's `pipeline.core.config.Config` (unused).
        span: unused: a `Posts.xml` is read whole, one row at a time.
    Yields:
        Parts, Skips and DeadLetters as rows are read. DeadLetter reasons:
        "row N: no Id" (N counts rows from 1), "Id I: bad Score 'x'", "Id I:
        no PostTypeId", "Id I: html: ...", "Id I: malformed XML on line L...:
        ..." (a row that is not well-formed, or never closes; "row N: ..."
        when its Id cannot be read), "7z archive: extract Posts.xml first",
        "cannot open: ...", "unreadable compressed stream: ..." (the Parts read
        before are still assembled). Each row is parsed on its own
        (`_row_lines`): a bad row never costs the rows after it. A duplicate
        Id is found where its copies meet, in `assemble`.
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
        yield from _read_rows(stream, path, site)


def assemble(key: str, values: Iterable[tuple], cfg: Any = None) -> Iterator[dict[str, Any] | Skip | DeadLetter]:
    """One question's Document from the Parts of its key (`read`), in any order.

    The Document: native_id the key, "<site>/<question id>", url
    "https://<site>/questions/<question id>", lang "", meta {site, question_id,
    title, score, answers (how many), tags}, text `build_text`. What is held is
    the question and the text and score of each answer: what the text needs.

    Posts of the group that share an Id (a row twice in a file, the same site
    in two input files): the first by (path, line) is kept, each other is a
    DeadLetter "Id I: duplicate Id" (record "Id I", its own path), in whatever
    order they arrive; two dumps of one site thus give one document per
    question, with the answers of both, each Id once. An Id repeated under
    two different questions is not caught: its copies never meet.
    Skip reason: "orphan_answer", once per answer of a group without its
    question (not in the input, or dead-lettered when read).

    Args:
        key: "<site>/<question id>", as `read` keys the Parts.
        values: the Parts' values, iterated once.
        cfg: the job's `pipeline.core.config.Config` (unused).
    """
    site, _, number = key.rpartition("/")
    question_id = int(number)
    posts: dict[int, tuple] = {}  # Id: the first copy seen so far
    for value in values:
        kept = posts.setdefault(value[1], value)
        if kept is not value:
            first, repeated = sorted((kept, value), key=_where)
            posts[value[1]] = first
            yield DeadLetter(SOURCE, repeated[2], f"Id {repeated[1]}", f"Id {repeated[1]}: duplicate Id")
    question = posts.get(question_id)
    if question is None or question[0] != QUESTION:  # none, or an answer holds its Id
        for _ in posts:
            yield Skip(SOURCE, "orphan_answer")
        return
    del posts[question_id]
    _, _, _, _, score, text, title, tags = question
    replies = [(value[4], post_id, value[5]) for post_id, value in posts.items()]
    meta = {
        "site": site,
        "question_id": question_id,
        "title": title,
        "score": score,
        "answers": len(replies),
        "tags": tags,
    }
    yield make_document(
        SOURCE, key, build_text(title, text, replies), f"https://{site}/questions/{question_id}", meta=meta
    )


def read_documents(path: str, cfg: Any = None) -> Iterator[dict[str, Any] | Skip | DeadLetter]:
    """What the clean job makes of one `Posts.xml`, in memory (for tests and
    tools; the job groups the Parts with Beam instead): `read`, its Parts
    grouped by key, each group `assemble`d.

    Yields:
        The reader's Skips and DeadLetters as rows are read, then what
        `assemble` yields per question, in question-Id order.
    """
    groups: dict[str, list[tuple]] = {}
    for rec in read(path, cfg):
        if isinstance(rec, Part):
            groups.setdefault(rec.key, []).append(rec.value)
        else:
            yield rec
    for key in sorted(groups, key=lambda k: int(k.rpartition("/")[2])):
        yield from assemble(key, groups[key], cfg)


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


def _read_rows(stream: IO[bytes], path: str, site: str) -> Iterator[Part | Skip | DeadLetter]:
    """A Part of each question and answer, Skips and DeadLetters, as rows come.
    One bad row is one DeadLetter (record "Id I", or "row N" when its Id cannot
    be read); reading goes on with the next row."""
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
                kind = row.get("PostTypeId")
                if kind is None:
                    raise ValueError("no PostTypeId")
                if kind == QUESTION:
                    title = (row.get("Title") or "").strip()
                    text = _convert(row)
                    value = (QUESTION, post_id, path, line_number, _int(row, "Score"), text, title,
                             parse_tags(row.get("Tags") or ""))
                    yield Part(SOURCE, f"{site}/{post_id}", value)
                elif kind == ANSWER:
                    parent = _int(row, "ParentId")
                    score = _int(row, "Score")
                    value = (ANSWER, post_id, path, line_number, score, _convert(row))
                    yield Part(SOURCE, f"{site}/{parent}", value)
                else:
                    yield Skip(SOURCE, "post_type")
            except ValueError as e:
                yield DeadLetter(SOURCE, path, record, f"{record}: {e}")
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:  # truncated or corrupt compression
        yield DeadLetter(SOURCE, path, last, f"unreadable compressed stream: {e}")


def _convert(row: ET.Element) -> str:
    try:
        return html_to_text(row.get("Body") or "")
    except Exception as e:  # noqa: BLE001 - resiliparse's parser errors, per post
        raise ValueError(f"html: {type(e).__name__}: {e}") from None
