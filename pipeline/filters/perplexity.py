"""CCNet's perplexity filter (Wenzek et al. 2020, Section 3.3; `cc_net/perplexity.py`,
`cc_net/text_normalizer.py`): the pure pieces.

A document's text is normalised line by line as CCNet's `text_normalizer.normalize`
does (strip, lowercase, accents removed, every digit -> 0, CCNet's unicode
punctuation replaced, non-printing characters removed), each line is cut into
SentencePiece pieces, and a 5-gram KenLM model gives each line's log10
probability with its sentence boundaries. The document's perplexity is
`10 ** (-sum of log10 probabilities / tokens)`, tokens counting each line's
pieces plus its `</s>`, rounded to one decimal (CCNet's `DocLM` and `pp`).

CCNet's mining pipeline normalises the whole document at once, which deletes
its newlines with the other non-printing characters, so lines run together
before SentencePiece; here each line is normalised and scored on its own, as
`DocLM` is written to do (a line per sentence, the unit the model is trained
on). Blank lines carry no text and are not scored.

Buckets follow `PerplexityBucket`: below the language's first cut-off (CCNet:
the 30th percentile) "head", below the second (60th) "middle", else "tail".
The cut-offs come from a sample of the documents being filtered (`cutoffs`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

BUCKETS = ("head", "middle", "tail")
# cc_net.text_normalizer.UNICODE_PUNCT: its replacements with punct=1
UNICODE_PUNCT = {
    "，": ",", "。": ".", "、": ",", "„": '"', "”": '"', "“": '"', "«": '"', "»": '"', "１": '"',
    "」": '"', "「": '"', "《": '"', "》": '"', "´": "'", "∶": ":", "：": ":", "？": "?", "！": "!",
    "（": "(", "）": ")", "；": ";", "–": "-", "—": " - ", "．": ". ", "～": "~", "’": "'",
    "…": "...", "━": "-", "〈": "<", "〉": ">", "【": "[", "】": "]", "％": "%", "►": "-",
}
_PUNCT = str.maketrans(UNICODE_PUNCT)
_DIGIT = re.compile(r"\d")
_NON_PRINTING = re.compile("[" + "".join(map(chr, [*range(32), *range(127, 160)])) + "]")


def normalize(line: str) -> str:
    """CCNet's `normalize(line)` (accent, case, numbers on; punct=1)."""
    line = line.strip()
    if not line:
        return line
    line = line.lower()
    # CCNet keeps the NFD form without its combining marks (its early return never fires)
    line = "".join(c for c in unicodedata.normalize("NFD", line) if unicodedata.category(c) != "Mn")
    line = _DIGIT.sub("0", line)
    line = line.translate(_PUNCT)
    return _NON_PRINTING.sub("", line)


def normalized_lines(text: str) -> list[str]:
    """The document's lines as the model sees them: normalised, blank ones left out."""
    return [norm for norm in map(normalize, text.split("\n")) if norm]


def perplexity(log10_prob: float, tokens: int) -> float:
    """CCNet's `pp`, rounded as `DocLM` stores it: 10 ** (-log10_prob / tokens), 1 decimal."""
    return round(10.0 ** (-log10_prob / tokens), 1)


def doc_perplexity(lines: Sequence[str], encode: Callable[[list[str]], list[list[str]]],
                   score: Callable[[str], float]) -> float | None:
    """The perplexity of a document given as its normalised lines (None: no line).

    Args:
        encode: lines -> their SentencePiece pieces each.
        score: a line of space-joined pieces -> its log10 probability with
            `<s>` and `</s>` (`kenlm.Model.score`).
    """
    if not lines:
        return None
    total, tokens = 0.0, 0
    for pieces in encode(list(lines)):
        total += score(" ".join(pieces))
        tokens += len(pieces) + 1  # the pieces and </s>
    return perplexity(total, tokens)


def cutoffs(sample: Iterable[float], percentiles: Sequence[float]) -> list[float]:
    """The bucket cut-offs of one language: the `percentiles` (CCNet: 30, 60) of
    the sample's perplexities (numpy's linear interpolation)."""
    values = np.asarray(sorted(sample), dtype=np.float64)
    return [float(v) for v in np.percentile(values, list(percentiles))]


def bucket(ppl: float, cuts: Sequence[float]) -> str:
    """"head" below the first cut-off, "middle" below the second, else "tail"."""
    head, tail = cuts
    if ppl < head:
        return "head"
    return "middle" if ppl < tail else "tail"


def annotate(doc: dict[str, Any], ppl: float, bucket_name: str) -> dict[str, Any]:
    """The document with meta `perplexity` and `bucket` (CCNet's field names)."""
    meta = json.loads(doc["meta"])
    meta["perplexity"] = ppl
    meta["bucket"] = bucket_name
    return {**doc, "meta": json.dumps(meta, sort_keys=True, ensure_ascii=False)}
