"""The tokenizer: training sample, SentencePiece BPE with LLaMA's settings, CLI.

Cleaned Arrow files are built from real text: the two Project Gutenberg books
of the demo (books), Bulgarian wikitext from the demo's bgwiki dump (wikipedia;
markup kept, it stands in for cleaned articles), and Python standard-library
modules (github).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm

import tokenizer
from tests.conftest import (
    BOOKS,
    ROOT,
    TOKENIZER_VOCAB,
    TRICKY,
    build_clean_corpus,
    demo_input,
    long_line,
    tokenizer_config,
    write_clean_docs,
)
from tokenizer import __main__ as cli
from tokenizer.sample import cut_line, document_lines, sample_key
from tokenizer.train import (
    LLAMA_TRAINER_SPEC,
    LOG_LEVEL,
    parse_trainer_log,
    redirect_fd2,
    train_tokenizer,
    write_training_sample,
)

SAMPLE_BYTES = 600_000  # the mixture test; training uses the demo's 4 MB: all of the corpus
MAX_LINE = 4192  # configs/demo.yaml: tokenizer.max_sentence_length

# --- the long-line cutter -------------------------------------------------------


def test_cut_line_splits_long_line_at_whitespace(request):
    text = demo_input(request, BOOKS[0]).read_text(encoding="utf-8")
    line = " ".join(text.split())[:10_000]
    pieces = cut_line(line, MAX_LINE)
    assert "".join(pieces) == line
    assert len(pieces) == 3  # 10 000 bytes / 4192
    assert all(0 < len(p.encode()) <= MAX_LINE for p in pieces)
    # Each cut falls just after a space, so every following piece starts a word.
    assert all(p.endswith(" ") for p in pieces[:-1])
    assert all(not p.startswith(" ") for p in pieces[1:])


def test_cut_line_hard_cuts_at_character_boundaries():
    line = "日本語" * 1200 + "🦙" * 1000  # 10 800 + 4 000 bytes, no whitespace
    pieces = cut_line(line, MAX_LINE)
    assert "".join(pieces) == line
    # 1397 three-byte characters fit in 4192 bytes, twice; then 806 of them and
    # 443 four-byte emoji (4190 bytes); the rest is 557 emoji.
    assert [len(p.encode()) for p in pieces] == [4191, 4191, 4190, 2228]
    assert cut_line("ab", 5) == ["ab"] and cut_line("", 5) == []
    assert cut_line("é" * 5, 4) == ["éé", "éé", "é"]
    with pytest.raises(ValueError, match="max_bytes"):
        cut_line("abc", 3)


def test_document_lines_drop_empty_lines_and_split_at_reserved_char():
    text = "first line\n\nsecond \u2585 third\r\n\r\n \r\na\rb\x0c"
    lines = ["first line", "second ", " third", " ", "a\rb\x0c"]
    assert list(document_lines(text, MAX_LINE)) == lines


# --- the training sample -------------------------------------------------------


def _expected_sample(cfg, text_corpus) -> tuple[bytes, dict[str, int]]:
    """The sample by the documented rule, computed naively in memory."""
    present = [s for s in cfg.sources if s in text_corpus]
    total_share = sum(cfg.sources[s].share for s in present)
    out, docs_taken = [], {}
    for source in present:
        target = round(cfg.sources[source].share / total_share * cfg.tokenizer.sample_bytes)
        ranked = sorted(text_corpus[source], key=lambda d: sample_key(cfg.seed, d["id"]))
        chosen, size, limit = set(), 0, {}
        for doc in ranked:
            if size >= target:
                break
            chosen.add(doc["id"])
            n = len(doc["text"].encode())
            if size + n >= target and sum(len(d["text"].encode()) for d in text_corpus[source]) > target:
                limit[doc["id"]] = target - size  # the crossing document: up to the line reaching it
            size += n
        docs_taken[source] = len(chosen)
        # File order: part-00000 holds documents 0, 2, 4...; part-00001 1, 3, 5...
        in_files = text_corpus[source][0::2] + text_corpus[source][1::2]
        for doc in in_files:
            if doc["id"] in chosen:
                written = 0
                for line in document_lines(doc["text"], MAX_LINE):
                    out.append(line.encode() + b"\n")
                    written += len(line.encode())
                    if doc["id"] in limit and written >= limit[doc["id"]]:
                        break
    return b"".join(out), docs_taken


def test_training_sample_follows_mixture_shares(tmp_path_factory, text_corpus):
    out_dir = build_clean_corpus(tmp_path_factory, text_corpus, "sample")
    cfg = tokenizer_config(out_dir, f"tokenizer.sample_bytes={SAMPLE_BYTES}")
    path = out_dir / "sample.txt"
    stats = write_training_sample(cfg, path)

    # Sources in config order; Table 1 shares renormalised over those present
    # (github 4.5, wikipedia 4.5, books 4.5): a third each.
    assert list(stats) == ["github", "wikipedia", "books"]
    for source, s in stats.items():
        assert s["share"] == pytest.approx(1 / 3)
        assert s["target_bytes"] == 200_000
        assert s["source_bytes"] == sum(len(d["text"].encode()) for d in text_corpus[source])

    expected, docs_taken = _expected_sample(cfg, text_corpus)
    data = path.read_bytes()
    assert data == expected
    assert {s: v["docs"] for s, v in stats.items()} == docs_taken
    # github (81 kB) is taken whole; wikipedia (388 kB) and books (660 kB) are cut.
    assert stats["github"]["docs"] == len(text_corpus["github"])
    assert stats["wikipedia"]["docs"] < len(text_corpus["wikipedia"])
    assert stats["books"]["docs"] < len(text_corpus["books"])
    # A cut source stops within a line of its target: the budget counts text bytes,
    # "bytes" the lines written (no newlines, no blank lines), so a little under.
    for source in ("wikipedia", "books"):
        assert 0.95 * 200_000 <= stats[source]["bytes"] < 200_000 + MAX_LINE
    lines = data.split(b"\n")[:-1]
    assert len(lines) == sum(s["lines"] for s in stats.values())
    assert sum(map(len, lines)) == sum(s["bytes"] for s in stats.values())
    assert all(0 < len(line) <= MAX_LINE for line in lines)

    # Same input and config, same bytes; another seed, another sample.
    again = write_training_sample(cfg, out_dir / "again.txt")
    assert again == stats and (out_dir / "again.txt").read_bytes() == data
    other = tokenizer_config(out_dir, f"tokenizer.sample_bytes={SAMPLE_BYTES}", "seed=7")
    write_training_sample(other, out_dir / "seed7.txt")
    assert (out_dir / "seed7.txt").read_bytes() != data


def test_sample_errors_name_the_input(tmp_path):
    cfg = tokenizer_config(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "clean"))):
        write_training_sample(cfg, tmp_path / "s.txt")
    bad = tmp_path / "clean" / "books" / "part-00000.arrow"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"this is not an Arrow file")
    (tmp_path / "clean" / "manifest.json").write_text(json.dumps({
        "format": "llama-clean-documents/1", "files": [{"source": "books", "file": "books/part-00000.arrow"}]}))
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        write_training_sample(cfg, tmp_path / "s.txt")
    assert not (tmp_path / "s.txt").exists()  # atomic: no partial sample left


def test_empty_sample_is_a_clear_error(tmp_path, text_corpus):
    write_clean_docs(tmp_path / "no-rows", "books", [], n_files=1)
    with pytest.raises(ValueError, match="training sample is empty"):
        train_tokenizer(tokenizer_config(tmp_path / "no-rows"))
    write_clean_docs(tmp_path / "no-budget", "books", text_corpus["books"])
    with pytest.raises(ValueError, match="training sample is empty"):
        train_tokenizer(tokenizer_config(tmp_path / "no-budget", "tokenizer.sample_bytes=0"))


# --- the trained model ----------------------------------------------------------


def test_parse_trainer_log_counts_real_skips(request, tmp_path):
    """The parser reads SentencePiece's real log: one line too long, one with U+2585."""
    text = demo_input(request, BOOKS[0]).read_text(encoding="utf-8")
    lines = [line for line in text.split("\n") if line.strip()]
    lines += ["x" * (MAX_LINE + 1), "a \u2585 b", "é" * (MAX_LINE // 2)]  # the last one fits
    with open(tmp_path / "log", "w+b") as log:
        with redirect_fd2(log):
            spm.SentencePieceTrainer.Train(
                sentence_iterator=iter(lines), model_writer=io.BytesIO(), vocab_size=400,
                max_sentence_length=MAX_LINE, **LLAMA_TRAINER_SPEC, **LOG_LEVEL,
            )
        log.seek(0)
        counts = parse_trainer_log(log.read().decode())
    assert counts == {"too_long": 1, "reserved": 1, "skipped": 2, "loaded": len(lines) - 2}


def test_training_summary(request, trained_tokenizer, text_corpus):
    cfg, summary = trained_tokenizer
    # The whole corpus is in the sample (4 MB budget), long lines cut, and
    # SentencePiece dropped none of its lines.
    stats = summary["sample_stats"]
    assert {s: v["docs"] for s, v in stats.items()} == {s: len(d) for s, d in text_corpus.items()}
    sample = Path(summary["sample"]).read_bytes()
    for rel in BOOKS:
        line = long_line(demo_input(request, rel).read_text(encoding="utf-8").replace("\r\n", "\n"))
        pieces = cut_line(line, MAX_LINE)
        assert len(pieces) == 3 and all(p.encode() + b"\n" in sample for p in pieces)
    assert summary["skipped_lines"] == 0
    assert summary["vocab_size"] == TOKENIZER_VOCAB
    n_lines = sum(s["lines"] for s in summary["sample_stats"].values())
    assert summary["sentences"] == summary["loaded"] == n_lines  # all lines reached the trainer
    model = Path(summary["model"])
    assert model == Path(f"{cfg.tokenizer.model_prefix}.model")
    assert summary["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    vocab = Path(summary["vocab"]).read_text(encoding="utf-8").splitlines()
    assert vocab[:4] == ["<unk>\t0", "<s>\t0", "</s>\t0", "<0x00>\t0"]
    assert len(vocab) == TOKENIZER_VOCAB


def test_model_specs_match_config(trained_tokenizer, tokenizer_model):
    cfg, _ = trained_tokenizer
    proto = tokenizer.model_proto(tokenizer_model)
    t, n = proto.trainer_spec, proto.normalizer_spec
    assert t.model_type == type(t).ModelType.Value("BPE")
    assert t.vocab_size == cfg.tokenizer.vocab_size == len(proto.pieces)
    assert (t.split_digits, t.byte_fallback, t.allow_whitespace_only_pieces) == (True, True, True)
    assert (t.split_by_unicode_script, t.split_by_whitespace, t.split_by_number) == (True,) * 3
    assert t.max_sentencepiece_length == 16
    assert t.character_coverage == pytest.approx(cfg.tokenizer.character_coverage)
    assert t.max_sentence_length == cfg.tokenizer.max_sentence_length
    assert t.input_sentence_size == cfg.tokenizer.input_sentence_size
    assert (t.unk_id, t.bos_id, t.eos_id, t.pad_id) == (0, 1, 2, -1)
    assert list(t.input) == [] and t.model_prefix == ""  # no machine path in the model
    assert (n.name, n.add_dummy_prefix, n.remove_extra_whitespaces) == ("identity", True, False)
    assert tokenizer.special_ids(tokenizer_model) == (0, 1, 2, -1)
    # Every setting of LLAMA_TRAINER_SPEC is in the model as given.
    normalizer_keys = {"normalization_rule_name": "name", "add_dummy_prefix": "add_dummy_prefix",
                       "remove_extra_whitespaces": "remove_extra_whitespaces"}
    for key, value in LLAMA_TRAINER_SPEC.items():
        if key in normalizer_keys:
            assert getattr(n, normalizer_keys[key]) == value, key
        elif key == "model_type":
            assert t.model_type == type(t).ModelType.Value(value.upper())
        else:
            assert getattr(t, key) == value, key
    assert n.escape_whitespaces and not n.precompiled_charsmap  # identity: no rule table
    # Byte fallback: the 256 byte pieces follow the three meta pieces.
    assert [tokenizer_model.id_to_piece(i) for i in (3, 258)] == ["<0x00>", "<0xFF>"]


def test_round_trip_every_document(text_corpus, tokenizer_model):
    for source, docs in text_corpus.items():
        texts = [d["text"] for d in docs]
        ids = tokenizer.encode_batch(tokenizer_model, texts)
        assert tokenizer.decode_batch(tokenizer_model, ids) == texts, source
        assert all(0 not in row for row in ids), source
        assert all(row[0] not in (1, 2) for row in ids if row)  # no BOS/EOS added


def test_round_trip_tricky_strings(tokenizer_model):
    ids = tokenizer.encode_batch(tokenizer_model, TRICKY)
    assert tokenizer.decode_batch(tokenizer_model, ids) == TRICKY
    for text, row in zip(TRICKY, ids):
        assert tokenizer_model.decode(row).encode("utf-8") == text.encode("utf-8")
        assert 0 not in row, text
    assert tokenizer.encode_batch(tokenizer_model, []) == []


def test_whitespace_marker_decodes_to_space(tokenizer_model):
    """The one character that does not survive: SentencePiece writes spaces as
    U+2581, so a U+2581 in the text decodes to a space (as with LLaMA's own model)."""
    assert tokenizer_model.decode(tokenizer_model.encode("a\u2581b")) == "a b"


def test_digits_are_split(tokenizer_model):
    assert tokenizer_model.encode("12345", out_type=str) == ["▁", "1", "2", "3", "4", "5"]
    assert tokenizer_model.encode("x 2024", out_type=str)[-4:] == ["2", "0", "2", "4"]


def test_unknown_characters_fall_back_to_bytes(tokenizer_model):
    # "🦙" is not in the training text: its four UTF-8 bytes, never <unk>.
    assert tokenizer_model.encode("🦙", out_type=str) == ["▁", "<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]


def test_training_is_reproducible(tmp_path_factory, text_corpus, trained_tokenizer):
    """Same corpus and config in another folder: the same model bytes."""
    _, first = trained_tokenizer
    cfg = tokenizer_config(build_clean_corpus(tmp_path_factory, text_corpus, "again"))
    second = train_tokenizer(cfg)
    assert second["sha256"] == first["sha256"]
    assert second["sample_sha256"] == first["sample_sha256"]
    # One thread: the same pieces; only the recorded num_threads differs.
    one = train_tokenizer(tokenizer_config(Path(cfg.out_dir), "tokenizer.num_threads=1"))
    assert one["sha256"] != first["sha256"]
    assert _pieces(one["model"]) == _pieces(first["model"])


def _pieces(model: str) -> list[str]:
    return [p.piece for p in tokenizer.model_proto(Path(model).read_bytes()).pieces]


def test_trainer_subsamples_to_input_sentence_size(tmp_path_factory, text_corpus, trained_tokenizer):
    """More lines than input_sentence_size: a seeded subset, reproducible."""
    _, full = trained_tokenizer
    out_dir = build_clean_corpus(tmp_path_factory, text_corpus, "subsample")
    cfg = tokenizer_config(out_dir, "tokenizer.input_sentence_size=2000")
    a = train_tokenizer(cfg)
    b = train_tokenizer(cfg, force=True)  # trained again, not skipped as up to date
    n_lines = sum(s["lines"] for s in a["sample_stats"].values())
    assert a["sentences"] == a["loaded"] == 2000 < n_lines
    assert a["sha256"] == b["sha256"] != full["sha256"]


# --- the command line -----------------------------------------------------------


def test_cli_encode_decode(trained_tokenizer, capsys, tmp_path):
    model = trained_tokenizer[1]["model"]
    assert cli.main(["encode", "--model", model, "Alice 12"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pieces"][-3:] == ["▁", "1", "2"]
    assert cli.main(["decode", "--model", model, *map(str, out["ids"])]) == 0
    assert capsys.readouterr().out == "Alice 12\n"
    assert cli.main(["decode", "--model", model, "99999"]) == 2
    assert "outside" in capsys.readouterr().err
    assert cli.main(["encode", "--model", "missing.model", "x"]) == 1
    assert "missing.model" in capsys.readouterr().err
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    assert cli.main(["encode", "--model", str(bad), "x"]) == 1
    assert f"{bad}: not a SentencePiece model" in capsys.readouterr().err


def test_cli_train_in_a_new_process(tmp_path_factory, text_corpus, trained_tokenizer):
    """`python -m tokenizer train` in another process: the same model bytes as
    the in-process training (SentencePiece's own sampler differed across processes)."""
    out_dir = build_clean_corpus(tmp_path_factory, text_corpus, "cli")
    sets = [
        f"out_dir={out_dir}",
        f"tokenizer.model_prefix={out_dir}/tok/m",
        f"tokenizer.vocab_size={TOKENIZER_VOCAB}",
    ]
    run = subprocess.run(
        [sys.executable, "-m", "tokenizer", "train", "--config", "configs/demo.yaml"]
        + [arg for kv in sets for arg in ("--set", kv)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert f"model: {out_dir}/tok/m.model (sha256 {trained_tokenizer[1]['sha256']})" in run.stdout
    assert re.search(r"^books\s+33\.33%\s+{}\s".format(len(text_corpus["books"])), run.stdout, re.MULTILINE)
    assert "skipped lines: 0;" in run.stdout
    assert (out_dir / "tok" / "m.vocab").read_bytes() == Path(trained_tokenizer[1]["vocab"]).read_bytes()


def test_cli_help_names_inputs_and_outputs(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    assert "part-*.arrow" in text and ".model" in text and "--set" in text
