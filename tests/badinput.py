"""A corpus of bad inputs for every source, cut from real content at test time.

Nothing here is committed as data: `write_corpus` takes the demo inputs (a web
crawl's WARC, a GitHub table export, Wikipedia dumps, Project Gutenberg books)
and writes, under `<root>/<source>/`, one or more files per case, each damaged
the way real data is: compressed files cut or corrupted mid-stream, bytes that
are not UTF-8, UTF-16 without a byte-order mark, lone surrogates, NUL and other
control characters, empty files and records, JSON lines of the wrong shape, a
wrong WARC Content-Length, unsafe archive members and links, XML entity bombs
and external entities, a dump cut mid-page, and so on. The containers of the
three sources without a demo input (C4 JSON lines, arXiv LaTeX, StackExchange
`Posts.xml`) are built here around the same real prose.

Each case is a function `(m, c) -> Expect` of the `Material` and its `Place`: it
writes only entries named after itself in its source's folder (`Place.path`) and
says what the clean job must make of them (`Expect`): how many records it
holds, how many Documents the readers yield, the skips by reason and the dead
letters. A compressed stream damaged mid-file counts as the records decoded
before the damage plus one: the lost rest, which one dead letter reports.

Whatever a case holds from outside the input folder (a symbolic link, an XML
external entity) points at `secret_path(outside)`, a file whose text,
`CANARY`, must never appear in any output.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import re
import tarfile
import textwrap
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import NamedTuple

CANARY = "CANARY-5e0c1d7a: text from outside the input folder"
PROSE_PER_CASE = 6  # passages of real prose each case gets to itself


# --------------------------------------------------------------------------
# What a case says about itself


@dataclass(frozen=True)
class Expect:
    """What the clean job must make of one case."""

    records: int  # record units: a row, WARC record, page, book, paper, file, question with its answers
    docs: int  # Documents the readers yield (counter docs_read)
    skips: dict[str, int] = field(default_factory=dict)  # Skip reasons (counters skip.<reason>)
    dead: int = 0  # dead letters naming the case's files
    notices: int = 0  # of those, the ones that report damage after a record still read whole or in part
    counts: dict[str, int] = field(default_factory=dict)  # other counters readers add (arXiv input_missing)

    def balanced(self) -> bool:
        """Every record is a Document, a skip or a dead letter, exactly once."""
        return self.records == self.docs + sum(self.skips.values()) + self.dead - self.notices


class Case(NamedTuple):
    source: str
    name: str
    doc: str  # the damage it models (the function's docstring)
    entries: tuple[str, ...]  # what it wrote in its source's folder
    expect: Expect


def tally(outcomes: list[str], dead: int = 0) -> Expect:
    """An Expect from one outcome per record: "doc", "dead" or a skip reason;
    `dead` more records lost to damage, each reported by one dead letter."""
    kinds = Counter(outcomes)
    docs, n_dead = kinds.pop("doc", 0), kinds.pop("dead", 0)
    return Expect(len(outcomes) + dead, docs, dict(kinds), n_dead + dead)


# --------------------------------------------------------------------------
# Real content


class Material(NamedTuple):
    """Real content the cases are cut from (the demo inputs)."""

    warc: tuple[bytes, ...]  # the crawl's WARC records, one per gzip member of at.warc.gz
    html: bytes  # the crawl's one HTML page (HTTP chunking undone)
    web_text: tuple[str, ...]  # that page's text blocks of 80 characters or more
    prose: tuple[str, ...]  # passages of Alice in Wonderland and Paradise Lost
    verse: tuple[str, ...]  # the lines of Paradise Lost
    code: tuple[dict, ...]  # GitHub rows of kept licences that pass the file heuristics clearly
    license_row: dict  # a real MIT LICENSE row
    wiki_head: str  # an English dump's root element and siteinfo
    wiki_pages: tuple[str, ...]  # its article pages (<page>...</page> lines) with prose
    wiki_redirect: str  # one of its redirect pages
    binary: bytes  # a real binary file (the fastText model)


class _Text(HTMLParser):
    """Text blocks of an HTML page, outside script and style (stdlib only)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style")

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.blocks.append(" ".join(data.split()))


def _members(data: bytes) -> list[bytes]:
    """The decompressed gzip members of a multi-member file."""
    out = []
    while data:
        d = zlib.decompressobj(31)
        out.append(d.decompress(data))
        data = d.unused_data
    return out


def _dechunk(body: bytes) -> bytes:
    """An HTTP/1.1 chunked body, joined."""
    out, pos = [], 0
    while True:
        eol = body.index(b"\r\n", pos)
        size = int(body[pos:eol].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(body[eol + 2 : eol + 2 + size])
        pos = eol + 2 + size + 2


def _passages(alice: str, paradise: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", alice)]
    paragraphs = [p for p in paragraphs if len(p) >= 200]
    verse = [line.strip() for line in paradise.splitlines()]
    start = next(i for i, line in enumerate(verse) if line.startswith("Of Man's first disobedience"))
    verse = [line for line in verse[start:] if line]
    stanzas = ["\n".join(verse[i : i + 24]) for i in range(0, len(verse) - 24, 24)]
    prose = [p for pair in zip(paragraphs, stanzas) for p in pair]
    return tuple(prose), tuple(verse)


def _clear_code(row: dict) -> bool:
    """A Python file of a kept licence, far inside every GitHub file heuristic."""
    text = row["content"]
    lines = text.splitlines()
    if row["license"] not in ("MIT", "BSD-3-Clause", "Apache-2.0") or not row["path"].endswith(".py"):
        return False
    if not 1500 <= len(text) <= 12000 or not text.isascii() or "\x00" in text or "\x0c" in text:
        return False
    letters = sum(ch.isalpha() for ch in text)
    return (max(map(len, lines)) <= 120 and len(text) / len(lines) <= 60
            and sum(ch.isalnum() for ch in text) >= 0.5 * len(text) and letters >= 3 * len(text.split()))


def _has_prose(page: str) -> bool:
    text = re.search(r"<text[^>]*>(.*?)</text>", page, re.DOTALL)
    return bool(text) and any(
        len(line) >= 200 and (line[0].isalpha() or line.startswith("'''")) for line in text.group(1).split("\n"))


def load_material(demo: Mapping[str, Path]) -> Material:
    """The real content of the demo inputs (`tests.conftest.demo_inputs`)."""
    warc = tuple(_members(demo["inputs/commoncrawl/at.warc.gz"].read_bytes()))
    page = next(r for r in warc if b"\r\nHTTP/1.1 200 OK\r\n" in r)
    http = page.split(b"\r\n\r\n", 1)[1]
    html = _dechunk(http.split(b"\r\n\r\n", 1)[1])
    parser = _Text()
    parser.feed(html.decode("utf-8"))
    web_text = tuple(b for b in parser.blocks if len(b) >= 80)
    books = {name: demo[f"inputs/books/{name}"].read_text("utf-8") for name in ("alice29.txt", "plrabn12.txt")}
    prose, verse = _passages(books["alice29.txt"], books["plrabn12.txt"])
    with gzip.open(demo["inputs/github/site-packages.jsonl.gz"], "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    code = tuple(r for r in rows if _clear_code(r))
    license_row = next(r for r in rows if r["license"] == "MIT" and r["path"].endswith("/LICENSE")
                       and r["content"].startswith("The MIT License"))
    wiki = bz2.decompress(demo[
        "inputs/wikipedia/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"].read_bytes()).decode()
    pages = re.findall(r"  <page>\n.*?\n  </page>\n", wiki, re.DOTALL)
    articles = tuple(p for p in pages if "<ns>0</ns>" in p and "<redirect" not in p
                     and 2000 <= len(p.encode()) <= 30000 and _has_prose(p))
    redirect = next(p for p in pages if "<ns>0</ns>" in p and "<redirect" in p)
    binary = demo["models/lid.176.ftz"].read_bytes()[: 1 << 15]
    return Material(warc, html, web_text, prose, verse, code, license_row,
                    wiki[: wiki.index("  <page>\n")], articles, redirect, binary)


# --------------------------------------------------------------------------
# Containers and damage


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def bz(data: bytes, level: int = 9) -> bytes:
    return bz2.compress(data, level)


def xz(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ)


_DECODERS = {
    b"\x1f\x8b": (lambda: zlib.decompressobj(31), zlib.error),
    b"BZh": (bz2.BZ2Decompressor, OSError),
    b"\xfd7zXZ": (lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ), lzma.LZMAError),
}


def decodable(data: bytes) -> bytes:
    """What the standard library decodes of compressed streams one after the
    other before the input ends or breaks: the reader's share of a damaged file."""
    out = []
    while data:
        new, error = next(v for magic, v in _DECODERS.items() if data.startswith(magic))
        d = new()
        try:
            out.append(d.decompress(data))
        except error:
            break
        if not d.eof:
            break
        data = d.unused_data
    return b"".join(out)


def cut(data: bytes, share: float) -> bytes:
    """The first `share` of the bytes: a download or copy that stopped."""
    return data[: int(len(data) * share)]


def _deflate_start(member: bytes) -> int:
    """Offset of a gzip member's deflate data (RFC 1952 header fields skipped)."""
    flags, pos = member[3], 10
    if flags & 4:
        pos += 2 + int.from_bytes(member[pos : pos + 2], "little")
    for bit in (8, 16):
        if flags & bit:
            pos = member.index(b"\x00", pos) + 1
    return pos + 2 * bool(flags & 2)


def broken(stream: bytes) -> bytes:
    """One compressed stream with its first block spoiled, so that it decodes
    to nothing: a deflate block of the reserved type, a bzip2 block whose magic
    is gone, an xz block header that fails its CRC. Checked with the standard
    library."""
    data = bytearray(stream)
    if stream.startswith(b"\x1f\x8b"):
        data[_deflate_start(stream)] = 0xFF  # BFINAL 1, BTYPE 11: reserved
    elif stream.startswith(b"BZh"):
        data[4:10] = bytes(6)  # the block magic 0x314159265359
    else:
        data[13] ^= 0xFF  # the block header's flags: its CRC-32 no longer matches
    new, error = next(v for magic, v in _DECODERS.items() if stream.startswith(magic))
    try:
        new().decompress(bytes(data))
    except error:
        return bytes(data)
    raise AssertionError("the spoiled stream still decodes")


def corrupted_mid(stream: bytes) -> bytes:
    """A gzip stream with bytes flipped in the middle of its deflate data,
    where the decoder finds an error (bad code or CRC), not a shorter file."""
    for pos in range(len(stream) // 2, len(stream) - 16, 97):
        data = bytearray(stream)
        for i in range(pos, pos + 8):
            data[i] ^= 0x5A
        d = zlib.decompressobj(31)
        try:
            d.decompress(bytes(data))
        except zlib.error:
            return bytes(data)
    raise AssertionError("no corruption the decoder notices")


def spoiled(data: bytes, old: bytes, new: bytes) -> bytes:
    """`data` with its first `old` replaced by `new` (which must be there)."""
    assert old in data, old
    return data.replace(old, new, 1)


def utf16_no_bom(text: str) -> bytes:
    return text.encode("utf-16-le")


def with_controls(text: str) -> str:
    """A text with the control characters real files carry: a NUL, an ANSI
    colour escape, a bell, a backspace, a vertical tab, a form feed, DEL."""
    words = text.split(" ")
    at = len(words) // 2
    return " ".join(words[:at] + ["\x1b[1;31mNOTE\x1b[0m\x07 over\x08\x08\x08\x08 \x0b\x0c\x00\x7f"] + words[at:])


def curly(text: str) -> str:
    """Typographic quotes, as current Gutenberg UTF-8 books have them."""
    return text.replace("`", "\u2018").replace("'", "\u2019")


def wrap(passages: tuple[str, ...] | list[str]) -> str:
    return "\n\n".join(textwrap.fill(p, 72) if "\n" not in p else p for p in passages) + "\n"


def record_id(c: Place, i: int) -> str:
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{c.name}/{i}')}>"


def warc_record(kind: str, rid: str, block: bytes, url: str = "", content_type: str = "",
                length: int | None = None) -> bytes:
    """A WARC/1.0 record (ISO 28500): version, headers, block, CRLF CRLF."""
    headers = [("WARC-Type", kind), ("WARC-Record-ID", rid), ("WARC-Date", "2013-04-09T00:11:14Z")]
    headers += [("WARC-Target-URI", url)] if url else []
    headers += [("Content-Type", content_type)] if content_type else []
    headers += [("Content-Length", str(len(block) if length is None else length))]
    head = "WARC/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode() + block + b"\r\n\r\n"


def http_response(payload: bytes, content_type: str, status: str = "200 OK") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload


def warc_outcome(record: bytes) -> str:
    """What the crawl's own records are: a page ("doc"), a redirect
    ("http_status"), or a record of another type ("record_type")."""
    head, block = record.split(b"\r\n\r\n", 1)
    kind = re.search(rb"\r\nWARC-Type: (\w+)", head).group(1)
    if kind != b"response":
        return "record_type"
    return "doc" if block.startswith(b"HTTP/1.1 200 ") else "http_status"


def set_content_length(record: bytes, delta: int) -> bytes:
    head, rest = record.split(b"\r\n\r\n", 1)
    n = int(re.search(rb"\r\nContent-Length: (\d+)", head).group(1))
    return head.replace(b"Content-Length: %d" % n, b"Content-Length: %d" % (n + delta)) + b"\r\n\r\n" + rest


def complete_records(records: list[bytes], prefix: int) -> int:
    """How many WARC records lie whole (to the end of their block) in the first
    `prefix` bytes of their concatenation."""
    end = n = 0
    for rec in records:
        end += len(rec)
        if end - 4 > prefix:
            break
        n += 1
    return n


def jsonl(rows: list) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def latex(title: str, sections: list[tuple[str, list[str]]], preamble: str = "", tail: str = "") -> str:
    """An article: class, preamble, title, sections of escaped prose, bibliography."""
    def tex(text: str) -> str:
        return re.sub(r"([%$&#_{}])", r"\\\1", text).replace("~", r"\~{}").replace("^", r"\^{}")

    body = "".join(f"\\section{{{tex(head)}}}\n" + "\n\n".join(tex(p) for p in paras) + "\n\n"
                   for head, paras in sections)
    return ("\\documentclass{article}\n\\usepackage{amsmath}\n" + preamble
            + f"\\title{{{tex(title)}}}\n\\begin{{document}}\n\\maketitle\n" + body + tail
            + "\\bibliographystyle{plain}\n\\bibliography{refs}\n\\end{document}\n")


def tar_bytes(members: list[tuple[str, bytes | str]], mode: str = "w:gz") -> bytes:
    """A tar of (name, bytes) files and (name, "->target") symbolic links."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data.removeprefix("->")
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return gz(buf.getvalue()) if mode == "w:gz" else buf.getvalue()


def post_row(attrs: dict[str, object]) -> bytes:
    """A `<row .../>` line of a data-dump Posts.xml (newlines escaped as the dump does)."""
    def value(v: object) -> str:
        return escape(str(v), quote=True).replace("\r", "&#xD;").replace("\n", "&#xA;")

    return ("  <row " + " ".join(f'{k}="{value(v)}"' for k, v in attrs.items()) + " />\n").encode()


def posts_xml(rows: list[bytes]) -> bytes:
    return b'<?xml version="1.0" encoding="utf-8"?>\n<posts>\n' + b"".join(rows) + b"</posts>\n"


def question(i: int, title: str, body: str, score: int = 5, **extra) -> bytes:
    return post_row({"Id": i, "PostTypeId": 1, "Score": score, "Title": title,
                     "Body": f"<p>{escape(body)}</p>", "Tags": "<reading><style>", **extra})


def answer(i: int, parent: int, body: str, score: int = 1) -> bytes:
    return post_row({"Id": i, "PostTypeId": 2, "ParentId": parent, "Score": score,
                     "Body": f"<p>{escape(body)}</p>"})


def billion_laughs(root: str, secret: Path) -> str:
    """A DOCTYPE whose entities expand to 10^9 "lol"s, and an external entity
    that names a file outside the input folder."""
    lines = [f"<!DOCTYPE {root} [", ' <!ENTITY lol "lol">']
    lines += [f' <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10)]
    lines += [f' <!ENTITY xxe SYSTEM "file://{secret}">', "]>"]
    return "\n".join(lines) + "\n"


def secret_path(outside: Path) -> Path:
    return outside / "secret.txt"


# --------------------------------------------------------------------------
# The cases


class Place(NamedTuple):
    path: Path  # the source's folder of the corpus
    name: str  # the case's name: every entry it writes there starts with it
    prose: tuple[str, ...]  # passages of real prose for this case alone
    outside: Path  # a folder outside the input folder, holding `secret_path(outside)`


CASES: dict[str, tuple[str, Callable[[Material, Place], Expect]]] = {}


def case(source: str):
    def register(fn: Callable[[Material, Place], Expect]):
        CASES[fn.__name__] = (source, fn)
        return fn

    return register


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# -- commoncrawl -----------------------------------------------------------


@case("commoncrawl")
def cc_wrong_content_length(m: Material, c: Place) -> Expect:
    """An uncompressed WARC whose redirect's Content-Length is 10 too long and page's 7 too short."""
    records = list(m.warc)
    outcomes = [warc_outcome(r) for r in records]
    redirect, page = outcomes.index("http_status"), outcomes.index("doc")
    records[redirect] = set_content_length(records[redirect], +10)
    records[page] = set_content_length(records[page], -7)
    outcomes[redirect] = outcomes[page] = "dead"
    _write(c.path / f"{c.name}.warc", b"".join(records))
    return tally(outcomes)


@case("commoncrawl")
def cc_gz_truncated(m: Material, c: Place) -> Expect:
    """A per-record gzip WARC cut in the middle of the page's member."""
    members = [gz(r) for r in m.warc]
    page = [warc_outcome(r) for r in m.warc].index("doc")
    at = sum(map(len, members[:page])) + len(members[page]) // 2
    _write(c.path / f"{c.name}.warc.gz", b"".join(members)[:at])
    return tally([warc_outcome(r) for r in m.warc[:page]], dead=1)


@case("commoncrawl")
def cc_gz_corrupt_member(m: Material, c: Place) -> Expect:
    """A per-record gzip WARC whose redirect's member has a corrupt deflate block."""
    outcomes = [warc_outcome(r) for r in m.warc]
    bad = outcomes.index("http_status")
    members = [gz(r) for r in m.warc]
    members[bad] = broken(members[bad])
    outcomes[bad] = "dead"
    _write(c.path / f"{c.name}.warc.gz", b"".join(members))
    return tally(outcomes)


@case("commoncrawl")
def cc_bz2_corrupt_stream(m: Material, c: Place) -> Expect:
    """A WARC in two bzip2 streams (pbzip2-style) whose second stream's block is corrupt."""
    page = [warc_outcome(r) for r in m.warc].index("doc")
    first, second = b"".join(m.warc[: page + 1]), b"".join(m.warc[page + 1 :])
    _write(c.path / f"{c.name}.warc.bz2", bz(first) + broken(bz(second)))
    return tally([warc_outcome(r) for r in m.warc[: page + 1]], dead=1)


@case("commoncrawl")
def cc_xz_truncated(m: Material, c: Place) -> Expect:
    """An xz-compressed WARC cut at 60% of its bytes."""
    data = cut(xz(b"".join(m.warc)), 0.6)
    _write(c.path / f"{c.name}.warc.xz", data)
    whole = complete_records(list(m.warc), len(decodable(data)))
    return tally([warc_outcome(r) for r in m.warc[:whole]], dead=1)


@case("commoncrawl")
def cc_wet_damaged(m: Material, c: Place) -> Expect:
    """WET records: bad UTF-8 bytes, zero length, control characters, UTF-16 without BOM, a huge line, a repeat."""
    p = c.prose
    url = "http://www.archiveteam.org/index.php?title=Main_Page"
    conv = "text/plain"
    long_text = "\n".join(m.verse[6000:6200]).encode()
    few_bad = long_text[:3000] + b"\xff" + long_text[3000:6000] + b"\xed\xa0\xbd" + long_text[6000:]
    short_bad = p[1][:250].encode() + b"\xe9" + p[1][250:500].encode()  # one Latin-1 byte in a short page
    noise = bytes(b if i % 20 else 0xFF for i, b in enumerate(p[2].encode()))  # 5% bad bytes
    blocks: list[tuple[str, bytes, str]] = [
        ("warcinfo", b"software: bad-input corpus\r\nformat: WARC File Format 1.0\r\n", "skip:record_type"),
        ("conversion", "\n".join(m.web_text[:10]).encode(), "doc"),
        ("conversion", few_bad, "doc"),
        ("conversion", b"", "skip:empty"),
        ("conversion", with_controls(p[0]).encode(), "doc"),
        ("conversion", utf16_no_bom(p[3] + "\n" + p[4]), "doc"),
        ("conversion", " ".join(m.verse[7000:9000]).encode(), "doc"),
        ("conversion", short_bad, "doc"),
        ("conversion", noise, "dead"),
    ]
    records = [warc_record(kind, record_id(c, i), block, "" if kind == "warcinfo" else f"{url}&v={i}",
                           "application/warc-fields" if kind == "warcinfo" else conv)
               for i, (kind, block, _) in enumerate(blocks)]
    records.append(records[1])  # the same record twice (a crawl retried)
    outcomes = [o.removeprefix("skip:") for _, _, o in blocks] + ["doc"]
    _write(c.path / f"{c.name}.warc.wet.gz", b"".join(gz(r) for r in records))
    return tally(outcomes)


@case("commoncrawl")
def cc_html_encodings(m: Material, c: Place) -> Expect:
    """HTML responses: UTF-16 without BOM under a UTF-8 header, control bytes, a 404, an image."""
    base = "http://www.archiveteam.org/index.php?title="
    html = m.html.decode("utf-8")
    pieces = [
        (http_response(m.html, "text/html; charset=utf-8"), "doc"),
        (http_response(utf16_no_bom(html.replace("Archive Team", "Archive Team (UTF-16)")),
                       "text/html; charset=utf-8"), "doc"),
        (http_response(html.replace("HISTORY IS OUR FUTURE", "HISTORY\x00 IS\x07 OUR\x1b[0m FUTURE\x0c")
                       .encode(), "text/html; charset=utf-8"), "doc"),
        (http_response(b"<html><body>Not Found</body></html>", "text/html", "404 Not Found"), "http_status"),
        (http_response(m.binary[:2048], "image/png"), "non_html"),
    ]
    records = [warc_record("request", record_id(c, 99), b"GET / HTTP/1.1\r\n\r\n", base + "x",
                           "application/http;msgtype=request")]
    records += [warc_record("response", record_id(c, i), block, f"{base}Page_{i}",
                            "application/http;msgtype=response") for i, (block, _) in enumerate(pieces)]
    _write(c.path / f"{c.name}.warc.gz", b"".join(gz(r) for r in records))
    return tally(["record_type"] + [o for _, o in pieces])


@case("commoncrawl")
def cc_dolma_rows(m: Material, c: Place) -> Expect:
    """Dolma JSON lines: wrong shapes, a lone surrogate, control characters, bad UTF-8, a cut line, a repeat."""
    p = c.prose
    meta = {"warc_url": "http://www.archiveteam.org/", "warc_date": "2013-04-09T00:11:14Z"}
    rows = [
        (json.dumps({"id": f"{c.name}-1", "text": p[0], "metadata": meta}).encode(), "doc"),
        (b'["not", "an", "object"]', "dead"),
        (json.dumps({"id": f"{c.name}-3", "metadata": meta}).encode(), "dead"),
        (json.dumps({"id": f"{c.name}-4", "text": 42}).encode(), "dead"),
        (json.dumps({"id": f"{c.name}-5", "text": ""}).encode(), "empty"),
        (json.dumps({"id": f"{c.name}-6", "text": "\n".join(m.verse[5000:5040]) + " \ud83d"}).encode(), "doc"),
        (json.dumps({"id": f"{c.name}-7", "text": with_controls(p[2])}).encode(), "doc"),
        (json.dumps({"id": f"{c.name}-8", "text": p[3], "metadata": repr(meta)}).encode(), "doc"),
        (json.dumps({"id": f"{c.name}-1", "text": p[0], "metadata": meta}).encode(), "doc"),
        (spoiled(json.dumps({"id": f"{c.name}-10", "text": p[4]}).encode(), b"the", b"th\xe9"), "dead"),
        (b'{"id": "cut", "text": "' + " ".join(p[5].split())[:60].encode(), "dead"),
    ]
    data = b"\n".join(r for r, _ in rows[:5]) + b"\n\n" + b"\n".join(r for r, _ in rows[5:]) + b"\n"
    _write(c.path / f"{c.name}.jsonl", data)
    return tally([o for _, o in rows])


@case("commoncrawl")
def cc_dolma_gz_truncated(m: Material, c: Place) -> Expect:
    """Dolma JSON lines, gzip, cut at 70%."""
    data = cut(gz(jsonl([{"id": f"{c.name}-{i}", "text": t} for i, t in enumerate(c.prose)])), 0.7)
    _write(c.path / f"{c.name}.jsonl.gz", data)
    return tally(["doc"] * decodable(data).count(b"\n"), dead=1)


@case("commoncrawl")
def cc_empty(m: Material, c: Place) -> Expect:
    """An empty .warc.gz (a crawler killed before its first record)."""
    _write(c.path / f"{c.name}.warc.gz", b"")
    return tally([])


# -- c4 --------------------------------------------------------------------


def sentences(*passages: str) -> str:
    """Prose one sentence a line, as C4's pages are after its line rules."""
    found = re.findall(r"[A-Z][^.!?]*[.!?]", " ".join(" ".join(p.split()) for p in passages))
    return "\n".join(s for s in found if len(s.split()) >= 5)


def c4_row(c: Place, i: int, text: object, **extra) -> dict:
    return {"text": text, "timestamp": "2019-04-25T12:57:54Z", "url": f"https://example.org/{c.name}/{i}", **extra}


@case("c4")
def c4_rows(m: Material, c: Place) -> Expect:
    """C4 JSON lines of the wrong shape, with a lone surrogate, control characters, bad UTF-8, a repeat."""
    p = c.prose
    no_url = {"text": sentences(p[4], p[5]), "id": f"{c.name}-paloma"}
    rows = [
        (json.dumps(c4_row(c, 1, sentences(p[0], p[1]))).encode(), "doc"),
        (json.dumps(c4_row(c, 2, sentences(p[2]))).encode(), "doc"),
        (json.dumps(c4_row(c, 3, sentences(p[3]))).encode(), "doc"),
        (b'"just a string"', "dead"),
        (json.dumps({"url": "https://example.org/no-text", "timestamp": "2019"}).encode(), "dead"),
        (json.dumps(c4_row(c, 6, ["a", "list"])).encode(), "dead"),
        (json.dumps(c4_row(c, 7, "   ")).encode(), "empty"),
        (json.dumps(c4_row(c, 8, sentences(*m.verse[5000:5060]) + " \ud83d")).encode(), "doc"),
        (json.dumps(c4_row(c, 9, with_controls(sentences(*m.verse[5100:5160])))).encode(), "doc"),
        (spoiled(json.dumps(c4_row(c, 10, p[3])).encode(), b"the", b"\xff\xfe"), "dead"),
        (json.dumps(c4_row(c, 1, sentences(p[0], p[1]))).encode(), "doc"),
        (json.dumps(no_url).encode(), "doc"),
    ]
    data = b"\n".join(r for r, _ in rows[:6]) + b"\n\n\n" + b"\n".join(r for r, _ in rows[6:]) + b"\n"
    _write(c.path / f"{c.name}.json", data)
    return tally([o for _, o in rows])


@case("c4")
def c4_gz_truncated(m: Material, c: Place) -> Expect:
    """A released c4-*.json.gz cut at 55% (an interrupted download)."""
    data = cut(gz(jsonl([c4_row(c, i, t) for i, t in enumerate(c.prose)])), 0.55)
    _write(c.path / f"{c.name}.json.gz", data)
    return tally(["doc"] * decodable(data).count(b"\n"), dead=1)


@case("c4")
def c4_gz_member_corrupt(m: Material, c: Place) -> Expect:
    """Two gzip files concatenated (cat a.gz b.gz) whose second member is corrupt."""
    rows = [c4_row(c, i, t) for i, t in enumerate(c.prose)]
    _write(c.path / f"{c.name}.json.gz", gz(jsonl(rows[:4])) + broken(gz(jsonl(rows[4:]))))
    return tally(["doc"] * 4, dead=1)


@case("c4")
def c4_bz2_stream_corrupt(m: Material, c: Place) -> Expect:
    """JSON lines in two bzip2 streams whose second stream's block is corrupt."""
    rows = [c4_row(c, i, t) for i, t in enumerate(c.prose)]
    _write(c.path / f"{c.name}.json.bz2", bz(jsonl(rows[:3])) + broken(bz(jsonl(rows[3:]))))
    return tally(["doc"] * 3, dead=1)


@case("c4")
def c4_xz_truncated(m: Material, c: Place) -> Expect:
    """JSON lines, xz, cut at 65%."""
    data = cut(xz(jsonl([c4_row(c, i, t) for i, t in enumerate(c.prose)])), 0.65)
    _write(c.path / f"{c.name}.json.xz", data)
    return tally(["doc"] * decodable(data).count(b"\n"), dead=1)


@case("c4")
def c4_utf16_no_bom(m: Material, c: Place) -> Expect:
    """JSON lines saved as UTF-16 (little-endian) without a byte-order mark."""
    rows = [c4_row(c, i, t) for i, t in enumerate(c.prose[:4])]
    _write(c.path / f"{c.name}.json", utf16_no_bom(jsonl(rows).decode()))
    # Cut at each 0x0A byte, the first line has an odd length (not UTF-16), the
    # next ones start with the NUL of the newline before and read as UTF-16-BE
    # JSON (json.loads detects it), and the last NUL is a line of its own.
    return tally(["dead"] + ["doc"] * 3 + ["dead"])


@case("c4")
def c4_huge_line(m: Material, c: Place) -> Expect:
    """A page of 300 KB on one line, beside an ordinary one."""
    huge = " ".join(m.verse[:9000])[:300_000]
    _write(c.path / f"{c.name}.json", jsonl([c4_row(c, 1, huge), c4_row(c, 2, c.prose[0])]))
    return tally(["doc", "doc"])


@case("c4")
def c4_empty(m: Material, c: Place) -> Expect:
    """An empty .json.gz (a file created, never written)."""
    _write(c.path / f"{c.name}.json.gz", b"")
    return tally([])


# -- github ----------------------------------------------------------------


def gh_rows_for(m: Material, c: Place, n: int, offset: int) -> list[dict]:
    rows = [dict(m.code[(offset + i) % len(m.code)]) for i in range(n)]
    return [{**r, "repo_name": f"{c.name}-{r['repo_name']}"} for r in rows]


@case("github")
def gh_rows(m: Material, c: Place) -> Expect:
    """Table rows of the wrong shape, binary, bad UTF-8, a lone surrogate, control characters, a repeat."""
    good = gh_rows_for(m, c, 7, 0)
    base = good[0]
    rows = [(json.dumps(r).encode(), "doc") for r in good[:4]] + [
        (b"[1, 2, 3]", "dead"),
        (json.dumps({**base, "repo_name": None, "path": "x.py"}).encode(), "dead"),
        (json.dumps({**base, "path": "n.py", "content": 42}).encode(), "dead"),
        (json.dumps({**base, "path": "nul.py", "content": base["content"] + "\x00\x01\x02"}).encode(), "binary"),
        (spoiled(json.dumps({**base, "path": "bad.py"}).encode(), b"import", b"imp\xc3\x28rt"), "dead"),
        (json.dumps({**good[4], "content": good[4]["content"] + "# \ud83d"}).encode(), "doc"),
        (json.dumps({**good[5], "content": good[5]["content"].replace("\n\n", "\n\x0c\n", 1)
                     + '\nRED = "\x1b[31m"\x07\n'}).encode(), "doc"),
        (json.dumps({**good[6], "license": "GPL-3.0-only"}).encode(), "license"),
        (json.dumps({**m.license_row, "repo_name": f"{c.name}-lic", "path": "LICENSE"}).encode(), "license_file"),
        (json.dumps({**base, "path": "README.md"}).encode(), "extension"),
        (json.dumps({**base, "path": "table.py", "content": "T = [" + ", ".join(["1"] * 2000) + "]\n"}).encode(),
         "max_line_length"),
        (json.dumps(good[0]).encode(), "doc"),
        (json.dumps({**base, "path": "blob.py", "content": None, "binary": True}).encode(), "binary"),
    ]
    _write(c.path / f"{c.name}.jsonl", b"\n".join(r for r, _ in rows) + b"\n")
    return tally([o for _, o in rows])


@case("github")
def gh_gz_truncated(m: Material, c: Place) -> Expect:
    """A table export, gzip, cut at 60%."""
    data = cut(gz(jsonl(gh_rows_for(m, c, 10, 10))), 0.6)
    _write(c.path / f"{c.name}.jsonl.gz", data)
    return tally(["doc"] * decodable(data).count(b"\n"), dead=1)


@case("github")
def gh_bz2_truncated(m: Material, c: Place) -> Expect:
    """A table export, bzip2, cut at 80% (one block: nothing decodes)."""
    data = cut(bz(jsonl(gh_rows_for(m, c, 6, 20))), 0.8)
    _write(c.path / f"{c.name}.jsonl.bz2", data)
    return tally(["doc"] * decodable(data).count(b"\n"), dead=1)


@case("github")
def gh_xz_stream_corrupt(m: Material, c: Place) -> Expect:
    """A table export in two xz streams whose second stream's block is corrupt."""
    rows = gh_rows_for(m, c, 6, 26)
    _write(c.path / f"{c.name}.jsonl.xz", xz(jsonl(rows[:4])) + broken(xz(jsonl(rows[4:]))))
    return tally(["doc"] * 4, dead=1)


@case("github")
def gh_parquet(m: Material, c: Place) -> Expect:
    """A Parquet export with null content, binary rows and a row without repo_name."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = gh_rows_for(m, c, 4, 32)
    base = good[0]
    rows = [(r, "doc") for r in good] + [
        ({**base, "path": "img.py", "content": None, "binary": True}, "binary"),
        ({**base, "path": "lost.py", "content": None}, "dead"),
        ({**base, "path": "nul.py", "content": "\x00\x00ELF"}, "binary"),
        ({**base, "repo_name": None}, "dead"),
    ]
    names = ["repo_name", "path", "license", "language", "content", "size", "binary"]
    table = pa.Table.from_pylist([{k: r.get(k) for k in names} for r, _ in rows],
                                 schema=pa.schema([(k, pa.bool_() if k == "binary" else
                                                    pa.int64() if k == "size" else pa.string()) for k in names]))
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=3)
    _write(c.path / f"{c.name}.parquet", buf.getvalue())
    return tally([o for _, o in rows])


@case("github")
def gh_parquet_truncated(m: Material, c: Place) -> Expect:
    """A Parquet file cut in half (its footer lost)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(gh_rows_for(m, c, 4, 36)), buf)
    _write(c.path / f"{c.name}.parquet", cut(buf.getvalue(), 0.5))
    return tally(["dead"])


@case("github")
def gh_repo_folder(m: Material, c: Place) -> Expect:
    """A checkout with a Latin-1 file, UTF-16 and binary files, an empty file, links out of it."""
    root = c.path / c.name
    code = gh_rows_for(m, c, 3, 40)
    accents = "# Auteur : Fran\u00e7ois M\u00fcller, Z\u00fcrich -- r\u00e9sum\u00e9 na\u00efve fa\u00e7ade \u00e0 "
    latin1 = "# -*- coding: latin-1 -*-\n" + "\n".join([accents] * 4) + "\n" + code[2]["content"]
    files = {
        "LICENSE": (m.license_row["content"].encode(), "license_file"),
        "pkg/__init__.py": (code[0]["content"].encode(), "doc"),
        "pkg/core.py": (code[1]["content"].encode(), "doc"),
        "pkg/legacy.py": (latin1.encode("latin-1"), "doc"),
        "pkg/wide.py": (utf16_no_bom(code[1]["content"]), "binary"),
        "pkg/blob.py": (m.binary[:4096], "binary"),
        "pkg/empty.py": (b"", "empty"),
        "docs/notes.md": (c.prose[0].encode(), "extension"),
    }
    for rel, (data, _) in files.items():
        _write(root / rel, data)
    os.symlink(secret_path(c.outside), root / "pkg" / "leak.py")  # a file link out of the checkout
    vendored = c.outside / "vendored"
    _write(vendored / "stolen.py", f'SECRET = "{CANARY}"\n'.encode() + code[0]["content"].encode())
    os.symlink(vendored, root / "vendor")  # a folder link out of it: never walked, not a record
    return tally([o for _, o in files.values()] + ["link"])


# -- wikipedia -------------------------------------------------------------


def pages(m: Material, c: Place, start: int, n: int) -> list[str]:
    """Article pages of the sample, renumbered for the case: two cases never
    hold the same page, which would keep only one of them (by id)."""
    base = zlib.crc32(c.name.encode()) % 10**6 * 100
    return [re.sub(r"<id>\d+</id>", f"<id>{base + start + i}</id>", m.wiki_pages[(start + i) % len(m.wiki_pages)], count=1)
            for i in range(n)]


def dump(m: Material, body: list[str], end: bool = True) -> str:
    return m.wiki_head + "".join(body) + ("</mediawiki>\n" if end else "")


def page_id(page: str) -> str:
    return re.search(r"<id>(\d+)</id>", page).group(1)


def page_ends(text: bytes) -> list[int]:
    """Byte offsets just past each `</page>` line."""
    return [mt.end() for mt in re.finditer(rb"\n  </page>\n", text)]


@case("wikipedia")
def wiki_cut_mid_page(m: Material, c: Place) -> Expect:
    """A dump (xz) that ends in the middle of its fourth page."""
    body = pages(m, c, 0, 4)
    body[3] = body[3][: len(body[3]) // 2]
    _write(c.path / f"{c.name}.xml.xz", xz(dump(m, body, end=False).encode()))
    return tally(["doc"] * 3 + ["dead"])


@case("wikipedia")
def wiki_bz2_truncated(m: Material, c: Place) -> Expect:
    """A bzip2 dump of 100 kB blocks cut in its second block."""
    n = 1
    while len(dump(m, pages(m, c, 4, n)).encode()) < 150_000:
        n += 1
    text = dump(m, pages(m, c, 4, n)).encode()
    data = cut(bz(text, 1), 0.85)
    got = len(decodable(data))
    assert 0 < got < len(text), "the cut must fall after the first block"
    _write(c.path / f"{c.name}.xml.bz2", data)
    return tally(["doc"] * sum(end <= got for end in page_ends(text)), dead=1)


def _edit_text(page: str, fn: Callable[[str], str]) -> str:
    start = page.index("<text")
    start = page.index(">", start) + 1
    end = page.index("</text>")
    return page[:start] + fn(page[start:end]) + page[end:]


def in_prose(wikitext: str, insert: str) -> str:
    """`insert` in the middle of the first paragraph of prose (not in a
    template or table, which the reader removes)."""
    line = next(x for x in wikitext.split("\n") if len(x) >= 200 and (x[0].isalpha() or x.startswith("'''")))
    at = wikitext.index(line) + line.index(" ", len(line) // 2)
    return wikitext[:at] + insert + wikitext[at:]


@case("wikipedia")
def wiki_malformed_pages(m: Material, c: Place) -> Expect:
    """An XML dump with pages not well-formed, bad bytes, no id, control characters, unclosed, junk."""
    p = pages(m, c, 18, 11)
    unclosed = p[8].replace("  </page>\n", "")
    body = [
        (p[0], "doc"),
        (_edit_text(p[1], lambda t: t + " a < b & c"), "dead"),
        (_edit_text(p[2], lambda t: t[:500] + "\udcff\udcfe" + t[500:]), "dead"),  # bytes FF FE
        (re.sub(r"    <id>\d+</id>\n", "", p[3], count=1), "dead"),
        (m.wiki_redirect, "redirect"),
        (p[4].replace("<ns>0</ns>", "<ns>4</ns>"), "namespace"),
        (_edit_text(p[5], lambda t: ""), "empty"),
        (_edit_text(p[6], lambda t: t[:300] + "\x01" + t[300:]), "dead"),
        (_edit_text(p[7], lambda t: t[:300] + "&#1;" + t[300:]), "dead"),
        (unclosed, "dead"),
        (p[9], "doc"),
        ("  garbage between pages\n", "dead"),
        (_edit_text(p[10], lambda t: in_prose(t, "\x7f\x85\x9b")), "doc"),
    ]
    text = dump(m, [b for b, _ in body]).encode("utf-8", "surrogateescape")
    _write(c.path / f"{c.name}.xml", text)
    return tally([o for _, o in body])


@case("wikipedia")
def wiki_entity_bomb(m: Material, c: Place) -> Expect:
    """A dump with a billion-laughs DOCTYPE and an external entity naming a file outside."""
    body = [_edit_text(p, lambda t, e=e: t[:100] + f"&{e};" + t[100:])
            for p, e in zip(pages(m, c, 29, 2), ("lol9", "xxe"))]
    text = '<?xml version="1.0"?>\n' + billion_laughs("mediawiki", secret_path(c.outside)) + dump(m, body)
    _write(c.path / f"{c.name}.xml", text.encode())
    return tally(["dead"])  # the DOCTYPE stands where the root must: the file is not a dump


@case("wikipedia")
def wiki_entity_refs(m: Material, c: Place) -> Expect:
    """A gzip dump whose pages use undeclared entities (&lol9;, an external &xxe;)."""
    p = pages(m, c, 31, 3)
    body = [p[0]] + [_edit_text(q, lambda t, e=e: t[:100] + f"&{e};" + t[100:])
                     for q, e in zip(p[1:], ("lol9", "xxe"))]
    _write(c.path / f"{c.name}.xml.gz", gz(dump(m, body).encode()))
    return tally(["doc", "dead", "dead"])


def multistream(m: Material, groups: list[list[str]]) -> tuple[list[bytes], list[tuple[int, str]]]:
    """bz2 streams as Wikimedia writes them (the header, pages, the end) and
    the index lines (offset, page) of each page."""
    streams = [bz(m.wiki_head.encode())]
    index = []
    for group in groups:
        offset = sum(map(len, streams))
        index += [(offset, p) for p in group]
        streams.append(bz("".join(group).encode()))
    streams.append(bz(b"</mediawiki>\n"))
    return streams, index


@case("wikipedia")
def wiki_multistream(m: Material, c: Place) -> Expect:
    """A multistream dump with its index (read in spans when split_bytes is small)."""
    groups = [pages(m, c, 2 + 3 * i, 3) for i in range(3)]
    streams, index = multistream(m, groups)
    # Wikimedia's naming, which says where the index is; the case's name in front
    stem = f"{c.name}-enwiki-20990101-pages-articles-multistream"
    _write(c.path / f"{stem}.xml.bz2", b"".join(streams))
    lines = "".join(f"{off}:{page_id(p)}:{re.search(r'<title>(.*?)</title>', p).group(1)}\n" for off, p in index)
    _write(c.path / f"{stem}-index.txt.bz2", bz(lines.encode()))
    return tally(["doc"] * 9)


@case("wikipedia")
def wiki_multistream_corrupt(m: Material, c: Place) -> Expect:
    """A multistream dump without its index whose third stream is corrupt."""
    groups = [pages(m, c, 12 + 3 * i, 3) for i in range(3)]
    streams, _ = multistream(m, groups)
    streams[2] = broken(streams[2])
    _write(c.path / f"{c.name}.xml.bz2", b"".join(streams))
    return tally(["doc"] * 3, dead=1)


@case("wikipedia")
def wiki_utf16_no_bom(m: Material, c: Place) -> Expect:
    """A dump re-saved as UTF-16 without a byte-order mark or XML declaration."""
    _write(c.path / f"{c.name}.xml", utf16_no_bom(dump(m, pages(m, c, 0, 2))))
    return tally(["dead"])


@case("wikipedia")
def wiki_empty(m: Material, c: Place) -> Expect:
    """An empty .xml.bz2."""
    _write(c.path / f"{c.name}.xml.bz2", b"")
    return tally(["dead"])


# -- books -----------------------------------------------------------------


@case("books")
def bk_gz_truncated(m: Material, c: Place) -> Expect:
    """A gzip book cut at half: kept up to the cut, the damage reported."""
    _write(c.path / f"{c.name}.txt.gz", cut(gz(wrap(c.prose).encode()), 0.5))
    return Expect(1, 1, dead=1, notices=1)


@case("books")
def bk_gz_corrupt(m: Material, c: Place) -> Expect:
    """A gzip book with 8 bytes flipped in the middle of its deflate data."""
    _write(c.path / f"{c.name}.txt.gz", corrupted_mid(gz(wrap(c.prose).encode())))
    return tally(["dead"])


@case("books")
def bk_bz2_truncated(m: Material, c: Place) -> Expect:
    """A bzip2 book of one block cut at 90%: nothing decodes."""
    data = cut(bz(wrap(c.prose).encode()), 0.9)
    assert not decodable(data)
    _write(c.path / f"{c.name}.txt.bz2", data)
    return tally(["dead"])


@case("books")
def bk_xz_truncated(m: Material, c: Place) -> Expect:
    """An xz book cut at 70%: kept up to the cut, the damage reported."""
    data = cut(xz(wrap(c.prose).encode()), 0.7)
    assert decodable(data)
    _write(c.path / f"{c.name}.txt.xz", data)
    return Expect(1, 1, dead=1, notices=1)


@case("books")
def bk_binary(m: Material, c: Place) -> Expect:
    """A binary file (a model's bytes) dropped among the books under a book's name."""
    _write(c.path / f"{c.name}.txt", m.binary)
    return tally(["dead"])


@case("books")
def bk_utf16_no_bom(m: Material, c: Place) -> Expect:
    """A book saved as UTF-16 without a byte-order mark."""
    _write(c.path / f"{c.name}.txt", utf16_no_bom(wrap(c.prose)))
    return tally(["doc"])


@case("books")
def bk_cp1252(m: Material, c: Place) -> Expect:
    """A book with typographic quotes in Windows-1252."""
    _write(c.path / f"{c.name}.txt", curly(wrap(c.prose)).encode("cp1252"))
    return tally(["doc"])


@case("books")
def bk_few_bad_bytes(m: Material, c: Place) -> Expect:
    """A UTF-8 book with a stray 0xFF and a CESU-8 surrogate (ED A0 BD): under 1e-3 of its bytes."""
    text = curly(wrap(c.prose) + "\n" + "\n".join(m.verse[3000:3400])).encode()
    third = len(text) // 3
    text = text[:third] + b"\xff" + text[third : 2 * third] + b"\xed\xa0\xbd" + text[2 * third :]
    _write(c.path / f"{c.name}.txt", text)
    return tally(["doc"])


@case("books")
def bk_many_bad_bytes(m: Material, c: Place) -> Expect:
    """A UTF-8 book with one byte in 500 damaged: too damaged to trust."""
    text = bytearray(curly(wrap(c.prose)).encode())
    for i in range(100, len(text), 500):
        text[i] = 0xFF
    _write(c.path / f"{c.name}.txt", bytes(text))
    return tally(["dead"])


@case("books")
def bk_empty(m: Material, c: Place) -> Expect:
    """An empty book file."""
    _write(c.path / f"{c.name}.txt", b"")
    return tally(["empty"])


@case("books")
def bk_control_chars(m: Material, c: Place) -> Expect:
    """A book with form feeds, ANSI escapes, bells, backspaces and a DOS end-of-file mark."""
    text = wrap(c.prose).replace("\n\n", "\n\x0c\n", 2)
    text = with_controls(text).replace("\x00", "") + "\x1a"
    _write(c.path / f"{c.name}.txt", text.encode())
    return tally(["doc"])


@case("books")
def bk_nul_byte(m: Material, c: Place) -> Expect:
    """A book with one NUL byte in the middle (a bad copy)."""
    text = wrap(c.prose).encode()
    _write(c.path / f"{c.name}.txt", text[: len(text) // 2] + b"\x00" + text[len(text) // 2 :])
    return tally(["dead"])


@case("books")
def bk_huge_line(m: Material, c: Place) -> Expect:
    """A book of 120 kB on a single line (line breaks lost)."""
    _write(c.path / f"{c.name}.txt", " ".join(m.verse[4000:7000])[:120_000].encode())
    return tally(["doc"])


# -- arxiv -----------------------------------------------------------------


def paper(c: Place, preamble: str = "", tail: str = "") -> str:
    p = c.prose
    return latex(f"Notes on {c.name}", [("Down the Rabbit-Hole", list(p[:3])), ("The Pool of Tears", list(p[3:]))],
                 preamble, tail)


@case("arxiv")
def ax_tar_traversal(m: Material, c: Place) -> Expect:
    """A source tarball with a member ../evil.tex (path traversal)."""
    _write(c.path / f"{c.name}.tar.gz",
           tar_bytes([("main.tex", paper(c).encode()), ("../evil.tex", b"\\section{Evil}\n")]))
    return tally(["dead"])


@case("arxiv")
def ax_tar_symlink_relative(m: Material, c: Place) -> Expect:
    """A source tarball with a symbolic link ../../../secret.txt out of it."""
    main = paper(c, tail="\\input{sec}\n")
    _write(c.path / f"{c.name}.tar.gz",
           tar_bytes([("main.tex", main.encode()), ("sec.tex", "->../../../secret.txt")]))
    return tally(["dead"])


@case("arxiv")
def ax_tar_symlink_absolute(m: Material, c: Place) -> Expect:
    """An uncompressed tar with a symbolic link to an absolute path outside."""
    main = paper(c, tail="\\input{sec}\n")
    _write(c.path / f"{c.name}.tar",
           tar_bytes([("main.tex", main.encode()), ("sec.tex", f"->{secret_path(c.outside)}")], mode="w"))
    return tally(["dead"])


@case("arxiv")
def ax_folder_symlink(m: Material, c: Place) -> Expect:
    """A paper folder whose \\input file is a link to a file outside."""
    folder = c.path / c.name
    _write(folder / "main.tex", paper(c, tail="\\input{sec}\n").encode())
    os.symlink(secret_path(c.outside), folder / "sec.tex")
    return tally(["dead"])


@case("arxiv")
def ax_input_cycle(m: Material, c: Place) -> Expect:
    """A tarball whose sections \\input each other in a cycle."""
    main = paper(c, tail="\\input{a}\n")
    _write(c.path / f"{c.name}.tar.gz", tar_bytes([
        ("main.tex", main.encode()),
        ("a.tex", f"\\section{{A}}\n{c.prose[0]}\n\\input{{b}}\n".encode()),
        ("b.tex", f"\\section{{B}}\n{c.prose[1]}\n\\input{{a}}\n".encode()),
    ]))
    return tally(["dead"])


@case("arxiv")
def ax_missing_input(m: Material, c: Place) -> Expect:
    """A lone .tex whose body \\inputs a file the authors did not upload."""
    _write(c.path / f"{c.name}.tex", paper(c, tail="\\input{results}\n").encode())
    return Expect(1, 1, counts={"input_missing": 1})


@case("arxiv")
def ax_tar_truncated(m: Material, c: Place) -> Expect:
    """A source tarball cut at half."""
    members = [("main.tex", paper(c, tail="\\input{app}\n").encode()),
               ("app.tex", wrap(m.verse[100:400]).encode())]
    _write(c.path / f"{c.name}.tar.gz", cut(tar_bytes(members), 0.5))
    return tally(["dead"])


@case("arxiv")
def ax_utf16_gz(m: Material, c: Place) -> Expect:
    """A gzipped single .tex (as arXiv serves it) in UTF-16 without a byte-order mark."""
    _write(c.path / f"{c.name}.tex.gz", gz(utf16_no_bom(paper(c))))
    return tally(["doc"])


@case("arxiv")
def ax_cp1252_bz2(m: Material, c: Place) -> Expect:
    """A bzip2 .tex with typographic quotes in Windows-1252."""
    _write(c.path / f"{c.name}.tex.bz2", bz(curly(paper(c)).encode("cp1252")))
    return tally(["doc"])


@case("arxiv")
def ax_control_chars_xz(m: Material, c: Place) -> Expect:
    """An xz .tex with a NUL, ANSI escapes, a bell, backspaces, a form feed and DEL in its body."""
    _write(c.path / f"{c.name}.tex.xz", xz(with_controls(paper(c)).encode()))
    return tally(["doc"])


@case("arxiv")
def ax_macro_bomb(m: Material, c: Place) -> Expect:
    """A .tex whose \\def macros double 20 times (the LaTeX billion laughs)."""
    defs = "".join(f"\\def\\m{chr(97 + i)}{{\\m{chr(98 + i)}\\m{chr(98 + i)}}}" for i in range(20))
    _write(c.path / f"{c.name}.tex", paper(c, preamble=defs + "\n", tail="\\ma\n").encode())
    return tally(["dead"])


@case("arxiv")
def ax_pdf_only(m: Material, c: Place) -> Expect:
    """A "source" that is a PDF (arXiv serves PDF-only submissions so)."""
    _write(c.path / f"{c.name}.gz", gz(b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n" + m.binary[:8192]))
    return tally(["dead"])


@case("arxiv")
def ax_bbl_alone(m: Material, c: Place) -> Expect:
    """A lone .bbl, part of a paper, not a paper."""
    _write(c.path / f"{c.name}.bbl", b"\\begin{thebibliography}{1}\n\\bibitem{c} L. Carroll.\n\\end{thebibliography}\n")
    return tally(["support_file"])


@case("arxiv")
def ax_empty(m: Material, c: Place) -> Expect:
    """An empty .tex."""
    _write(c.path / f"{c.name}.tex", b"")
    return tally(["dead"])


@case("arxiv")
def ax_no_section(m: Material, c: Place) -> Expect:
    """A .tex without any \\section (a letter, a poster)."""
    text = "\\documentclass{letter}\n\\begin{document}\n" + "\n\n".join(c.prose) + "\n\\end{document}\n"
    _write(c.path / f"{c.name}.tex", text.encode())
    return tally(["no_section"])


# -- stackexchange ---------------------------------------------------------


END_P = b"&lt;/p&gt;"  # the end of a post's first paragraph, as a row's Body attribute holds it


def se_file(c: Place, site: str, suffix: str = "") -> Path:
    return c.path / f"{site}_{c.name}_Posts.xml{suffix}"


@case("stackexchange")
def se_bad_rows(m: Material, c: Place) -> Expect:
    """Posts.xml rows not well-formed, without Id or type, bad bytes, bad references, a repeat, an orphan."""
    p = c.prose
    rows = [
        (question(1, "Why is a raven like a writing-desk?", p[0]), "doc"),
        (answer(2, 1, p[1], 3), None),
        (answer(3, 1, p[2], 10), None),
        (question(4, "Windows line ends", p[3].replace(". ", ".\r\n", 3)), "doc"),
        (answer(5, 4, p[4]), None),
        (answer(6, 999, p[5]), "orphan_answer"),
        (b'  <row Id="7" PostTypeId="1" Score="1" Title="raw" Body="<p>raw markup</p>" />\n', "dead"),
        (post_row({"PostTypeId": 1, "Score": 1, "Title": "no id", "Body": p[0]}), "dead"),
        (question(9, "bad score", p[1], score="many"), "dead"),
        (post_row({"Id": 10, "Score": 1, "Body": p[2]}), "dead"),
        (post_row({"Id": 11, "PostTypeId": 5, "Score": 0, "Body": "tag wiki"}), "post_type"),
        (spoiled(question(12, "bad byte", p[3]), b"the", b"th\xe9"), "dead"),
        (spoiled(question(13, "control", p[4]), END_P, b"&#x1;" + END_P), "dead"),
        (spoiled(question(14, "surrogate", p[5]), END_P, b"&#xD83D;" + END_P), "dead"),
        (question(1, "Why is a raven like a writing-desk?", p[0]), "dead"),
        (b"  this line is not a row\n", "dead"),
        (question(16, "A long one", " ".join(m.verse[2000:4000])), "doc"),
        (spoiled(question(17, "C1 controls", p[1]), END_P, b"&#x85;&#x9B;&#x7F;" + END_P), "doc"),
    ]
    unclosed = question(18, "never closed", p[2]).replace(b" />", b"")
    _write(se_file(c, "beer.stackexchange.com"), posts_xml([r for r, _ in rows] + [unclosed]))
    return tally([o for _, o in rows if o] + ["dead"])


@case("stackexchange")
def se_seven_zip(m: Material, c: Place) -> Expect:
    """A data-dump .7z archive saved under the name Posts.xml."""
    _write(se_file(c, "coffee.stackexchange.com"), b"7z\xbc\xaf\x27\x1c\x00\x04" + m.binary[:4096])
    return tally(["dead"])


@case("stackexchange")
def se_gz_truncated(m: Material, c: Place) -> Expect:
    """A gzip Posts.xml cut at 60%."""
    rows, kinds = [], []
    for q in range(3):
        qid = 100 + 10 * q
        rows.append(question(qid, f"Question {q}", c.prose[2 * q]))
        rows.append(answer(qid + 1, qid, c.prose[2 * q + 1]))
        kinds += ["q", "a"]
    text = posts_xml(rows)
    data = cut(gz(text), 0.6)
    _write(se_file(c, "tea.stackexchange.com", ".gz"), data)
    got = len(decodable(data))
    ends = [text.index(r) + len(r) for r in rows]
    return tally(["doc"] * sum(end <= got and k == "q" for end, k in zip(ends, kinds)), dead=1)


@case("stackexchange")
def se_entity_bomb(m: Material, c: Place) -> Expect:
    """A Posts.xml with a billion-laughs DOCTYPE and rows using &lol9; and an external &xxe;."""
    doctype = billion_laughs("posts", secret_path(c.outside))
    rows = [question(1, "fine", c.prose[0]),
            spoiled(question(2, "laughs", c.prose[1]), END_P, b"&lol9;" + END_P),
            spoiled(question(3, "external", c.prose[2]), END_P, b"&xxe;" + END_P)]
    text = b'<?xml version="1.0" encoding="utf-8"?>\n' + doctype.encode() + b"<posts>\n" + b"".join(rows) + b"</posts>\n"
    _write(se_file(c, "chess.stackexchange.com"), text)
    return tally(["dead"] * doctype.count("\n") + ["doc", "dead", "dead"])


@case("stackexchange")
def se_utf16_no_bom(m: Material, c: Place) -> Expect:
    """A Posts.xml re-saved as UTF-16 without a byte-order mark."""
    text = posts_xml([question(1, "wide", c.prose[0]), answer(2, 1, c.prose[1])])
    _write(se_file(c, "pets.stackexchange.com"), utf16_no_bom(text.decode()))
    # no line is a row: each one (and the NUL after the last newline) is a dead letter
    return tally(["dead"] * (text.count(b"\n") + 1))


@case("stackexchange")
def se_questions_xz(m: Material, c: Place) -> Expect:
    """Questions of a site in one file (xz), their answers in another (se_answers_bz2)."""
    rows = [question(i, f"Question {i}", c.prose[i]) for i in (1, 2, 3)]
    _write(se_file(c, "superuser.com", ".xz"), xz(posts_xml(rows)))
    return tally(["doc"] * 3)


@case("stackexchange")
def se_answers_bz2(m: Material, c: Place) -> Expect:
    """Answers in another file (bzip2) than their questions, one whose question is nowhere."""
    rows = [answer(10 + i, i, c.prose[i]) for i in (1, 2, 3)] + [answer(20, 99, c.prose[4])]
    _write(se_file(c, "superuser.com", ".bz2"), bz(posts_xml(rows)))
    return tally(["orphan_answer"])


@case("stackexchange")
def se_empty(m: Material, c: Place) -> Expect:
    """An empty Posts.xml."""
    _write(se_file(c, "beer.stackexchange.com"), b"")
    return tally([])


# --------------------------------------------------------------------------


def write_corpus(demo: Mapping[str, Path], root: Path, outside: Path) -> list[Case]:
    """Write every case under `root/<source>/` and the canary file in `outside`
    (a folder beside `root`, never inside it). Returns the cases in order."""
    m = load_material(demo)
    root, outside = Path(root), Path(outside)
    assert not outside.resolve().is_relative_to(root.resolve())
    _write(secret_path(outside), f"{CANARY}\n".encode())
    assert len(m.prose) >= PROSE_PER_CASE * len(CASES), "not enough real prose for every case"
    out = []
    for i, (name, (source, fn)) in enumerate(CASES.items()):
        folder = root / source
        folder.mkdir(parents=True, exist_ok=True)
        before = set(os.listdir(folder))
        place = Place(folder, name, m.prose[i * PROSE_PER_CASE : (i + 1) * PROSE_PER_CASE], outside)
        expect = fn(m, place)
        entries = tuple(sorted(set(os.listdir(folder)) - before))
        assert entries and all(name in e for e in entries), (name, entries)
        assert expect.balanced(), (name, expect)
        out.append(Case(source, name, " ".join((fn.__doc__ or "").split()), entries, expect))
    return out


def case_of(cases: list[Case], root: Path, where: str) -> Case | None:
    """The case whose entry a dead letter's `path` (or "<path> span [...]") names."""
    path = Path(where.split(" span [")[0])
    for c in cases:
        folder = Path(root) / c.source
        if path.is_relative_to(folder) and path.relative_to(folder).parts[0] in c.entries:
            return c
    return None
