"""Train the LLaMA tokenizer: SentencePiece BPE on the mixture-weighted sample.

The trainer settings are those stored in the released LLaMA `tokenizer.model`
(its `trainer_spec` and `normalizer_spec`); only the vocabulary size, the
sample size, the character coverage and the thread count come from the config.

Reproducibility: SentencePiece 0.2.3 draws its `input_sentence_size` sample
with a generator that `set_random_generator_seed` does not reach (three runs,
three different models), so we draw that sample ourselves, seeded, and hand
SentencePiece no more lines than it keeps; it then loads all of them and the
model depends on the sample alone. The number of threads does not change the
pieces, only the `num_threads` recorded in the trainer spec. The sentences are
passed through an iterator and the model comes back as bytes, so no path of
the machine is written into the model: the same sample and config give the
same model bytes anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
import sentencepiece as spm

from pipeline.core import io as storage
from pipeline.core import lineage
from pipeline.core.config import Config
from pipeline.core.schema import ContractError, load_clean_manifest
from tokenizer.sample import write_training_sample

__all__ = [
    "LLAMA_TRAINER_SPEC",
    "LOG_LEVEL",
    "parse_trainer_log",
    "redirect_fd2",
    "sample_path",
    "train_tokenizer",
    "write_training_sample",
]

log = logging.getLogger(__name__)

# The released LLaMA tokenizer.model's trainer and normalizer settings.
LLAMA_TRAINER_SPEC: dict[str, Any] = {
    "model_type": "bpe",
    "split_digits": True,  # "we split all numbers into individual digits" (LLaMA, 2.1)
    "byte_fallback": True,  # "and fallback to bytes to decompose unknown UTF-8 characters"
    "split_by_unicode_script": True,
    "split_by_whitespace": True,
    "split_by_number": True,
    "allow_whitespace_only_pieces": True,
    "max_sentencepiece_length": 16,
    "normalization_rule_name": "identity",
    "add_dummy_prefix": True,
    "remove_extra_whitespaces": False,
    "unk_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "pad_id": -1,
    "shuffle_input_sentence": True,
}
# The skip counts are read from the trainer's log. Its level is process-wide in
# SentencePiece: a quieter training earlier in the process would hide them.
LOG_LEVEL = {"minloglevel": 0}

# SentencePiece's log lines for lines it leaves out of training.
_TOO_LONG = re.compile(r"Skipped (\d+) too long sentences")
_RESERVED = re.compile(r"Reserved chars are found\. Skipped")
_LOADED = re.compile(r"(?:Loaded all (\d+) sentences|Sampled (\d+) sentences from)")


def sample_path(cfg: Config) -> str:
    """Where `train_tokenizer` writes the training sample: `<model_prefix>.sample.txt`."""
    return f"{cfg.tokenizer.model_prefix}.sample.txt"


def _select_lines(path: str, n_lines: int, keep: int, seed: int) -> Iterator[str]:
    """Stream `keep` of the `n_lines` lines of `path`, chosen uniformly with `seed`."""
    chosen = None
    if n_lines > keep:
        chosen = np.sort(np.random.default_rng(seed).choice(n_lines, size=keep, replace=False))
    with storage.open_read(path) as f:
        if chosen is None:
            for line in f:
                yield line.rstrip(b"\n").decode("utf-8")
            return
        next_i = 0
        for i, line in enumerate(f):
            if next_i < keep and i == chosen[next_i]:
                next_i += 1
                yield line.rstrip(b"\n").decode("utf-8")


@contextlib.contextmanager
def redirect_fd2(file: IO[bytes]) -> Iterator[None]:
    """Point file descriptor 2 (stderr) at `file` for the block, then restore it.

    SentencePiece's C++ logs to fd 2 directly. Its own `logstream` option
    redirects `sys.stderr.fileno()`, which is not fd 2 under pytest's capture
    or when sys.stderr is replaced, so we redirect the descriptor itself.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(file.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def parse_trainer_log(text: str) -> dict[str, int]:
    """Counts from SentencePiece's trainer log (its C++ INFO/WARNING lines).

    Returns:
        {"too_long": lines over max_sentence_length bytes, "reserved": lines
        with U+2585, "skipped": their sum, "loaded": sentences kept (-1 if
        the log does not say)}.
    """
    too_long = sum(int(m.group(1)) for m in _TOO_LONG.finditer(text))
    reserved = len(_RESERVED.findall(text))
    loaded = -1
    if m := _LOADED.search(text):
        loaded = int(m.group(1) or m.group(2))
    skipped = too_long + reserved
    return {"too_long": too_long, "reserved": reserved, "skipped": skipped, "loaded": loaded}


def up_to_date(cfg: Config, clean: dict[str, Any]) -> dict[str, Any] | None:
    """The tokenizer's manifest (`pipeline.core.lineage.tokenizer_manifest_path`)
    when training now would give the same model: trained under the same
    settings (`Config.tokenizer_digest`) on the clean output now committed
    (`pipeline.core.lineage.made_from`), its model (of the recorded sha256) and
    vocab there; else None."""
    path = lineage.tokenizer_manifest_path(cfg)
    if not storage.exists(path):
        return None
    manifest = storage.read_json(path)
    model = f"{cfg.tokenizer.model_prefix}.model"
    if (manifest.get("format") != lineage.TOKENIZER_FORMAT
            or manifest.get("tokenizer_digest") != cfg.tokenizer_digest()
            or not lineage.made_from(manifest, "clean", clean)
            or not storage.exists(f"{cfg.tokenizer.model_prefix}.vocab") or not storage.exists(model)):
        return None
    return manifest if storage.sha256_file(model) == manifest.get("sha256") else None


def train_tokenizer(cfg: Config, force: bool = False, allow_mixed: bool = False) -> dict[str, Any]:
    """Write the training sample, train SentencePiece BPE on it, save the model,
    unless `force` is false and the model is `up_to_date` (then its manifest
    is returned, with "skipped": True).

    Writes `<model_prefix>.sample.txt` (see `write_training_sample`), then
    `<model_prefix>.model` and `<model_prefix>.vocab` (piece, tab, score per
    line, as `spm_train` writes it), each atomically, and last
    `<model_prefix>.manifest.json`: the summary below with the format, the
    settings digest (`Config.tokenizer_digest`) and the clean run trained on.

    Args:
        cfg: the job config; `cfg.tokenizer` gives model_prefix, vocab_size,
            input_sentence_size (at most this many lines, drawn with cfg.seed),
            sample_bytes, max_sentence_length, character_coverage, num_threads.
        allow_mixed: train on a clean output written under other settings
            than the config's, with a warning (`pipeline.core.lineage.check`).
    Returns:
        {"model", "vocab", "sample": paths; "sha256": of the model file;
        "sample_sha256"; "vocab_size"; "sample_stats": per source (see
        `write_training_sample`); "sentences": lines given to the trainer;
        "loaded": sentences it kept; "skipped_lines": lines it dropped (0 for
        a prepared sample); "sample_seconds", "train_seconds"}.
    Raises:
        FileNotFoundError: no cleaned files (names the folder).
        ValueError: the sample is empty, or a cleaned file is unreadable.
        RuntimeError: SentencePiece failed (its message and log tail attached).
        MixedRuns: the clean output follows other settings (`pipeline.core.lineage`).
    """
    tok = cfg.tokenizer
    model_path = f"{tok.model_prefix}.model"
    vocab_path = f"{tok.model_prefix}.vocab"
    sample = sample_path(cfg)
    try:
        clean = load_clean_manifest(cfg.out_dir)
    except ContractError as e:
        raise FileNotFoundError(str(e)) from None
    lineage.check(cfg, "tokenizer train", "clean", allow_mixed)
    if not force and (current := up_to_date(cfg, clean)) is not None:
        return {**current, "skipped": True}

    t0 = time.perf_counter()
    stats = write_training_sample(cfg, sample)
    n_lines = sum(s["lines"] for s in stats.values())
    if n_lines == 0:
        raise ValueError(
            f"{sample}: the training sample is empty: no text in the cleaned files of "
            f"{', '.join(stats)} under {storage.join(cfg.out_dir, 'clean')}"
        )
    sample_seconds = time.perf_counter() - t0

    sentences = min(n_lines, tok.input_sentence_size)
    t1 = time.perf_counter()
    model, counts = _train_sentencepiece(cfg, sample, n_lines, sentences)
    train_seconds = time.perf_counter() - t1
    if counts["skipped"]:
        log.warning("SentencePiece skipped %d of %d lines", counts["skipped"], sentences)
    sp = _write_model(model, model_path, vocab_path)
    summary = {
        "model": str(model_path),
        "vocab": str(vocab_path),
        "sample": str(sample),
        "sha256": hashlib.sha256(model).hexdigest(),
        "sample_sha256": storage.sha256_file(sample),
        "vocab_size": sp.get_piece_size(),
        "sample_stats": stats,
        "sentences": sentences,
        "loaded": counts["loaded"],
        "skipped_lines": counts["skipped"],
        "sample_seconds": round(sample_seconds, 3),
        "train_seconds": round(train_seconds, 3),
    }
    storage.write_json(lineage.tokenizer_manifest_path(cfg), {
        **summary, "format": lineage.TOKENIZER_FORMAT, "tokenizer_digest": cfg.tokenizer_digest(),
        "clean_run": clean.get("run"), "clean_contents": lineage.contents(clean),
        "clean_config_digest": clean.get("clean_config_digest")})
    return summary


def _train_sentencepiece(cfg: Config, sample: str, n_lines: int,
                         sentences: int) -> tuple[bytes, dict[str, int]]:
    """SentencePiece BPE with LLaMA's settings on `sentences` of the sample's `n_lines`
    lines (drawn with cfg.seed); returns (the model's bytes, `parse_trainer_log` counts).

    Raises:
        RuntimeError: SentencePiece failed (its message and log tail attached).
    """
    tok = cfg.tokenizer
    model = io.BytesIO()
    with tempfile.TemporaryFile() as trainer_log:
        try:
            with redirect_fd2(trainer_log):
                spm.SentencePieceTrainer.Train(
                    sentence_iterator=_select_lines(sample, n_lines, sentences, cfg.seed),
                    model_writer=model,
                    vocab_size=tok.vocab_size,
                    character_coverage=tok.character_coverage,
                    input_sentence_size=tok.input_sentence_size,
                    max_sentence_length=tok.max_sentence_length,
                    num_threads=tok.num_threads,
                    **LLAMA_TRAINER_SPEC, **LOG_LEVEL,
                )
        except RuntimeError as e:
            trainer_log.seek(0)
            tail = "\n".join(trainer_log.read().decode("utf-8", "replace").splitlines()[-10:])
            raise RuntimeError(f"SentencePiece failed on {sample}: {e}\n{tail}") from e
        trainer_log.seek(0)
        return model.getvalue(), parse_trainer_log(trainer_log.read().decode("utf-8", "replace"))


def _write_model(model: bytes, model_path: str, vocab_path: str) -> spm.SentencePieceProcessor:
    """Write the model and its .vocab (piece, tab, score per line, as `spm_train`
    writes it), each atomically; returns the loaded model."""
    storage.write_bytes(model_path, model)
    sp = spm.SentencePieceProcessor(model_proto=model)
    with storage.atomic_write(vocab_path) as f:
        for i in range(sp.get_piece_size()):
            f.write(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n".encode())
    return sp
