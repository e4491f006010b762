"""MinHash signatures and LSH bands: equal to datasketch 2.0 configured explicitly
(scheme "affine32", hashfunc shingle_hash32), on real documents."""

from __future__ import annotations

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from pipeline.dedup import minhash
from pipeline.dedup.minhash import (
    EMPTY_VALUE,
    HASHFUNC,
    LSH_WEIGHTS,
    SCHEME,
    band_hashes,
    bands,
    lsh_params,
    normalize_words,
    permutations,
    shingle_hash32,
    shingle_hashes,
    shingles,
    signatures,
    word_hash64,
)
from tests.conftest import book_paragraphs, datasketch_minhash, json_texts


@pytest.fixture(scope="module")
def alice(demo_inputs) -> list[str]:
    return book_paragraphs(demo_inputs["inputs/books/alice29.txt"], min_words=1)


@pytest.fixture(scope="module")
def crawl(shared_corpus) -> list[str]:
    """Non-ASCII Common Crawl pages: Cyrillic, CJK, Arabic, accents."""
    dolma = "CC-MAIN-20190717121559-20190717143559-00140.dolma.jsonl.gz"
    texts = json_texts(shared_corpus / "commoncrawl" / dolma, min_words=0)
    return [t for t in texts if not t.isascii()][:80]


def test_scheme_is_named_and_is_datasketch_default():
    assert SCHEME == "affine32"
    assert MinHash(num_perm=8).scheme == SCHEME  # datasketch 2.0's default, named explicitly here
    assert MinHash(num_perm=8, scheme="affine32").hashvalues.dtype == np.uint32


def test_normalize_words():
    assert normalize_words("Don't STOP\u2014now!") == ["don", "t", "stop", "now"]
    # NFC: a decomposed e + combining acute is the same word as the precomposed one
    assert normalize_words("Caf\u0065\u0301 caf\u00e9") == ["caf\u00e9", "caf\u00e9"]
    # Unicode punctuation splits; symbols and digits stay inside words
    assert normalize_words("\u00abQuoted\u00bb 3.14$ a+b \u3001\u65e5\u672c\u3002") == [
        "quoted", "3", "14$", "a+b", "\u65e5\u672c",
    ]
    assert normalize_words("tab\tnew\nline\x1csep\u2028x") == ["tab", "new", "line", "sep", "x"]
    assert normalize_words("") == [] and normalize_words(" ... !! \n") == []


def test_shingles_short_and_empty_documents():
    assert shingles("", 5) == []
    assert shingles("?!", 5) == []
    assert shingles("ok", 5) == ["ok"]
    assert shingles("One two, THREE", 5) == ["one two three"]  # fewer than ngram: one shingle
    assert shingles("a b c d e", 5) == ["a b c d e"]
    assert shingles("a b c d e f", 5) == ["a b c d e", "b c d e f"]
    with pytest.raises(ValueError):
        shingles("a b", 0)


def test_permutations_equal_datasketch():
    for num_perm, seed in ((128, 1), (256, 42)):
        a, b = permutations(num_perm, seed)
        ref = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
        assert a.dtype == b.dtype == np.uint32
        assert np.array_equal(a, ref[0]) and np.array_equal(b, ref[1])
        assert (a & 1).all()  # odd: a bijection mod 2**32


def test_shingle_hash32_values():
    # pinned: the hash is part of the manifest's contract (`hashfunc`); a change must be seen
    assert HASHFUNC == f"{shingle_hash32.__module__}.{shingle_hash32.__name__}"
    assert word_hash64(b"alice") == 0xD5E84A539EBEB9A3
    assert shingle_hash32(b"alice was beginning to get") == 0xB8BDCB21
    assert shingle_hash32(b"ok") == 0xDB286D4C
    # order-sensitive, and a NUL byte or a trailing word is not lost
    assert shingle_hash32(b"to get") != shingle_hash32(b"get to")
    assert word_hash64(b"a\x00") != word_hash64(b"a")
    assert shingle_hash32(b"a b") != shingle_hash32(b"a b a")


def test_vectorised_hashes_equal_the_python_reference(crawl, alice, monkeypatch):
    texts = crawl[:20] + alice[:20] + [
        "emoji \U0001f600\U0001f44d\U0001f3fd flags \U0001f1eb\U0001f1f7 end",
        "q\u0301 a\u0308\u0323 combining marks that NFC keeps apart, \u0915\u094d\u0937",
        "lone \ud800 and \udfff surrogates, \x00 NUL inside",
        "x" * 300 + " a word longer than the window",
        "", "ok",
    ]
    reference = [
        shingle_hash32(s.encode("utf-8", "surrogatepass")) for t in texts for s in shingles(t, 5)
    ]
    counts = [len(shingles(t, 5)) for t in texts]
    for window in (1 << 16, 64):  # the default word window, and one shorter than a word
        monkeypatch.setattr(minhash, "_WORD_CHUNK_BYTES", window)
        hashes, got_counts = shingle_hashes(texts, 5)
        assert got_counts.tolist() == counts and hashes.dtype == np.uint32
        assert hashes.tolist() == reference
    # the words: every word hash equals word_hash64 of its UTF-8 bytes
    words = [w.encode("utf-8", "surrogatepass") for t in texts for w in normalize_words(t)]
    data = np.frombuffer(b"".join(w + b" " for w in words), dtype=np.uint8)
    got = minhash._word_hashes(data, np.flatnonzero(data == 0x20))
    assert got.tolist() == [word_hash64(w) for w in words]


def test_signature_does_not_depend_on_batch_neighbours(alice):
    texts = [alice[0], "", "ok", alice[1], "One two, THREE", alice[2], "\u2014 !"]
    batch, has_batch = signatures(texts)
    for i, text in enumerate(texts):
        alone, has_alone = signatures([text])
        assert np.array_equal(batch[i], alone[0]) and has_batch[i] == has_alone[0]
    reordered, _ = signatures(texts[::-1])
    assert np.array_equal(reordered[::-1], batch)


def test_signatures_equal_datasketch_on_book_paragraphs(alice):
    texts = alice[:150] + ["", "ok", "\u2014 !"]  # real paragraphs, short lines, no words
    sigs, has_shingles = signatures(texts, num_perm=128, ngram=5, seed=1)
    assert sigs.shape == (len(texts), 128) and sigs.dtype == np.uint32
    assert has_shingles.tolist() == [bool(shingles(t, 5)) for t in texts]
    assert has_shingles[-3:].tolist() == [False, True, False]
    assert (sigs[-1] == EMPTY_VALUE).all()
    for text, sig in zip(texts, sigs):
        assert np.array_equal(sig, datasketch_minhash(text).hashvalues), text[:60]


def test_signatures_equal_datasketch_on_c4_and_multilingual_crawl(shared_corpus, crawl):
    c4 = json_texts(shared_corpus / "c4" / "c4-en-sample.00000-of-00001.json.gz", min_words=0)[:120]
    texts = c4 + crawl
    sigs, _ = signatures(texts)
    for text, sig in zip(texts, sigs):
        assert np.array_equal(sig, datasketch_minhash(text).hashvalues), text[:60]
    # other parameters go through
    sigs, _ = signatures(c4[:20], num_perm=256, ngram=3, seed=7)
    for text, sig in zip(c4[:20], sigs):
        assert np.array_equal(sig, datasketch_minhash(text, 256, 3, 7).hashvalues)


def test_signatures_do_not_depend_on_chunking(alice, monkeypatch):
    long_doc = "\n\n".join(alice)  # the whole book: ~26k shingles, many chunks
    texts = [alice[3], long_doc, "", alice[4], alice[5]]
    whole, _ = signatures(texts)
    monkeypatch.setattr(minhash, "_CHUNK_BYTES", 1)  # 256 columns per chunk
    chunked, has_shingles = signatures(texts)
    assert np.array_equal(whole, chunked)
    assert has_shingles.tolist() == [True, True, False, True, True]
    assert np.array_equal(chunked[1], datasketch_minhash(long_doc).hashvalues)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95])
@pytest.mark.parametrize("num_perm", [32, 128, 256])
@pytest.mark.parametrize("weights", [LSH_WEIGHTS, (0.5, 0.5), (0.1, 0.9)])
def test_lsh_params_equal_datasketch(threshold, num_perm, weights):
    try:
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=weights)
    except ValueError as e:  # fewer than two bands: refused by both
        assert "b < 2" in str(e)
        with pytest.raises(ValueError, match="b=1 < 2"):
            lsh_params(threshold, num_perm, weights)
        return
    assert lsh_params(threshold, num_perm, weights) == (lsh.b, lsh.r)


def test_lsh_params_values():
    assert LSH_WEIGHTS == (0.2, 0.8)  # a missed duplicate weighs 4 false candidates
    assert lsh_params(0.8, 128) == (12, 10)  # 120 of 128 values used
    assert lsh_params(0.9, 128) == (7, 18)  # book dedup
    assert lsh_params(0.5, 128) == (30, 4)
    assert lsh_params(0.8, 128, (0.5, 0.5)) == (9, 13)  # datasketch's default weights
    with pytest.raises(ValueError):
        lsh_params(1.5, 128)
    with pytest.raises(ValueError, match="weights"):
        lsh_params(0.8, 128, (0.0, 1.0))


def test_bands_find_pairs_at_the_threshold():
    # the chance that a pair of true Jaccard s shares a band: 1 - (1 - s**r)**b
    def candidate(s: float, b: int, r: int) -> float:
        return 1 - (1 - s**r) ** b

    b, r = lsh_params(0.8, 128)
    assert candidate(0.85, b, r) > 0.92 > candidate(0.85, 9, 13) + 0.2
    assert candidate(0.9, b, r) > 0.99
    assert candidate(0.5, b, r) < 0.015 and candidate(0.6, b, r) < 0.075


def test_bands_cut_the_signature_like_datasketch(alice):
    sig = signatures([alice[20]])[0][0]
    b, r = lsh_params(0.8, 128)
    keys = bands(sig, b, r)
    assert [i for i, _ in keys] == list(range(12))
    assert len({h for _, h in keys}) == 12
    other = sig.copy()
    other[3 * r + 5] ^= 1  # one value of band 3
    other[b * r + 2] ^= 1  # a value past b*r: no band holds it
    changed = [i for (i, h), (_, g) in zip(keys, bands(other, b, r)) if h != g]
    assert changed == [3]
    # datasketch's buckets: band i holds hashvalues[i*r:(i+1)*r]; equal bytes, same bucket
    assert band_hashes(np.stack([sig, sig]), b, r).tolist()[0] == [h for _, h in keys]
    with pytest.raises(ValueError):
        band_hashes(sig[None, :], 10, 13)  # 130 > 128 values


def test_lone_surrogate_is_hashed_not_an_error():
    # JSON "\ud800" escapes decode to a lone surrogate, which UTF-8 cannot encode
    text = "broken \ud800 escape in a crawled page"
    sigs, has_shingles = signatures([text])
    assert has_shingles.tolist() == [True]
    m = MinHash(num_perm=128, seed=1, hashfunc=shingle_hash32, scheme="affine32")
    m.update_batch([s.encode("utf-8", "surrogatepass") for s in shingles(text, 5)])
    assert np.array_equal(sigs[0], m.hashvalues)
