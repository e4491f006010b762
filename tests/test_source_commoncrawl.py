"""CommonCrawl reader on real WARC/WET/Dolma files and saved HTML pages: the
demo's 2013 wget crawl (Warcat sdist), pywb's crawl of iana.org, the pages of
formasaurus, trafilatura, htmldate and newspaper4k, and the shared corpus
(Common Crawl, ClueWeb09, GNU wget)."""

from __future__ import annotations

import gzip
import itertools
import json
import lzma
import re
import zlib
from collections import Counter
from pathlib import Path

import pytest
from warcio.archiveiterator import ArchiveIterator

from pipeline.core.config import load_config
from pipeline.core.schema import doc_id
from pipeline.sources import commoncrawl
from pipeline.sources.base import DeadLetter, Skip
from pipeline.sources.commoncrawl import (
    MAX_REPLACEMENT_RATIO,
    choose_charset,
    decode_counting,
    meta_charset,
    parse_content_type,
    read,
    strip_uri_brackets,
)

CFG = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
DEMO_WARC = "inputs/commoncrawl/at.warc.gz"


def outcomes(items: list) -> Counter:
    """{"doc": n, "skip:<reason>": n, "dead": n} of a reader's output."""
    c: Counter = Counter()
    for x in items:
        if isinstance(x, Skip):
            c[f"skip:{x.reason}"] += 1
        elif isinstance(x, DeadLetter):
            c["dead"] += 1
        else:
            c["doc"] += 1
    return c


def docs(items: list) -> list[dict]:
    return [x for x in items if isinstance(x, dict)]


def by_url(items: list) -> dict[str, dict]:
    return {d["url"]: d for d in docs(items)}


def payload(path: Path, url: str) -> bytes:
    """The HTTP body of the response record for `url` (read with warcio)."""
    with gzip.open(path) as f:
        for record in ArchiveIterator(f):
            target = record.rec_headers.get_header("WARC-Target-URI")
            if record.rec_type == "response" and target == url:
                return record.content_stream().read()
    raise KeyError(url)


# --- the demo WARC: 8 records of a 2013 wget crawl of archiveteam.org --------


def test_demo_warc_records_and_document(demo_inputs):
    items = list(read(str(demo_inputs[DEMO_WARC]), CFG))
    # warcinfo 1 + request 2 + resource 3 (wget's manifest, arguments, log)
    # -> record_type; the 301 from http://www.archiveteam.org/ -> http_status;
    # the 200 main page -> the one document.
    assert outcomes(items) == {"skip:record_type": 6, "skip:http_status": 1, "doc": 1}
    (doc,) = docs(items)
    assert doc["url"] == "http://www.archiveteam.org/index.php?title=Main_Page"
    assert doc["source"] == "commoncrawl" and doc["lang"] == ""
    # A sentence of the page's first <p>, tags (<b>) removed.
    assert (
        "Archive Team is a loose collective of rogue archivists, programmers, writers and "
        "loudmouths dedicated to saving our digital heritage." in doc["text"]
    )
    assert "we've gotten the message out: IT DOESN'T HAVE TO BE THIS WAY." in doc["text"]
    assert "mw.config.set" not in doc["text"]  # inline <script> dropped
    meta = json.loads(doc["meta"])
    assert meta == {
        "warc_date": "2013-04-09T00:11:14Z",
        "charset": "utf-8",
        "charset_source": "http",
        "content_type": "text/html",
        "replacements": 0,
        "warc_file": "at.warc.gz",
    }


def test_demo_warc_is_deterministic(demo_inputs):
    path = str(demo_inputs[DEMO_WARC])
    assert list(read(path, CFG)) == list(read(path, CFG))


# --- broken WARC files made from the demo's real bytes ----------------------


@pytest.fixture(scope="module")
def demo_raw(demo_inputs) -> bytes:
    return gzip.open(demo_inputs[DEMO_WARC]).read()


def record_starts(raw: bytes) -> list[int]:
    return [m.start() for m in re.finditer(rb"WARC/1\.0\r\n", raw)]


def gzip_members(data: bytes) -> list[bytes]:
    """The gzip members of a multi-member file, each as its compressed bytes."""
    members, pos = [], 0
    while pos < len(data):
        d = zlib.decompressobj(31)
        d.decompress(data[pos:])
        end = len(data) - len(d.unused_data)
        members.append(data[pos:end])
        pos = end
    return members


def shorten_content_length(record: bytes, by: int) -> bytes:
    """A WARC record whose Content-Length header is `by` less than its block."""
    length = int(re.search(rb"\r\nContent-Length: (\d+)\r\n", record).group(1))
    return record.replace(
        b"\r\nContent-Length: %d\r\n" % length, b"\r\nContent-Length: %d\r\n" % (length - by), 1
    )


DEMO_200 = "<urn:uuid:103a7ae2-30ec-46f5-b749-d1368dee3641>"  # the Main_Page response


def test_unparsable_record_is_a_dead_letter_with_its_offset(demo_raw, tmp_path):
    starts = record_starts(demo_raw)
    assert len(starts) == 8
    bad = demo_raw[: starts[3]] + b"XARC/1.0" + demo_raw[starts[3] + 8 :]
    path = tmp_path / "bad.warc"
    path.write_bytes(bad)
    items = list(read(str(path), CFG))
    # The 4th record (a request) has no version line: a dead letter at its
    # offset; reading resumes at the 5th, so the document is not lost.
    assert outcomes(items) == {"skip:record_type": 5, "skip:http_status": 1, "dead": 1, "doc": 1}
    dead = items[3]
    assert dead == DeadLetter(
        "commoncrawl", str(path), f"offset {starts[3]}",
        "not a WARC record: no version line (b'XARC/1.0\\r\\n')",
    )
    assert items[4]["url"] == "http://www.archiveteam.org/index.php?title=Main_Page"


def test_truncated_gzip_reports_the_cut_record(demo_inputs, tmp_path):
    data = demo_inputs[DEMO_WARC].read_bytes()
    members = gzip_members(data)
    assert len(members) == 8  # one per record, as wget writes them
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(data[:8000])  # inside the 5th member, the 200 response
    items = list(read(str(path), CFG))
    assert outcomes(items) == {"skip:record_type": 3, "skip:http_status": 1, "dead": 1}
    cut = items[-1]
    # Named by the compressed offset of its gzip member, and its record ID.
    assert cut.record == f"offset {sum(map(len, members[:4]))}" == "offset 1948"
    assert cut.reason == (
        "record 7512 bytes shorter than its Content-Length 24508 (gzip member truncated "
        "(the file ends inside it)); no part of it is used; WARC-Record-ID " + DEMO_200
    )


def test_wrong_content_length_is_a_dead_letter(demo_raw, tmp_path):
    starts = record_starts(demo_raw)
    head, rec, tail = demo_raw[: starts[4]], demo_raw[starts[4] : starts[5]], demo_raw[starts[5] :]
    path = tmp_path / "clen.warc"
    path.write_bytes(head + rec.replace(b"Content-Length: ", b"Content-Length: 9", 1) + tail)
    items = list(read(str(path), CFG))
    # The bogus length (924508) runs past the end of the file: the record is a
    # dead letter, and the three resource records it would swallow are found.
    assert outcomes(items) == {"skip:record_type": 6, "skip:http_status": 1, "dead": 1}
    block_start = starts[4] + rec.index(b"\r\n\r\n") + 4 + 1  # + the "9"
    assert items[4] == DeadLetter(
        "commoncrawl", str(path), f"offset {starts[4]}",
        f"record {924508 - (path.stat().st_size - block_start)} bytes shorter than its "
        "Content-Length 924508 (the file ends inside it); no part of it is used; "
        "WARC-Record-ID " + DEMO_200,
    )


# --- a short Content-Length and a cut .warc.gz, on the demo's real records


def test_content_length_5_short_then_two_valid_records_demo(demo_raw, tmp_path):
    starts = record_starts(demo_raw) + [len(demo_raw)]
    records = [demo_raw[a:b] for a, b in itertools.pairwise(starts)]
    # the 200 response declaring 5 bytes less than its block, then the 301
    # response and the request for the main page, both valid
    first = shorten_content_length(records[4], 5)
    path = tmp_path / "clen5.warc"
    path.write_bytes(first + records[2] + records[3])
    items = list(read(str(path), CFG))
    assert items == [
        DeadLetter(
            "commoncrawl", str(path), "offset 0",
            "Content-Length 24503 does not end the record (data, not CRLF CRLF, follows "
            "the block): wrong length; skipped to the next record; WARC-Record-ID " + DEMO_200,
        ),
        Skip("commoncrawl", "http_status"),  # the 301, read at its own offset
        Skip("commoncrawl", "record_type"),  # the request
    ]


def test_warc_gz_of_three_members_cut_by_200_bytes_demo(demo_inputs, tmp_path):
    members = gzip_members(demo_inputs[DEMO_WARC].read_bytes())
    # the 301 response, the request, then the 200 response, one member each
    data = members[2] + members[3] + members[4]
    path = tmp_path / "cut200.warc.gz"
    path.write_bytes(data[:-200])
    items = list(read(str(path), CFG))
    assert items[:2] == [Skip("commoncrawl", "http_status"), Skip("commoncrawl", "record_type")]
    (dead,) = items[2:]
    assert dead.record == f"offset {len(members[2]) + len(members[3])}"
    assert dead.reason.startswith("record ") and "gzip member truncated" in dead.reason
    assert dead.reason.endswith("no part of it is used; WARC-Record-ID " + DEMO_200)
    assert not docs(items)  # no partial payload becomes a document


def test_corrupt_gzip_member_costs_only_its_record(demo_inputs, tmp_path):
    members = gzip_members(demo_inputs[DEMO_WARC].read_bytes())
    broken = bytearray(members[2])  # the 301 response
    broken[len(broken) // 2 : len(broken) // 2 + 8] = b"\xff" * 8  # bytes of its deflate stream
    path = tmp_path / "corrupt.warc.gz"
    path.write_bytes(b"".join(members[:2]) + bytes(broken) + b"".join(members[3:]))
    items = list(read(str(path), CFG))
    # warcinfo, request, [301: dead], request, 200 -> the document, 3 resources
    assert outcomes(items) == {"skip:record_type": 6, "dead": 1, "doc": 1}
    dead = items[2]
    # zlib fails on the member before it yields a byte of it: the dead letter
    # names the member; reading resumes at the next one.
    assert dead.record == f"offset {len(members[0]) + len(members[1])}" == "offset 811"
    assert dead.reason == (
        "corrupt gzip member: Error -3 while decompressing data: invalid distance too far "
        "back; reading resumes at the next gzip member, if any"
    )
    assert items[4]["url"] == "http://www.archiveteam.org/index.php?title=Main_Page"


def test_cut_member_followed_by_more_members_and_garbage(demo_inputs, tmp_path):
    # A writer that died inside the 200 response's member and was restarted:
    # the next members follow the cut one; then junk after the last member.
    members = gzip_members(demo_inputs[DEMO_WARC].read_bytes())
    data = b"".join(members[:4]) + members[4][:3000] + b"".join(members[5:]) + b"junk"
    path = tmp_path / "resumed.warc.gz"
    path.write_bytes(data)
    items = list(read(str(path), CFG))
    assert outcomes(items) == {"skip:record_type": 6, "skip:http_status": 1, "dead": 2}
    assert [(x.record, x.reason.split(":")[0]) for x in items if isinstance(x, DeadLetter)] == [
        ("offset 1948", "corrupt gzip member"),  # zlib fails where the next member begins
        (f"offset {len(data) - 4}", "not a gzip member; reading resumes at the next gzip member, if any"),
    ]


def test_missing_file_is_a_dead_letter(tmp_path):
    (dead,) = list(read(str(tmp_path / "absent.warc.gz"), CFG))
    assert isinstance(dead, DeadLetter) and dead.record == "file"


# --- pure helpers -------------------------------------------------------------


def test_strip_uri_brackets():
    assert strip_uri_brackets("<https://soldaini.net/>") == "https://soldaini.net/"
    assert strip_uri_brackets("http://a.b/c?d=<e>") == "http://a.b/c?d=<e>"


def test_parse_content_type():
    assert parse_content_type("text/html; charset=GB2312") == ("text/html", "GB2312")
    assert parse_content_type('Text/HTML;charset="utf-8"') == ("text/html", "utf-8")
    assert parse_content_type("image/png") == ("image/png", None)
    assert parse_content_type(None) == ("", None)


# --- the shared corpus ----------------------------------------------------------


@pytest.fixture(scope="module")
def cc(shared_corpus) -> Path:
    return shared_corpus / "commoncrawl"


def test_cc_2020_34_sample_gives_its_16_html_responses(cc):
    items = list(read(str(cc / "CC-MAIN-2020-34_sample16.warc.gz"), CFG))
    # 50 records: warcinfo 1, request 17, metadata 16 skipped; 16 HTML responses.
    assert outcomes(items) == {"skip:record_type": 34, "doc": 16}
    pages = by_url(items)
    russian = pages["http://01spb.ru/company/"]
    assert json.loads(russian["meta"])["charset"] == "cp1251"  # windows-1251
    assert russian["text"].startswith("О компании")
    assert "Стратегия пожарной безопасности" in russian["text"]
    chinese = pages["http://041696.com/15477/list_6_4.html"]
    meta = json.loads(chinese["meta"])
    assert (meta["charset"], meta["charset_source"]) == ("gbk", "meta")  # <meta charset=gbk>
    assert chinese["text"].startswith("企业公告") and "耐磨板" in chinese["text"]
    gb2312 = pages["http://0760.jxtdw.com/area/sanxiang/"]
    meta = json.loads(gb2312["meta"])
    # HTTP says gb2312; browsers (WHATWG) decode it as its superset GBK.
    assert (meta["charset"], meta["charset_source"]) == ("gbk", "http")
    assert "中山英才网" in gb2312["text"] and "三乡" in gb2312["text"]
    bom = json.loads(pages["http://05925.net/index.php/vod/type/id/53.html"]["meta"])
    assert (bom["charset"], bom["charset_source"]) == ("utf-8-sig", "bom")


def test_charset_precedence_on_real_pages(cc):
    warc = cc / "CC-MAIN-2020-34_sample16.warc.gz"
    with_bom = payload(warc, "http://05925.net/index.php/vod/type/id/53.html")
    assert choose_charset(with_bom, "gbk") == ("utf-8-sig", "bom")  # BOM beats HTTP
    russian = payload(warc, "http://01spb.ru/company/")
    assert meta_charset(russian) == "windows-1251"
    assert choose_charset(russian, "koi8-r") == ("koi8-r", "http")  # HTTP beats meta
    assert choose_charset(russian, None) == ("cp1251", "meta")
    assert choose_charset(russian, "x-no-such-charset") == ("cp1251", "meta")
    # Without any declaration the detector (uchardet) still finds windows-1251.
    undeclared = re.sub(rb"<meta[^>]*charset[^>]*>", b"", russian, flags=re.IGNORECASE)
    assert meta_charset(undeclared) is None
    assert choose_charset(undeclared, None) == ("cp1251", "detector")


def test_cc_wet_conversion_record(cc):
    items = list(read(str(cc / "CC-MAIN-2024-22_an.wikipedia_Escopete.warc.wet.gz"), CFG))
    assert outcomes(items) == {"skip:record_type": 1, "doc": 1}  # warcinfo, conversion
    (doc,) = docs(items)
    assert doc["id"] == doc_id("commoncrawl", "<urn:uuid:ba729a40-ff84-4085-8d48-0a5b2ee0c42d>")
    assert doc["url"] == "https://an.wikipedia.org/wiki/Escopete"
    assert doc["text"].startswith("Escopete - Biquipedia, a enciclopedia libre\nIr al contenido\n")
    meta = json.loads(doc["meta"])
    assert (meta["charset_source"], meta["content_type"]) == ("wet", "text/plain")


def test_cc_warc_and_wat_of_the_same_page(cc):
    warc = list(read(str(cc / "CC-MAIN-2024-22_an.wikipedia_Escopete.warc.gz"), CFG))
    assert outcomes(warc) == {"skip:record_type": 3, "doc": 1}
    assert docs(warc)[0]["url"] == "https://an.wikipedia.org/wiki/Escopete"
    assert "Escopete" in docs(warc)[0]["text"]
    wat = list(read(str(cc / "CC-MAIN-2024-22_an.wikipedia_Escopete.warc.wat.gz"), CFG))
    assert outcomes(wat) == {"skip:record_type": 2}  # metadata only: no text


def test_clueweb09_quirky_headers(cc):
    items = list(read(str(cc / "clueweb09-ja_quirky-headers.warc.gz"), CFG))
    # WARC/0.18, bare-LF HTTP headers, `Content-Encoding: gzip` on a stored-plain
    # body, dates like 2008-10-294: every response still reads.
    assert outcomes(items) == {"skip:record_type": 1, "doc": 29}
    first = docs(items)[0]
    assert first["url"] == "http://www.uraharajuku.st/shopdetail/001005000005/019/000/order/"
    assert first["text"].startswith("ヘッドポーター 吉田カバン PORTER")
    assert "パスワード" in first["text"]
    meta = json.loads(first["meta"])
    assert (meta["charset"], meta["charset_source"]) == ("euc_jp", "http")
    assert meta["warc_date"] == "2008-10-294T05:21:46-0700"  # kept as written


def test_wget_warc_uris_lose_their_brackets(cc):
    items = list(read(str(cc / "wget-crawl_2024-04-25_sample-0000.warc.gz"), CFG))
    # 48 records: warcinfo 1, request 22, metadata 1, resource 2; 22 responses.
    assert outcomes(items) == {"skip:record_type": 26, "doc": 22}
    urls = [d["url"] for d in docs(items)]
    assert urls[0] == "https://www.semanticscholar.org/research/research-team"
    assert all(u.startswith("https://") and "<" not in u and ">" not in u for u in urls)


def test_wget_responses_are_creativecommons_pages(cc):
    items = list(read(str(cc / "wget-crawl_2024-04-25_sample-0001.warc.gz"), CFG))
    # MANIFEST: 34 records (warcinfo 1, request 15, response 15, metadata 1,
    # resource 2): every response is an HTML page of creativecommons.org.
    assert outcomes(items) == {"skip:record_type": 19, "doc": 15}
    first = docs(items)[0]
    assert first["url"] == "https://creativecommons.org/"
    assert first["text"].startswith("Better Sharing, Brighter Future\n\n")
    assert json.loads(first["meta"])["warc_date"] == "2024-04-25T16:27:48Z"


# Three consecutive HTML responses of the CC-MAIN-2020-34 sample (records 3, 6
# and 9 of the file; the requests and metadata records between them left out).
CC_RESPONSES = (2, 5, 8)
CC_URLS = (
    "http://003338.cn/l41/481397.html",
    "http://01spb.ru/company/",
    "http://035.psb556.com/24/i/u_1090813/article.html",
)


def without_file_name(doc: dict) -> dict:
    """A document with meta `warc_file` and `crawl` (from the file's path) left
    out (the rest must not depend on the file)."""
    meta = json.loads(doc["meta"])
    del meta["warc_file"]
    meta.pop("crawl", None)
    return {**doc, "meta": meta}


@pytest.fixture(scope="module")
def cc_sample(cc) -> tuple[list[bytes], dict[str, dict]]:
    """(the sample's gzip members, its documents by URL as read from the intact file)."""
    path = cc / "CC-MAIN-2020-34_sample16.warc.gz"
    return gzip_members(path.read_bytes()), by_url(read(str(path), CFG))


def test_content_length_5_short_then_two_valid_records_cc(cc_sample, tmp_path):
    members, intact = cc_sample
    first, second, third = (gzip.decompress(members[i]) for i in CC_RESPONSES)
    path = tmp_path / "clen5.warc"
    path.write_bytes(shorten_content_length(first, 5) + second + third)
    items = list(read(str(path), CFG))
    # exactly the documents of the intact file: same id, text, url, meta
    assert [without_file_name(d) for d in items[1:]] == [
        without_file_name(intact[CC_URLS[1]]), without_file_name(intact[CC_URLS[2]])
    ]
    dead = items[0]
    assert (dead.record, dead.path) == ("offset 0", str(path))
    assert dead.reason.startswith("Content-Length 36573 does not end the record")


def test_warc_gz_of_three_members_cut_by_200_bytes_cc(cc_sample, tmp_path):
    members, intact = cc_sample
    data = b"".join(members[i] for i in CC_RESPONSES)
    path = tmp_path / "cut200.warc.gz"
    path.write_bytes(data[:-200])
    items = list(read(str(path), CFG))
    assert [without_file_name(d) for d in items[:2]] == [
        without_file_name(intact[CC_URLS[0]]), without_file_name(intact[CC_URLS[1]])
    ]
    (dead,) = items[2:]
    assert dead.record == f"offset {len(members[2]) + len(members[5])}"
    assert "gzip member truncated" in dead.reason and "no part of it is used" in dead.reason


def test_dolma_jsonl(cc):
    items = list(read(str(cc / "ccnet_cc_en_head-0091.dolma.jsonl.gz"), CFG))
    assert outcomes(items) == {"doc": 10}
    first = docs(items)[0]
    assert first["url"] == (
        "http://100kinvesting.com/2016/11/28/first-teleconference-calls-invoice-factoring/"
    )
    assert first["text"].startswith("We will be starting to hold weekly teleconferences")
    assert json.loads(first["meta"])["warc_date"] == "2020-03-29T09:04:10Z"
    big = cc / "CC-MAIN-20190717121559-20190717143559-00140.dolma.jsonl.gz"
    big = outcomes(read(str(big), CFG))
    assert big == {"doc": 670, "skip:empty": 27}  # 697 rows, 27 with empty text


# --- three HTTP responses and their charsets ------------------------------------

# Real sentences: the first of the Bulgarian Wikipedia article on the Gregorian
# calendar (the demo's bgwiki dump), the opening of Natsume Soseki's "I Am a
# Cat" (1905), and a sentence of Henri Bue's French "Alice" (1869, Project
# Gutenberg #55456).
BULGARIAN = (
    "Григорианският календар (понякога наричан и Грегориански календар, „нов стил“) е "
    "съвременният международно признат светски календар, на който се основава и "
    "международният стандарт ISO 8601."
)
JAPANESE = "吾輩は猫である。名前はまだ無い。"
FRENCH = (
    "Il n'y avait rien là de bien étonnant, et Alice ne trouva même pas "
    'très-extraordinaire d\'entendre parler le Lapin qui se disait: "Ah! j\'arriverai trop tard!"'
)


def html_page(title: str, sentence: str, head: str = "") -> str:
    return (
        f"<!DOCTYPE html>\n<html><head>{head}<title>{title}</title></head>\n"
        f"<body><p>{sentence}</p></body></html>\n"
    )


def warc_response(uri: str, number: int, content_type: str, body: bytes) -> bytes:
    """A WARC/1.0 response record holding an HTTP 200 response with `body`."""
    http = (
        f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("ascii") + body
    header = (
        "WARC/1.0\r\nWARC-Type: response\r\n"
        f"WARC-Record-ID: <urn:uuid:00000000-0000-4000-8000-{number:012d}>\r\n"
        "WARC-Date: 2024-05-17T23:31:22Z\r\n"
        f"WARC-Target-URI: {uri}\r\n"
        "Content-Type: application/http; msgtype=response\r\n"
        f"Content-Length: {len(http)}\r\n\r\n"
    ).encode("ascii")
    return header + http + b"\r\n\r\n"


def test_charsets_of_three_http_responses(tmp_path):
    french = html_page("Alice", FRENCH, '<meta charset="utf-8">').encode("utf-8")
    stray = french.replace("étonnant".encode(), b"\xe9tonnant")  # one Latin-1 byte
    assert len(stray) == len(french) - 1
    path = tmp_path / "charsets.warc"
    path.write_bytes(
        warc_response(
            "http://bg.example/", 1, "text/html; charset=windows-1251",
            html_page("Календар", BULGARIAN).encode("cp1251"),
        )
        + warc_response(
            "http://ja.example/", 2, "text/html",
            html_page("吾輩は猫である", JAPANESE, '<meta charset="shift_jis">').encode("shift_jis"),
        )
        + warc_response("http://fr.example/", 3, "text/html; charset=UTF-8", stray)
    )
    bg, ja, fr = read(str(path), CFG)
    assert bg["text"] == BULGARIAN
    assert ja["text"] == JAPANESE
    meta = [json.loads(d["meta"]) for d in (bg, ja, fr)]
    assert [(m["charset"], m["charset_source"], m["replacements"]) for m in meta] == [
        ("cp1251", "http", 0),
        ("shift_jis", "meta", 0),
        ("utf-8", "http", 1),
    ]
    # The rule: the stray byte becomes one U+FFFD, counted in meta; 1 of ~200
    # characters is below MAX_REPLACEMENT_RATIO, so the page is kept.
    assert fr["text"] == FRENCH.replace("étonnant", "\ufffdtonnant")
    assert MAX_REPLACEMENT_RATIO == 0.01


def test_undecodable_payload_is_a_dead_letter(tmp_path):
    # The Bulgarian page in windows-1251, declared UTF-8: each Cyrillic letter
    # is an invalid UTF-8 byte, far beyond MAX_REPLACEMENT_RATIO.
    page = html_page("Календар", BULGARIAN).encode("cp1251")
    path = tmp_path / "mislabelled.warc"
    path.write_bytes(warc_response("http://bg.example/", 1, "text/html; charset=utf-8", page))
    assert (len(page), sum(b > 0x7F for b in page)) == (276, 162)
    (dead,) = read(str(path), CFG)
    # 162 bytes above 0x7F give 161 U+FFFD: "л“" (EB 93) is one cut-short
    # 3-byte sequence, replaced as a whole.
    assert dead == DeadLetter(
        "commoncrawl", str(path), "offset 0",
        "undecodable: 161 of 275 characters replaced decoding as utf-8 (more than 1%); "
        "WARC-Record-ID <urn:uuid:00000000-0000-4000-8000-000000000001>",
    )
    assert decode_counting("a\ufffdb".encode("utf-8") + b"\xe9", "utf-8") == ("a\ufffdb\ufffd", 1)


# --- a UTF-16 page without a mark or charset; a truncated .warc.xz ------------------


def test_utf16_page_without_mark_or_charset(demo_inputs, tmp_path):
    # The demo's HTML page in UTF-16 LE without a byte-order mark, served as
    # "text/html" without a charset; its <meta charset="UTF-8"> is interleaved
    # with NULs, so no prescan finds it.
    demo = demo_inputs[DEMO_WARC]
    (original,) = docs(read(str(demo), CFG))
    html = payload(demo, original["url"]).decode("utf-8")
    page = html.encode("utf-16-le")
    assert meta_charset(page) is None and page[1::2].count(0) == len(html)  # all ASCII
    path = tmp_path / "utf16.warc"
    path.write_bytes(warc_response(original["url"], 1, "text/html", page))
    (doc,) = read(str(path), CFG)
    # it was charset cp1252 (detector), 0 replacements, and the raw HTML as the text
    assert doc["text"] == original["text"]
    meta = json.loads(doc["meta"])
    assert (meta["charset"], meta["charset_source"], meta["replacements"]) == ("utf-16-le", "pattern", 0)
    # the bytes outrank a declared ASCII-compatible charset; a BOM outranks them
    assert choose_charset(page, "iso-8859-1") == ("utf-16-le", "pattern")
    assert choose_charset(html.encode("utf-16-be"), None) == ("utf-16-be", "pattern")
    assert choose_charset(html.encode("utf-16"), None) == ("utf-16", "bom")


def xz_cut(warc_gz: Path, tmp_path: Path, name: str) -> tuple[Path, int]:
    """The WARC of `warc_gz` recompressed as xz and cut at 60%: (path, its size)."""
    whole = lzma.compress(gzip.decompress(warc_gz.read_bytes()))
    path = tmp_path / name
    path.write_bytes(whole[: len(whole) * 6 // 10])
    return path, path.stat().st_size


def test_truncated_xz_gives_every_record_before_the_cut(demo_inputs, tmp_path):
    demo = demo_inputs[DEMO_WARC]
    path, size = xz_cut(demo, tmp_path, "at.warc.xz")
    items = list(read(str(path), CFG))
    # it was the dead letter alone: the 64 KiB read that met the cut raised,
    # and the records it had decoded were lost
    assert items[:-1] == list(read(str(demo), CFG))[:4]
    assert outcomes(items) == {"skip:record_type": 3, "skip:http_status": 1, "dead": 1}
    dead = items[-1]
    assert (dead.path, dead.record) == (str(path), "offset 2719")  # the HTML response, cut
    assert dead.reason.startswith("record ") and dead.reason.endswith(
        " shorter than its Content-Length 24508 (compressed stream broken: EOFError: xz stream "
        f"truncated: the input ends at byte {size} inside the stream that starts at byte 0); "
        "no part of it is used; WARC-Record-ID <urn:uuid:103a7ae2-30ec-46f5-b749-d1368dee3641>"
    )


def test_truncated_xz_gives_every_record_before_the_cut_cc(cc, tmp_path):
    sample = cc / "CC-MAIN-2020-34_sample16.warc.gz"
    path, size = xz_cut(sample, tmp_path, "CC-MAIN-2020-34_sample16.warc.xz")
    items = list(read(str(path), CFG))
    # 23 records decode before the cut (it was 17)
    assert outcomes(items) == {"skip:record_type": 16, "doc": 7, "dead": 1}
    intact = list(read(str(sample), CFG))[:23]
    assert [without_file_name(x) if isinstance(x, dict) else x for x in items[:-1]] == [
        without_file_name(x) if isinstance(x, dict) else x for x in intact
    ]
    dead = items[-1]
    assert (dead.path, dead.record) == (str(path), "offset 256324")
    assert f"xz stream truncated: the input ends at byte {size} inside the stream" in dead.reason


# --- the demo's other web data: a WARC of iana.org and saved pages (.html) ----

IANA_WARC = "inputs/commoncrawl/pywb-2.10.0/iana.warc.gz"
PAGES = {  # folder of saved pages -> what the reader makes of them
    "inputs/commoncrawl/trafilatura-1.0.0": {"doc": 108, "skip:empty": 2},
    "inputs/commoncrawl/htmldate-1.2.3": {"doc": 68},
    "inputs/commoncrawl/newspaper4k-0.9.6": {"doc": 29, "skip:empty": 1},
    # six pages whose bytes the detector takes for EUC-KR or GBK: dead letters
    "inputs/commoncrawl/formasaurus-0.10.0": {"doc": 907, "skip:empty": 41, "dead": 6},
}


def read_folder(folder: Path) -> list:
    return [x for page in sorted(folder.glob("*.html")) for x in read(str(page), CFG)]


def test_pywb_crawl_of_iana(demo_inputs):
    items = list(read(str(demo_inputs[IANA_WARC]), CFG))
    assert outcomes(items) == {"doc": 16, "skip:record_type": 295, "skip:non_html": 28, "skip:http_status": 4}
    home = by_url(items)["http://www.iana.org/"]
    assert json.loads(home["meta"])["warc_file"] == "iana.warc.gz"
    assert len(home["text"]) == 941


@pytest.mark.parametrize("folder", sorted(PAGES))
def test_saved_pages_of_the_demo(demo_inputs, folder):
    items = read_folder(demo_inputs[folder])
    assert outcomes(items) == PAGES[folder]
    name = Path(folder).name
    assert all(d["id"] == doc_id("commoncrawl", f"{name}/{Path(d['url']).name}") for d in docs(items))
    for dead in (x for x in items if isinstance(x, DeadLetter)):
        assert dead.record == "file" and re.fullmatch(
            r"undecodable: \d+ of \d+ characters replaced decoding as (euc_kr|gbk) \(more than 1%\)", dead.reason)


def test_a_saved_page_as_text(demo_inputs):
    path = demo_inputs["inputs/commoncrawl/trafilatura-1.0.0"] / "blog.python.org.html"
    (page,) = list(read(str(path), CFG))
    assert page["url"] == str(path)
    assert page["text"].startswith("Friday, December 23, 2016\n\nPython 3.6.0 is now available!\n\n")
    assert len(page["text"]) == 1059
    assert json.loads(page["meta"]) == {
        "charset": "utf-8", "charset_source": "meta", "content_type": "text/html", "replacements": 0,
        "warc_date": "", "warc_file": "blog.python.org.html"}
    assert commoncrawl.split(str(path), 1 << 30, CFG) == []  # a page is read whole


def test_compressed_cut_empty_and_too_large_pages(demo_inputs, tmp_path, monkeypatch):
    html = (demo_inputs["inputs/commoncrawl/trafilatura-1.0.0"] / "blog.python.org.html").read_bytes()
    (plain,) = list(read(str(demo_inputs["inputs/commoncrawl/trafilatura-1.0.0"] / "blog.python.org.html"), CFG))
    packed = gzip.compress(html)
    (tmp_path / "page.html.gz").write_bytes(packed)
    (tmp_path / "page.htm.xz").write_bytes(lzma.compress(html))
    for name in ("page.html.gz", "page.htm.xz"):
        (doc,) = list(read(str(tmp_path / name), CFG))
        assert doc["text"] == plain["text"] and doc["id"] == doc_id("commoncrawl", f"{tmp_path.name}/{name}")
    (tmp_path / "cut.html.gz").write_bytes(packed[: len(packed) // 2])
    (dead,) = list(read(str(tmp_path / "cut.html.gz"), CFG))
    assert isinstance(dead, DeadLetter) and dead.record == "file"
    assert dead.reason.startswith("compressed stream broken: EOFError")
    (tmp_path / "empty.html").write_bytes(b"<html><body><script>var x;</script></body></html>")
    assert list(read(str(tmp_path / "empty.html"), CFG)) == [Skip("commoncrawl", "empty")]
    monkeypatch.setattr(commoncrawl, "MAX_RECORD_BYTES", len(html) - 1)
    assert list(read(str(demo_inputs["inputs/commoncrawl/trafilatura-1.0.0"] / "blog.python.org.html"), CFG)) == [
        Skip("commoncrawl", "too_large")]
    (dead,) = list(read(str(tmp_path / "missing.html"), CFG))
    assert dead.reason.startswith("cannot open:")
