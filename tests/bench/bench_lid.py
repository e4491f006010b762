"""Language ID throughput: the clean job's LID stage in Beam vs fastText's own
predict loop over the same real documents (figure `lid.beam_vs_raw`, goal 0.85).

Both sides run on one core: the Beam side is `IdentifyLanguage` (batched, model
loaded in `setup`) in a one-worker in-process pipeline, whose start-up is timed
separately on an empty input and subtracted; the raw side calls
`model.predict(list_of_lines)` on the same texts in batches of the same size.
"""

from __future__ import annotations

import json
import random
import re
import statistics
import sys
import time

from tests.bench import record, size
from tests.conftest import CACHE, SHARED_CORPUS

DOCS = size(20_000, 500)
CHUNK = 1000
REPEATS = size(3, 1)
_DOCS: list[dict] = []  # the in-process runner's workers read the documents from here


def _chunk(i: int) -> list[dict]:
    return _DOCS[i * CHUNK : (i + 1) * CHUNK]


def _texts() -> list[str]:
    """Real paragraphs: the Gutenberg books, the Wikipedia dumps' text when the clean
    output exists, and the C4 sample of the shared corpus when present."""
    texts = []
    for p in sorted((CACHE / "inputs" / "books").glob("*.txt")):
        raw = p.read_text(encoding="latin-1")  # newlines read as "\n" whatever the file has
        texts += [t for t in re.split(r"\n[ \t]*\n", raw) if len(t) > 200]
    c4 = SHARED_CORPUS / "c4" / "c4-en-sample.00000-of-00001.json.gz"
    if c4.is_file():
        import gzip

        with gzip.open(c4, "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f]
    random.Random(0).shuffle(texts)
    return (texts * (DOCS // max(1, len(texts)) + 1))[:DOCS]


def _beam_seconds(docs: list[dict], cfg) -> float:
    """Seconds of the LID stage over `docs` in a one-worker in-process pipeline.

    The documents come out of a FlatMap, as they do from the readers in the
    clean job: `beam.Create` over 20k large dicts alone costs more than LID
    (it infers a type from every element)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.beam.steps import batches
    from pipeline.clean import IdentifyLanguage

    opts = PipelineOptions(["--runner=FnApiRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"])
    _DOCS[:] = docs
    t0 = time.perf_counter()
    with beam.Pipeline(options=opts) as p:
        _ = (
            p
            | beam.Create(list(range(-(-len(docs) // CHUNK))), reshuffle=False)
            | beam.FlatMap(_chunk)
            | batches(cfg.langid.batch_size)
            | beam.ParDo(IdentifyLanguage(cfg.model_dump_json()))
            | beam.combiners.Count.Globally()
        )
    return time.perf_counter() - t0


def run() -> list[dict]:
    from pipeline.core.config import load_config
    from pipeline.filters.langid import LanguageIdentifier, to_single_line
    from pipeline.sources.base import make_document

    cfg = load_config("configs/demo.yaml", [f"langid.model={CACHE}/models/lid.176.ftz"])
    texts = _texts()
    n_bytes = sum(len(t.encode()) for t in texts)
    docs = [make_document("books", str(i), t, "") for i, t in enumerate(texts)]
    print(f"lid bench: {len(docs)} documents, {n_bytes / 1e6:.1f} MB", file=sys.stderr)
    lid = LanguageIdentifier(cfg.langid.model)
    bs = cfg.langid.batch_size

    def raw() -> float:
        t0 = time.perf_counter()
        for i in range(0, len(texts), bs):
            lid.model.predict([to_single_line(t) for t in texts[i : i + bs]], k=1)
        return time.perf_counter() - t0

    raws, beams = [], []
    startup = min(_beam_seconds([], cfg) for _ in range(size(2, 1)))
    for _ in range(REPEATS):
        raws.append(raw())
        beams.append(max(1e-9, _beam_seconds(docs, cfg) - startup))
    ours, ref = n_bytes / statistics.median(beams) / 1e6, n_bytes / statistics.median(raws) / 1e6
    return [record("lid.beam_vs_raw", ours, "MB/s/core", "fastText predict loop", ref, goal=0.85)]
