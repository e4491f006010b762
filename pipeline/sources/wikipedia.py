"""Wikipedia: MediaWiki `pages-articles` XML dumps to plain-text Documents.

LLaMA (paper, 2.1): "Wikipedia dumps from the June-August 2022 period, covering
20 languages [...]. We process the data to remove hyperlinks, comments and other
formatting boilerplate." Here: articles only (namespace 0), no redirects. The
wikitext loses comments, `<ref>`s, tables and file/category links first (plain
scans that cannot fail on unbalanced markup); templates are rendered when they
are common inline ones ({{convert}}, {{lang}}, {{nowrap}}...), and otherwise
removed, a sentence that would be left with a hole going with them (see
"Inline templates" below). Then mwparserfromhell and a small renderer keep what
a reader sees as prose: link labels, headings as lines, list items without
markers. The language is the dump's own (`<dbname>bgwiki</dbname>` -> "bg"),
with score 1.0.

The dump is streamed line by line and each `<page>` is parsed on its own
(`_page_chunks`; MediaWiki writes every `<page>` and `</page>` on a line of
its own), so memory stays flat whatever the dump's size and a page that is not
well-formed costs only itself. The encoding comes from the byte-order mark or
the XML declaration, so the UTF-16LE dumps (with BOM) read as they are. A dump
cut mid-page yields every complete page, then one DeadLetter "truncated dump: ...".

A large multistream dump (`<db>-<date>-pages-articles-multistream.xml.bz2`, or
one of its parts) with its index beside it (`index_path`; lines
`offset:page_id:title`, the offset that of the bz2 stream holding the page,
about 100 pages per stream) is read in pieces by several workers: `split`
groups consecutive streams into byte ranges of about `clean.split_bytes`, and
a span's reader decompresses just its streams, taking the root element and
`<siteinfo>` (language, namespaces) from the dump's first stream. The first
span starts at byte 0 and the last ends at the file's end, so every byte is
read once even where the index misses a stream. A dump without an index is
read whole. Which dumps of a listing are read at all: `select_dumps`.

Known gaps: {{convert}} renders the value and unit as written, without the
converted figure; file links under a local alias that siteinfo does not list
are only caught by their image options (`thumb`, `200px`).
"""

from __future__ import annotations

import bz2
import codecs
import io
import logging
import lzma
import posixpath
import re
import xml.etree.ElementTree as ET
import zlib
from typing import Any, Callable, Iterator, NamedTuple

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

from pipeline.core.io import decompressing, exists, open_input, open_range, open_read
from pipeline.formats.errors import try_open
from pipeline.sources.base import DeadLetter, Formats, Skip, make_document

SOURCE = "wikipedia"
FORMATS = Formats(
    describe=("MediaWiki pages-articles XML dumps (.xml, .xml.bz2, multistream and parts "
              "`.xml-p<first>p<last>.bz2`; gzip, xz), with a multistream dump's -index.txt.bz2 beside it"),
    names=("*.xml", "*.xml-p*"),
    companions=("*-index*.txt", "*-index*.txt-p*"),  # `is_index`: read by `split`, never a dump
)
log = logging.getLogger(__name__)

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

# Of DROP_TAGS, those that stand for words inside a sentence ("the mean of
# <math>x_1..x_n</math> is"): removing them leaves a hole (see `fill_holes`).
FORMULA_TAGS = frozenset({"math", "chem", "ce"})

# The `redirect` magic word's local synonyms (MediaWiki's Messages<Lang>.php, as
# each wiki's API lists them under siteinfo `magicwords`), for the 20 LLaMA
# languages and the other editions of the sample corpus. `#REDIRECT` works on
# every wiki. Matched case-insensitively, as MediaWiki does.
REDIRECT_MAGIC_WORDS: dict[str, tuple[str, ...]] = {
    "bg": ("#пренасочване", "#виж"),
    "bn": ("#পুনর্নির্দেশ", "#পুনঃর্নির্দেশ", "#পুনঃনির্দেশ", "#পুননির্দেশ"),
    "ca": ("#REDIRECCIÓ", "#REDIRECCIO", "#REDIRECCION"),
    "cs": ("#PŘESMĚRUJ", "#PRESMERUJ"),
    "da": (),
    "de": ("#WEITERLEITUNG",),
    "el": ("#ΑΝΑΚΑΤΕΥΘΥΝΣΗ",),
    "en": (),
    "es": ("#REDIRECCIÓN", "#REDIRECCION"),
    "fr": ("#REDIRECTION",),
    "hr": ("#PREUSMJERI",),
    "hu": ("#ÁTIRÁNYÍTÁS",),
    "hy": ("#ՎԵՐԱՀՂՈՒՄ",),
    "it": ("#RINVIA", "#RINVIO", "#RIMANDO"),
    "ja": ("#転送", "#リダイレクト", "＃転送", "＃リダイレクト"),  # also the full-width ＃
    "mr": ("#पुनर्निर्देशन", "#पुर्ननिर्देशन"),
    "nl": ("#DOORVERWIJZING",),
    "pl": ("#PATRZ", "#PRZEKIERUJ", "#TAM"),
    "pt": ("#REDIRECIONAMENTO",),
    "ro": ("#REDIRECTEAZA",),
    "ru": ("#перенаправление", "#перенапр"),
    "sl": ("#PREUSMERITEV",),
    "sr": ("#ПРЕУСМЕРИ", "#ПРЕУСМЈЕРИ", "#PREUSMERI", "#PREUSMJERI"),
    "sv": ("#OMDIRIGERING",),
    "uk": ("#ПЕРЕНАПРАВЛЕННЯ", "#ПЕРЕНАПР", "#перенаправление", "#перенапр"),
    "vi": ("#đổi",),
}


def _redirect_re(words: tuple[str, ...]) -> re.Pattern[str]:
    """MediaWiki's own test of a redirect's text: after leading whitespace, one
    of the magic words, an optional colon, then a link closed on the same line."""
    alternatives = "|".join(sorted(map(re.escape, set(words))))
    space = r"[ \t\n\r\f\v]*"  # ASCII only, as MediaWiki's pattern
    return re.compile(rf"{space}(?:{alternatives}){space}:?{space}\[\[.*?\]\]", re.IGNORECASE)


_REDIRECT_RES = {
    lang: _redirect_re(("#REDIRECT", *words)) for lang, words in REDIRECT_MAGIC_WORDS.items()
}
# A wiki not in the table (or not known): any word of the table.
_ANY_REDIRECT_RE = _redirect_re(
    ("#REDIRECT", *(w for words in REDIRECT_MAGIC_WORDS.values() for w in words))
)
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

def is_redirect_text(wikitext: str, lang: str = "") -> bool:
    """True if the wikitext is a redirect page (`#REDIRECT [[...]]` or a localised form).

    MediaWiki (Help:Redirects) treats a page as a redirect when its text starts
    with the `redirect` magic word (`#REDIRECT`, or a local synonym such as
    `#WEITERLEITUNG`; any case), then an optional colon and whitespace, then a
    link `[[...]]`. Any other `#word [[link]]` is an article opening with a
    numbered list item (`#Erstens [[Berlin]] ...`).

    Args:
        wikitext: the page's text.
        lang: the wiki's language: its words from `REDIRECT_MAGIC_WORDS` and
            `#REDIRECT`; "" or a language not in the table: the words of all.
    """
    pattern = _REDIRECT_RES.get(lang, _ANY_REDIRECT_RE)
    return pattern.match(wikitext) is not None


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
            # [[Target]], [[Target|]], [[Target|{{tpl}}]]
            if not label.replace(_HOLE, "").replace(_SILENT, "").strip():
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
                if tag in FORMULA_TAGS:  # words of a sentence: its removal is a hole
                    out.append(_HOLE)
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
    A removed table leaves a blank line: it is a block, so the lines before and
    after it are separate paragraphs (MediaWiki closes the `<p>` before a table).
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
                if not depth:
                    kept.append("")  # a table is a block: the text around it is two paragraphs
            continue
        kept.append(line)
    return "\n".join(kept)


# --------------------------------------------------------------------------
# Inline templates: rendered, silent, or a hole that costs its sentence
#
# LLaMA 2.1 removes "formatting boilerplate"; removing a template outright also
# removes words a reader sees ("At {{convert|1300|mi|km}}, Alabama has..."
# becomes "At , Alabama has..."). So a template goes one of three ways:
#   - rendered: the most common inline templates of the English Wikipedia
#     (counted on the demo dump: convert, lang, small, transl, nowrap, nihongo,
#     as of...) become the words they show, by the table INLINE_TEMPLATES
#     (each rule from the template's documentation,
#     en.wikipedia.org/wiki/Template:<name>, simplified as noted there);
#   - silent: templates that show no words where they stand (footnote marks
#     such as {{sfn}} and {{efn}}, inline tags such as {{citation needed}},
#     icons, anchors, pronunciation keys) go without a trace (SILENT_TEMPLATES);
#   - any other template leaves a hole. A hole inside a sentence (words of the
#     same sentence before or after it, on its line) costs the whole sentence;
#     a hole with no prose around it (an infobox or navbox on its own lines, a
#     template right after a sentence's final punctuation, or alone in
#     brackets) just goes. See `fill_holes`; the reader counts the sentences
#     dropped in meta `dropped_sentences`.

_SILENT = "\ufffe"  # like _HOLE, a noncharacter XML does not allow: never page text

SILENT_TEMPLATES = frozenset(
    "sfn|sfnp|sfnm|sfnref|efn|efn-ua|efn-lr|efn-lg|efn-la|refn|r|rp|ref label|note label"
    "|harvnb|harv|harvp|harvtxt|harvard citation no brackets|harvard citation"
    "|citation needed|cn|fact|clarify|when|who|which|dubious|vague|according to whom"
    "|by whom|page needed|failed verification|better source needed|dead link|update inline"
    "|original research inline|specify|anchor|flagicon|flagdeco|increase|decrease|steady"
    "|ipac-en|ipac-de|ipac-fr|ipac-es|ipac-it|respell|audio|shy|zwsp|wbr|webarchive"
    # Ukrainian and Japanese Wikipedias: citation needed, source, dead link, who, when
    "|дн|джерело|недоступне посилання|efn2|要出典|リンク切れ|誰|いつ".split("|")
)

_MONTHS = (
    "January February March April May June July August September October November December"
).split()
# Words that join two values of a {{convert}} range, as the template shows them.
_CONVERT_RANGES = {
    "-": "–", "–": "–", "to": " to ", "to(-)": " to ", "and": " and ", "and(-)": " and ",
    "or": " or ", "by": " by ", "x": " × ", "×": " × ", "+/-": " ± ", "±": " ± ",
}
_NUMBER_RE = re.compile(r"[-+−]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:e[-+]?\d+)?$", re.I)


class _Args(NamedTuple):
    positional: list[str]
    named: dict[str, str]

    def get(self, i: int, default: str = "") -> str:
        return self.positional[i].strip() if i < len(self.positional) else default


def _convert(a: _Args) -> str | None:
    """{{convert|1300|mi|km}} -> "1300 mi"; {{convert|5|to|10|km}} -> "5 to 10 km".

    The value(s) and the input unit as written; the converted figure that the
    template adds in brackets ("(2,100 km)") is left out: it is computed by
    Module:Convert's unit tables and rounding rules, and a wrong one would be
    worse than none. None (a hole) if the arguments do not have that shape.
    """
    value, rest = a.get(0), a.positional[1:]
    if not _NUMBER_RE.match(value.replace(" ", "")) or not rest:
        return None
    joiner = _CONVERT_RANGES.get(rest[0].strip())
    if joiner is not None and len(rest) >= 3 and _NUMBER_RE.match(rest[1].strip()):
        value = f"{value}{joiner}{rest[1].strip()}"
        rest = rest[2:]
    unit = rest[0].strip()
    return f"{value} {unit}" if unit else None


def _as_of(a: _Args) -> str | None:
    """{{as of|2010|5}} -> "As of May 2010" ("as of" with lc=y); day first (dmy),
    or "Month day, year" with df=US."""
    year, month, day = a.get(0), a.get(1), a.get(2)
    if not year.isdigit():
        return None
    when = year
    if month.isdigit() and 1 <= int(month) <= 12:
        name = _MONTHS[int(month) - 1]
        if day.isdigit():
            us = a.named.get("df", "").strip().lower() in ("us", "y", "yes")
            when = f"{name} {int(day)}, {year}" if us else f"{int(day)} {name} {year}"
        else:
            when = f"{name} {year}"
    lower = a.named.get("lc", "").strip().lower() in ("y", "yes", "on", "true")
    return f"{'as' if lower else 'As'} of {when}"


def _date(a: _Args) -> str | None:
    """{{birth date|1809|2|12}} -> "February 12, 1809" ("12 February 1809" with
    df=y). Ages that the "... and age" templates add are left out."""
    year, month, day = a.get(0), a.get(1), a.get(2)
    if not year.isdigit():
        return None
    if not (month.isdigit() and 1 <= int(month) <= 12):
        return year
    name = _MONTHS[int(month) - 1]
    if not day.isdigit():
        return f"{name} {year}"
    if a.named.get("df", "").strip().lower() in ("y", "yes"):
        return f"{int(day)} {name} {year}"
    return f"{name} {int(day)}, {year}"


def _frac(a: _Args) -> str | None:
    """{{frac|1|2}} -> "1/2", {{frac|3|1|2}} -> "3 1/2", {{frac|4}} -> "1/4"."""
    parts = [p.strip() for p in a.positional]
    if len(parts) == 1:
        return f"1/{parts[0]}"
    if len(parts) == 2:
        return f"{parts[0]}/{parts[1]}"
    if len(parts) == 3:
        return f"{parts[0]} {parts[1]}/{parts[2]}"
    return None


def _nihongo(a: _Args) -> str | None:
    """{{nihongo|Tokyo|東京|Tōkyō}} -> "Tokyo (東京, Tōkyō)"."""
    english, extra = a.get(0), [x for x in (a.get(1), a.get(2)) if x]
    if not english:
        return f"{extra[0]} ({extra[1]})" if len(extra) == 2 else (extra[0] if extra else None)
    return f"{english} ({', '.join(extra)})" if extra else english


def _val(a: _Args) -> str | None:
    """{{val|1.2|u=m}} -> "1.2 m", {{val|1.2|0.1}} -> "1.2 ± 0.1", e=3 -> "1.2×10^3"."""
    value = a.get(0)
    if not value:
        return None
    if a.get(1) and not a.get(2):
        value = f"{value} ± {a.get(1)}"
    exponent = a.named.get("e", "").strip()
    if exponent:
        value = f"{value}×10^{exponent}"
    unit = (a.named.get("u") or a.named.get("ul") or "").strip()
    return f"{value} {unit}" if unit else value


_MUSIC_SYMBOLS = {"flat": "♭", "b": "♭", "sharp": "♯", "#": "♯", "natural": "♮", "n": "♮"}


def _first(a: _Args) -> str | None:
    return a.get(0) or None


def _second(a: _Args) -> str | None:
    return a.get(1) or None


def _last(a: _Args) -> str | None:
    return a.positional[-1].strip() if a.positional else None


def _constant(text: str) -> Callable[[_Args], str]:
    return lambda a: text


INLINE_TEMPLATES: dict[str, Callable[[_Args], str | None]] = {
    "convert": _convert, "cvt": _convert,
    "lang": _second,  # {{lang|fr|je ne sais quoi}}: the text (lang-xx: see _template_rule)
    "langx": _second,
    "transl": _last, "transliteration": _last,  # {{transl|ar|DIN|text}}: the text
    "nowrap": _first, "nobr": _first, "nobreak": _first, "small": _first, "smaller": _first,
    "big": _first, "larger": _first, "resize": _last, "mvar": _first, "math": _first,
    "var": _first, "em": _first, "strong": _first, "sic": _last, "visible anchor": _first,
    "vanchor": _first, "abbr": _first, "keypress": _first, "nts": _first, "ill": _first,
    "interlanguage link": _first, "lang-rtl": _second, "quote": _first,
    "angbr": lambda a: f"⟨{a.get(0)}⟩",
    "ipa": _first,  # {{IPA|/ˈtɛkst/}}: as written (IPA-xx: see _template_rule)
    "circa": lambda a: f"c. {a.get(0)}".strip(), "c.": lambda a: f"c. {a.get(0)}".strip(),
    "as of": _as_of,
    "birth date": _date, "death date": _date, "birth date and age": _date,
    "death date and age": _date, "start date": _date, "end date": _date,
    "frac": _frac, "sfrac": _frac, "nihongo": _nihongo, "val": _val,
    # {{chem|H|2|O}} -> "H2O": element symbols and counts, written one after another
    "chem": lambda a: "".join(p.strip() for p in a.positional) or None,
    "vr": _first, "sc": _first, "smallcaps": _first, "script": _second,
    "linktext": lambda a: "".join(p.strip() for p in a.positional) or None,
    "eqm": _constant("⇌"), "e": lambda a: f"×10^{a.get(0)}" if a.get(0) else None,
    "music": lambda a: _MUSIC_SYMBOLS.get(a.get(0).lower()), "spaces": _constant(" "),
    "mdashb": _constant("—"), "large": _first, "midsize": _first,
    # interlanguage links of the Ukrainian and Russian Wikipedias: the label
    "нп": lambda a: a.get(1) or a.get(0) or None,
    "не перекладено": lambda a: a.get(1) or a.get(0) or None,
    "iw": lambda a: a.get(1) or a.get(0) or None,
    # the Japanese Wikipedia's interlanguage link and span tags: the text
    "仮リンク": _first, "interlang": _second, "要出典範囲": _first,
    # language marks of the Japanese Wikipedia: {{en|ampersand}} -> "ampersand"
    **{code: _first for code in "en fr de el la es pt nl it ru zh ko".split()},
    "us$": lambda a: f"US${a.get(0)}" if a.get(0) else None,
    "ndash": _constant("–"), "mdash": _constant("—"), "snd": _constant(" – "),
    "spnd": _constant(" – "), "sndash": _constant(" – "), "spaced ndash": _constant(" – "),
    "spaced en dash": _constant(" – "), "spaced mdash": _constant(" — "),
    "spmdash": _constant(" — "), "nbsp": _constant(" "), "thinsp": _constant(" "),
    "'": _constant("'"), "'s": _constant("'s"), "!": _constant("|"), "pipe": _constant("|"),
    "=": _constant("="), "·": _constant(" · "), "dot": _constant(" · "), "•": _constant(" • "),
    "bull": _constant(" • "),
}


def _template_rule(name: str) -> Callable[[_Args], str | None] | None:
    """The renderer of a template by its normalised name, or None (a hole).
    Families by prefix: lang-xx ({{lang-de|Staat}}: the text), IPA-xx
    ({{IPA-de|ʃtaːt}}: the transcription in brackets, "[ʃtaːt]") and the
    formatnum: magic word (the number as written)."""
    rule = INLINE_TEMPLATES.get(name)
    if rule is not None:
        return rule
    if name.startswith("lang-"):
        return _first
    if name.startswith("ipa-"):
        return lambda a: f"[{a.get(0)}]" if a.get(0) else None
    if name.startswith("formatnum:"):  # the magic word: {{formatnum:1234}}, number as written
        value = name.partition(":")[2].strip()
        return _constant(value) if value and "{" not in value else None
    return None


def _silent(name: str) -> bool:
    """SILENT_TEMPLATES; inline maintenance tags ({{relevance inline}}, {{update
    inline}}: Wikipedia names them "... inline"); the "(in French)" language
    marks of references: {{fr icon}} (English Wikipedia), {{ref-fr}} (Ukrainian,
    Russian)."""
    return (
        name in SILENT_TEMPLATES
        or name.endswith(" inline")
        or (name.endswith(" icon") and len(name) <= 8)
        or (name.startswith("ref-") and len(name) <= 10)
    )


_PARAM_TOKEN_RE = re.compile(r"\{\{|\}\}|\[\[|\]\]|\|")


def _split_params(inner: str) -> list[str]:
    """Split a template's inside on the `|` not nested in {{ }} or [[ ]]."""
    parts, depth, start = [], 0, 0
    for m in _PARAM_TOKEN_RE.finditer(inner):
        token = m.group()
        if token in ("{{", "[["):
            depth += 1
        elif token in ("}}", "]]"):
            depth = max(depth - 1, 0)
        elif depth == 0:
            parts.append(inner[start : m.start()])
            start = m.end()
    parts.append(inner[start:])
    return parts


def _render_template(inner: str) -> str:
    """The text that replaces `{{inner}}`: rendered, _SILENT or _HOLE."""
    parts = _split_params(inner)
    name = parts[0].strip().replace("_", " ")
    name = re.sub(r"\s+", " ", name).removeprefix("Template:").removeprefix("template:").lower()
    if _silent(name):
        return _SILENT
    rule = _template_rule(name)
    if rule is None:
        return _HOLE
    positional, named = [], {}
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if eq and "{{" not in key and "[[" not in key and key.strip():
            named[key.strip().lower()] = render_templates(value)
        else:
            positional.append(render_templates(part))
    for key in sorted((k for k in named if k.isdigit() and 0 < int(k) <= 20), key=int):
        index = int(key) - 1  # "1=" is the first positional argument, given by name
        positional.extend([""] * (index + 1 - len(positional)))
        positional[index] = named.pop(key)
    try:
        text = rule(_Args(positional, named))
    except (IndexError, ValueError):
        text = None
    return _HOLE if text is None else text


def render_templates(wikitext: str) -> str:
    """Replace every `{{...}}` (outermost first, nesting counted) by what it
    shows: its rendering (INLINE_TEMPLATES, arguments rendered first), the
    _SILENT mark, or the _HOLE mark; `fill_holes` resolves the marks. A `{{`
    never closed is left as it is."""
    if "{{" not in wikitext:
        return wikitext
    out: list[str] = []
    pos = 0
    while (start := wikitext.find("{{", pos)) >= 0:
        depth, end = 0, -1
        for m in _BRACES_RE.finditer(wikitext, start):
            depth += 1 if m.group() == "{{" else -1
            if depth == 0:
                end = m.end()
                break
        if end < 0:
            break
        out.append(wikitext[pos:start])
        out.append(_render_template(wikitext[start + 2 : end - 2]))
        pos = end
    out.append(wikitext[pos:])
    return "".join(out)


_BRACES_RE = re.compile(r"\{\{|\}\}")
_MARKS = f"{_HOLE}{_SILENT}"
# A mark alone in brackets, with its separators: "(HOLE)", "(HOLE; HOLE)" -> "".
_EMPTY_BRACKETS_RE = re.compile(rf"[ \t]*[(\[][\s,;:{_MARKS}]*[{_MARKS}][\s,;:{_MARKS}]*[)\]]")
# Marks first or last in brackets, cut off by a separator: "(HOLE; from Greek"
# -> "(from Greek", "(from Greek; HOLE)" -> "(from Greek)".
_LEADING_IN_BRACKETS_RE = re.compile(rf"([(\[])\s*[{_MARKS}](?:[\s,;:]*[{_MARKS}])*\s*[,;:]\s*")
_TRAILING_IN_BRACKETS_RE = re.compile(rf"\s*[,;:]\s*[{_MARKS}](?:[\s,;:]*[{_MARKS}])*\s*([)\]])")
# Sentence ends: terminal punctuation and blanks, or CJK full stops.
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")
_WORD_RE = re.compile(r"\w")
_SPACES_RE = re.compile(r"(?<=\S)  +")  # spaces a removed mark doubled (indentation stays)
_AFTER_TERMINAL_RE = re.compile(rf"[.!?。！？][\"'”’»)\]]*[\s{_MARKS}]*$")


def fill_holes(text: str) -> tuple[str, int]:
    """Resolve the template marks of rendered text: (text, sentences dropped).

    Per line: marks alone in brackets go with the brackets, marks first or last
    in brackets go with their separator; _SILENT marks then go. A sentence
    (split after . ! ? and blanks, or after 。！？) that still holds a _HOLE
    is dropped when it has words besides the hole and the hole is not just
    after the sentence's final punctuation (a footnote-like position);
    otherwise the hole goes alone. A line left without a word goes too.
    """
    if _HOLE not in text and _SILENT not in text:
        return text, 0
    dropped = 0
    lines = []
    for line in text.split("\n"):
        if _HOLE not in line and _SILENT not in line:
            lines.append(line)
            continue
        line = _EMPTY_BRACKETS_RE.sub("", line)
        line = _LEADING_IN_BRACKETS_RE.sub(r"\1", line)
        line = _TRAILING_IN_BRACKETS_RE.sub(r"\1", line)
        line = _SPACES_RE.sub(" ", line.replace(_SILENT, ""))
        if _HOLE not in line:
            lines.append(line)
            continue
        pieces = _SENTENCE_END_RE.split(line)
        seps = _SENTENCE_END_RE.findall(line)
        kept: list[str] = []
        for i, sentence in enumerate(pieces):
            if _HOLE in sentence:
                before = sentence[: sentence.index(_HOLE)]
                words = _WORD_RE.search(sentence.replace(_HOLE, "")) is not None
                footnote = _AFTER_TERMINAL_RE.search(sentence) is not None and (
                    _AFTER_TERMINAL_RE.search(before + _HOLE) is not None
                )
                if words and not footnote:
                    dropped += 1
                    continue
                sentence = sentence.replace(_HOLE, "")
            kept.append(sentence + (seps[i] if i < len(seps) else ""))
        line = _SPACES_RE.sub(" ", "".join(kept)).rstrip()
        # what the holes leave without a word ("." after an infobox) goes too
        lines.append(line if _WORD_RE.search(line) else "")
    return "\n".join(lines), dropped


def default_drop_prefixes() -> frozenset[str]:
    """Casefolded link prefixes removed when the dump has no `<namespaces>` list."""
    return frozenset(n.casefold() for n in CANONICAL_DROP_NAMESPACES)


def wikitext_to_text(wikitext: str, drop_prefixes: frozenset[str] | None = None) -> str:
    """Convert MediaWiki wikitext to plain text (LLaMA 2.1: remove hyperlinks,
    comments and other formatting boilerplate). `convert_wikitext` without the count."""
    return convert_wikitext(wikitext, drop_prefixes)[0]


def convert_wikitext(
    wikitext: str, drop_prefixes: frozenset[str] | None = None
) -> tuple[str, int]:
    """Convert MediaWiki wikitext to plain text: (text, sentences dropped).

    Wikilinks become their label (or target), external links their label;
    common inline templates become the words they show and the others are
    removed, a sentence that would be left with a hole going with them (see
    "Inline templates" above and `fill_holes`); tables (each leaving a
    paragraph break), `<ref>` and other non-prose tags, comments, and links
    whose namespace prefix is in `drop_prefixes` (files, categories) are
    removed; bold/italic markup and list markers are stripped; headings stay as
    plain lines. Lines are stripped, 3+ newlines collapse to 2.

    Args:
        wikitext: the page source, as in `<text>` of the dump.
        drop_prefixes: casefolded namespace names whose links are removed
            (siteinfo names of namespaces 6 and 14 plus the canonical English
            ones); None: only the canonical English names.
    Returns:
        (the plain text, stripped, "" if nothing readable is left; the number of
        sentences dropped because a template in them could not be rendered).
    Raises:
        mwparserfromhell.parser.ParserError: the parser gave up on the markup
            (the reader turns it into a DeadLetter).
    """
    if drop_prefixes is None:
        drop_prefixes = default_drop_prefixes()
    # before parsing (see the constants): what the parser would give up on
    wikitext = _REF_RE.sub("", _COMMENT_RE.sub("", wikitext))
    wikitext = _INTERLANGUAGE_LINE_RE.sub("", wikitext)
    wikitext = render_templates(wikitext)
    wikitext = _remove_tables(wikitext)
    wikitext = _remove_balanced(
        wikitext, "[[", "]]", lambda inner: _is_media_link(inner, drop_prefixes)
    )
    text = _render(mwparserfromhell.parse(wikitext), drop_prefixes)
    # a link the parser left as text keeps its label
    text = _LEFTOVER_LINK_RE.sub(lambda m: (m.group(2) or m.group(1)).strip(), text)
    text, dropped = fill_holes(text)
    text = _LEFTOVER_HTML_RE.sub("", text)
    text = _MAGIC_WORD_RE.sub("", text)
    text = _BOLD_ITALIC_RE.sub("", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _MANY_NEWLINES_RE.sub("\n\n", text).strip(), dropped


class _Dump:
    """What the reader knows about the dump being read: its root's xml:lang and
    siteinfo. Pages are parsed one by one, outside the root element, so their
    tags carry no namespace (`uri` is "")."""

    def __init__(self, path: str, xml_lang: str = "") -> None:
        self.path = path
        self.uri = ""
        self.xml_lang = xml_lang
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
    if page.find(q("redirect")) is not None or is_redirect_text(wikitext, dump.lang):
        return Skip(SOURCE, "redirect")
    native_id = f"{dump.dbname}:{page_id}"
    try:
        text, dropped = convert_wikitext(wikitext, dump.drop_prefixes)
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
        "dropped_sentences": dropped,
    }
    return make_document(SOURCE, native_id, text, url, dump.lang, 1.0, meta)


def read(
    path: str, cfg: Any = None, span: tuple[int, int] | None = None
) -> Iterator[dict[str, Any] | Skip | DeadLetter]:
    """Stream a MediaWiki XML dump; one Document, Skip or DeadLetter per `<page>`.

    LLaMA 2.1 Wikipedia: articles of the dump's language, markup removed.
    Skip reasons: "namespace" (not ns 0), "redirect" (`<redirect>` element, or
    text that `is_redirect_text` accepts in the dump's language), "empty"
    (nothing left after cleaning).
    Documents: native_id "<dbname>:<page id>", url
    "https://<lang>.wikipedia.org/wiki/<Title_with_underscores>", lang from the
    dump, lang_score 1.0, meta {title, page_id, revision_id, timestamp,
    dropped_sentences} (see `convert_wikitext`).

    Each `<page>` is parsed on its own (`_page_chunks`), so a page that is not
    well-formed XML, or holds bytes its encoding cannot decode, is a DeadLetter
    and the next page is read as usual: one bad page never loses the rest of
    the dump.

    Args:
        path: a dump file, .xml or compressed as Wikimedia publishes them
            (.bz2) or .xz; any Beam filesystem.
        cfg: the job's `pipeline.core.config.Config` (unused: nothing is configurable).
        span: (start, end) byte offsets of `split` (whole bz2 streams of a
            multistream dump): only the pages of those streams; None: all.
    Yields:
        Documents, Skips, and DeadLetters: record "page <id>" (or "after page
        <id>" when the id cannot be read) for a page that cannot be parsed
        (reason "malformed page: ...") or converted ("wikitext: ..."); a dump
        that ends early yields its complete pages, then one DeadLetter whose
        reason starts "truncated dump:"; a file that is not a dump, one
        DeadLetter "malformed dump: ..." (record "file").
    Raises:
        Nothing from the data: every failure becomes a DeadLetter.
    """
    if span is not None:
        yield from _read_span(path, *span)
        return
    stream = try_open(SOURCE, path, open_input)
    if isinstance(stream, DeadLetter):
        yield stream
        return
    with stream:
        yield from _read_stream(stream, path)


# The dump's encoding: a byte-order mark, else the XML declaration, else UTF-8
# (XML 1.0, appendix F).
_BOM_ENCODINGS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
_XML_ENCODING_RE = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_ROOT_RE = re.compile(r"<mediawiki\b[^>]*>")
_XML_LANG_RE = re.compile(r"""\bxml:lang\s*=\s*["']([^"']*)["']""")
_PAGE_ID_RE = re.compile(r"<id>\s*(\d+)\s*</id>")
_HEAD_BYTES = 4096


def _dump_encoding(head: bytes) -> str:
    """Codec name of a dump from its first bytes (BOM > XML declaration > UTF-8)."""
    for bom, encoding in _BOM_ENCODINGS:
        if head.startswith(bom):
            return encoding
    m = _XML_ENCODING_RE.match(head)
    if m:
        try:
            return codecs.lookup(m.group(1).decode("ascii")).name
        except LookupError:
            pass
    return "utf-8"


def _page_chunks(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """Cut a dump's lines into ("root" | "siteinfo" | "page" | "unclosed" |
    "cut" | "end" | "junk", text) chunks.

    MediaWiki's XML writer (XmlDumpWriter, Special:Export) puts `<mediawiki
    ...>`, `<siteinfo>`, `</siteinfo>`, `<page>`, `</page>` and `</mediawiki>`
    each on a line of its own; inside `<text>` a `<` is always written `&lt;`,
    so such a line can only be markup. A chunk is everything from an opening
    line to its closing line. "unclosed": a page that a new `<page>` line
    interrupts; "cut": the element the end of the file interrupts; "end":
    `</mediawiki>` was read (anything after it is ignored); "junk": a non-blank
    line outside any element.
    """
    chunk: list[str] = []
    kind = ""
    for line in lines:
        tag = line.strip()
        if kind:
            if tag == "<page>" and kind == "page":  # the previous page never closed
                yield "unclosed", "".join(chunk)
                chunk = [line]
                continue
            chunk.append(line)
            if tag == f"</{kind}>":
                yield kind, "".join(chunk)
                chunk, kind = [], ""
            continue
        if tag in ("<page>", "<siteinfo>"):
            kind, chunk = tag[1:-1], [line]
        elif tag == "</mediawiki>":
            yield "end", tag
            return
        elif tag.startswith("<mediawiki"):
            yield "root", tag
        elif tag and not tag.startswith("<?xml"):
            yield "junk", tag
    if kind:
        yield "cut", "".join(chunk)


def _read_stream(
    stream: Any, path: str, header: tuple[_Dump, str] | None = None, to_end: bool = True,
    last: str = "before the first page",
) -> Iterator[dict[str, Any] | Skip | DeadLetter]:
    """The records of a decompressed dump: the whole file, or with `header`
    (the dump's siteinfo and the encoding of its body, `_read_header`) a span
    of its pages; `to_end`: the stream runs to the file's end, so it must
    close the root element; `last`: where a dead letter before the first page is."""
    if header is None:
        try:
            head = stream.read(_HEAD_BYTES)
        except (EOFError, OSError) as e:  # a one-block bzip2 dump cut short decodes nothing at all
            yield DeadLetter(SOURCE, path, last, _stream_error(e))
            return
        stream.seek(0)
        encoding = _dump_encoding(head)
        dump: _Dump | None = None
    else:
        dump, encoding = header
    # Undecodable bytes become lone surrogates, which the XML parser refuses:
    # the page that holds them is a dead letter, not the rest of the file.
    text = io.TextIOWrapper(stream, encoding=encoding, errors="surrogateescape")
    cut = ""
    try:
        for kind, chunk in _page_chunks(text):
            if dump is None:
                if kind != "root" or not _ROOT_RE.match(chunk):
                    yield DeadLetter(
                        SOURCE, path, "file",
                        f"malformed dump: no <mediawiki> root element (first: {chunk[:60]!r})",
                    )
                    return
                lang = _XML_LANG_RE.search(chunk)
                dump = _Dump(path, lang.group(1) if lang else "")
                continue
            if kind == "end":
                return
            m = _PAGE_ID_RE.search(chunk)
            record = f"page {m.group(1)}" if m else f"{last}"
            if kind == "unclosed":
                yield DeadLetter(SOURCE, path, record, "malformed page: </page> missing")
                last = f"after {record}"
                continue
            if kind == "cut":
                cut = record
                continue
            if kind == "junk":
                reason = f"malformed dump: text outside a page: {chunk[:60]!r}"
                yield DeadLetter(SOURCE, path, last, reason)
                continue
            try:
                element = ET.fromstring(chunk)
            except (ET.ParseError, UnicodeError) as e:
                why = _parse_error(e, kind, encoding)
                if kind == "siteinfo":
                    yield DeadLetter(SOURCE, path, "siteinfo", f"malformed siteinfo: {why}")
                else:
                    yield DeadLetter(SOURCE, path, record, f"malformed page: {why}")
                    last = f"after {record}"
                continue
            if kind == "siteinfo":
                dump.read_siteinfo(element)
                continue
            if not dump.lang:
                dump.resolve_lang()
            yield _page_record(element, dump)
            last = f"after page {(element.findtext('id') or '?').strip()}"
    except (EOFError, lzma.LZMAError, zlib.error, OSError, UnicodeError) as e:
        yield DeadLetter(SOURCE, path, last, _stream_error(e))
        return
    if dump is None:
        yield DeadLetter(SOURCE, path, "file", "malformed dump: no <mediawiki> root element")
    elif reason := _unfinished(cut, to_end):
        yield DeadLetter(SOURCE, path, last, reason)


def _stream_error(e: Exception) -> str:
    """The dead-letter reason for a dump whose decompressed stream fails."""
    if isinstance(e, (EOFError, lzma.LZMAError, zlib.error)):  # the compressed stream ends early
        return f"truncated dump: {type(e).__name__}: {e}"
    if isinstance(e, UnicodeError):  # a UTF-16 dump with an odd number of bytes
        return f"truncated dump: {e}"
    return f"unreadable compressed stream: {e}"


def _parse_error(e: Exception, kind: str, encoding: str) -> str:
    """Why a page or the siteinfo did not parse."""
    if isinstance(e, UnicodeError):  # a lone surrogate: an undecodable byte
        return f"bytes not valid in the dump's encoding ({encoding})"
    return f"{e} of the {kind}"  # expat counts lines from the element's first line


def _unfinished(cut: str, to_end: bool) -> str | None:
    """Why a stream that ended without error is incomplete: a page cut (`cut`:
    which), or a whole dump (`to_end`) without its closing root; None if complete."""
    if cut and not to_end:
        return f"the span ends inside {cut}: the index does not match the dump's streams"
    if cut:
        return f"truncated dump: the file ends inside {cut}"
    if to_end:
        return "truncated dump: the file ends before </mediawiki>"
    return None


# --------------------------------------------------------------------------
# Multistream dumps, read in spans by their index (module doc)

# `<stem><part>.xml<pages>.bz2`: enwiki-20230501-pages-articles-multistream.xml.bz2,
# enwiki-20230501-pages-articles-multistream1.xml-p1p41242.bz2
_MULTISTREAM_RE = re.compile(
    r"(?P<stem>.+-pages-articles-multistream)(?P<part>\d*)\.xml(?P<pages>-p\d+p\d+)?\.bz2"
)
# enwiki-20230501-pages-articles-multistream-index.txt.bz2, ...-index1.txt-p1p41242.bz2
_INDEX_RE = re.compile(r".*-index\d*\.txt(?:-p\d+p\d+)?(?:\.bz2)?")
# <db>-<date>-pages-articles[-multistream][<part>].xml[-p<first>p<last>].bz2
_DUMP_RE = re.compile(
    r"(?P<db>[a-z][a-z0-9_]*wiki)-(?P<date>[^-]+)-pages-articles(?P<multistream>-multistream)?"
    r"(?P<part>\d+)?\.xml(?:-p\d+p\d+)?\.bz2"
)
_BZ2_STREAM_RE = re.compile(rb"BZh[1-9]")  # a bzip2 stream's header
_MAX_HEADER_CHARS = 1 << 22  # <mediawiki> and <siteinfo> are a few kB


def index_path(path: str) -> str | None:
    """The index beside a multistream dump, by Wikimedia's naming:
    `...-pages-articles-multistream.xml.bz2` ->
    `...-pages-articles-multistream-index.txt.bz2`, and for a part
    `...-multistream1.xml-p1p41242.bz2` -> `...-multistream-index1.txt-p1p41242.bz2`;
    None for any other name. Any filesystem."""
    folder, sep, name = path.rpartition("/")
    m = _MULTISTREAM_RE.fullmatch(name)
    if m is None:
        return None
    return f"{folder}{sep}{m['stem']}-index{m['part']}.txt{m['pages'] or ''}.bz2"


def is_index(path: str) -> bool:
    """Whether a file is a multistream dump's index (`...-index.txt.bz2`), never a dump."""
    return _INDEX_RE.fullmatch(posixpath.basename(path)) is not None


def select_dumps(files: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The dumps of a listing worth reading: (path, anything) pairs, order kept.

    Index files go (`is_index`). Wikimedia publishes each `pages-articles` dump
    of a database and date in up to four editions that hold the same pages: the
    combined multistream file, the combined file, the multistream parts
    (`...-multistream1.xml-p1p41242.bz2`, ...) and the parts; a mirror may hold
    several. Of the editions a listing has for one database and date, only the
    first in that order is kept: a combined file holds every page, where a
    listing of parts may be incomplete, and the multistream one can be split
    by its index. Files whose names do not follow the convention are all kept.
    """
    files = [f for f in files if not is_index(f[0])]

    def edition(path: str) -> tuple[tuple[str, str], int] | None:
        m = _DUMP_RE.fullmatch(posixpath.basename(path))
        if m is None:
            return None
        return (m["db"], m["date"]), (2 if m["part"] else 0) + (0 if m["multistream"] else 1)

    best: dict[tuple[str, str], int] = {}
    for path, _ in files:
        if found := edition(path):
            best[found[0]] = min(best.get(found[0], found[1]), found[1])
    return [f for f in files if (found := edition(f[0])) is None or found[1] == best[found[0]]]


def read_index(index: str) -> list[int]:
    """The distinct stream offsets of a multistream index (lines
    `offset:page_id:title`, bz2 or plain), sorted. Lines of another shape are
    passed over: the offsets only place span boundaries, each checked (`split`)."""
    offsets = set()
    with open_input(index) as f:
        for line in f:
            head, sep, _ = line.partition(b":")
            if sep and head.isdigit():
                offsets.add(int(head))
    return sorted(offsets)


def stream_spans(offsets: list[int], nbytes: int, split_bytes: int) -> list[tuple[int, int]]:
    """Consecutive streams grouped into (start, end) byte ranges of at least
    `split_bytes` (the last one may be less): the first starts at 0 and the last
    ends at `nbytes`, so the spans cover the file. [] when that is one span."""
    cuts = [0]
    for offset in offsets:
        if offset - cuts[-1] >= split_bytes and offset < nbytes:
            cuts.append(offset)
    spans = list(zip(cuts, [*cuts[1:], nbytes]))
    return spans if len(spans) > 1 else []


def split(path: str, nbytes: int, cfg: Any) -> list[tuple[int, int]]:
    """Spans of about `clean.split_bytes` of a multistream dump that has its
    index beside it (`index_path`, `stream_spans`); [] (read whole) for any
    other dump, or when the index does not point at bz2 streams of this file."""
    index = index_path(path)
    if index is None:
        return []
    try:
        if not exists(index):
            return []
        spans = stream_spans(read_index(index), nbytes, cfg.clean.split_bytes)
        with open_read(path) as f:
            for start, _ in spans[1:]:
                f.seek(start)
                if not _BZ2_STREAM_RE.fullmatch(f.read(4)):
                    log.warning("%s: offset %d of %s is not a bz2 stream; the dump is read whole",
                                path, start, index)
                    return []
    except (OSError, EOFError, ValueError) as e:
        log.warning("%s: its index %s cannot be read (%s); the dump is read whole", path, index, e)
        return []
    return spans


def _read_header(path: str) -> tuple[_Dump, str] | None:
    """(the dump's root xml:lang and siteinfo, the encoding of its body) from
    its first bz2 stream, where a multistream dump keeps them; None when the
    file does not start with a `<mediawiki>` root (then a span yields nothing:
    the span at byte 0 reports the file). A siteinfo that does not parse leaves
    the defaults (the span at byte 0 reports it)."""
    head, text = b"", ""
    decoder = None
    with open_read(path) as raw:
        d = bz2.BZ2Decompressor()
        while not d.eof and len(text) < _MAX_HEADER_CHARS:
            chunk = raw.read(1 << 16)
            if not chunk:
                break
            out = d.decompress(chunk)
            if decoder is None:
                head += out
                if len(head) < _HEAD_BYTES and not d.eof:
                    continue
                encoding = _dump_encoding(head)
                decoder = codecs.getincrementaldecoder(encoding)(errors="surrogateescape")
                out = head
            text += decoder.decode(out)
            if "</siteinfo>" in text or "<page>" in text:
                break
    if decoder is None:
        if not head:
            return None
        encoding = _dump_encoding(head)
        text = head.decode(encoding, errors="surrogateescape")
    dump = None
    for kind, chunk in _page_chunks(io.StringIO(text, newline=None)):  # lines as `_read_stream` cuts them
        if dump is None:
            if kind != "root" or not _ROOT_RE.match(chunk):
                break
            lang = _XML_LANG_RE.search(chunk)
            dump = _Dump(path, lang.group(1) if lang else "")
        elif kind == "siteinfo":
            try:
                dump.read_siteinfo(ET.fromstring(chunk))
            except (ET.ParseError, UnicodeError):
                pass
        elif kind != "junk":
            break
    # the body is read from inside the file: no byte-order mark there
    body = {"utf-8-sig": "utf-8", "utf-16": "utf-16-be" if head.startswith(b"\xfe\xff") else "utf-16-le"}
    return None if dump is None else (dump, body.get(encoding, encoding))


def _read_span(path: str, start: int, end: int) -> Iterator[dict[str, Any] | Skip | DeadLetter]:
    """The pages of the bz2 streams in bytes [start, end) of a dump (`split`)."""
    where = f"bytes {start}-{end}"
    try:
        header = _read_header(path) if start > 0 else None
        if start > 0 and header is None:
            return  # not a dump: the span at byte 0 says so
        raw = open_range(path, start, end)
    except (OSError, EOFError, ValueError) as e:
        yield DeadLetter(SOURCE, path, where, f"cannot read: {type(e).__name__}: {e}")
        return
    with raw, decompressing(raw, start) as stream:  # errors name offsets in the file, as a whole read's do
        yield from _read_stream(stream, path, header, to_end=raw.raw.end >= raw.raw.size,
                                last=f"before the first page of {where}")
