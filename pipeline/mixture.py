"""The data mixture of LLaMA Table 1: target shares -> epochs per source -> copies.

Pure functions; the shard job (pipeline/shards.py) calls them from Beam, and
`plan_copies` is the same selection in one process (the reference the job is
tested against).

Copies: a source read for f epochs writes every document floor(f) times, and a
seeded, token-weighted selection of its documents once more, so that the extra
copies hold (f - floor(f)) * tokens_available tokens give or take half a
document. A per-document coin flip would hit that only on average: for a source
of a few large documents (two books, one long paper) the draw lands tens of
percent off (the demo's books: 2 epochs planned, 1 written).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

# Extra-copy selection: documents are ordered by u = hash_unit(seed, "repeat", id)
# and taken as a prefix of that order. The order is cut into this many buckets of
# u, so the job only needs tokens per (source, bucket), 7 x 65536 integers, plus
# the documents of one bucket per source (about N/65536 of them).
REPEAT_BUCKETS = 1 << 16

# The achieved mixture is within 0.5 percentage points of the target for
# every source with enough tokens, i.e. whose `share_error_bounds` is within this.
MIXTURE_TOLERANCE = 0.005


def hash_unit(*parts: object) -> float:
    """A deterministic uniform number in [0, 1) from the parts (SHA-256 based).

    Used wherever the recipe needs seeded randomness per document (repeat
    selection, validation split, shard assignment, order in a shard), so the
    result does not depend on worker count, batch size or processing order.
    """
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def compute_epochs(
    shares_percent: dict[str, float],
    tokens_available: dict[str, int],
    total_tokens: float,
    max_epochs: float | None = None,
) -> dict[str, dict[str, float]]:
    """Epochs (repeat factor) per source so that each gets its share of `total_tokens`.

    epochs_s = share_s * total_tokens / tokens_available_s (LLaMA Table 1 reports
    these: CommonCrawl 1.10, C4 1.06, GitHub 0.64, Wikipedia 2.45, Books 2.23,
    ArXiv 1.06, StackExchange 1.03). Sources with no tokens are left out and the
    remaining shares renormalised to sum to 1.

    Args:
        shares_percent: {source: Table 1 share in percent}.
        tokens_available: {source: tokens of the cleaned source}.
        total_tokens: training tokens wanted (1.4e12 in the paper).
        max_epochs: if set, no source is repeated more often than this (a source
            far too small for its share, as in a demo, then gets less than its
            share; nothing is redistributed, the achieved share shows it).
    Returns:
        {source: {"target_share", "share", "tokens_available", "epochs", "capped"}},
        shares as fractions; `share` is the renormalised one.
    Raises:
        ValueError: no source has tokens, or a share is negative.
    """
    if any(v < 0 for v in shares_percent.values()):
        raise ValueError(f"negative share in {shares_percent}")
    present = {s: p for s, p in shares_percent.items() if tokens_available.get(s, 0) > 0 and p > 0}
    if not present:
        raise ValueError("no source with a share has any tokens")
    norm = sum(present.values())
    out = {}
    for source, pct in sorted(present.items()):
        share = pct / norm
        tokens = tokens_available[source]
        epochs = share * total_tokens / tokens
        capped = max_epochs is not None and epochs > max_epochs
        out[source] = {
            "target_share": pct / 100.0,
            "share": share,
            "tokens_available": tokens,
            "epochs": max_epochs if capped else epochs,
            "capped": capped,
        }
    return out


def repeat_key(seed: int, doc_id: str) -> tuple[int, float]:
    """(bucket, u) of a document in the extra-copy order: u = hash_unit(seed,
    "repeat", doc_id) in [0, 1), bucket = floor(u * REPEAT_BUCKETS)."""
    u = hash_unit(seed, "repeat", doc_id)
    return int(u * REPEAT_BUCKETS), u


def extra_tokens(epochs: float, tokens_available: int) -> float:
    """Tokens the extra copies should hold: (f - floor(f)) * tokens_available."""
    return (epochs - math.floor(epochs)) * tokens_available


def cutoff_bucket(bucket_tokens: Iterable[tuple[int, int]], target: float) -> tuple[int, float] | None:
    """The bucket where the extra-copy prefix ends, and the tokens still wanted in it.

    Args:
        bucket_tokens: (bucket, tokens) of one source, each bucket once, any order.
        target: `extra_tokens` of the source.
    Returns:
        (b, residual): buckets below b are taken whole, none above b, and
        0 < residual <= tokens of b are wanted from b; None when target <= 0.
    """
    if target <= 0:
        return None
    cum, last = 0, None
    for bucket, n in sorted(bucket_tokens):
        if cum + n >= target:
            return bucket, target - cum
        cum, last = cum + n, bucket
    # target is below the source's tokens, so only rounding can get here
    return (last, target - cum) if last is not None else None


def boundary_threshold(docs: Iterable[tuple[float, str, int]], residual: float) -> tuple[float, str] | None:
    """The last document of the cutoff bucket that gets an extra copy.

    The documents of the bucket are taken in (u, doc_id) order while that brings
    their tokens nearer to `residual` (a tie stops), so the source's extra tokens
    are off by at most half of one document.

    Args:
        docs: (u, doc_id, tokens) of every document of the cutoff bucket.
        residual: from `cutoff_bucket`.
    Returns:
        (u, doc_id) of the last document taken, or None when none is.
    """
    cum, last = 0, None
    for u, doc_id, n in sorted(docs):
        if cum + n >= residual:
            return (u, doc_id) if cum + n - residual < residual - cum else last
        cum, last = cum + n, (u, doc_id)
    return last


def copies_of(
    epochs: float, key: tuple[int, float], doc_id: str,
    cutoff: tuple[int, tuple[float, str] | None] | None,
) -> int:
    """Copies of one training document: floor(f), plus one if it is in the
    extra-copy prefix.

    Args:
        epochs: f of its source.
        key: its `repeat_key`.
        cutoff: (cutoff bucket, `boundary_threshold` in it) of its source, or
            None when the source takes no extra copy.
    """
    whole = math.floor(epochs)
    if cutoff is None:
        return whole
    bucket, threshold = cutoff
    if key[0] != bucket:
        return whole + (key[0] < bucket)
    return whole + (threshold is not None and (key[1], doc_id) <= threshold)


def plan_copies(docs: list[tuple[str, int]], epochs: float, seed: int) -> dict[str, int]:
    """{doc_id: copies} for one source's training documents, in one process.

    The selection the shard job makes with Beam (same buckets, cutoff and
    threshold): the tokens written are floor(f) * T plus (f - floor(f)) * T
    within half of one document, T the source's tokens.

    Args:
        docs: (doc_id, tokens) of every training document of the source.
    """
    keys = {d: repeat_key(seed, d) for d, _ in docs}
    per_bucket: dict[int, int] = {}
    for d, n in docs:
        per_bucket[keys[d][0]] = per_bucket.get(keys[d][0], 0) + n
    cut = cutoff_bucket(per_bucket.items(), extra_tokens(epochs, sum(n for _, n in docs)))
    cutoff = None
    if cut is not None:
        inside = [(keys[d][1], d, n) for d, n in docs if keys[d][0] == cut[0]]
        cutoff = (cut[0], boundary_threshold(inside, cut[1]))
    return {d: copies_of(epochs, keys[d], d, cutoff) for d, _ in docs}


def share_error_bounds(planned: dict[str, float], boundary: dict[str, int]) -> dict[str, float]:
    """The most each source's achieved share can miss its planned share.

    Each source's written tokens miss its planned tokens p_s by e_s, |e_s| <= h_s =
    half its largest document when its epochs have a fractional part, else 0.
    With P = sum p_s, H = sum h_s and q_s = p_s / P, the achieved share
    (p_s + e_s) / (P + sum e) - q_s = (e_s (1 - q_s) - q_s sum_{t != s} e_t) / (P + sum e)
    is at most (h_s (1 - q_s) + q_s (H - h_s)) / (P - H) in size: a source's own
    rounding, plus its part of every other source's.

    Args:
        planned: {source: epochs * tokens_available}.
        boundary: {source: tokens of its largest document if its epochs have a
            fractional part, else 0}.
    Returns:
        {source: bound as a fraction (0.005 = half a percentage point)}; inf
        when the sources' rounding could exceed the planned tokens.
    """
    total = sum(planned.values())
    half = {s: boundary.get(s, 0) / 2 for s in planned}
    slack = sum(half.values())
    out = {}
    for s, p in planned.items():
        q = p / total if total else 0.0
        out[s] = (half[s] * (1 - q) + q * (slack - half[s])) / (total - slack) if total > slack else math.inf
    return out
