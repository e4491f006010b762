"""CommonCrawl reader: WARC (HTML responses -> text), WET (extracted text),
Dolma-style JSON lines, and saved HTML pages (one `.html`/`.htm` file a page).

LLaMA (2023), Section 2.1 "English CommonCrawl" starts from CommonCrawl dumps as
processed by CCNet, whose input is the WET text; this reader also accepts WARC so
that a crawl can be re-extracted (as RedPajama-V2 and FineWeb do), and Dolma's
JSON lines, the form in which several public CC extracts are released, and
pages saved as files (a mirror, or a test suite's pages): one file is one HTTP
200 HTML response without headers, so its charset and text follow the WARC rules.

Record routing (each is a Skip reason counted by the Beam layer):
  - WARC `response` with HTTP 200 and an HTML content type -> charset decoded,
    HTML converted to text -> Document;
  - WET `conversion` -> its text as is -> Document;
  - other record types (request, metadata, warcinfo, resource, revisit)
    -> Skip "record_type"; HTTP status other than 200 -> Skip "http_status";
    non-HTML payload -> Skip "non_html"; no text left -> Skip "empty";
    a response or conversion block over MAX_RECORD_BYTES -> Skip "too_large";
  - an HTML file -> Document (Skip "empty", Skip "too_large" alike).
A record that cannot be parsed -> DeadLetter with the record's offset in the
file (`WarcFramer.location`) and the reason; reading resumes at the next
record (`WarcFramer`, and `GzipMembers` for a damaged gzip member), so one bad
record never loses the rest of a file.

Decoding rule (`decode_html`): bytes the chosen charset cannot decode become
U+FFFD and are counted in meta `replacements`; a record with more than
MAX_REPLACEMENT_RATIO replacements per decoded character is a DeadLetter
"undecodable: ..." (a wrong declared charset, or a binary payload labelled as
text: its text would be noise).
"""

from __future__ import annotations

import ast
import codecs
import io
import json
import re
from collections.abc import Iterator
from typing import Any

# resiliparse for HTML: a C++ (lexbor) parser, fast and robust on broken markup,
# with a main-content extractor; it is the extractor of the ChatNoir web search
# pipeline and of FineWeb-style pipelines (DataTrove ships it).
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import detect_encoding, map_encoding_to_html5

# warcio rather than FastWARC: on the shared corpus FastWARC loses the HTTP
# headers of ClueWeb09 records (bare-LF header lines, Content-Type comes back
# None), while warcio parses them, reads WARC/0.18, strips wget's `<uri>`
# brackets and falls back to the raw body when a `Content-Encoding: gzip`
# payload is in fact stored decoded (ClueWeb). Speed is not the issue: on the
# shared corpus warcio's parsing is ~15% of this reader's time, decoding and
# HTML-to-text ~60%. warcio parses one record at a time here: where records
# begin and end is `WarcFramer`'s job, which checks every Content-Length and
# resynchronises after a bad record (warcio's iterator cannot).
from warcio.archiveiterator import ArchiveIterator

from pipeline.core.config import Config
from pipeline.core.io import open_input, open_range, open_read
from pipeline.dedup.line_keys import crawl_id
from pipeline.formats.decode import Undecodable, decode_counting, sniff_bom, sniff_wide
from pipeline.formats.errors import STREAM_ERRORS, try_open
from pipeline.formats.gzip_members import GZIP_MAGIC, GzipMembers, gzip_member_spans
from pipeline.formats.jsonl import file_name, iter_text_rows, line_id
from pipeline.formats.warc import MAX_RECORD_BYTES, PlainSegments, WarcFramer
from pipeline.sources.base import DeadLetter, Formats, Skip, make_document

SOURCE = "commoncrawl"

# MIME types whose payload is HTML (WHATWG: text/html; XHTML is parsed the same).
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})

# Bytes scanned for `<meta charset>`. The WHATWG prescan reads 1024 bytes; real
# pages put long titles and keyword lists first (ClueWeb09's EUC-JP pages), so
# a larger window is used. Detection samples the same amount.
META_SCAN_BYTES = 4096

# `<meta charset="x">` and `<meta http-equiv="Content-Type" content="...; charset=x">`.
_META_CHARSET = re.compile(
    rb"""<meta\b[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.IGNORECASE
)

_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".jsonl.bz2", ".jsonl.xz")
# A saved page, plain or compressed (`pipeline.core.io.open_input` decompresses by magic bytes).
HTML_SUFFIXES = tuple(f"{ext}{z}" for ext in (".html", ".htm", ".xhtml") for z in ("", ".gz", ".bz2", ".xz"))
# What `read` takes (`pipeline.sources.base.Formats`): by name, JSON lines and
# saved pages; WARC, WET and WAT files, any compression, are the rest
FORMATS = Formats(
    describe=("WARC, WET or WAT files (.warc, .wet, .wat; gzip, bzip2, xz), Dolma JSON lines "
              "(.jsonl, .json.gz), saved HTML pages (.html, .htm, .xhtml), one page a file"),
    names=("*.warc", "*.wet", "*.wat", *(f"*{s}" for s in _JSONL_SUFFIXES + HTML_SUFFIXES)),
)

# WARC record types that can give a document (WARC 1.1, section 6).
DOCUMENT_RECORD_TYPES = frozenset({"response", "conversion"})

# Most U+FFFD replacements per decoded character before a payload is a dead
# letter "undecodable". A stray byte costs a page a few characters (1 in 20,000
# for a 20 KB page); a page in windows-1252 or windows-1251 declared as UTF-8
# loses every accented letter (2-3% of a French page, over half of a Russian
# one), and a binary payload half its bytes. None of the 83 HTML responses of
# the shared corpus needs a single replacement.
MAX_REPLACEMENT_RATIO = 0.01



def strip_uri_brackets(uri: str) -> str:
    """`<http://a/>` -> `http://a/`: wget writes WARC-Target-URI in angle brackets
    (the WARC/1.0 grammar's `<uri>` taken literally); other writers do not."""
    uri = uri.strip()
    if uri.startswith("<") and uri.endswith(">"):
        return uri[1:-1].strip()
    return uri


def parse_content_type(value: str | None) -> tuple[str, str | None]:
    """Split an HTTP Content-Type into (lower-case MIME type, charset or None).

    `"text/html; charset=GB2312"` -> `("text/html", "GB2312")`; a missing header
    gives `("", None)`. Follows RFC 9110 8.3 (parameters after `;`, quotes allowed).
    """
    if not value:
        return "", None
    parts = value.split(";")
    mime = parts[0].strip().lower()
    charset = None
    for param in parts[1:]:
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip("\"'").strip() or None
    return mime, charset


def _codec(label: str | None) -> str | None:
    """A charset label -> the canonical name of the Python codec a browser would
    use (WHATWG mapping: gb2312 -> gbk, iso-8859-1 -> cp1252, windows-1251 ->
    cp1251), or None if the label is unknown."""
    if not label:
        return None
    name = map_encoding_to_html5(label, fallback_utf8=False)
    try:
        return codecs.lookup(name).name if name else None
    except LookupError:
        return None


def meta_charset(payload: bytes, window: int = META_SCAN_BYTES) -> str | None:
    """The charset label declared by the first `<meta charset>` or
    `<meta http-equiv="Content-Type" content="...charset=...">` in the first
    `window` bytes, or None (HTML Living Standard, "prescan a byte stream")."""
    m = _META_CHARSET.search(payload, 0, window)
    return m.group(1).decode("ascii") if m else None


def choose_charset(payload: bytes, http_charset: str | None) -> tuple[str, str]:
    """Pick the codec to decode an HTML payload, and say how it was chosen.

    Precedence (HTML Living Standard, "determining the character encoding"):
    byte-order mark > UTF-16/32 byte pattern > HTTP Content-Type charset >
    `<meta>` charset > detector (uchardet via resiliparse). The byte pattern
    (`pipeline.formats.decode.sniff_wide`: a NUL in every other byte of mostly-ASCII
    markup, two in every four for UTF-32) is evidence in the bytes, like the
    mark: no ASCII-compatible charset, which is what HTTP and `<meta>` name
    (a `<meta>` in UTF-16 cannot even be found by the byte prescan), writes
    those NULs, and the detector, seeing no declaration, takes such a page for
    windows-1252. A declared label Python cannot decode is passed over, so the
    next source decides.

    Returns: (Python codec name, one of "bom", "pattern", "http", "meta", "detector").
    """
    bom = sniff_bom(payload)
    if bom:
        return bom, "bom"
    wide = sniff_wide(payload)
    if wide:
        return wide, "pattern"
    codec = _codec(http_charset)
    if codec:
        return codec, "http"
    codec = _codec(meta_charset(payload))
    if codec:
        return codec, "meta"
    return _codec(detect_encoding(payload, max_len=META_SCAN_BYTES)) or "utf-8", "detector"


def check_replacements(text: str, replacements: int, codec: str) -> None:
    """Raise `Undecodable` if `replacements` exceed MAX_REPLACEMENT_RATIO of `text`."""
    if replacements > MAX_REPLACEMENT_RATIO * max(len(text), 1):
        raise Undecodable(
            f"{replacements} of {len(text)} characters replaced decoding as {codec} "
            f"(more than {MAX_REPLACEMENT_RATIO:.0%})"
        )


def decode_html(payload: bytes, http_charset: str | None) -> tuple[str, str, str, int]:
    """Decode an HTML payload: (text, codec, charset source, replacements).

    The codec follows `choose_charset` (BOM > byte pattern > HTTP > `<meta>` > detector).
    Bytes it cannot decode become U+FFFD, as in a browser, and are counted: a
    stray byte costs a character, not the page. Up to MAX_REPLACEMENT_RATIO
    replacements per character the text is kept (the count goes to meta
    `replacements`); beyond, the record is a dead letter.

    Raises:
        Undecodable: more than MAX_REPLACEMENT_RATIO of the characters replaced.
    """
    codec, how = choose_charset(payload, http_charset)
    text, replacements = decode_counting(payload, codec)
    check_replacements(text, replacements, codec)
    return text, codec, how, replacements


def html_to_text(html: str) -> str:
    """Visible main-content text of an HTML page (resiliparse, main_content=True:
    navigation, headers, footers and boilerplate blocks removed), stripped."""
    return extract_plain_text(html, main_content=True).strip()


def _looks_like_html(payload: bytes) -> bool:
    head = payload[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _meta(
    warc_date: str, charset: str, how: str, content_type: str, path: str, replacements: int = 0
) -> dict:
    meta = {
        "warc_date": warc_date,
        "charset": charset,
        "charset_source": how,
        "content_type": content_type,
        "replacements": replacements,
        "warc_file": file_name(path),
    }
    crawl = crawl_id(path)  # crawl-data/CC-MAIN-2024-22/...: line dedup's "dump" scope
    if crawl:
        meta["crawl"] = crawl
    return meta


def html_document(
    payload: bytes, http_charset: str | None, mime: str, url: str, native_id: str,
    warc_date: str, path: str, as_source: str = SOURCE,
) -> dict | Skip:
    """An HTML payload (a WARC response's, or a saved page's) -> Document, or
    Skip "empty" when no text is left: charset chosen by `decode_html`, text by
    `html_to_text`.

    Raises: Undecodable (see `decode_html`), or what resiliparse raises.
    """
    html, codec, how, replacements = decode_html(payload, http_charset)
    text = html_to_text(html)
    if not text:
        return Skip(as_source, "empty")
    meta = _meta(warc_date, codec, how, mime or "text/html", path, replacements)
    return make_document(as_source, native_id, text, url, meta=meta)


def _record_to_document(record: Any, path: str, as_source: str = SOURCE) -> dict | Skip:
    """One parsed warcio record -> Document or Skip (of `as_source`).

    Raises: Undecodable (see `decode_html`), or whatever a broken payload raises
    in warcio (chunked or gzip transfer coding) or resiliparse.
    """
    rec_type = record.rec_type
    headers = record.rec_headers
    url = strip_uri_brackets(headers.get_header("WARC-Target-URI") or "")
    warc_date = (headers.get_header("WARC-Date") or "").strip()
    native_id = (headers.get_header("WARC-Record-ID") or "").strip() or f"{url} {warc_date}"

    if rec_type == "conversion":  # WET: text already extracted, UTF-8 (CC WET spec)
        mime, charset = parse_content_type(headers.get_header("Content-Type"))
        codec = _codec(charset) or "utf-8"
        text, replacements = decode_counting(record.content_stream().read(), codec)
        check_replacements(text, replacements, codec)
        text = text.strip()
        if not text:
            return Skip(as_source, "empty")
        meta = _meta(warc_date, codec, "wet", mime or "text/plain", path, replacements)
        return make_document(as_source, native_id, text, url, meta=meta)

    if rec_type != "response":
        return Skip(as_source, "record_type")
    http = record.http_headers
    if http is None:  # e.g. a `dns:` response: no HTTP message at all
        return Skip(as_source, "non_html")
    if http.get_statuscode() != "200":
        return Skip(as_source, "http_status")
    mime, http_charset = parse_content_type(http.get_header("Content-Type"))
    if mime and mime not in HTML_TYPES:
        return Skip(as_source, "non_html")
    payload = record.content_stream().read()
    if not mime and not _looks_like_html(payload):
        return Skip(as_source, "non_html")
    return html_document(payload, http_charset, mime, url, native_id, warc_date, path, as_source)



def _keep_record(headers: dict[str, str]) -> bool:
    """Records whose bytes the reader needs: those that can give a document."""
    return headers.get("warc-type", "").lower() in DOCUMENT_RECORD_TYPES


def read_warc(path: str, source: Any, as_source: str = SOURCE) -> Iterator[dict | Skip | DeadLetter]:
    """Documents, skips and dead letters of one WARC or WET file.

    Args:
        path: the file's path, for dead letters and meta.
        source: its decompressed bytes in segments: `GzipMembers` for gzip,
            `PlainSegments` otherwise (see `WarcFramer`).
        as_source: the dataset the records are read for (C4 rebuilt from WET
            reads them as "c4").
    Yields: one Document, Skip or DeadLetter per record, in file order, and a
        DeadLetter where the compressed stream breaks between records.
        DeadLetter record: "offset N" (`WarcFramer.location`); reasons: a
        record shorter than its Content-Length (truncated file or gzip member:
        nothing of it becomes a document), a Content-Length that does not end
        the record (wrong length), no version line or no valid Content-Length,
        a damaged gzip member, "undecodable: ..." (see `decode_html`), or the
        error a payload raised while being parsed. Reading resumes at the next
        record each time (one bad record never loses the rest of a file); only
        a broken bzip2/xz stream ends the file.
    Raises: nothing from the data.
    """
    framer = WarcFramer(source, path, as_source)
    for item in framer.records(_keep_record):
        if isinstance(item, DeadLetter):
            yield item
            continue
        rec_type = item.headers.get("warc-type", "").lower()
        if item.raw is None:
            yield Skip(as_source, "too_large" if rec_type in DOCUMENT_RECORD_TYPES else "record_type")
            continue
        record_id = item.headers.get("warc-record-id", "")
        try:
            record = next(ArchiveIterator(io.BytesIO(item.raw)))
            yield _record_to_document(record, path, as_source)
        except Undecodable as e:
            yield framer.dead_letter(item.offset, f"undecodable: {e}; WARC-Record-ID {record_id}")
        except Exception as e:  # noqa: BLE001 (warcio or a broken payload: this record only)
            yield framer.dead_letter(item.offset, f"{type(e).__name__}: {e}; WARC-Record-ID {record_id}")


def _dolma_metadata(value: Any) -> dict:
    """Dolma's `metadata`: a JSON object, or in some releases a JSON or Python-repr
    string of one. Anything else -> {} (the text is still usable)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(value)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(parsed, dict):
                return parsed
    return {}


def read_dolma(path: str) -> Iterator[dict | Skip | DeadLetter]:
    """Dolma-format JSON lines (`id`, `text`, `metadata{warc_url, warc_date...}`):
    CC text already extracted upstream; taken as is, like a WET record.

    native_id = the row's `id`, else its URL, else `<file name>:<line>`.
    A line without a string `text` -> DeadLetter naming the line.
    """
    for item in iter_text_rows(path, SOURCE, "Dolma row without string text"):
        if isinstance(item, DeadLetter):
            yield item
            continue
        line, row, text = item
        text = text.strip()
        if not text:
            yield Skip(SOURCE, "empty")
            continue
        meta = _dolma_metadata(row.get("metadata"))
        url = str(meta.get("warc_url") or meta.get("url") or "")
        native_id = row.get("id")
        if native_id in (None, ""):
            native_id = url or line_id(path, line)
        warc_date = meta.get("warc_date") or meta.get("date_download") or row.get("created")
        content_type = str(meta.get("content_type") or "")
        doc_meta = _meta(str(warc_date or ""), "utf-8", "jsonl", content_type, path)
        yield make_document(SOURCE, str(native_id), text, url, meta=doc_meta)


def html_native_id(path: str) -> str:
    """What identifies a saved page: its folder's name and its own
    (`site/index.html`), machine independent, as a mirror keeps one page a path."""
    parts = path.rstrip("/").split("/")
    return "/".join(parts[-2:])


def read_html(path: str, as_source: str = SOURCE) -> Iterator[dict | Skip | DeadLetter]:
    """One saved HTML page (plain, gzip, bzip2 or xz) -> one Document, read as a
    WARC response without HTTP headers (`html_document`): charset from a BOM,
    the byte pattern, `<meta>` or the detector. url = the path (as for books).

    Yields: the Document; Skip "empty" (no text), Skip "too_large" (over
        MAX_RECORD_BYTES); DeadLetter (record "file") for a file that cannot be
        opened, a broken compressed stream, "undecodable: ..." or what the
        parser raised.
    """
    stream = try_open(as_source, path, open_input)
    if isinstance(stream, DeadLetter):
        yield stream
        return
    with stream:
        try:
            payload = stream.read(MAX_RECORD_BYTES + 1)
            if len(payload) <= MAX_RECORD_BYTES:
                stream.read(1)  # a compressed stream cut short raises here, not with the bytes before
        except STREAM_ERRORS as e:
            yield DeadLetter(as_source, path, "file", f"compressed stream broken: {type(e).__name__}: {e}")
            return
    if len(payload) > MAX_RECORD_BYTES:
        yield Skip(as_source, "too_large")
        return
    try:
        yield html_document(payload, None, "text/html", path, html_native_id(path), "", path, as_source)
    except Undecodable as e:
        yield DeadLetter(as_source, path, "file", f"undecodable: {e}")
    except Exception as e:  # noqa: BLE001 (resiliparse on a broken page: this page only)
        yield DeadLetter(as_source, path, "file", f"{type(e).__name__}: {e}")


def split(path: str, nbytes: int, cfg: Config) -> list[tuple[int, int]]:
    """Spans of a large gzip WARC or WET file, read by several workers: byte
    ranges of about `clean.split_bytes`, each starting at a gzip member that
    starts a WARC record (`pipeline.formats.gzip_members.gzip_member_spans`). Common
    Crawl, wget and warcio compress each record as its own member, so a span
    owns the records of the members that start in it. [] (read whole) for
    Dolma JSON lines, saved HTML pages, uncompressed, bzip2 or xz files (a
    `WARC/` line inside a payload cannot be told from a record's start without
    reading from the file's start), and a gzip file of one member."""
    if path.lower().endswith(_JSONL_SUFFIXES + HTML_SUFFIXES):
        return []
    return gzip_member_spans(path, cfg.clean.split_bytes, prefix=b"WARC/")


def read(
    path: str, cfg: Config, span: tuple[int, int] | None = None, as_source: str = SOURCE
) -> Iterator[dict | Skip | DeadLetter]:
    """Read one CommonCrawl input file: WARC or WET (any compression, WARC/1.0,
    1.1 or 0.18), by its `.jsonl*`/`.json.gz` name Dolma JSON lines, by its
    `.html`/`.htm` name (compressed or not) one saved page.

    Args:
        path: a local or Beam-filesystem path.
        cfg: the job config (nothing in it changes how a record is read).
        span: (start, end) of `split`: only the records of the gzip members
            that start in [start, end); offsets in dead letters stay the file's.
        as_source: the dataset the Documents, Skips and DeadLetters are of
            (`pipeline.sources.c4` reads web pages with this reader).
    Yields: Documents (`make_document`), `Skip(source, reason)` with the reasons
        listed in the module docstring, `DeadLetter` for unparsable records.
    Never raises: a file that cannot be opened is one DeadLetter (record "file").
    """
    if path.lower().endswith(_JSONL_SUFFIXES):
        yield from read_dolma(path)
        return
    if path.lower().endswith(HTML_SUFFIXES):
        yield from read_html(path, as_source)
        return
    if span is not None:
        raw = try_open(as_source, path, open_range, span[0])
        if isinstance(raw, DeadLetter):
            yield raw
            return
        with raw:
            yield from read_warc(path, GzipMembers(raw, base=span[0], stop=span[1]), as_source)
        return
    raw = try_open(as_source, path, open_read)
    if isinstance(raw, DeadLetter):
        yield raw
        return
    with raw:
        head = raw.read(len(GZIP_MAGIC))
        raw.seek(0)
        if head == GZIP_MAGIC:  # member by member, resuming after a damaged one
            yield from read_warc(path, GzipMembers(raw), as_source)
            return
    stream = try_open(as_source, path, open_input)  # plain, bzip2, xz
    if isinstance(stream, DeadLetter):
        yield stream
        return
    with stream:
        yield from read_warc(path, PlainSegments(stream), as_source)
