"""The Hugging Face export (`python -m tokenizer export --hf DIR`): the files, and
the ids transformers' tokenizers give against ours on the real test corpus of
tests/test_tokenizer.py and on tricky strings. What may differ, and why, is in
the docstring of `tokenizer.hf`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import sentencepiece as spm

import tokenizer
from tests.conftest import ROOT, TRICKY
from tokenizer import __main__ as cli
from tokenizer.hf import HF_FILES, export_hf

# transformers is imported inside the tests (tokenizer.hf imports it lazily too):
# set before, so it never looks for the Hub; it loads local folders only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# More strings where SentencePiece and HF pipelines tend to part: leading and
# trailing whitespace of every kind, U+2581 itself, digits, scripts, specials.
MORE_TRICKY = [
    " x",
    "  two leading spaces",
    "\tleading tab",
    "\nleading newline",
    "\u2581leading whitespace marker",
    " \u2581 space then marker",
    "\u3000ideographic space, \xa0no-break space",
    "trailing spaces   ",
    "tabs\t\t\tinside\tand\ttrailing\t",
    " ",
    "   ",
    "\t",
    "\n\n\n",
    "12345",
    " 12345 67 8.9e-10 0x1F 1,234,567",
    "a\u2581b",
    "👩‍👩‍👧 🇫🇷 🦙🦙 emoji only",
    "日本語のテキスト",
    "中文文本，标点。",
    "mixed: Алиса and Alice and 爱丽丝 and アリス",
    "<s>",
    "</s> <unk> <s>text",
    "<0x41> looks like a byte piece",
]


def _texts(text_corpus: dict[str, list[dict]]) -> list[str]:
    return [d["text"] for docs in text_corpus.values() for d in docs] + TRICKY + MORE_TRICKY


def _leading_space(text: str) -> bool:
    return text.startswith((" ", "\u2581"))


@pytest.fixture(scope="module")
def hf_dir(trained_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf")
    export_hf(trained_tokenizer[1]["model"], out)
    return out


@pytest.fixture(scope="module")
def expected(text_corpus, tokenizer_model):
    """{text: [bos] + our ids} for every test text."""
    texts = _texts(text_corpus)
    return {t: [tokenizer_model.bos_id()] + ids for t, ids in zip(texts, tokenizer.encode_batch(tokenizer_model, texts))}


def test_export_writes_the_llama_files(trained_tokenizer, hf_dir, tmp_path):
    model = trained_tokenizer[1]["model"]
    assert sorted(p.name for p in hf_dir.iterdir()) == sorted(HF_FILES)
    assert (hf_dir / "tokenizer.model").read_bytes() == Path(model).read_bytes()
    config = json.loads((hf_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    specials = (config["bos_token"], config["eos_token"], config["unk_token"])
    assert specials == ("<s>", "</s>", "<unk>")
    assert (config["add_bos_token"], config["add_eos_token"]) == (True, False)
    assert (config["legacy"], config["split_special_tokens"]) == (True, True)
    assert "add_prefix_space" not in config  # transformers 4 would convert from slow
    assert config["model_max_length"] == 2048
    assert {k: v["content"] for k, v in config["added_tokens_decoder"].items()} == {
        "0": "<unk>", "1": "<s>", "2": "</s>"
    }
    special = json.loads((hf_dir / "special_tokens_map.json").read_text())
    assert {k: v["content"] for k, v in special.items()} == {
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"
    }
    fast = json.loads((hf_dir / "tokenizer.json").read_text())
    assert fast["model"]["type"] == "BPE" and fast["model"]["byte_fallback"] is True
    assert len(fast["model"]["vocab"]) == trained_tokenizer[1]["vocab_size"]
    # Same model, same bytes; no path of this machine in any file.
    again = export_hf(model, tmp_path / "again")
    for name in HF_FILES:
        data = (hf_dir / name).read_bytes()
        assert (tmp_path / "again" / name).read_bytes() == data, name
        assert str(ROOT).encode() not in data and str(hf_dir).encode() not in data, name
    assert again["vocab_size"] == trained_tokenizer[1]["vocab_size"]


@pytest.mark.parametrize("name", ["PreTrainedTokenizerFast", "AutoTokenizer"])
def test_tokenizers_pipeline_matches_sentencepiece_on_every_text(name, hf_dir, expected, tokenizer_model):
    """tokenizer.json as `tokenizers`, `PreTrainedTokenizerFast` and `AutoTokenizer`
    run it: every id equal to ours, leading spaces included, and decoding equal to
    ours (the text itself, but for U+2581, which both decode to a space)."""
    import transformers
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    raw.encode_special_tokens = True  # what split_special_tokens does in transformers
    texts = list(expected)
    assert [e.ids for e in raw.encode_batch(texts)] == list(expected.values())

    fast = getattr(transformers, name).from_pretrained(hf_dir)
    assert type(fast).__name__ in ("PreTrainedTokenizerFast", "TokenizersBackend")
    ids = fast(texts)["input_ids"]
    assert ids == list(expected.values())
    assert fast.batch_decode(ids, skip_special_tokens=True) == [tokenizer_model.decode(i[1:]) for i in ids]


@pytest.mark.parametrize("name", ["LlamaTokenizer", "LlamaTokenizerFast"])
def test_llama_tokenizer_matches_ours(name, hf_dir, expected, text_corpus, tokenizer_model):
    """`LlamaTokenizer` and `LlamaTokenizerFast` give our ids on every Document of
    the real corpus and every text that does not start with a space; one starting
    with U+0020 or U+2581 gets one dummy-prefix "▁" fewer, i.e. SentencePiece's
    ids with add_dummy_prefix=false (transformers 5 rebuilds the pipeline; see
    `tokenizer.hf`)."""
    import transformers

    tok = getattr(transformers, name).from_pretrained(hf_dir)
    assert type(tok).__name__ == "LlamaTokenizer"  # one class in transformers 5
    n = tokenizer_model.get_piece_size()
    assert tok.convert_ids_to_tokens(list(range(n))) == [tokenizer_model.id_to_piece(i) for i in range(n)]
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)

    proto = tokenizer.model_proto(tokenizer_model)
    proto.normalizer_spec.add_dummy_prefix = False
    no_prefix = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())

    texts = list(expected)
    documents = [d["text"] for docs in text_corpus.values() for d in docs]
    assert len(documents) > 90 and not any(map(_leading_space, documents))
    leading = [t for t in texts if _leading_space(t)]
    assert len(leading) == 8  # tricky strings only
    for text, ids in zip(texts, tok(texts)["input_ids"]):
        if ids != expected[text]:  # none, once transformers honours tokenizer.json
            # Only a text starting with a space, and then exactly one "▁" fewer.
            assert _leading_space(text), repr(text[:60])
            assert ids == [tokenizer_model.bos_id()] + no_prefix.encode(text, out_type=int), repr(text[:60])
    plain = [t for t in texts if not _leading_space(t)]
    assert len(plain) > 30
    assert tok(documents)["input_ids"] == [expected[t] for t in documents]
    short = [t for t in plain if len(t) < 200]
    assert tok(short, add_special_tokens=False)["input_ids"] == [expected[t][1:] for t in short]
    decoded = tok.batch_decode([expected[t] for t in plain], skip_special_tokens=True)
    assert decoded == [tokenizer_model.decode(expected[t][1:]) for t in plain]


def test_cli_export(trained_tokenizer, tmp_path, capsys):
    model = trained_tokenizer[1]["model"]
    assert cli.main(["export", "--hf", str(tmp_path / "m"), "--model", model]) == 0
    out = capsys.readouterr().out
    assert "(600 pieces)" in out and all(f"/{name} (sha256 " in out for name in HF_FILES)
    # --config: the config's model, its trainer.seq_len as model_max_length.
    cfg = trained_tokenizer[0]
    sets = [f"tokenizer.model_prefix={cfg.tokenizer.model_prefix}", "trainer.seq_len=512",
            # no shards or checkpoints that record another tokenizer (the export checks them)
            f"shards.out={tmp_path / 'no-shards'}", f"trainer.out={tmp_path / 'no-train'}"]
    argv = ["export", "--hf", str(tmp_path / "c"), "--config", str(ROOT / "configs" / "demo.yaml")]
    assert cli.main(argv + [a for kv in sets for a in ("--set", kv)]) == 0
    capsys.readouterr()
    assert (tmp_path / "c" / "tokenizer.json").read_bytes() == (
        tmp_path / "m" / "tokenizer.json"
    ).read_bytes()
    assert json.loads((tmp_path / "c" / "tokenizer_config.json").read_text())[
        "model_max_length"
    ] == 512
    assert cli.main(["export", "--hf", str(tmp_path / "x"), "--model", "missing.model"]) == 1
    assert "missing.model" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # neither --model nor --config: the demo config's model (here moved by --set)
    assert cli.main(["export", "--hf", str(tmp_path / "y"),
                     "--set", f"tokenizer.model_prefix={tmp_path / 'none'}"]) == 1
    assert f"{tmp_path / 'none'}.model" in capsys.readouterr().err
    assert cli.main(["encode", "--set", f"tokenizer.model_prefix={Path(model).with_suffix('')}",
                     "12345"]) == 0
    assert json.loads(capsys.readouterr().out)["pieces"] == ["▁", "1", "2", "3", "4", "5"]
