"""Text decoding decided per file (`pipeline.formats.decode`) and damaged compressed
inputs read up to the damage (`pipeline.core.io.Decompressed`), on real files: the
German Faust of Project Gutenberg and an arXiv source of the shared corpus,
the demo's Alice, Bulgarian Wikipedia dump and fastText model."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import tarfile
import zlib

import pytest

from pipeline.core import io as pio
from pipeline.formats.decode import (
    MAX_REPLACED_SHARE,
    Decoded,
    Undecodable,
    decode_text,
    sniff_wide,
)
from pipeline.sources import arxiv, books

FAUST = "pg2229_de_faust_1.txt"
ALICE = "inputs/books/alice29.txt"
BG_DUMP = "inputs/wikipedia/bgwiki-latest-pages-articles-shortened.xml.bz2"


@pytest.fixture(scope="module")
def faust(shared_corpus) -> bytes:
    data = (shared_corpus / "books" / FAUST).read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and len(data) == 218485  # UTF-8 with a BOM
    return data


def _read_book(path) -> dict:
    (doc,) = books.read(str(path), None)
    assert isinstance(doc, dict), doc
    return doc


# --- one bad byte: one U+FFFD, not a Latin-1 reading of the whole file ----------------


def test_one_bad_byte_in_faust_is_one_replacement(faust, tmp_path):
    at = faust.index("Der Tragödie erster Teil\r\n\r\nby Johann".encode()) + len("Der Tragödie".encode())
    (tmp_path / "good.txt").write_bytes(faust)
    (tmp_path / "bad.txt").write_bytes(faust[:at] + b"\xff" + faust[at:])
    good, bad = _read_book(tmp_path / "good.txt"), _read_book(tmp_path / "bad.txt")
    # it was the whole book as Latin-1: "TragÃ¶die", meta encoding "latin-1"
    assert bad["text"] == good["text"].replace("Der Tragödie", "Der Tragödie\ufffd", 1)
    assert "Ã" not in bad["text"]
    assert json.loads(bad["meta"]) == {
        **json.loads(good["meta"]),
        "title": "Faust: Der Tragödie erster Teil",
        "encoding": "utf-8",
        "replacements": 1,
    }
    assert json.loads(good["meta"])["replacements"] == 0


def test_the_utf8_threshold(faust):
    # k stray bytes, one before each of the first k line ends (no BOM: the
    # UTF-8 rule decides): k of len + k bytes replaced, MAX_REPLACED_SHARE of
    # them the most UTF-8 may have
    def damaged(k: int) -> bytes:
        return b"\xff\r\n".join(faust[3:].split(b"\r\n", k))

    assert MAX_REPLACED_SHARE == 1e-3
    k = 218  # 218 / 218700 < 1e-3 < 219 / 218701
    text = faust[3:].decode("utf-8")
    assert decode_text(damaged(k)) == Decoded(text.replace("\r\n", "\ufffd\r\n", k), "utf-8", k)
    with pytest.raises(Undecodable) as e:
        decode_text(damaged(k + 1))
    assert str(e.value) == "219 of 218701 bytes not valid UTF-8 (UTF-8 with bytes damaged; more than 0.001)"


def test_one_bad_byte_in_a_tex_file_is_one_replacement(shared_corpus):
    src = shared_corpus / "arxiv" / "arXiv-1907.10121_scipy-1.0_src.tar.gz"
    with tarfile.open(src) as tar:
        data = tar.extractfile("scipy-1.0/consortium.tex").read()
    assert "Universitätsstr. 38".encode() in data
    at = data.index("ä".encode()) + 2
    good = arxiv.decode_tex(data)
    bad = arxiv.decode_tex(data[:at] + b"\xff" + data[at:])
    # it was "UniversitÃ¤tsstr." and every other non-ASCII letter of the file as Latin-1
    assert bad == good.replace("Universitätsstr.", "Universitä\ufffdtsstr.")
    assert decode_text(data[:at] + b"\xff" + data[at:]).replacements == 1


# --- UTF-16 and UTF-32 without a byte-order mark --------------------------------------


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_wide_encodings_without_a_mark(faust, codec, tmp_path):
    text = faust[3:].decode("utf-8")
    data = text.encode(codec)  # no byte-order mark
    assert sniff_wide(data) == codec
    assert decode_text(data) == Decoded(text, codec, 0)
    (tmp_path / "good.txt").write_bytes(faust)
    (tmp_path / "wide.txt").write_bytes(data)
    good, wide = _read_book(tmp_path / "good.txt"), _read_book(tmp_path / "wide.txt")
    assert wide["text"] == good["text"]
    assert json.loads(wide["meta"]) == {**json.loads(good["meta"]), "encoding": codec}


def test_no_wide_pattern_in_utf8_text_or_binary(demo_inputs, lid_model):
    alice = demo_inputs[ALICE].read_bytes()
    assert sniff_wide(alice) is None
    model = lid_model.read_bytes()
    assert model.count(0) > 10_000 and sniff_wide(model) is None


# --- a legacy encoding only for a file that is not UTF-8 at all ----------------------


def test_legacy_encoding_detected_for_text_not_utf8(demo_inputs):
    # the Bulgarian dump's first 20 000 characters (UTF-16 with a mark, so read as such)
    xml = bz2.decompress(demo_inputs[BG_DUMP].read_bytes())
    assert xml.startswith(b"\xff\xfe")
    head = decode_text(xml)
    assert (head.encoding, head.replacements) == ("utf-16-le", 0)
    text = head.text[:20_000].encode("cp1251", "ignore").decode("cp1251")  # less a few Latin letters
    assert "Григорианският календар" in text and len(text) > 19_000
    assert decode_text(text.encode("cp1251")) == Decoded(text, "cp1251", 0)
    assert decode_text(text.encode("utf-8")) == Decoded(text, "utf-8", 0)


def test_stray_byte_in_ascii_text(demo_inputs):
    # one byte of another encoding in an ASCII book: too little for a detector
    # to name an encoding, so UTF-8 with that byte replaced and counted
    alice = demo_inputs[ALICE].read_bytes()
    assert max(alice) < 0x80
    stray = alice.replace(b"Alice", b"Alic\xe9", 1)
    assert decode_text(stray) == Decoded(alice.decode().replace("Alice", "Alic\ufffd", 1), "utf-8", 1)


def test_binary_is_undecodable(lid_model):
    with pytest.raises(Undecodable, match=r"^278007 of 938013 bytes not valid UTF-8 \(no other encoding"):
        decode_text(lid_model.read_bytes())


def test_cut_data_drops_an_incomplete_last_character(faust):
    end = faust.rindex("Tragödie".encode()) + len("Tragö".encode()) - 1  # inside its "ö"
    assert decode_text(faust[:end], final=False) == Decoded(faust[3:end - 1].decode(), "utf-8", 0)
    assert decode_text(faust[:end]) == Decoded(faust[3:end - 1].decode() + "\ufffd", "utf-8", 1)


# --- damaged compressed streams: everything before the damage, then the error -------

COMPRESS = {
    "gzip": lambda data: gzip.compress(data, mtime=0),
    "bzip2": bz2.compress,
    "xz": lzma.compress,
}
# what a decompressor object makes of a cut stream: all that can be decoded
DECODABLE = {
    "gzip": lambda cut: zlib.decompressobj(31).decompress(cut),
    "bzip2": lambda cut: bz2.BZ2Decompressor().decompress(cut),
    "xz": lambda cut: lzma.LZMADecompressor().decompress(cut),
}


@pytest.mark.parametrize("fmt", ["gzip", "bzip2", "xz"])
def test_truncated_stream_gives_its_decodable_prefix(demo_inputs, tmp_path, fmt):
    alice = demo_inputs[ALICE].read_bytes()
    whole = COMPRESS[fmt](alice)
    cut = whole[: len(whole) // 2]
    path = tmp_path / f"alice.{fmt}"
    path.write_bytes(cut)
    prefix = DECODABLE[fmt](cut)
    # a bzip2 block is decoded only whole: alice (152 KB) is one block
    assert (len(prefix) > 60_000) if fmt != "bzip2" else (prefix == b"")
    error = f"{fmt} stream truncated: the input ends at byte {len(cut)} inside the stream that starts at byte 0"

    got = []
    with pio.open_input(str(path)) as f, pytest.raises(EOFError) as e:
        while chunk := f.read(1 << 16):  # reads short at the damage, then raises
            got.append(chunk)
    assert str(e.value) == error
    assert b"".join(got) == prefix and alice.startswith(prefix)

    assert pio.read_input(str(path))[0] == prefix
    assert str(pio.read_input(str(path))[1]) == error

    lines = []
    with pio.open_input(str(path)) as f, pytest.raises(EOFError):
        for line in f:  # whole lines only: the cut one raises
            lines.append(line)  # noqa: PERF402 (list(f) would lose them when it raises)
    assert b"".join(lines) == prefix[: prefix.rfind(b"\n") + 1]

    with pytest.raises(EOFError), pio.open_input(str(path)) as f:
        f.read()  # all of it: the damage raises, never a part as if whole

    if prefix:
        f = pio.open_input(str(path))
        assert f.read(10**7) == prefix  # one short read, taken for the end ...
        with pytest.raises(EOFError, match=error):
            f.close()  # ... still hears of the damage


@pytest.mark.parametrize("fmt", ["gzip", "bzip2", "xz"])
def test_corrupt_or_trailing_bytes(demo_inputs, tmp_path, fmt):
    alice = demo_inputs[ALICE].read_bytes()
    whole = COMPRESS[fmt](alice)
    path = tmp_path / f"alice.{fmt}"
    path.write_bytes(whole + b"\x00" * 8)  # NUL padding after the stream is allowed
    with pio.open_input(str(path)) as f:
        assert f.read() == alice
    path.write_bytes(whole + whole)  # two members or streams read as one
    with pio.open_input(str(path)) as f:
        assert f.read() == alice + alice
        f.seek(5)
        assert f.read(6) == alice[5:11]
    path.write_bytes(whole + b"junk")
    data, error = pio.read_input(str(path))
    assert data == alice
    assert isinstance(error, OSError) and str(error) == (
        f"corrupt {fmt} data: the bytes at byte {len(whole)} start no {fmt} stream"
    )
    flipped = bytearray(whole)
    flipped[len(whole) // 2] ^= 0xFF
    path.write_bytes(bytes(flipped))
    data, error = pio.read_input(str(path))
    # found where a checksum ends (the member's, the block's): what came before
    # it is not checked, and may already be wrong
    assert len(data) < len(alice)
    assert isinstance(error, OSError) and str(error).startswith(
        f"corrupt {fmt} data in the stream that starts at byte 0 (read up to byte "
    )
