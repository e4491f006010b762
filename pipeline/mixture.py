"""The data mixture of LLaMA Table 1: target shares -> epochs per source -> copies.

Pure functions; the shard job (pipeline/shards.py) calls them from Beam.
"""

from __future__ import annotations

import hashlib
import math


def hash_unit(*parts: object) -> float:
    """A deterministic uniform number in [0, 1) from the parts (SHA-256 based).

    Used wherever the recipe needs seeded randomness per document (repeat
    draws, validation split, shard assignment, order in a shard), so the result
    does not depend on worker count, batch size or processing order.
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


def repeat_count(epochs: float, seed: int, doc_id: str) -> int:
    """Copies of one document: floor(f), plus one more with probability f - floor(f).

    The draw is seeded by the document id, so it is the same on every run.
    """
    whole = math.floor(epochs)
    return whole + (1 if hash_unit(seed, "repeat", doc_id) < epochs - whole else 0)
