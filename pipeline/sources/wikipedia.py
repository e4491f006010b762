"""Wikipedia: MediaWiki `pages-articles` XML dumps to plain-text Documents.

LLaMA (paper, 2.1): "Wikipedia dumps from the June-August 2022 period, covering
20 languages [...]. We process the data to remove hyperlinks, comments and other
formatting boilerplate." Here: articles only (namespace 0), no redirects. The
wikitext loses comments, `<ref>`s, templates, tables and file/category links
first (plain scans that cannot fail on unbalanced markup), then goes through
mwparserfromhell and a small renderer that keeps what a reader sees as prose:
link labels, headings as lines, list items without markers. The language is the
dump's own (`<dbname>bgwiki</dbname>` -> "bg"), with score 1.0.

The dump is streamed with `xml.etree.ElementTree.iterparse` and each finished
`<page>` is cleared, so memory stays flat whatever the dump's size. Expat reads
the encoding from the byte-order mark or the XML declaration, so the UTF-16LE
dumps (with BOM) parse as they are. A dump cut mid-page yields every complete
page, then one DeadLetter "truncated dump: ...".

Known gaps: a template removed mid-sentence (`{{convert|5|km}}`, `{{lang|...}}`)
leaves a hole in the sentence, so does a removed `<math>` formula; file links
under a local alias that siteinfo does not list are only caught by their image
options (`thumb`, `200px`).
"""

from __future__ import annotations

import lzma
import posixpath
import re
import xml.etree.ElementTree as ET
from typing import Any, Callable, Iterator
from xml.parsers import expat

import mwparserfromhell
from mwparserfromhell.nodes import (
    Comment,
    ExternalLink,
    Heading,
    HTMLEntity,
    Tag,
    Text,
    Wikilink,
)
from mwparserfromhell.wikicode import Wikicode

from pipeline.io import open_input
from pipeline.sources.base import DeadLetter, Skip, make_document

SOURCE = "wikipedia"

ARTICLE_NS = 0  # MediaWiki's main (article) namespace
FILE_NS = 6
CATEGORY_NS = 14
# Canonical English names work on every wiki, whatever its local names
# (MediaWiki Help:Namespaces); "Image" is the legacy alias of File.
CANONICAL_DROP_NAMESPACES = ("File", "Image", "Category")

# Tags whose contents are not prose: references, media, formulas, code and
# machine-readable blocks (mediawiki.org "Parser extension tags"), plus tables.
DROP_TAGS = frozenset(
    """ref references gallery math chem ce hiero score timeline imagemap graph
    templatedata inputbox categorytree section syntaxhighlight source mapframe
    maplink indicator includeonly table""".split()
)

# `#REDIRECT [[Target]]` and its localised magic words (#WEITERLEITUNG,
# #ПРЕНАСОЧВАНЕ, #перенаправление, #पुनर्निर्देशन...). Not `\w+`: Indic scripts
# carry combining marks (category Mn) that `\w` does not match.
_REDIRECT_RE = re.compile(r"^\s*#[^\s\[\]:|]+\s*:?\s*\[\[")
_DBNAME_RE = re.compile(r"([a-z][a-z0-9_]*?)wiki")

# Removed before parsing. mwparserfromhell gives up on a span whose contents hold
# unbalanced markup (a stray '' inside a <ref> or a template) and leaves it as
# raw text; removed first, it cannot. The parser also has far less to build.
_COMMENT_RE = re.compile(r"<!--.*?(?:-->|\Z)", re.S)  # unclosed: to the end, as MediaWiki
_REF_RE = re.compile(r"<ref\b[^>]*?/>|<ref\b[^>]*>.*?</ref\s*>", re.S | re.I)
# Interlanguage links ([[de:Titel]]) are not shown in the article; older dumps
# list them one per line at the end. Inline interwiki links ([[wikt:word]]) stay.
_INTERLANGUAGE_LINE_RE = re.compile(
    r"^[ \t]*\[\[[a-z]{2,3}(?:-[a-z0-9]+)*:[^\[\]|\n]+\]\][ \t]*$", re.M
)
# A removed template leaves this mark until the end: removing `{{...}}` outright
# would join the quotes around it (''{{lang|ar|...}}'' becomes four quotes, read
# as bold). U+FFFF is not allowed in XML, so it never collides with page text.
_HOLE = "\uffff"
# Image options (Help:Images) recognise a file link whose namespace is a local
# alias missing from siteinfo (jawiki 画像:, viwiki Hình:).
_IMAGE_OPTION_RE = re.compile(
    r"\s*(thumb|thumbnail|frame|framed|frameless|border|left|right|center|none|upright"
    r"|\d*x?\d+\s*px)\s*(\||$)",
    re.I,
)
_IMAGE_SIZE_RE = re.compile(r"\|\s*\d*x?\d+\s*px\s*(?=\||$)")  # the one option no wiki translates

# Cleaned after rendering: what a failed parse left as text.
_LEFTOVER_LINK_RE = re.compile(r"\[\[([^\[\]|]*)(?:\|([^\[\]]*))?\]\]")
# Only multi-letter tag names: <h>, <C> and the like are letters in linguistics articles.
_LEFTOVER_HTML_RE = re.compile(
    r"</?(?:div|span|center|blockquote|poem|table|tr|td|th|small|big|sup|sub|font"
    r"|br|hr|code|tt|abbr|cite|nowiki|onlyinclude|noinclude|includeonly)\b[^<>]*>",
    re.I,
)
_BOLD_ITALIC_RE = re.compile(r"'{2,}")  # unbalanced '' / ''' the parser left as text
_MAGIC_WORD_RE = re.compile(r"__[A-Z]+__")  # __NOTOC__, __TOC__...
_MANY_NEWLINES_RE = re.compile(r"\n{3,}")

# Expat errors that mean the input stopped early rather than being malformed.
_TRUNCATION_ERRORS = frozenset(
    expat.errors.codes[msg]
    for msg in (
        expat.errors.XML_ERROR_NO_ELEMENTS,
        expat.errors.XML_ERROR_UNCLOSED_TOKEN,
        expat.errors.XML_ERROR_PARTIAL_CHAR,
        expat.errors.XML_ERROR_UNCLOSED_CDATA_SECTION,
    )
)


def is_redirect_text(wikitext: str) -> bool:
    """True if the wikitext is a redirect page (`#REDIRECT [[...]]` or a localised form).

    MediaWiki (Help:Redirects) treats a page whose text starts with the `#REDIRECT`
    magic word, or its translation, followed by a link as a redirect. Any `#word`
    right before `[[` at the very start is taken as such a magic word, so no
    per-language list is needed. Case-insensitive by construction.
    """
    return _REDIRECT_RE.match(wikitext) is not None


def lang_from_dbname(dbname: str) -> str:
    """Language code of a Wikipedia from its database name: "bgwiki" -> "bg".

    Wikimedia database names write hyphens as underscores ("zh_min_nanwiki" is
    zh-min-nan.wikipedia.org). Returns "" if the name does not end in "wiki".
    """
    if _DBNAME_RE.fullmatch(dbname) is None:
        return ""
    return dbname[: -len("wiki")].replace("_", "-")


def dbname_from_filename(path: str) -> str:
    """Database name from a dump's file name, the Wikimedia naming convention:
    "bgwiki-latest-pages-articles.xml.bz2" -> "bgwiki"; "" if it does not apply."""
    m = _DBNAME_RE.match(posixpath.basename(path))
    return f"{m.group(1)}wiki" if m else ""


def _link_namespace(title: str) -> str:
    """The namespace prefix of a link target, normalised ("File", " file :x" -> "file")."""
    if ":" not in title:
        return ""
    return title.split(":", 1)[0].strip().replace("_", " ").casefold()


def _remove_balanced(
    text: str, opener: str, closer: str, drop: Callable[[str], bool], hole: str = ""
) -> str:
    """Remove each `opener ... closer` span (nesting counted) whose inner text `drop` accepts.

    Brackets are matched by depth, so a file caption with nested links or line
    breaks goes with its link. A span never closed is left as it is. Each
    removed span is replaced by `hole`.
    """
    if opener not in text:
        return text
    tokens = re.compile(f"{re.escape(opener)}|{re.escape(closer)}")
    out: list[str] = []
    pos = 0
    while (start := text.find(opener, pos)) >= 0:
        depth, end = 0, -1
        for m in tokens.finditer(text, start):
            depth += 1 if m.group() == opener else -1
            if depth == 0:
                end = m.end()
                break
        if end < 0 or not drop(text[start + len(opener) : end - len(closer)]):
            out.append(text[pos : start + len(opener)])
            pos = start + len(opener)
            continue
        out.append(text[pos:start])
        out.append(hole)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _is_media_link(inner: str, drop_prefixes: frozenset[str]) -> bool:
    """True for the inside of a file or category link: by its namespace prefix, or,
    for local aliases not in siteinfo (jawiki's 画像:, viwiki's Hình:), by an image
    option as first parameter or a size parameter anywhere (Help:Images: thumb,
    frame, 200px...; the size is the one option no wiki translates)."""
    target, _, params = inner.partition("|")
    if target.lstrip().startswith(":"):  # [[:Category:X]] is a visible link
        return False
    if _link_namespace(target) in drop_prefixes:
        return True
    if ":" not in target:
        return False
    if _IMAGE_OPTION_RE.match(params) is not None:
        return True
    return _IMAGE_SIZE_RE.search(f"|{params}") is not None


def _render(code: Wikicode, drop_prefixes: frozenset[str]) -> str:
    """Plain text of parsed wikitext: what a reader sees as prose (see module doc)."""
    out: list[str] = []
    for node in code.nodes:
        if isinstance(node, Text):
            out.append(node.value)
        elif isinstance(node, Wikilink):
            inner = str(node.title) + (f"|{node.text}" if node.text is not None else "")
            if _is_media_link(inner, drop_prefixes):
                continue  # an image or a category marker, not prose
            label = _render(node.text, drop_prefixes) if node.text is not None else ""
            if not label.replace(_HOLE, "").strip():  # [[Target]], [[Target|]], [[Target|{{tpl}}]]
                label = _render(node.title, drop_prefixes).strip().removeprefix(":")
            out.append(label)
        elif isinstance(node, ExternalLink):
            if node.title is not None:
                out.append(_render(node.title, drop_prefixes))
            elif not node.brackets:  # a bare URL is part of the visible text
                out.append(str(node.url))
        elif isinstance(node, Heading):
            out.append(_render(node.title, drop_prefixes).strip())
        elif isinstance(node, HTMLEntity):
            out.append(node.normalize())
        elif isinstance(node, Tag):
            tag = str(node.tag).strip().lower()
            if node.wiki_markup == "{|" or tag in DROP_TAGS:
                continue
            if tag == "br":
                out.append("\n")
            elif node.contents is not None and not node.self_closing:
                out.append(_render(node.contents, drop_prefixes))
            # list markers (* # : ;), ---- and other empty tags render as nothing
        elif isinstance(node, Comment):
            continue
        # Template, Argument ({{{1}}}): dropped (LLaMA 2.1: "formatting boilerplate")
    return "".join(out)


def _remove_tables(wikitext: str) -> str:
    """Remove wikitext tables, nested ones included: from a line opening with `{|`
    to the line opening with its `|}`, or to the end of the page if never closed.

    MediaWiki (Help:Tables) only reads `{|` and `|}` at the start of a line
    (`:{|` indents a table), so a `|}` inside a link label is not a table end;
    an unclosed table runs to the end of the page, as MediaWiki renders it.
    """
    if "{|" not in wikitext:
        return wikitext
    kept: list[str] = []
    depth = 0
    for line in wikitext.split("\n"):
        stripped = line.lstrip(" \t:")
        if stripped.startswith("{|"):
            depth += 1
            continue
        if depth:
            if stripped.startswith("|}"):
                depth -= 1
            continue
        kept.append(line)
    return "\n".join(kept)


def default_drop_prefixes() -> frozenset[str]:
    """Casefolded link prefixes removed when the dump has no `<namespaces>` list."""
    return frozenset(n.casefold() for n in CANONICAL_DROP_NAMESPACES)


def wikitext_to_text(wikitext: str, drop_prefixes: frozenset[str] | None = None) -> str:
    """Convert MediaWiki wikitext to plain text (LLaMA 2.1: remove hyperlinks,
    comments and other formatting boilerplate).

    Wikilinks become their label (or target), external links their label,
    templates, tables, `<ref>` and other non-prose tags, comments, and links
    whose namespace prefix is in `drop_prefixes` (files, categories) are
    removed; bold/italic markup and list markers are stripped; headings stay as
    plain lines. Lines are stripped, 3+ newlines collapse to 2.

    Args:
        wikitext: the page source, as in `<text>` of the dump.
        drop_prefixes: casefolded namespace names whose links are removed
            (siteinfo names of namespaces 6 and 14 plus the canonical English
            ones); None: only the canonical English names.
    Returns:
        The plain text, stripped; "" if nothing readable is left.
    Raises:
        mwparserfromhell.parser.ParserError: the parser gave up on the markup
            (the reader turns it into a DeadLetter).
    """
    if drop_prefixes is None:
        drop_prefixes = default_drop_prefixes()
    # before parsing (see the constants): what the parser would give up on
    wikitext = _REF_RE.sub("", _COMMENT_RE.sub("", wikitext))
    wikitext = _INTERLANGUAGE_LINE_RE.sub("", wikitext)
    wikitext = _remove_balanced(wikitext, "{{", "}}", lambda inner: True, _HOLE)
    wikitext = _remove_tables(wikitext)
    wikitext = _remove_balanced(
        wikitext, "[[", "]]", lambda inner: _is_media_link(inner, drop_prefixes)
    )
    text = _render(mwparserfromhell.parse(wikitext), drop_prefixes)
    # a link the parser left as text keeps its label
    text = _LEFTOVER_LINK_RE.sub(lambda m: (m.group(2) or m.group(1)).strip(), text)
    text = _LEFTOVER_HTML_RE.sub("", text.replace(_HOLE, ""))
    text = _MAGIC_WORD_RE.sub("", text)
    text = _BOLD_ITALIC_RE.sub("", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _MANY_NEWLINES_RE.sub("\n\n", text).strip()


class _Dump:
    """What the reader knows about the dump being read: its namespace URI and siteinfo."""

    def __init__(self, path: str, root: ET.Element) -> None:
        self.path = path
        self.uri = root.tag[1 : root.tag.index("}")] if root.tag.startswith("{") else ""
        self.xml_lang = root.get("{http://www.w3.org/XML/1998/namespace}lang", "")
        self.dbname = ""
        self.lang = ""
        self.drop_prefixes = default_drop_prefixes()

    def q(self, tag: str) -> str:
        """Qualified tag name in the dump's export namespace (export-0.10, 0.11...)."""
        return f"{{{self.uri}}}{tag}" if self.uri else tag

    def read_siteinfo(self, siteinfo: ET.Element) -> None:
        self.dbname = (siteinfo.findtext(self.q("dbname")) or "").strip()
        names = set(self.drop_prefixes)
        for ns in siteinfo.iter(self.q("namespace")):
            if ns.get("key") in (str(FILE_NS), str(CATEGORY_NS)) and ns.text:
                names.add(ns.text.strip().casefold())
        self.drop_prefixes = frozenset(names)

    def resolve_lang(self) -> None:
        """Language from <dbname>, else from the file name, else the root's xml:lang."""
        if not self.dbname:
            self.dbname = dbname_from_filename(self.path)
        self.lang = lang_from_dbname(self.dbname) or self.xml_lang
        if not self.dbname and self.lang:
            self.dbname = f"{self.lang.replace('-', '_')}wiki"


def _page_record(page: ET.Element, dump: _Dump) -> dict[str, Any] | Skip | DeadLetter:
    """One `<page>` element to a Document, a Skip or a DeadLetter."""
    q = dump.q
    page_id = (page.findtext(q("id")) or "").strip()
    title = page.findtext(q("title")) or ""
    ns = (page.findtext(q("ns")) or "").strip()
    if not page_id.isdigit() or not ns.lstrip("-").isdigit():
        reason = f"page without a numeric <id> or <ns> (id {page_id!r}, ns {ns!r})"
        return DeadLetter(SOURCE, dump.path, f"page {title!r}", reason)
    if int(ns) != ARTICLE_NS:
        return Skip(SOURCE, "namespace")
    revisions = page.findall(q("revision"))
    revision = revisions[-1] if revisions else ET.Element("revision")  # the newest, if several
    wikitext = revision.findtext(q("text")) or ""
    if page.find(q("redirect")) is not None or is_redirect_text(wikitext):
        return Skip(SOURCE, "redirect")
    native_id = f"{dump.dbname}:{page_id}"
    try:
        text = wikitext_to_text(wikitext, dump.drop_prefixes)
    except Exception as e:  # a parser limit (ParserError, RecursionError): this page only
        return DeadLetter(SOURCE, dump.path, native_id, f"wikitext: {type(e).__name__}: {e}")
    if not text:
        return Skip(SOURCE, "empty")
    if dump.lang:
        url = f"https://{dump.lang}.wikipedia.org/wiki/{title.replace(' ', '_')}"
    else:
        url = dump.path
    revision_id = (revision.findtext(q("id")) or "").strip()
    meta = {
        "title": title,
        "page_id": int(page_id),
        "revision_id": int(revision_id) if revision_id.isdigit() else None,
        "timestamp": revision.findtext(q("timestamp")) or "",
    }
    return make_document(SOURCE, native_id, text, url, dump.lang, 1.0, meta)


def read(path: str, cfg: Any = None) -> Iterator[dict[str, Any] | Skip | DeadLetter]:
    """Stream a MediaWiki XML dump; one Document, Skip or DeadLetter per `<page>`.

    LLaMA 2.1 Wikipedia: articles of the dump's language, markup removed.
    Skip reasons: "namespace" (not ns 0), "redirect" (`<redirect>` element or
    `#REDIRECT`-like text), "empty" (nothing left after cleaning).
    Documents: native_id "<dbname>:<page id>", url
    "https://<lang>.wikipedia.org/wiki/<Title_with_underscores>", lang from the
    dump, lang_score 1.0, meta {title, page_id, revision_id, timestamp}.

    Args:
        path: a dump file, .xml or compressed as Wikimedia publishes them
            (.bz2) or .xz; any Beam filesystem.
        cfg: the job's `pipeline.config.Config` (unused: nothing is configurable).
    Yields:
        Documents, Skips, and DeadLetters for unparsable pages; a dump that ends
        early or is malformed yields its complete pages, then one DeadLetter
        whose reason starts "truncated dump:" or "malformed dump:".
    Raises:
        Nothing from the data: every failure becomes a DeadLetter.
    """
    try:
        stream = open_input(path)
    except (OSError, ValueError) as e:
        yield DeadLetter(SOURCE, path, "file", f"cannot open: {type(e).__name__}: {e}")
        return
    with stream:
        yield from _read_stream(stream, path)


def _read_stream(stream: Any, path: str) -> Iterator[dict[str, Any] | Skip | DeadLetter]:
    dump: _Dump | None = None
    page_tag = siteinfo_tag = ""
    last = "before the first page"
    try:
        for event, elem in ET.iterparse(stream, events=("start", "end")):
            if dump is None:  # the first event is the root's start: read its namespace
                if elem.tag.rsplit("}", 1)[-1] != "mediawiki":
                    reason = f"not a MediaWiki dump: root <{elem.tag}>"
                    yield DeadLetter(SOURCE, path, "file", reason)
                    return
                dump = _Dump(path, elem)
                page_tag, siteinfo_tag = dump.q("page"), dump.q("siteinfo")
                root = elem
                continue
            if event != "end":
                continue
            if elem.tag == siteinfo_tag:
                dump.read_siteinfo(elem)
            elif elem.tag == page_tag:
                if not dump.lang:
                    dump.resolve_lang()
                record = _page_record(elem, dump)
                last = f"after page {(elem.findtext(dump.q('id')) or '?').strip()}"
                root.clear()  # drop finished pages: memory stays flat
                yield record
    except ET.ParseError as e:
        kind = "truncated dump" if e.code in _TRUNCATION_ERRORS else "malformed dump"
        yield DeadLetter(SOURCE, path, last, f"{kind}: {e}")
    except EOFError as e:  # the compressed stream ends before its end marker
        yield DeadLetter(SOURCE, path, last, f"truncated dump: {e}")
    except (OSError, lzma.LZMAError) as e:
        yield DeadLetter(SOURCE, path, last, f"unreadable compressed stream: {e}")
