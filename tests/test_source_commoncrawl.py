"""CommonCrawl reader on real WARC/WET/Dolma files: the demo's 2013 wget crawl
(Warcat sdist) and the shared corpus (Common Crawl, ClueWeb09, GNU wget)."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from warcio.archiveiterator import ArchiveIterator

from pipeline.config import load_config
from pipeline.schema import doc_id
from pipeline.sources.base import DeadLetter, Skip
from pipeline.sources.commoncrawl import (
    choose_charset,
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
    for record in ArchiveIterator(gzip.open(path)):
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


def test_unparsable_record_is_a_dead_letter_with_its_offset(demo_raw, tmp_path):
    starts = record_starts(demo_raw)
    assert len(starts) == 8
    bad = demo_raw[: starts[3]] + b"XARC/1.0" + demo_raw[starts[3] + 8 :]
    path = tmp_path / "bad.warc"
    path.write_bytes(bad)
    items = list(read(str(path), CFG))
    assert outcomes(items) == {"skip:record_type": 2, "skip:http_status": 1, "dead": 1}
    dead = items[-1]
    assert dead.record == f"offset {starts[3]}"
    assert "XARC/1.0" in dead.reason and "rest of file lost" in dead.reason


def test_truncated_gzip_reports_the_cut_record_and_the_stream(demo_inputs, tmp_path):
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(demo_inputs[DEMO_WARC].read_bytes()[:8000])
    items = list(read(str(path), CFG))
    assert outcomes(items) == {"skip:record_type": 3, "skip:http_status": 1, "dead": 2}
    cut, stream = items[-2:]
    # The 200 response is cut: named by its WARC-Record-ID, nothing silently lost.
    assert cut.record == "<urn:uuid:103a7ae2-30ec-46f5-b749-d1368dee3641>"
    assert "shorter than its Content-Length" in cut.reason
    assert stream.record.startswith("offset ") and "EOFError" in stream.reason


def test_wrong_content_length_is_a_dead_letter(demo_raw, tmp_path):
    starts = record_starts(demo_raw)
    head, rec, tail = demo_raw[: starts[4]], demo_raw[starts[4] : starts[5]], demo_raw[starts[5] :]
    path = tmp_path / "clen.warc"
    path.write_bytes(head + rec.replace(b"Content-Length: ", b"Content-Length: 9", 1) + tail)
    items = list(read(str(path), CFG))
    # The bogus length swallows the three resource records after it.
    assert outcomes(items) == {"skip:record_type": 3, "skip:http_status": 1, "dead": 1}
    assert items[-1].record == "<urn:uuid:103a7ae2-30ec-46f5-b749-d1368dee3641>"


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


def test_cc_2020_34_sample(cc):
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
