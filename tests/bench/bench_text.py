"""Text hygiene at the reader boundary (`pipeline.filters.text`) on real text:
the demo's Wikipedia dumps, as their reader yields them (clean text: the fast
path every normal document takes).

Figures (MB of UTF-8 text per second, medians of repeats, one core):
- `text.clean_vs_encode`: `clean_document` + `replacement_rejected` (what the
  clean job does to each Document as it leaves its reader) against
  `str.encode("utf-8")` of the same texts, the least any writer does to a text;
- `text.clean_vs_wikipedia_reader`: the same against the Wikipedia reader that
  produced the texts (bz2, XML, wikitext): the share hygiene adds to reading
  (goal: at least 20x the reader's speed, under 5% of its time).
"""

from __future__ import annotations

import time

from tests.bench import median_time, record, size
from tests.conftest import CACHE

REPEATS = size(7, 1)


def _read_wikipedia() -> tuple[list[dict], float]:
    """The Documents of the demo's Wikipedia dumps, and the seconds reading took."""
    from pipeline.sources import wikipedia

    t0 = time.perf_counter()
    dumps = sorted((CACHE / "inputs" / "wikipedia").glob("*.bz2"))[: size(None, 1)]
    docs = [d for p in dumps for d in wikipedia.read(str(p)) if isinstance(d, dict)]
    return docs, time.perf_counter() - t0


def run() -> list[dict]:
    from pipeline.filters.text import clean_document, replacement_rejected

    docs, read_seconds = _read_wikipedia()
    texts = [d["text"] for d in docs]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6

    def hygiene():
        for d in docs:
            replacement_rejected(clean_document(d)[0])

    def encode():
        for t in texts:
            t.encode("utf-8")

    clean_mb_s = mb / median_time(hygiene, repeats=REPEATS)
    return [
        record("text.clean_vs_encode", clean_mb_s, "MB/s", "str.encode utf-8", mb / median_time(encode, repeats=REPEATS)),
        record("text.clean_vs_wikipedia_reader", clean_mb_s, "MB/s", "wikipedia reader", mb / read_seconds, goal=20.0),
    ]
