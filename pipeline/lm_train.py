"""CCNet's n-gram language models: `python -m pipeline lm-train` trains one per
language of `clean.perplexity.langs` on that language's cleaned Wikipedia, and
`LanguageModels` loads them to score documents (pipeline/filters/perplexity.py).

Per language, as CCNet's Makefile does with `spm_train` and `lmplz -o 5
--discount_fallback`:

1. SentencePiece (unigram, `vocab_size` pieces at most: `hard_vocab_limit` off,
   so a small Wikipedia gets fewer) is trained on the first `sp_sentences`
   normalised lines of the language's Wikipedia documents, in the clean
   manifest's order, read by the launcher (one thread: the same model bytes on
   every machine). Written as `<model_dir>/<lang>.sp.model`.
2. A Beam job cuts every normalised line of those documents (a seeded sample
   of about `max_docs` of them when Wikipedia has more) into pieces and counts
   its n-grams of orders 1 to `order`, each line padded with `<s>` and `</s>`
   (`count_pipeline`): a counter per input file, passed on a part at a time
   whenever FLUSH_NGRAMS n-grams are held, summed per part (a CRC32 of the
   n-gram; a part per COUNT_PART_BYTES of sampled text) and written as sorted
   `ngram<TAB>count` files.
3. The launcher reads those counts and estimates an interpolated modified
   Kneser-Ney model (Chen & Goodman 1999; `estimate`), as `lmplz` does, then
   writes it as ARPA, `<model_dir>/<lang>.arpa`, which `kenlm.Model` loads.

KenLM's own estimator `lmplz` is not used: it is a C++ program built from the
KenLM sources against the Boost libraries, which no Python package ships (the
`kenlm` package from PyPI scores only), so every machine that trains would need
a system build. Counting is the part that grows with the corpus and it runs in
Beam; the estimation holds every distinct n-gram of one language in the
launcher's memory (about 200 bytes each: the demo's Wikipedia has 2 million;
`max_docs` bounds it, CCNet's 1M English openings had a few hundred million).
Every file is written atomically (`pipeline.core.io`), the models before
`<model_dir>/manifest.json`, which records their sha256, the n-gram counts,
the settings and the Wikipedia parts they were trained on: a rerun with the
same ones does nothing (`up_to_date`; the post-clean filters copy Wikipedia
unchanged, so a filtered output still matches).
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import math
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam

from pipeline.core import io
from pipeline.beam.runner import pipeline_options, quiet_beam_logging, run_pipeline, warn_unshared
from pipeline.core.config import Config, PipelineError
from pipeline.filters.perplexity import doc_perplexity, normalized_lines
from pipeline.mixture import hash_unit
from pipeline.core.schema import (
    ContractError,
    clean_files,
    load_clean_manifest,
    load_manifest,
    read_batches,
)

TRAIN_SOURCE = "wikipedia"  # CCNet trains its models on Wikipedia
LM_FORMAT = "llama-ngram-lm/1"
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
PARTS_LIST = "_parts.json"  # the counting job's parts, for the launcher
FLUSH_NGRAMS = 1 << 18  # distinct n-grams a counting worker holds before passing them on
COUNT_PART_BYTES = 16 << 20  # Wikipedia text bytes per part of sorted counts
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # lmplz --discount_fallback's defaults
NO_PROB = -99.0  # log10 probability of <s>, which is never predicted (ARPA convention)
SP_SETTINGS = {  # CCNet's spm_train options; one thread: thread counts change the model
    "model_type": "unigram", "character_coverage": 0.9995, "hard_vocab_limit": False,
    "num_threads": 1, "minloglevel": 2,
}


class LanguageModelError(PipelineError):
    """A language model that cannot be trained or loaded (names the file or what is missing)."""


def sp_model_path(model_dir: str, lang: str) -> str:
    return io.join(model_dir, f"{lang}.sp.model")


def arpa_path(model_dir: str, lang: str) -> str:
    return io.join(model_dir, f"{lang}.arpa")


# --- SentencePiece -------------------------------------------------------------

def wikipedia_lines(files: Iterable[str], lang: str, limit: int) -> Iterator[str]:
    """The first `limit` normalised lines of the `lang` documents of `files`, in order."""
    left = limit
    for path in files:
        for batch in read_batches(path, ["text", "lang"]):
            cols = batch.to_pydict()
            for text, doc_lang in zip(cols["text"], cols["lang"]):
                if doc_lang != lang:
                    continue
                for line in normalized_lines(text)[:left]:
                    yield line
                    left -= 1
                if left == 0:
                    return


def train_sentencepiece(lines: Iterator[str], vocab_size: int) -> bytes:
    """A SentencePiece unigram model (CCNet's settings) trained on `lines`: its bytes."""
    import sentencepiece as spm

    from tokenizer.train import redirect_fd2

    model = _io.BytesIO()
    with tempfile.TemporaryFile() as trainer_log:
        try:
            with redirect_fd2(trainer_log):
                spm.SentencePieceTrainer.Train(sentence_iterator=lines, model_writer=model,
                                               vocab_size=vocab_size, **SP_SETTINGS)
        except RuntimeError as e:
            trainer_log.seek(0)
            tail = trainer_log.read().decode("utf-8", "replace").strip().splitlines()[-3:]
            raise LanguageModelError(f"SentencePiece failed: {e} {' '.join(tail)}") from None
    return model.getvalue()


# --- counting (Beam) -----------------------------------------------------------

def ngrams(tokens: list[str], order: int) -> Iterator[str]:
    """Every n-gram of `tokens` of orders 1 to `order`, space-joined."""
    for i in range(len(tokens)):
        for n in range(1, min(order, len(tokens) - i) + 1):
            yield " ".join(tokens[i : i + n])


def part_of(gram: str, parts: int) -> int:
    """The counts part an n-gram goes to: a CRC32 of it (the same in every process)."""
    return zlib.crc32(gram.encode("utf-8")) % parts


class CountNgrams(beam.DoFn):
    """Cleaned Arrow file -> ((lang, part), [(n-gram, count), ...]) for the
    normalised lines of its documents of the model languages, cut into pieces
    by their SentencePiece models (loaded once per worker). Counts are merged
    per file and passed on a part's list at a time whenever FLUSH_NGRAMS
    distinct n-grams are held: few large elements, not one per n-gram."""

    def __init__(self, model_dir: str, langs: list[str], order: int, parts: int, seed: int, rate: float):
        self.model_dir, self.langs, self.order, self.parts = model_dir, langs, order, parts
        self.seed, self.rate = seed, rate

    def setup(self) -> None:
        import sentencepiece as spm

        self.sp = {lang: spm.SentencePieceProcessor(model_file=io.local_copy(sp_model_path(self.model_dir, lang)))
                   for lang in self.langs}

    def process(self, path: str) -> Iterator[tuple[tuple[str, int], list[tuple[str, int]]]]:
        counts: dict[str, Counter] = {lang: Counter() for lang in self.langs}
        held = 0
        for batch in read_batches(path, ["id", "text", "lang"]):
            cols = batch.to_pydict()
            for doc_id, text, lang in zip(cols["id"], cols["text"], cols["lang"]):
                if lang not in self.sp or (self.rate < 1 and hash_unit(self.seed, "lm", doc_id) >= self.rate):
                    continue
                lines = normalized_lines(text)
                for pieces in self.sp[lang].encode(lines, out_type=str) if lines else ():
                    counts[lang].update(ngrams([BOS, *pieces, EOS], self.order))
                held = sum(map(len, counts.values()))
                if held >= FLUSH_NGRAMS:
                    yield from self.flush(counts)
        yield from self.flush(counts)

    def flush(self, counts: dict[str, Counter]) -> Iterator[tuple[tuple[str, int], list[tuple[str, int]]]]:
        for lang, c in counts.items():
            by_part: dict[int, list[tuple[str, int]]] = {}
            for gram, n in c.items():
                by_part.setdefault(part_of(gram, self.parts), []).append((gram, n))
            for part, items in sorted(by_part.items()):
                yield (lang, part), items
            c.clear()


def count_part(item: tuple[tuple[str, int], Iterable[list[tuple[str, int]]]], out_dir: str) -> dict[str, Any]:
    """((lang, part), lists of (n-gram, count)) -> their sums in
    `<out_dir>/<lang>/part-NNNNN.tsv`, sorted by n-gram; returns its entry
    (lang, file, rows). Holds the part's distinct n-grams (COUNT_PART_BYTES of text)."""
    (lang, part), chunks = item
    counts: Counter = Counter()
    for chunk in chunks:
        for gram, n in chunk:
            counts[gram] += n
    name = f"{lang}/part-{part:05d}.tsv"
    with io.atomic_write(io.join(out_dir, *name.split("/"))) as f:
        grams = sorted(counts)
        for lo in range(0, len(grams), 8192):
            f.write("".join(f"{g}\t{counts[g]}\n" for g in grams[lo : lo + 8192]).encode("utf-8"))
    return {"lang": lang, "file": name, "rows": len(counts)}


def count_pipeline(p: beam.Pipeline, files: list[str], model_dir: str, langs: list[str], order: int,
                   parts: int, out_dir: str, seed: int = 0, rate: float = 1.0):
    """Attach the counting job to `p`: the n-grams of `files` (CountNgrams; only
    the documents with `hash_unit(seed, "lm", id) < rate` when `rate` < 1),
    each language's summed in `parts` parts (`count_part`), and the list of
    those parts to `<out_dir>/_parts.json`."""
    return (
        p
        | "Files" >> beam.Create(sorted(files))
        | "SpreadFiles" >> beam.Reshuffle()
        | "Count" >> beam.ParDo(CountNgrams(model_dir, langs, order, parts, seed, rate))
        | "GroupByPart" >> beam.GroupByKey()
        | "Write" >> beam.Map(count_part, out_dir)
        | "PartsList" >> beam.combiners.ToList()
        | "WritePartsList" >> beam.Map(lambda parts: io.write_json(
            io.join(out_dir, PARTS_LIST), sorted(parts, key=lambda e: (e["lang"], e["file"]))))
    )


def read_counts(out_dir: str, entries: list[dict[str, Any]], lang: str) -> dict[str, int]:
    """{n-gram: count} of one language from the counting job's parts."""
    counts: dict[str, int] = {}
    for entry in entries:
        if entry["lang"] != lang:
            continue
        with io.open_read(io.join(out_dir, *entry["file"].split("/"))) as f:
            for line in _io.TextIOWrapper(f, encoding="utf-8"):
                gram, n = line.rstrip("\n").split("\t")
                counts[gram] = int(n)
    return counts


# --- interpolated modified Kneser-Ney -----------------------------------------

def discounts(count_of_counts: list[int]) -> tuple[tuple[float, float, float], bool]:
    """Chen & Goodman's discounts D1, D2, D3+ from the numbers of n-grams whose
    adjusted count is 1, 2, 3 and 4: Y = t1 / (t1 + 2 t2), Dk = k - (k + 1) Y
    t(k+1) / tk. As `lmplz --discount_fallback`, FALLBACK_DISCOUNTS when a tk is
    0 or a Dk falls outside [0, k]. Returns (discounts, fell back)."""
    t1, t2, t3, t4 = count_of_counts
    if min(t1, t2, t3, t4) == 0:
        return FALLBACK_DISCOUNTS, True
    y = t1 / (t1 + 2 * t2)
    d = (1 - 2 * y * t2 / t1, 2 - 3 * y * t3 / t2, 3 - 4 * y * t4 / t3)
    if any(not 0 <= dk <= k for k, dk in enumerate(d, 1)):
        return FALLBACK_DISCOUNTS, True
    return d, False


def _discount(d: tuple[float, float, float], a: int) -> float:
    return d[min(a, 3) - 1]


def adjusted_counts(counts: dict[str, int], order: int) -> list[dict[tuple[str, ...], int]]:
    """Per order n (index n - 1), {n-gram: adjusted count}: the count itself for
    the highest order and for an n-gram that starts with `<s>`; else the number
    of distinct words seen before it (its continuation count)."""
    raw: list[dict[tuple[str, ...], int]] = [{} for _ in range(order)]
    for gram, n in counts.items():
        t = tuple(gram.split(" "))
        raw[len(t) - 1][t] = n
    adjusted = [raw[order - 1]]
    for n in range(order - 1, 0, -1):
        left = Counter(t[1:] for t in raw[n])
        adjusted.insert(0, {t: c if t[0] == BOS else left[t] for t, c in raw[n - 1].items()})
    return adjusted


def estimate(counts: dict[str, int], order: int) -> dict[str, Any]:
    """An interpolated modified Kneser-Ney model of `counts` (every n-gram of
    orders 1 to `order` of the padded lines, as `ngrams` gives them).

    Per order n, discounts from its count-of-counts (`discounts`; `<s>` alone
    left out). For a context h with extensions, S(h) = the sum of a(h w) and
    gamma(h) = (D1 N1(h) + D2 N2(h) + D3+ N3+(h)) / S(h), Nk(h) counting the
    words w with a(h w) = k (3 or more for N3+); then
    p(w | h) = (a(h w) - D(a(h w))) / S(h) + gamma(h) p(w | h minus its first word),
    the unigrams interpolated with the uniform distribution over the
    vocabulary (every word but `<s>`, and `<unk>`, whose probability is that
    share alone). gamma(h) is h's backoff weight in ARPA: a word unseen after
    h gets gamma(h) times its probability in the shorter context, as in the
    interpolated model.

    Returns: {"order", "ngrams": per order {n-gram tuple: (log10 p, log10 backoff
    or None)}, "discounts": per order, "fallback": orders that used the fallback}.
    """
    adjusted = adjusted_counts(counts, order)
    probs: list[dict[tuple[str, ...], float]] = []
    gammas: list[dict[tuple[str, ...], float]] = []
    all_d, fallback = [], []
    for n, grams in enumerate(adjusted, 1):
        coc = Counter(a for t, a in grams.items() if a <= 4 and t != (BOS,))
        d, fell_back = discounts([coc[k] for k in (1, 2, 3, 4)])
        all_d.append([round(x, 6) for x in d])
        if fell_back:
            fallback.append(n)
        total: Counter = Counter()
        mass: Counter = Counter()
        for t, a in grams.items():
            if t != (BOS,):
                total[t[:-1]] += a
                mass[t[:-1]] += _discount(d, a)
        gamma = {h: mass[h] / total[h] for h in total}
        if n == 1:
            vocab = sum(1 for t in grams if t != (BOS,)) + 1  # and <unk>
            uniform = gamma[()] / vocab
            p = {t: (a - _discount(d, a)) / total[()] + uniform for t, a in grams.items() if t != (BOS,)}
            p[(UNK,)] = uniform
        else:
            lower = probs[-1]
            p = {t: (a - _discount(d, a)) / total[t[:-1]] + gamma[t[:-1]] * lower[t[1:]] for t, a in grams.items()}
        probs.append(p)
        gammas.append(gamma)
    table = []
    for n, p in enumerate(probs):
        backoffs = gammas[n + 1] if n + 1 < order else {}
        rows = {t: (_log10(v), _log10(backoffs[t]) if t in backoffs else None) for t, v in p.items()}
        if n == 0:
            rows[(BOS,)] = (NO_PROB, _log10(backoffs[(BOS,)]) if (BOS,) in backoffs else None)
        table.append(rows)
    return {"order": order, "ngrams": table, "discounts": all_d, "fallback": fallback}


def _log10(x: float) -> float:
    return math.log10(x) if x > 0 else NO_PROB


def write_arpa(model: dict[str, Any], path: str) -> dict[str, Any]:
    """The model as an ARPA file at `path` (atomically), n-grams sorted within
    each order; returns {"bytes", "sha256", "ngrams": count per order}."""
    table = model["ngrams"]

    def lines() -> Iterator[str]:
        yield "\\data\\\n"
        for n, rows in enumerate(table, 1):
            yield f"ngram {n}={len(rows)}\n"
        for n, rows in enumerate(table, 1):
            yield f"\n\\{n}-grams:\n"
            for t in sorted(rows):
                logp, backoff = rows[t]
                yield f"{logp:.7g}\t{' '.join(t)}\n" if backoff is None else f"{logp:.7g}\t{' '.join(t)}\t{backoff:.7g}\n"
        yield "\n\\end\\\n"

    with io.atomic_write(path) as f:
        sink = io.HashingWriter(f)
        chunk: list[str] = []
        for line in lines():
            chunk.append(line)
            if len(chunk) == 8192:
                sink.write("".join(chunk).encode("utf-8"))
                chunk.clear()
        sink.write("".join(chunk).encode("utf-8"))
    return {"bytes": sink.bytes, "sha256": sink.sha256, "ngrams": [len(rows) for rows in table]}


# --- the command ----------------------------------------------------------------

def train_language_models(cfg: Config, beam_args: list[str] | None = None, force: bool = False) -> dict[str, Any]:
    """Train the models of `clean.perplexity.langs` on `<out_dir>/clean`'s
    Wikipedia (see the module's docstring) and write them, then
    `<model_dir>/manifest.json`; returns that manifest, with "skipped": True
    when they were `up_to_date` and `force` is false (nothing done).

    Raises:
        LanguageModelError: no clean output, or no Wikipedia text of a language.
        OutputBusy: another lm-train is writing the same model folder.
    """
    pc = cfg.clean.perplexity
    model_dir = pc.model_dir
    if not force and (current := up_to_date(cfg)) is not None:
        return {**current, "skipped": True}
    try:
        manifest = load_clean_manifest(cfg.out_dir)
        files = clean_files(cfg.out_dir, manifest, [TRAIN_SOURCE]).get(TRAIN_SOURCE, [])
    except ContractError as e:
        raise LanguageModelError(str(e)) from None
    quiet_beam_logging()
    options = pipeline_options(cfg, beam_args)
    warn_unshared(options, **{"clean.perplexity.model_dir": model_dir, "out_dir": cfg.out_dir})
    t0 = time.time()
    langs: dict[str, Any] = {}
    for lang in pc.langs:
        lines = wikipedia_lines(files, lang, pc.sp_sentences)
        first = next(lines, None)
        if first is None:
            raise LanguageModelError(
                f"{io.join(cfg.out_dir, 'clean')}: no cleaned {TRAIN_SOURCE} text in {lang!r} to train its "
                f"language model on (clean.perplexity.langs: {pc.langs})")
        sp_bytes = train_sentencepiece(_chain(first, lines), pc.vocab_size)
        io.write_bytes(sp_model_path(model_dir, lang), sp_bytes)
        langs[lang] = {"sp_model": {"file": f"{lang}.sp.model", "sha256": hashlib.sha256(sp_bytes).hexdigest(),
                                    "pieces": _pieces(sp_bytes)}}
    wiki = [e for e in manifest["files"] if e["source"] == TRAIN_SOURCE]
    rate = min(1.0, pc.max_docs / max(1, sum(e["rows"] for e in wiki)))
    parts = max(1, math.ceil(rate * sum(e["bytes"] for e in wiki) / COUNT_PART_BYTES))
    with io.Run(io.join(model_dir, "counts")) as run:
        try:
            counts_dir = run.dir
            run_pipeline(options, counts_dir, lambda p, _spill: count_pipeline(
                p, files, model_dir, pc.langs, pc.order, parts, counts_dir, cfg.seed, rate))
            entries = io.read_json(io.join(counts_dir, PARTS_LIST))
            for lang in pc.langs:
                model = estimate(read_counts(counts_dir, entries, lang), pc.order)
                written = write_arpa(model, arpa_path(model_dir, lang))
                langs[lang].update({
                    "arpa": {"file": f"{lang}.arpa", "sha256": written["sha256"], "bytes": written["bytes"]},
                    "ngrams": written["ngrams"], "discounts": model["discounts"],
                    "discount_fallback": model["fallback"],
                })
        finally:
            run.abandon()  # the counts are an intermediate: the models hold what they say
    out = {"format": LM_FORMAT, "order": pc.order, "vocab_size": pc.vocab_size, "sp_sentences": pc.sp_sentences,
           "max_docs": pc.max_docs, "sample_rate": rate, "settings_digest": settings_digest(cfg),
           "wikipedia": wikipedia_contents(manifest), "clean_run": manifest.get("run"), "langs": langs,
           "seconds": round(time.time() - t0, 2)}
    io.write_json(io.join(model_dir, io.MANIFEST), out)
    return out


def settings_digest(cfg: Config) -> str:
    """SHA-256 (16 hex) of what decides the models besides the text: the seed and
    `clean.perplexity`'s training settings."""
    pc = cfg.clean.perplexity
    settings = {"seed": cfg.seed, **pc.model_dump(mode="json", include={"langs", "order", "vocab_size",
                                                                         "sp_sentences", "max_docs"})}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def wikipedia_contents(clean: dict[str, Any]) -> list[str]:
    """The sha256 of the Wikipedia parts a clean manifest lists, in its order: the
    text the models learn from (the post-clean filters copy them unchanged)."""
    return [e["sha256"] for e in clean["files"] if e["source"] == TRAIN_SOURCE]


def up_to_date(cfg: Config) -> dict[str, Any] | None:
    """`lm-train`'s manifest when training now would write the same models: the
    same settings and Wikipedia text, every model file there with its sha256;
    else None."""
    pc = cfg.clean.perplexity
    try:
        lm = load_manifest(pc.model_dir, LM_FORMAT, "python -m pipeline lm-train")
        clean = load_clean_manifest(cfg.out_dir)
    except ContractError:
        return None
    if (lm.get("settings_digest") != settings_digest(cfg) or lm.get("wikipedia") != wikipedia_contents(clean)
            or sorted(lm.get("langs", {})) != sorted(pc.langs)):
        return None
    for info in lm["langs"].values():
        for kind in ("sp_model", "arpa"):
            path = io.join(pc.model_dir, info[kind]["file"])
            if not io.exists(path) or io.sha256_file(path) != info[kind]["sha256"]:
                return None
    return lm


def _pieces(sp_bytes: bytes) -> int:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=sp_bytes).get_piece_size()


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


# --- scoring ----------------------------------------------------------------------

class LanguageModels:
    """The models of `langs` under `model_dir`, loaded (once per worker: never
    pickle it): `perplexity(text, lang)` as CCNet computes it, None for a
    language without a model or a text without a line."""

    def __init__(self, model_dir: str, langs: Iterable[str]):
        import kenlm
        import sentencepiece as spm

        quiet = kenlm.Config()  # no progress bar on stderr for each worker's load
        quiet.show_progress = False
        quiet.arpa_complain = kenlm.ARPALoadComplain.NONE
        self.sp: dict[str, Any] = {}
        self.lm: dict[str, Any] = {}
        for lang in langs:
            sp, arpa = sp_model_path(model_dir, lang), arpa_path(model_dir, lang)
            for path in (sp, arpa):
                if not io.exists(path):
                    raise LanguageModelError(f"{path} not found: train it with `python -m pipeline lm-train`")
            self.sp[lang] = spm.SentencePieceProcessor(model_file=io.local_copy(sp))
            self.lm[lang] = kenlm.Model(io.local_copy(arpa), quiet)

    def perplexity(self, text: str, lang: str) -> float | None:
        if lang not in self.lm:
            return None
        sp, lm = self.sp[lang], self.lm[lang]
        return doc_perplexity(normalized_lines(text), lambda lines: sp.encode(lines, out_type=str), lm.score)
