"""C4 reader on the shared corpus: AllenAI's 1000-document C4 `en` sample (keys
text/url/date) and a Paloma `c4_100_domains` file (no url, no timestamp); web
pages read to rebuild C4 from (the demo's); released C4 left as it is in the
production config."""

from __future__ import annotations

import gzip
import json
import lzma
from collections import Counter
from pathlib import Path

import pytest

from pipeline.core.config import ConfigError, load_config
from pipeline.core.schema import doc_id
from pipeline.sources import c4, commoncrawl
from pipeline.sources.base import DeadLetter, Skip, make_document
from pipeline.sources.c4 import native_id, read

ROOT = Path(__file__).resolve().parents[1]
CFG = load_config(ROOT / "configs" / "demo.yaml")
SAMPLE = "c4/c4-en-sample.00000-of-00001.json.gz"
PALOMA = "c4/paloma_c4_100_domains_www.theguardian.com.jsonl.gz"


def kinds(items: list) -> Counter:
    return Counter(
        "dead" if isinstance(x, DeadLetter) else "skip" if isinstance(x, Skip) else "doc"
        for x in items
    )


def test_c4_sample_gives_1000_documents(shared_corpus):
    items = list(read(str(shared_corpus / SAMPLE), CFG))
    assert kinds(items) == {"doc": 1000}
    assert len({d["id"] for d in items}) == 1000
    first = items[0]
    url = "https://www.kentlive.news/news/sevenoaks-mum-who-died-after-2582402"
    assert first["url"] == url
    assert first["id"] == doc_id("c4", f"{url} 2019-04-21T18:54:04Z")
    assert first["text"].startswith(
        "The woman who died after falling from a bridge over the A21 has been identified"
    )
    # OLMo's copy calls C4's `timestamp` `date`: it lands in meta all the same.
    assert json.loads(first["meta"]) == {"timestamp": "2019-04-21T18:54:04Z"}


def test_paloma_file_without_url_uses_the_id(shared_corpus):
    items = list(read(str(shared_corpus / PALOMA), CFG))
    assert kinds(items) == {"doc": 10}
    first = items[0]
    assert first["url"] == ""
    assert first["id"] == doc_id("c4", "5ec2ceb6-982c-48bc-87c4-b111592a1402")
    assert first["text"].startswith("Set into the back of the yielding, overstuffed seats")
    assert json.loads(first["meta"]) == {"timestamp": ""}


@pytest.fixture()
def real_lines(shared_corpus) -> list[bytes]:
    with gzip.open(shared_corpus / SAMPLE) as f:
        return [f.readline() for _ in range(5)]


def test_broken_line_is_a_dead_letter_naming_it(real_lines, tmp_path):
    lines = list(real_lines)
    assert lines[2].startswith(b'{"text":"CHARLES H. MEISNER, one of the prosperous')
    lines[2] = lines[2][:120] + b"\n"  # that real document, cut mid-string
    path = tmp_path / "c4-broken.json.gz"
    path.write_bytes(gzip.compress(b"".join(lines)))
    items = list(read(str(path), CFG))
    assert kinds(items) == {"doc": 4, "dead": 1}
    dead = items[2]
    assert (dead.source, dead.path, dead.record) == ("c4", str(path), "line 3")
    assert dead.reason.startswith("bad JSON: ")  # the string runs into the newline
    # Reading goes on with the next line.
    assert items[3]["text"].startswith("EVER WONDER WHY SOME PEOPLE CAN WORK NIGHTS")


def test_row_without_text_and_truncated_gzip(real_lines, tmp_path):
    row = json.loads(real_lines[0])
    del row["text"]
    plain = tmp_path / "c4.jsonl"
    plain.write_bytes(real_lines[1] + json.dumps(row).encode() + b"\n")
    items = list(read(str(plain), CFG))
    assert kinds(items) == {"doc": 1, "dead": 1}
    assert items[1].record == "line 2" and "text" in items[1].reason

    cut = tmp_path / "c4-cut.json.gz"
    cut.write_bytes(gzip.compress(b"".join(real_lines))[:1500])
    items = list(read(str(cut), CFG))
    # The first line decompresses whole; the stream breaks inside the second.
    assert kinds(items) == {"doc": 1, "dead": 1}
    assert items[1].record == "line 2"
    assert items[1].reason.startswith("unreadable input, rest of file lost: EOFError")
    # where: the file's last byte, inside the one gzip stream
    assert items[1].reason.endswith(": the input ends at byte 1500 inside the stream that starts at byte 0")


def test_native_id_fallbacks():
    assert native_id({"url": "http://a/", "timestamp": "t"}, "x/c4.json.gz", 7) == "http://a/ t"
    assert native_id({"id": 12}, "x/c4.json.gz", 7) == "12"
    # Only the file name: the id does not depend on where the file lies.
    assert native_id({}, "gs://bucket/dir/c4.json.gz", 7) == "c4.json.gz:7"


def test_cut_and_corrupt_xz_json_lines(shared_corpus, tmp_path):
    whole = lzma.compress(gzip.decompress((shared_corpus / SAMPLE).read_bytes()))
    cut = tmp_path / "c4-cut.json.xz"
    cut.write_bytes(whole[: len(whole) // 2])
    lines = lzma.LZMADecompressor().decompress(cut.read_bytes()).count(b"\n")  # whole lines decodable
    items = list(read(str(cut), CFG))
    assert lines > 400 and kinds(items) == {"doc": lines, "dead": 1}
    assert items[-1] == DeadLetter(
        "c4", str(cut), f"line {lines + 1}",
        "unreadable input, rest of file lost: EOFError: xz stream truncated: the input ends at byte "
        f"{cut.stat().st_size} inside the stream that starts at byte 0",
    )
    bad = bytearray(whole)
    bad[len(bad) // 2] ^= 0xFF
    corrupt = tmp_path / "c4-corrupt.json.xz"
    corrupt.write_bytes(bytes(bad))
    # it raised LZMAError out of the reader, an error the reader did not expect
    items = list(read(str(corrupt), CFG))
    assert kinds(items)["dead"] >= 1 and items[-1].record == f"line {kinds(items)['doc'] + 1}"
    assert items[-1].reason.startswith(
        "unreadable input, rest of file lost: OSError: corrupt xz data in the stream that starts at byte 0 "
    )


# --- C4 rebuilt from web pages; released C4 taken as it is --------------------


def test_web_pages_are_read_as_c4(demo_inputs):
    """Any input that is not JSON lines is a page to rebuild C4 from: the
    CommonCrawl reader's Documents, skips and dead letters, of source "c4"."""
    page = demo_inputs["inputs/commoncrawl/trafilatura-1.0.0"] / "blog.python.org.html"
    (doc,) = list(read(str(page), CFG))
    (web,) = list(commoncrawl.read(str(page), CFG))
    assert doc["source"] == "c4" and doc["id"] == doc_id("c4", "trafilatura-1.0.0/blog.python.org.html")
    assert {k: v for k, v in doc.items() if k not in ("id", "source")} == {
        k: v for k, v in web.items() if k not in ("id", "source")}
    warc = str(demo_inputs["inputs/commoncrawl/at.warc.gz"])
    items = list(read(warc, CFG))
    assert [x.source if isinstance(x, Skip) else x["source"] for x in items] == ["c4"] * 8
    assert kinds(items) == {"skip": 7, "doc": 1}
    dead = list(read(str(demo_inputs["inputs/commoncrawl/formasaurus-0.10.0"] / "165.html"), CFG))
    assert [(d.source, d.record) for d in dead] == [("c4", "file")]
    assert c4.split(str(page), 1 << 30, CFG) == [] and not c4.is_released(warc)
    assert c4.is_released("gs://b/c4/en/c4-train.00000-of-01024.json.gz")


def test_production_config_takes_released_c4_as_it_is():
    """LLaMA used the public C4 as released: no C4 rules again, no second
    language ID, no CCNet minimum length; the bad-words list is there for a
    rebuild from WET."""
    prod = load_config(ROOT / "configs" / "llama-1.4t.yaml")
    assert prod.sources_with("c4_rules") == [] and prod.sources["c4"].langs == []
    assert (prod.min_chars("c4"), prod.min_chars("commoncrawl")) == (0, 300)
    assert prod.clean.c4.badwords.endswith("/ldnoobw/en.json") and not prod.clean.c4.badwords_optional
    assert all(p.endswith(".json.gz") for p in prod.sources["c4"].inputs)
    demo = load_config(ROOT / "configs" / "demo.yaml")
    assert demo.sources_with("c4_rules") == ["c4"] and demo.clean.c4.badwords_optional
    assert demo.min_chars("c4") == demo.clean.min_chars == 200
    with pytest.raises(ConfigError, match="sources.c4.min_chars"):
        load_config(ROOT / "configs" / "demo.yaml", ["sources.c4.min_chars=-1"])


def test_min_chars_per_source_in_the_quality_stage():
    from pipeline import clean

    cfg = load_config(ROOT / "configs" / "demo.yaml", ["sources.c4.min_chars=0"])
    stage = clean.QualityFilter(cfg.model_dump_json())
    stage.setup()
    text = "Alice was beginning to get very tired of sitting by her sister on the bank."
    batch = [make_document(s, "alice", text, "") for s in ("c4", "commoncrawl")]
    assert len(text) < cfg.clean.min_chars
    assert [d["source"] for d in stage.process(batch) if isinstance(d, dict)] == ["c4"]
