"""MinHash signatures and LSH bands: equal to datasketch 2.0 configured explicitly
(scheme "affine32", hashfunc sha1_hash32), on real documents."""

from __future__ import annotations

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH
from datasketch.hashfunc import sha1_hash32 as ds_sha1_hash32

from pipeline.filters import minhash
from pipeline.filters.minhash import (
    EMPTY_VALUE,
    SCHEME,
    band_hashes,
    bands,
    lsh_params,
    normalize_words,
    permutations,
    sha1_hash32,
    shingles,
    signatures,
)
from tests.bench.bench_dedup import book_paragraphs, json_texts


def datasketch_minhash(text: str, num_perm: int = 128, ngram: int = 5, seed: int = 1) -> MinHash:
    """The oracle: datasketch configured explicitly as our signatures claim to be."""
    m = MinHash(num_perm=num_perm, seed=seed, hashfunc=ds_sha1_hash32, scheme="affine32")
    m.update_batch([s.encode("utf-8") for s in shingles(text, ngram)])
    return m


@pytest.fixture(scope="module")
def alice(demo_inputs) -> list[str]:
    return book_paragraphs(demo_inputs["inputs/books/alice29.txt"], min_words=1)


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


def test_sha1_hash32_equals_datasketch(alice):
    shingle_bytes = [s.encode("utf-8") for s in shingles(alice[10], 5)]
    assert sha1_hash32(shingle_bytes).tolist() == [ds_sha1_hash32(s) for s in shingle_bytes]


def test_signatures_equal_datasketch_on_book_paragraphs(alice):
    texts = alice[:150] + ["", "ok", "\u2014 !"]  # real paragraphs, short lines, no words
    sigs, has_shingles = signatures(texts, num_perm=128, ngram=5, seed=1)
    assert sigs.shape == (len(texts), 128) and sigs.dtype == np.uint32
    assert has_shingles.tolist() == [bool(shingles(t, 5)) for t in texts]
    assert has_shingles[-3:].tolist() == [False, True, False]
    assert (sigs[-1] == EMPTY_VALUE).all()
    for text, sig in zip(texts, sigs):
        assert np.array_equal(sig, datasketch_minhash(text).hashvalues), text[:60]


def test_signatures_equal_datasketch_on_c4_and_multilingual_crawl(shared_corpus):
    c4 = json_texts(shared_corpus / "c4" / "c4-en-sample.00000-of-00001.json.gz", min_words=0)[:120]
    dolma = "CC-MAIN-20190717121559-20190717143559-00140.dolma.jsonl.gz"
    crawl = json_texts(shared_corpus / "commoncrawl" / dolma, min_words=0)
    crawl = [t for t in crawl if not t.isascii()][:80]  # Cyrillic, CJK, Arabic, accents
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


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.9])
@pytest.mark.parametrize("num_perm", [128, 256])
def test_lsh_params_equal_datasketch(threshold, num_perm):
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    assert lsh_params(threshold, num_perm) == (lsh.b, lsh.r)


def test_lsh_params_values():
    assert lsh_params(0.8, 128) == (9, 13)  # 117 of 128 values used
    assert lsh_params(0.5, 128) == (25, 5)
    with pytest.raises(ValueError):
        lsh_params(1.5, 128)


def test_bands_cut_the_signature_like_datasketch(alice):
    sig = signatures([alice[20]])[0][0]
    b, r = lsh_params(0.8, 128)
    keys = bands(sig, b, r)
    assert [i for i, _ in keys] == list(range(9))
    assert len({h for _, h in keys}) == 9
    other = sig.copy()
    other[3 * r + 5] ^= 1  # one value of band 3
    other[b * r + 2] ^= 1  # a value past b*r: no band holds it
    changed = [i for (i, h), (_, g) in zip(keys, bands(other, b, r)) if h != g]
    assert changed == [3]
    # datasketch's buckets: band i holds hashvalues[i*r:(i+1)*r]; equal bytes, same bucket
    assert band_hashes(np.stack([sig, sig]), b, r).tolist()[0] == [h for _, h in keys]
    with pytest.raises(ValueError):
        band_hashes(sig[None, :], 10, 13)


def test_lone_surrogate_is_hashed_not_an_error():
    # JSON "\ud800" escapes decode to a lone surrogate, which UTF-8 cannot encode
    text = "broken \ud800 escape in a crawled page"
    sigs, has_shingles = signatures([text])
    assert has_shingles.tolist() == [True]
    m = MinHash(num_perm=128, seed=1, hashfunc=ds_sha1_hash32, scheme="affine32")
    m.update_batch([s.encode("utf-8", "surrogatepass") for s in shingles(text, 5)])
    assert np.array_equal(sigs[0], m.hashvalues)
