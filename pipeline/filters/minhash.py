"""MinHash signatures and LSH bands for near-duplicate detection, vectorised over
batches of documents and bit-for-bit compatible with `datasketch` 2.0.

LLaMA (2023, Section 2.1) removes near-duplicate documents; the public
replications do it with MinHash LSH over word n-gram shingles (Broder 1997;
Leskovec et al., "Mining of Massive Datasets", ch. 3). `datasketch` is the
reference implementation and the test oracle, so every choice below is the one
`datasketch.MinHash` makes when configured as

    MinHash(num_perm=num_perm, seed=seed, hashfunc=datasketch.hashfunc.sha1_hash32,
            scheme="affine32")

- **hash function** `sha1_hash32`: the first 4 bytes of SHA-1 of the shingle's
  UTF-8 bytes, read as a little-endian uint32 (datasketch's default for the
  32-bit schemes).
- **permutation scheme** `"affine32"` (datasketch 2.0's default; "legacy" was
  the only scheme before 2.0): the hash is pre-mixed once with the 32-bit
  MurmurHash3 finalizer (`fmix32`), then permutation k is
  `a_k * h + b_k mod 2**32` with `a_k` odd; values are stored as uint32 and the
  empty signature is all `2**32 - 1`.
- **permutation parameters**: `np.random.RandomState(seed)`, then
  `a = randint(0, 2**31, num_perm, uint32) * 2 + 1`, `b = randint(0, 2**32, num_perm, uint32)`.

Shingles are word n-grams of `normalize_words(text)` (see there). Each distinct
shingle of a document is hashed once; the permutations are applied with numpy
over all shingles of a batch of documents at once, in chunks of bounded memory.
"""

from __future__ import annotations

import functools
import hashlib
import sys
import unicodedata
from collections.abc import Sequence
from itertools import chain

import numpy as np
from scipy.integrate import quad

SCHEME = "affine32"  # datasketch.MinHash(scheme=...): the scheme we reproduce
HASHFUNC = "sha1_hash32"  # datasketch.hashfunc.sha1_hash32: SHA-1, first 4 bytes, little-endian
SIGNATURE_DTYPE = np.uint32  # datasketch's storage dtype for "affine32"
EMPTY_VALUE = np.uint32(0xFFFFFFFF)  # datasketch's initial value: a MinHash of no shingle
LSH_WEIGHTS = (0.5, 0.5)  # datasketch.MinHashLSH default (false positive, false negative)

# Permuted hashes are computed a [num_perm, _CHUNK_BYTES / (4 * num_perm)] uint32
# block (2 MiB) at a time, so the working set stays in cache and memory stays flat
# however long the batch or the document.
_CHUNK_BYTES = 1 << 21
_SPACE = 0x20
_PUNCT_SCAN_END = 0x20000

try:  # CPython's own SHA-1 (HACL*): same digests as hashlib's OpenSSL one, less call overhead
    from _sha1 import sha1 as _sha1
except ImportError:  # pragma: no cover - CPython built without it
    _sha1 = hashlib.sha1

# MurmurHash3 fmix32 constants (Appleby, MurmurHash3.cpp), as datasketch uses them.
_FMIX32 = tuple(np.uint32(v) for v in (16, 0x85EBCA6B, 13, 0xC2B2AE35, 16))


@functools.cache
def _punctuation_tables() -> tuple[np.ndarray, bytes]:
    """(is_punct bool [sys.maxunicode + 1], bytes.translate table for ASCII):
    Unicode general categories P* (Pc Pd Ps Pe Pi Pf Po) map to a space."""
    is_punct = np.zeros(sys.maxunicode + 1, dtype=bool)
    # planes 0-1 only (50 ms instead of 0.5 s): planes 2-16 hold ideographs, tags,
    # variation selectors and private use, no punctuation (Unicode 14/15)
    is_punct[[c for c in range(_PUNCT_SCAN_END) if unicodedata.category(chr(c))[0] == "P"]] = True
    # ASCII text takes a bytes path; bytes.split() does not split on \x1c-\x1f as
    # str.split() does, so those become spaces here too
    ascii_table = bytes(_SPACE if is_punct[c] or 0x1C <= c <= 0x1F else c for c in range(256))
    return is_punct, ascii_table


def _joined_words(text: str) -> bytes:
    """The words of `normalize_words(text)` joined by single spaces, UTF-8."""
    is_punct, ascii_table = _punctuation_tables()
    text = unicodedata.normalize("NFC", text).lower()
    if text.isascii():
        return b" ".join(text.encode("ascii").translate(ascii_table).split())
    # surrogatepass: a lone surrogate (a JSON "\ud800" escape) is kept, never an error
    code_points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").copy()
    code_points[is_punct[code_points]] = _SPACE
    words = code_points.tobytes().decode("utf-32-le", "surrogatepass").split()
    return " ".join(words).encode("utf-8", "surrogatepass")


def normalize_words(text: str) -> list[str]:
    """The words a document is shingled from.

    Normalisation, in order: Unicode NFC; `str.lower()`; every punctuation
    character (Unicode general category P*: `.,;:!?'"()[]{}-_/` and their
    Unicode relatives such as `’ « » — 、 。`) becomes a space; the result is
    split on Unicode whitespace (`str.split()`). Symbols (`$ + = ©`, emoji),
    digits and combining marks stay inside words. Close to DataTrove's
    `simplify_text` for MinHash (lowercase, whitespace collapsed, punctuation
    removed), with three differences: punctuation is every P* character rather
    than a fixed list, and becomes a space rather than nothing (scraped
    "end.Start" stays two words; "don't" becomes "don t"); accents are kept
    ("résumé" and "resume" differ); digits are kept (not mapped to 0).

    Args:
        text: any Unicode string (a lone surrogate, which UTF-8 cannot encode, is
            kept and later encoded with "surrogatepass").
    Returns:
        The words, in order; `[]` when the text has none (empty, whitespace or
        punctuation only). Example: `"Don't STOP—now!"` -> `["don", "t", "stop", "now"]`.
    """
    joined = _joined_words(text)
    return joined.decode("utf-8", "surrogatepass").split(" ") if joined else []


def shingles(text: str, ngram: int) -> list[str]:
    """Word n-gram shingles of a document, in order (repeats kept): the reference
    definition that `signatures` computes faster.

    A shingle is `ngram` consecutive words of `normalize_words(text)` joined by
    one space. A document with fewer than `ngram` words (but at least one) has a
    single shingle of all its words; a document with no word has no shingle.

    Args:
        text: the document text.
        ngram: words per shingle, >= 1.
    Returns:
        `max(len(words) - ngram + 1, 1)` strings, or `[]` when there is no word.
    Raises:
        ValueError: `ngram < 1`.
    """
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    words = normalize_words(text)
    if len(words) <= ngram:
        return [" ".join(words)] if words else []
    return [" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]


def _shingle_set(text: str, ngram: int) -> set[bytes]:
    """`{s.encode() for s in shingles(text, ngram)}`, cut as slices of one encoded
    string: word boundaries are the space bytes of the space-joined words (a
    word holds no whitespace, and UTF-8 never puts 0x20 inside a multi-byte
    character)."""
    joined = _joined_words(text)
    if not joined:
        return set()
    spaces = np.flatnonzero(np.frombuffer(joined, dtype=np.uint8) == _SPACE)  # words - 1 of them
    n = len(spaces) + 2 - ngram  # shingles
    if n <= 1:
        return {joined}
    starts = [0] + (spaces[: n - 1] + 1).tolist()  # first byte of words 0 .. n-1
    ends = spaces[ngram - 1 :].tolist() + [len(joined)]  # end of words ngram-1 .. last
    return {joined[s:e] for s, e in zip(starts, ends)}


def sha1_hash32(shingles_utf8: Sequence[bytes]) -> np.ndarray:
    """datasketch's `sha1_hash32` over many byte strings at once.

    Args:
        shingles_utf8: byte strings (n of them).
    Returns:
        uint32 [n]: the first 4 bytes of each SHA-1 digest, little-endian.
    """
    sha1 = _sha1
    digests = b"".join([sha1(s).digest() for s in shingles_utf8])  # 20 bytes = 5 words each
    return np.frombuffer(digests, dtype="<u4")[::5].astype(np.uint32)


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, element-wise (a bijection on uint32).

    datasketch ("affine32") applies it once to every input hash before the
    permutations. Args: h uint32 [...]. Returns: uint32, same shape.
    """
    s1, m1, s2, m2, s3 = _FMIX32
    h = h ^ (h >> s1)
    h = h * m1
    h = h ^ (h >> s2)
    h = h * m2
    return h ^ (h >> s3)


@functools.lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The affine permutation parameters datasketch draws for (num_perm, seed).

    Equal to `datasketch.MinHash(num_perm, seed, scheme="affine32").permutations`.

    Returns:
        (a, b): uint32 [num_perm] each, `a` odd (so `a*h + b mod 2**32` is a bijection).
        Read-only arrays (cached).
    Raises:
        ValueError: `num_perm < 1`.
    """
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    a.flags.writeable = b.flags.writeable = False
    return a, b


def signatures(
    texts: Sequence[str], num_perm: int = 128, ngram: int = 5, seed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures of a batch of documents.

    Row i equals `datasketch.MinHash(num_perm=num_perm, seed=seed,
    hashfunc=sha1_hash32, scheme="affine32")` updated with the UTF-8 bytes
    ("surrogatepass") of every `shingles(texts[i], ngram)`.

    Each distinct shingle of a document is hashed once (SHA-1); the permutations
    are applied to all shingles of the batch with numpy, `a[:, None] * h + b`
    over column chunks of about 2 MiB, and reduced per document with
    `np.minimum.reduceat`. Memory: the batch's shingle bytes plus O(chunk).

    Args:
        texts: n documents.
        num_perm: permutations (signature length), >= 1.
        ngram: words per shingle, >= 1.
        seed: permutation seed (datasketch's `seed`).
    Returns:
        (sigs, has_shingles): sigs uint32 [n, num_perm]; has_shingles bool [n],
        False for a document with no word, whose row is all `EMPTY_VALUE`
        (datasketch's empty MinHash) and which the caller drops ("no_shingles").
    Raises:
        ValueError: num_perm < 1 or ngram < 1.
    """
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    a, b = permutations(num_perm, seed)
    # a MinHash is a min over the shingle *set*: hash each distinct shingle of a document once
    per_doc = [_shingle_set(t, ngram) for t in texts]
    counts = np.fromiter(map(len, per_doc), dtype=np.int64, count=len(per_doc))
    has_shingles = counts > 0
    out = np.full((num_perm, int(has_shingles.sum())), EMPTY_VALUE, dtype=SIGNATURE_DTYPE)
    h = fmix32(sha1_hash32(list(chain.from_iterable(per_doc))))
    del per_doc
    # document j (of those with shingles) is h[starts[j]:starts[j+1]]
    starts = np.concatenate(([0], np.cumsum(counts[has_shingles])))
    chunk = max(256, _CHUNK_BYTES // (4 * num_perm))
    buf = np.empty((num_perm, chunk), dtype=SIGNATURE_DTYPE)
    a2, b2 = a[:, None], b[:, None]
    for lo in range(0, len(h), chunk):
        hi = min(lo + chunk, len(h))
        d0 = int(np.searchsorted(starts, lo, side="right")) - 1  # the docs overlapping [lo, hi)
        d1 = int(np.searchsorted(starts, hi, side="left"))
        phv = buf[:, : hi - lo]
        np.multiply(a2, h[lo:hi], out=phv)  # uint32 arithmetic wraps: mod 2**32
        np.add(phv, b2, out=phv)
        local = np.maximum(starts[d0:d1], lo) - lo
        np.minimum(out[:, d0:d1], np.minimum.reduceat(phv, local, axis=1), out=out[:, d0:d1])
    sigs = np.full((len(texts), num_perm), EMPTY_VALUE, dtype=SIGNATURE_DTYPE)
    sigs[has_shingles] = out.T
    return sigs, has_shingles


def _false_positive_probability(threshold: float, b: int, r: int) -> float:
    return quad(lambda s: 1 - (1 - s ** float(r)) ** float(b), 0.0, threshold)[0]


def _false_negative_probability(threshold: float, b: int, r: int) -> float:
    return quad(lambda s: 1 - (1 - (1 - s ** float(r)) ** float(b)), threshold, 1.0)[0]


@functools.lru_cache(maxsize=32)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """LSH bands `(b, r)` exactly as `datasketch.MinHashLSH(threshold, num_perm)` picks them.

    A re-implementation of datasketch 2.0's `lsh._optimal_param` with the default
    weights (0.5, 0.5): over all b >= 1, r >= 1 with b*r <= num_perm, the first
    (b, r) in (b, r) order minimising the weighted areas under the S-curve
    `1 - (1 - s**r)**b` below the threshold (false positives) and above it
    (false negatives), integrated with `scipy.integrate.quad` as datasketch does.
    b*r can be less than num_perm (0.8, 128 -> (9, 13): 117 of 128 values used).

    Args:
        threshold: Jaccard similarity in [0, 1].
        num_perm: signature length, >= 2.
    Returns:
        (b, r): bands and rows per band.
    Raises:
        ValueError: threshold outside [0, 1], num_perm < 2, or b < 2 (datasketch's
            MinHashLSH refuses fewer than two bands as well).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if num_perm < 2:
        raise ValueError(f"num_perm must be >= 2, got {num_perm}")
    fp_weight, fn_weight = LSH_WEIGHTS
    min_error, opt = float("inf"), (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            error = (
                _false_positive_probability(threshold, b, r) * fp_weight
                + _false_negative_probability(threshold, b, r) * fn_weight
            )
            if error < min_error:
                min_error, opt = error, (b, r)
    if opt[0] < 2:
        raise ValueError(
            f"threshold {threshold} with num_perm {num_perm} gives b={opt[0]} < 2 bands"
        )
    return opt


def band_hashes(sigs: np.ndarray, b: int, r: int) -> np.ndarray:
    """Hash each LSH band of each signature to 8 bytes.

    Band i of a signature is its values `[i*r, (i+1)*r)`; values past `b*r` are
    unused (as in datasketch). A band's hash is the first 8 bytes of SHA-1 of its
    r values as little-endian uint32 bytes, read as a little-endian uint64. Two
    documents share a bucket in datasketch's MinHashLSH iff their band bytes are
    equal; here iff the hashes are equal, which adds a false bucket-mate with
    probability about 2**-64 per pair and band.

    Args:
        sigs: uint32 [n, num_perm] from `signatures`.
        b, r: from `lsh_params`, b*r <= num_perm.
    Returns:
        uint64 [n, b].
    Raises:
        ValueError: b < 1, r < 1, b*r > num_perm, or sigs is not a uint32 matrix.
    """
    if sigs.ndim != 2 or sigs.dtype != SIGNATURE_DTYPE:
        raise ValueError(f"sigs must be uint32 [n, num_perm], got {sigs.dtype} {sigs.shape}")
    if b < 1 or r < 1 or b * r > sigs.shape[1]:
        raise ValueError(f"bands b={b}, r={r} do not fit num_perm={sigs.shape[1]}")
    raw = np.ascontiguousarray(sigs[:, : b * r], dtype="<u4").tobytes()
    width = 4 * r
    sha1 = hashlib.sha1
    digests = b"".join(
        [sha1(raw[i : i + width]).digest()[:8] for i in range(0, len(raw), width)]
    )
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64).reshape(len(sigs), b)


def bands(signature: np.ndarray, b: int, r: int) -> list[tuple[int, int]]:
    """The LSH bucket keys of one signature: `[(band_index, band_hash)]`, b of them.

    Args:
        signature: uint32 [num_perm].
        b, r: from `lsh_params`.
    Returns:
        b pairs of Python ints: band index 0..b-1 and its 64-bit hash (`band_hashes`).
    Raises:
        ValueError: as `band_hashes`.
    """
    return list(enumerate(band_hashes(np.asarray(signature)[None, :], b, r)[0].tolist()))
