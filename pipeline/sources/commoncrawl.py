"""CommonCrawl reader: WARC (HTML responses -> text), WET (extracted text) and
Dolma-style JSON lines.

LLaMA (2023), Section 2.1 "English CommonCrawl" starts from CommonCrawl dumps as
processed by CCNet, whose input is the WET text; this reader also accepts WARC so
that a crawl can be re-extracted (as RedPajama-V2 and FineWeb do), and Dolma's
JSON lines, the form in which several public CC extracts are released.

Record routing (each is a Skip reason counted by the Beam layer):
  - WARC `response` with HTTP 200 and an HTML content type -> charset decoded,
    HTML converted to text -> Document;
  - WET `conversion` -> its text as is -> Document;
  - other record types (request, metadata, warcinfo, resource, revisit)
    -> Skip "record_type"; HTTP status other than 200 -> Skip "http_status";
    non-HTML payload -> Skip "non_html"; no text left -> Skip "empty".
A record that fails to parse -> DeadLetter naming its WARC-Record-ID, or the
byte offset (in the decompressed stream) where parsing failed.
"""

from __future__ import annotations

import ast
import codecs
import json
import re
from typing import IO, Any, Iterator

# warcio rather than FastWARC: on the shared corpus FastWARC loses the HTTP
# headers of ClueWeb09 records (bare-LF header lines, Content-Type comes back
# None), while warcio parses them, reads WARC/0.18, strips wget's `<uri>`
# brackets and falls back to the raw body when a `Content-Encoding: gzip`
# payload is in fact stored decoded (ClueWeb). Speed is not the issue: on the
# shared corpus warcio's parsing is ~15% of this reader's time, decoding and
# HTML-to-text ~60%.
from warcio.archiveiterator import ArchiveIterator

# resiliparse for HTML: a C++ (lexbor) parser, fast and robust on broken markup,
# with a main-content extractor; it is the extractor of the ChatNoir web search
# pipeline and of FineWeb-style pipelines (DataTrove ships it).
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import detect_encoding, map_encoding_to_html5

from pipeline.config import Config
from pipeline.sources.base import DeadLetter, Skip, make_document
from pipeline.io import open_input
from pipeline.sources.records import (
    STREAM_ERRORS,
    file_name,
    iter_json_lines,
    line_id,
)

SOURCE = "commoncrawl"

# MIME types whose payload is HTML (WHATWG: text/html; XHTML is parsed the same).
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})

# Bytes scanned for `<meta charset>`. The WHATWG prescan reads 1024 bytes; real
# pages put long titles and keyword lists first (ClueWeb09's EUC-JP pages), so
# a larger window is used. Detection samples the same amount.
META_SCAN_BYTES = 4096

# Byte-order marks, longest first (UTF-32 LE starts with the UTF-16 LE mark).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

# `<meta charset="x">` and `<meta http-equiv="Content-Type" content="...; charset=x">`.
_META_CHARSET = re.compile(
    rb"""<meta\b[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.IGNORECASE
)

_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".jsonl.bz2", ".jsonl.xz")


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


def sniff_bom(payload: bytes) -> str | None:
    """The codec named by a leading byte-order mark, or None (WHATWG "BOM sniff")."""
    for bom, codec in _BOMS:
        if payload.startswith(bom):
            return codec
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
    byte-order mark > HTTP Content-Type charset > `<meta>` charset > detector
    (uchardet via resiliparse). A declared label Python cannot decode is passed
    over, so the next source decides.

    Returns: (Python codec name, one of "bom", "http", "meta", "detector").
    """
    bom = sniff_bom(payload)
    if bom:
        return bom, "bom"
    codec = _codec(http_charset)
    if codec:
        return codec, "http"
    codec = _codec(meta_charset(payload))
    if codec:
        return codec, "meta"
    return _codec(detect_encoding(payload, max_len=META_SCAN_BYTES)) or "utf-8", "detector"


def decode_html(payload: bytes, http_charset: str | None) -> tuple[str, str, str]:
    """Decode an HTML payload: (text, codec, charset source).

    Undecodable bytes become U+FFFD, as in a browser; a wrong declaration costs
    a few characters, not the page. See `choose_charset` for the precedence.
    """
    codec, how = choose_charset(payload, http_charset)
    return payload.decode(codec, errors="replace"), codec, how


def html_to_text(html: str) -> str:
    """Visible main-content text of an HTML page (resiliparse, main_content=True:
    navigation, headers, footers and boilerplate blocks removed), stripped."""
    return extract_plain_text(html, main_content=True).strip()


def _looks_like_html(payload: bytes) -> bool:
    head = payload[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _meta(warc_date: str, charset: str, how: str, content_type: str, path: str) -> dict:
    return {
        "warc_date": warc_date,
        "charset": charset,
        "charset_source": how,
        "content_type": content_type,
        "warc_file": file_name(path),
    }


def _record_to_document(record: Any, path: str) -> dict | Skip:
    """One parsed warcio record -> Document or Skip (raises on a broken payload)."""
    rec_type = record.rec_type
    headers = record.rec_headers
    url = strip_uri_brackets(headers.get_header("WARC-Target-URI") or "")
    warc_date = (headers.get_header("WARC-Date") or "").strip()
    native_id = (headers.get_header("WARC-Record-ID") or "").strip() or f"{url} {warc_date}"

    if rec_type == "conversion":  # WET: text already extracted, UTF-8 (CC WET spec)
        mime, charset = parse_content_type(headers.get_header("Content-Type"))
        codec = _codec(charset) or "utf-8"
        text = record.content_stream().read().decode(codec, errors="replace").strip()
        if not text:
            return Skip(SOURCE, "empty")
        meta = _meta(warc_date, codec, "wet", mime or "text/plain", path)
        return make_document(SOURCE, native_id, text, url, meta=meta)

    if rec_type != "response":
        return Skip(SOURCE, "record_type")
    http = record.http_headers
    if http is None:  # e.g. a `dns:` response: no HTTP message at all
        return Skip(SOURCE, "non_html")
    if http.get_statuscode() != "200":
        return Skip(SOURCE, "http_status")
    mime, http_charset = parse_content_type(http.get_header("Content-Type"))
    if mime and mime not in HTML_TYPES:
        return Skip(SOURCE, "non_html")
    payload = record.content_stream().read()
    if not mime and not _looks_like_html(payload):
        return Skip(SOURCE, "non_html")
    html, codec, how = decode_html(payload, http_charset)
    text = html_to_text(html)
    if not text:
        return Skip(SOURCE, "empty")
    meta = _meta(warc_date, codec, how, mime or "text/html", path)
    return make_document(SOURCE, native_id, text, url, meta=meta)


class _GuardedStream:
    """A decompressed input whose read errors end the stream and are remembered.

    warcio takes EOFError (what a truncated gzip raises) for a clean end of
    file, which would drop the rest of a damaged file silently; behind this
    guard warcio sees the end of the stream and the reader reports the error.
    """

    def __init__(self, stream: IO[bytes]):
        self.stream = stream
        self.offset = 0
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        if self.error is not None:
            return b""
        try:
            data = self.stream.read(size)
        except STREAM_ERRORS as e:
            self.error = e
            return b""
        self.offset += len(data)
        return data

    def tell(self) -> int:
        return self.offset


def _missing_bytes(record: Any) -> int:
    """Read a record to its end; bytes its Content-Length promised but the file
    did not hold (0 for a complete record, or when the length is unknown)."""
    stream = record.raw_stream
    while stream.read(1 << 16):
        pass
    return max(getattr(stream, "limit", 0), 0)


def read_warc(path: str, stream: IO[bytes]) -> Iterator[dict | Skip | DeadLetter]:
    """Documents, skips and dead letters of one WARC or WET stream (decompressed).

    Dead letters: a record whose payload fails to decode (record = its
    WARC-Record-ID; reading goes on); a record shorter than its Content-Length
    (truncated file, or a wrong length that swallowed the records after it);
    a record whose headers cannot be parsed, or a compressed stream that breaks
    (record = byte offset in the decompressed stream; the record boundary is
    lost, so the rest of the file is not read, and the reason says so).
    """
    guard = _GuardedStream(stream)
    records = ArchiveIterator(guard)
    while True:
        try:
            record = next(records)
        except StopIteration:
            break
        except Exception as e:  # warcio raises bare Exception subclasses
            yield DeadLetter(
                SOURCE, path, f"offset {records.offset}",
                f"unparsable WARC record, rest of file lost: {type(e).__name__}: {e}",
            )
            return
        record_id = record.rec_headers.get_header("WARC-Record-ID") or f"offset {records.offset}"
        try:
            result = _record_to_document(record, path)
            missing = _missing_bytes(record)
        except Exception as e:  # a broken payload must not end the shard's job
            yield DeadLetter(SOURCE, path, record_id, f"{type(e).__name__}: {e}")
            continue
        if missing:
            yield DeadLetter(
                SOURCE, path, record_id,
                f"record {missing} bytes shorter than its Content-Length "
                "(truncated file, or a wrong length that hides the records after it)",
            )
            continue
        yield result
    if guard.error is not None:
        yield DeadLetter(
            SOURCE, path, f"offset {guard.offset}",
            f"compressed stream broken, rest of file lost: "
            f"{type(guard.error).__name__}: {guard.error}",
        )


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
    for item in iter_json_lines(path, SOURCE):
        if isinstance(item, DeadLetter):
            yield item
            continue
        line, row = item
        text = row.get("text")
        if not isinstance(text, str):
            yield DeadLetter(SOURCE, path, f"line {line}", "Dolma row without string text")
            continue
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


def read(path: str, cfg: Config) -> Iterator[dict | Skip | DeadLetter]:
    """Read one CommonCrawl input file: WARC or WET (any compression, WARC/1.0,
    1.1 or 0.18) or, by its `.jsonl*`/`.json.gz` name, Dolma JSON lines.

    Args:
        path: a local or Beam-filesystem path.
        cfg: the job config (nothing in it changes how a record is read).
    Yields: Documents (`make_document`), `Skip(source, reason)` with the reasons
        listed in the module docstring, `DeadLetter` for unparsable records.
    Never raises: a file that cannot be opened is one DeadLetter (record "file").
    """
    if path.lower().endswith(_JSONL_SUFFIXES):
        yield from read_dolma(path)
        return
    try:
        stream = open_input(path)
    except (OSError, ValueError) as e:
        yield DeadLetter(SOURCE, path, "file", f"cannot open: {type(e).__name__}: {e}")
        return
    with stream:
        yield from read_warc(path, stream)
