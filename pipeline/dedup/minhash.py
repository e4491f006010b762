"""MinHash signatures and LSH bands for near-duplicate detection, vectorised over
batches of documents and bit-for-bit compatible with `datasketch` 2.0.

LLaMA (2023, Section 2.1) removes near-duplicate documents; the public
replications do it with MinHash LSH over word n-gram shingles (Broder 1997;
Leskovec et al., "Mining of Massive Datasets", ch. 3). `datasketch` is the
reference implementation and the test oracle: every signature here equals the
one `datasketch.MinHash` computes when configured as

    MinHash(num_perm=num_perm, seed=seed, hashfunc=shingle_hash32, scheme="affine32")

and updated with the UTF-8 bytes of each shingle.

- **hash function** `shingle_hash32` (this module; `HASHFUNC` names it in the
  manifest). datasketch takes any `hashfunc` from bytes to a uint32, which
  allows hashing each word once and combining word hashes into shingle hashes,
  which numpy can do for a whole batch without a Python call per shingle (SHA-1
  per shingle and the per-document shingle sets were 70% of the time). A
  shingle's bytes are split on `b" "` into words; word `w` hashes to
  `word_hash64(w) = fmix64(poly(w + b" "))`, with
  `poly(x) = sum_i x[i] * P**i mod 2**64` (P = `_WORD_P`, odd; the trailing space
  makes `b"a"` and `b"a\x00"` differ); word k of the shingle is weighted by the
  odd constant `C_k = fmix64(k + 1) | 1` (order matters), and the shingle hash is
  the low 32 bits of `fmix64(sum_k C_k * word_hash64(w_k) mod 2**64)`. Like
  datasketch's default `sha1_hash32` it is 32 bits wide: two distinct shingles
  collide with probability about 2**-32, which only ever adds one shared
  shingle to two documents' estimate. Word hashes are 64 bits, so two distinct
  words of a 10-million-word vocabulary collide with probability about 3e-6.
  It is not a cryptographic hash: an adversary can make two long words (about
  2 KiB, Thue-Morse strings) collide, which merges only the adversary's own
  shingles.
- **permutation scheme** `"affine32"` (datasketch 2.0's default; "legacy" was
  the only scheme before 2.0): the hash is pre-mixed once with the 32-bit
  MurmurHash3 finalizer (`fmix32`), then permutation k is
  `a_k * h + b_k mod 2**32` with `a_k` odd; values are stored as uint32 and the
  empty signature is all `2**32 - 1`.
- **permutation parameters**: `np.random.RandomState(seed)`, then
  `a = randint(0, 2**31, num_perm, uint32) * 2 + 1`, `b = randint(0, 2**32, num_perm, uint32)`.

Shingles are word n-grams of `normalize_words(text)` (see there). `signatures`
hashes the words of a group of documents with prefix sums over their bytes,
combines them into shingle hashes with n shifted multiply-adds, and applies the
permutations with numpy over all shingles of the group at once, in chunks of
bounded memory. A repeated shingle is hashed and permuted again rather than
deduplicated: the minimum over a multiset equals the minimum over its set.
Memory is bounded by the group, not by the batch or the document: a batch is
cut into groups of at most `_GROUP_CHARS` characters, and a longer document is
streamed alone, a piece at a time (`pipeline.dedup.exact_keys.text_chunks`), its
last n - 1 word hashes carried into the next piece.
"""

from __future__ import annotations

import functools
import hashlib
import sys
import unicodedata
from collections.abc import Iterator, Sequence

import numpy as np

from pipeline.dedup.exact_keys import text_chunks

SCHEME = "affine32"  # datasketch.MinHash(scheme=...): the scheme we reproduce
# datasketch.MinHash(hashfunc=...): the hash we compute, vectorised (see the module docstring)
HASHFUNC = "pipeline.dedup.minhash.shingle_hash32"
SIGNATURE_DTYPE = np.uint32  # datasketch's storage dtype for "affine32"
EMPTY_VALUE = np.uint32(0xFFFFFFFF)  # datasketch's initial value: a MinHash of no shingle
# datasketch.MinHashLSH(weights=...): (false positive, false negative). Its default
# (0.5, 0.5) picks 9 x 13 bands at 0.8, which finds only about 2 in 3 pairs of
# true Jaccard 0.8-0.9 (a copy with 2% of its words changed); a missed duplicate
# costs more than a false candidate, so misses weigh 4x: 12 x 10 at 0.8 (0.87 of
# those pairs found, 0.97 of copies with 1% changed; pairs at Jaccard 0.5 and 0.6
# become candidates 1% and 7% of the time, against 0.1% and 1%), 7 x 18 at 0.9.
LSH_WEIGHTS = (0.2, 0.8)

# Permuted hashes are computed a [num_perm, _CHUNK_BYTES / (4 * num_perm)] uint32
# block (2 MiB) at a time, so the working set stays in cache and memory stays flat
# however long the batch or the document.
_CHUNK_BYTES = 1 << 21
# Word hashes are computed over at most this many bytes at a time (a longer word
# gets a window of its own): uint64 per byte, 8 of them per text byte, stays small.
_WORD_CHUNK_BYTES = 1 << 16
# Documents are MinHashed in groups of at most this many characters (about 50
# bytes of working memory per word); a longer document alone, a piece of about
# this size at a time.
_GROUP_CHARS = 1 << 20
_SPACE = 0x20
_PUNCT_SCAN_END = 0x20000
_MASK64 = (1 << 64) - 1

# Polynomial word hash: P odd (the golden-ratio constant of Fibonacci hashing), so
# that its inverse Q mod 2**64 exists and a word's hash is a difference of prefix sums.
_WORD_P = 0x9E3779B97F4A7C15
_WORD_Q = pow(_WORD_P, -1, 1 << 64)

# MurmurHash3 fmix32 constants (Appleby, MurmurHash3.cpp), as datasketch uses them.
_FMIX32 = tuple(np.uint32(v) for v in (16, 0x85EBCA6B, 13, 0xC2B2AE35, 16))
# MurmurHash3 fmix64 constants (Appleby, MurmurHash3.cpp).
_FMIX64_INT = (33, 0xFF51AFD7ED558CCD, 33, 0xC4CEB9FE1A85EC53, 33)
_FMIX64 = tuple(np.uint64(v) for v in _FMIX64_INT)


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


def _fmix64_int(h: int) -> int:
    """MurmurHash3's 64-bit finalizer of one Python int in [0, 2**64)."""
    s1, m1, s2, m2, s3 = _FMIX64_INT
    h ^= h >> s1
    h = (h * m1) & _MASK64
    h ^= h >> s2
    h = (h * m2) & _MASK64
    return h ^ (h >> s3)


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer, element-wise (a bijection on uint64).

    Args: h uint64 [...]. Returns: a new uint64 array, same shape.
    """
    s1, m1, s2, m2, s3 = _FMIX64
    h = h ^ (h >> s1)
    h *= m1  # uint64 array arithmetic wraps: mod 2**64
    h ^= h >> s2
    h *= m2
    h ^= h >> s3
    return h


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


def word_hash64(word: bytes) -> int:
    """The 64-bit hash of one word: `fmix64(sum_i x[i] * P**i mod 2**64)` over the
    bytes `x = word + b" "`, P = `_WORD_P` (the reference of `_word_hashes`)."""
    h = 0
    for byte in reversed(word + b" "):  # Horner: ((x[n-1] * P + x[n-2]) * P + ...) + x[0]
        h = (h * _WORD_P + byte) & _MASK64
    return _fmix64_int(h)


def _position_weight(k: int) -> int:
    """C_k, the odd weight of word k of a shingle: `fmix64(k + 1) | 1`."""
    return _fmix64_int(k + 1) | 1


def shingle_hash32(shingle: bytes) -> int:
    """The hash of one shingle that `signatures` computes vectorised; pass it to
    datasketch (`MinHash(..., hashfunc=shingle_hash32, scheme="affine32")`) for
    signatures equal to ours.

    The shingle's words are its bytes split on `b" "` (as `shingles` joins them);
    the hash is the low 32 bits of `fmix64(sum_k C_k * word_hash64(word_k) mod 2**64)`
    with `C_k = fmix64(k + 1) | 1` (see the module docstring for the collision rate).

    Args:
        shingle: a shingle's UTF-8 bytes ("surrogatepass"), words separated by one space.
    Returns:
        An int in [0, 2**32), like datasketch's `sha1_hash32`.
    """
    h = 0
    for k, word in enumerate(shingle.split(b" ")):
        h += _position_weight(k) * word_hash64(word)
    return _fmix64_int(h & _MASK64) & 0xFFFFFFFF


@functools.lru_cache(maxsize=2)
def _word_powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(P**j, Q**j) mod 2**64 for j in [0, n): uint64 [n] each (read-only when cached)."""
    out = []
    for base in (_WORD_P, _WORD_Q):
        powers = np.full(n, base, dtype=np.uint64)
        powers[0] = 1
        np.multiply.accumulate(powers, out=powers)  # wraps mod 2**64
        powers.flags.writeable = False
        out.append(powers)
    return out[0], out[1]


def _word_hashes(data: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """`word_hash64` of every word of `data`, without a Python call per word.

    With prefix sums `S[j] = sum_{i<j} x[i] * P**i`, the word whose bytes (space
    included) are `x[s..e]` has `poly = (S[e+1] - S[s]) * Q**s` (Q = P**-1 mod
    2**64). Positions are taken relative to a window of about
    `_WORD_CHUNK_BYTES` bytes that starts at a word, so memory is bounded.

    Args:
        data: uint8 [n], words each followed by exactly one space (0x20).
        ends: int64 [w], the position of each word's space, increasing.
    Returns:
        uint64 [w].
    """
    out = np.empty(len(ends), dtype=np.uint64)
    starts = np.empty_like(ends)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    w0 = 0
    while w0 < len(ends):
        lo = int(starts[w0])
        # the words that end in [lo, lo + chunk), and at least one
        w1 = max(int(np.searchsorted(ends, lo + _WORD_CHUNK_BYTES, side="left")), w0 + 1)
        n = int(ends[w1 - 1]) + 1 - lo
        if n <= _WORD_CHUNK_BYTES:
            p, q = _word_powers(_WORD_CHUNK_BYTES)
        else:  # one word longer than the window: its own powers, not cached
            p, q = _word_powers.__wrapped__(n)
        prefix = np.empty(n + 1, dtype=np.uint64)
        prefix[0] = 0
        np.multiply(data[lo : lo + n], p[:n], out=prefix[1:])
        np.cumsum(prefix[1:], out=prefix[1:])  # wraps mod 2**64
        s = starts[w0:w1] - lo
        poly = prefix[ends[w0:w1] - lo + 1] - prefix[s]
        poly *= q[s]
        out[w0:w1] = poly
        w0 = w1
    return fmix64(out)


def shingle_hashes(texts: Sequence[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """`shingle_hash32` of every shingle of every document, vectorised over the batch.

    The normalised words of all documents (each followed by one space) are hashed
    by `_word_hashes`; each document's word hashes are laid out followed by
    `ngram - 1` zeros, so a window of `ngram` positions never reaches the next
    document and the single shingle of a document with m < ngram words weighs
    only its m words; `sum_k C_k * window[k]` is taken over all windows with
    `ngram` shifted multiply-adds, then the windows that start a shingle are kept.

    Args:
        texts: n documents.
        ngram: words per shingle, >= 1.
    Returns:
        (hashes, counts): hashes uint32 [sum(counts)], the shingles of document 0
        in `shingles` order, then document 1's, ...; counts int64 [n], shingles
        per document (`len(shingles(texts[i], ngram))`).
    Raises:
        ValueError: ngram < 1.
    """
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    joined = [_joined_words(t) for t in texts]
    n_words = np.fromiter(
        (j.count(b" ") + 1 if j else 0 for j in joined), dtype=np.int64, count=len(joined)
    )
    data = np.frombuffer(b"".join([j + b" " for j in joined if j]), dtype=np.uint8)
    del joined
    words = _word_hashes(data, np.flatnonzero(data == _SPACE))
    del data
    pad = ngram - 1
    counts = np.where(n_words > 0, np.maximum(n_words - pad, 1), 0)
    if not len(words):
        return np.empty(0, dtype=np.uint32), counts
    per_doc = n_words[n_words > 0]
    doc_start = np.cumsum(per_doc + pad) - (per_doc + pad)  # in the padded layout
    padded = np.zeros(len(words) + pad * len(per_doc), dtype=np.uint64)
    shift = doc_start - (np.cumsum(per_doc) - per_doc)  # padded minus unpadded start
    padded[np.arange(len(words)) + np.repeat(shift, per_doc)] = words
    del words
    h = _window_sums(padded, ngram)
    del padded
    per_doc = counts[counts > 0]
    first = np.cumsum(per_doc) - per_doc  # document j's shingles in the output
    take = np.arange(int(per_doc.sum())) + np.repeat(doc_start - first, per_doc)
    return fmix64(h[take]).astype(np.uint32), counts  # astype keeps the low 32 bits


def _window_sums(padded: np.ndarray, ngram: int) -> np.ndarray:
    """`sum_k C_k * padded[i + k]` (mod 2**64) for every window start i of
    `padded` (uint64 word hashes, zeros where a document's padding is): uint64
    [len(padded) - ngram + 1], computed with `ngram` shifted multiply-adds."""
    n_windows = len(padded) - ngram + 1
    weights = fmix64(np.arange(1, ngram + 1, dtype=np.uint64)) | np.uint64(1)  # C_k
    h = padded[:n_windows] * weights[0]
    tmp = np.empty_like(h)
    for k in range(1, ngram):
        np.multiply(padded[k : k + n_windows], weights[k], out=tmp)
        h += tmp
    return h


def _piece_word_hashes(text: str) -> np.ndarray:
    """`word_hash64` of every word of `normalize_words(text)`: uint64 [words]."""
    joined = _joined_words(text)
    if not joined:
        return np.empty(0, dtype=np.uint64)
    data = np.frombuffer(joined + b" ", dtype=np.uint8)
    return _word_hashes(data, np.flatnonzero(data == _SPACE))


def _streamed_shingle_hashes(text: str, ngram: int) -> Iterator[np.ndarray]:
    """`shingle_hashes([text], ngram)[0]` in consecutive parts, computed a piece
    of about `_GROUP_CHARS` characters at a time (`text_chunks`: the words of
    the pieces are the words of the text), the last `ngram - 1` word hashes of
    a piece carried into the next one's windows; the parts are empty when the
    text has no word.
    """
    pad = ngram - 1
    carry = np.empty(0, dtype=np.uint64)  # the last `pad` word hashes so far (all, if fewer)
    n_words = 0
    for piece in text_chunks(text, _GROUP_CHARS):
        words = _piece_word_hashes(piece)
        if not len(words):
            continue
        n_words += len(words)
        window = np.concatenate((carry, words))
        if len(window) >= ngram:
            yield fmix64(_window_sums(window, ngram)).astype(np.uint32)
        carry = window[max(len(window) - pad, 0) :]
    if 0 < n_words < ngram:  # fewer words than n: one shingle of all of them, as zero-padded
        yield fmix64(_window_sums(np.concatenate((carry, np.zeros(ngram - n_words, np.uint64))), ngram)).astype(np.uint32)


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
    hashfunc=shingle_hash32, scheme="affine32")` updated with the UTF-8 bytes
    ("surrogatepass") of every `shingles(texts[i], ngram)`.

    Shingle hashes come from `shingle_hashes` (no Python call per word or
    shingle); the permutations are applied to all shingles of a group of
    documents with numpy, `a[:, None] * fmix32(h) + b` over column chunks of
    about 2 MiB, and reduced per document with `np.minimum.reduceat`. Groups
    are consecutive documents of at most `_GROUP_CHARS` characters in all; a
    longer document is a group of its own, streamed
    (`_streamed_shingle_hashes`). Memory: about 50 bytes per word of a group
    plus O(chunk), whatever the batch or the document.

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
    sigs = np.full((len(texts), num_perm), EMPTY_VALUE, dtype=SIGNATURE_DTYPE)
    has_shingles = np.zeros(len(texts), dtype=bool)
    for lo, hi in _groups(texts):
        if hi - lo == 1 and len(texts[lo]) > _GROUP_CHARS:
            sig = np.full((num_perm, 1), EMPTY_VALUE, dtype=SIGNATURE_DTYPE)
            for h in _streamed_shingle_hashes(texts[lo], ngram):
                _permuted_minima(fmix32(h), np.array([0]), a, b, sig)
                has_shingles[lo] = True
            sigs[lo] = sig[:, 0]
            continue
        h, counts = shingle_hashes(texts[lo:hi], ngram)
        has = counts > 0
        out = np.full((num_perm, int(has.sum())), EMPTY_VALUE, dtype=SIGNATURE_DTYPE)
        # document j (of those with shingles) is h[starts[j]:starts[j+1]]
        _permuted_minima(fmix32(h), np.cumsum(counts[has]) - counts[has], a, b, out)
        sigs[lo:hi][has] = out.T
        has_shingles[lo:hi] = has
    return sigs, has_shingles


def _groups(texts: Sequence[str]) -> Iterator[tuple[int, int]]:
    """[lo, hi) ranges of consecutive documents of at most `_GROUP_CHARS`
    characters in all; a longer document is a range of its own."""
    lo, chars = 0, 0
    for i, text in enumerate(texts):
        if i > lo and chars + len(text) > _GROUP_CHARS:
            yield lo, i
            lo, chars = i, 0
        chars += len(text)
    if lo < len(texts):
        yield lo, len(texts)


def _permuted_minima(h: np.ndarray, starts: np.ndarray, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """Fold permuted hashes into running minima: `out[:, j] = min(out[:, j],
    min over h[starts[j]:starts[j + 1]] of a * h + b mod 2**32)`, the last
    document running to the end of `h`.

    Args:
        h: uint32 [m], fmix32'd shingle hashes of consecutive documents.
        starts: int64 [d], increasing, starts[0] == 0, each document non-empty.
        a, b: uint32 [num_perm] (`permutations`).
        out: uint32 [num_perm, d], updated in place.
    """
    num_perm = len(a)
    chunk = max(256, _CHUNK_BYTES // (4 * num_perm))
    buf = np.empty((num_perm, min(chunk, len(h))), dtype=SIGNATURE_DTYPE)
    a2, b2 = a[:, None], b[:, None]
    starts = np.append(starts, len(h))
    for lo in range(0, len(h), chunk):
        hi = min(lo + chunk, len(h))
        d0 = int(np.searchsorted(starts, lo, side="right")) - 1  # the docs overlapping [lo, hi)
        d1 = int(np.searchsorted(starts, hi, side="left"))
        phv = buf[:, : hi - lo]
        np.multiply(a2, h[lo:hi], out=phv)  # uint32 arithmetic wraps: mod 2**32
        np.add(phv, b2, out=phv)
        local = np.maximum(starts[d0:d1], lo) - lo
        np.minimum(out[:, d0:d1], np.minimum.reduceat(phv, local, axis=1), out=out[:, d0:d1])


@functools.lru_cache(maxsize=8)
def _legendre(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [-1, 1] that integrate every
    polynomial of degree <= num_perm exactly (the S-curves below are ones)."""
    return np.polynomial.legendre.leggauss(num_perm // 2 + 1)


def _on(lo: float, hi: float, num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = _legendre(num_perm)
    half = (hi - lo) / 2
    return lo + (x + 1) * half, w * half


@functools.lru_cache(maxsize=32)
def lsh_params(
    threshold: float, num_perm: int, weights: tuple[float, float] = LSH_WEIGHTS
) -> tuple[int, int]:
    """LSH bands `(b, r)` exactly as `datasketch.MinHashLSH(threshold, num_perm,
    weights)` picks them.

    A re-implementation of datasketch 2.0's `lsh._optimal_param`: over all
    b >= 1, r >= 1 with b*r <= num_perm, the first (b, r) in (b, r) order
    minimising the weighted areas under the S-curve `1 - (1 - s**r)**b` below
    the threshold (false positives) and above it (false negatives). datasketch
    integrates them with `scipy.integrate.quad`; they are polynomials of degree
    b*r <= num_perm, so Gauss-Legendre quadrature integrates them exactly, which
    picks the same (b, r) without importing scipy (0.3 s in the launcher). A zero
    weight is refused: every choice then ties within quad's tolerance, and which
    one datasketch picks is the tolerance's accident. b*r can be less than
    num_perm (0.8, 128 -> (12, 10) with the default weights: 120 of 128 values
    used; datasketch's own default (0.5, 0.5) gives (9, 13)).

    Args:
        threshold: Jaccard similarity in [0, 1].
        num_perm: signature length, >= 2.
        weights: (false positive, false negative) weights, `LSH_WEIGHTS` by default.
    Returns:
        (b, r): bands and rows per band.
    Raises:
        ValueError: threshold outside [0, 1], num_perm < 2, a weight <= 0, or
            b < 2 (datasketch's MinHashLSH refuses fewer than two bands as well).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if num_perm < 2:
        raise ValueError(f"num_perm must be >= 2, got {num_perm}")
    fp_weight, fn_weight = weights
    if not (fp_weight > 0 and fn_weight > 0):
        raise ValueError(f"weights must both be > 0, got {weights}")
    below, below_w = _on(0.0, threshold, num_perm)
    above, above_w = _on(threshold, 1.0, num_perm)
    min_error, opt = float("inf"), (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            false_pos = float(below_w @ (1 - (1 - below**r) ** b))  # area under the S-curve
            false_neg = float(above_w @ ((1 - above**r) ** b))  # area above it
            error = false_pos * fp_weight + false_neg * fn_weight
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
