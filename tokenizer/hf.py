"""Export the trained tokenizer for Hugging Face `transformers` (`python -m tokenizer export --hf`).

The folder holds what a LLaMA checkpoint on the Hub holds: `tokenizer.model` (our
SentencePiece model, byte for byte), `tokenizer.json` (the fast pipeline, built by
transformers' own converter from the model's pieces, scores and normaliser spec),
`tokenizer_config.json` and `special_tokens_map.json`. `tokenizers.Tokenizer`,
`PreTrainedTokenizerFast` and `AutoTokenizer` loading it give SentencePiece's ids
(`[bos] + encode`) for every text; tests/test_tokenizer_hf.py checks this.

We convert from the parsed model ourselves: transformers reads a tokenizer.model
through `sentencepiece_model_pb2`, which refuses to import under the protobuf
runtime this project pins (`tokenizer._model_proto_class`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sentencepiece as spm

from tokenizer import load, model_proto, special_ids

__all__ = ["HF_FILES", "LLAMA_CONTEXT", "TokenizerMismatch", "build_fast_tokenizer",
           "check_recorded", "export_hf", "hf_tokenizer_config"]

HF_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

LLAMA_CONTEXT = 2048  # LLaMA (2023): "a context length of 2048 tokens"


class TokenizerMismatch(ValueError):
    """A tokenizer other than the one a checkpoint or the shards were made with."""


def check_recorded(model_path: str | Path, records: list[tuple[str, dict | None]],
                   use: str = "exported together",
                   remedy: str = "export the recorded tokenizer, or the checkpoint of a run trained on this one",
                   ) -> str:
    """The sha256 of the model file, checked against what each record says it must be.

    A model paired with another tokenizer than its own turns ids into the wrong text,
    silently; the shard manifest and every checkpoint record the tokenizer they were
    made with (its sha256), so an export can refuse such a pair.

    Args:
        model_path: a SentencePiece `.model` file.
        records: (where it is recorded, e.g. "checkpoint out/x/step-000300.pt", the
            record {"sha256", "path", ...} or None); a record without a sha256 is
            not checked.
        use, remedy: what the pair was about to be used for, and what to do
            instead (the message's end).
    Returns: the file's sha256 (hex).
    Raises:
        FileNotFoundError: no such file.
        TokenizerMismatch: a record names another sha256 (the message names both
            files and digests).
    """
    import hashlib

    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such SentencePiece model file")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for where, record in records:
        expected = (record or {}).get("sha256")
        if expected and expected != digest:
            raise TokenizerMismatch(
                f"{path} (sha256 {digest[:16]}) is not the tokenizer of the {where}, which "
                f"records {record.get('path')} (sha256 {expected[:16]}): {use}, "
                f"the model's ids would decode to the wrong text; {remedy}")
    return digest


def _added_token(content: str) -> dict[str, Any]:
    """An added special token as transformers writes it in its JSON files."""
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": True,
    }


def build_fast_tokenizer(sp: spm.SentencePieceProcessor) -> Any:
    """The `tokenizers.Tokenizer` of the model: transformers' SentencePiece converter,
    the meta pieces as special tokens, and BOS prepended by the post-processor.

    Raises:
        ValueError: the model is not BPE, or has no BOS/EOS piece.
    """
    from tokenizers import AddedToken, processors
    from transformers.convert_slow_tokenizer import SpmConverter

    proto = model_proto(sp)
    if proto.trainer_spec.model_type != type(proto.trainer_spec).ModelType.Value("BPE"):
        raise ValueError("the Hugging Face LLaMA export expects a BPE SentencePiece model")
    ids = special_ids(sp)
    vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    if len(vocab) != len(proto.pieces):
        raise ValueError("the SentencePiece model has duplicate pieces")
    # legacy=True: the dummy prefix on every text, even one starting with "▁" (as
    # SentencePiece), not only where Metaspace finds none.
    fast = SpmConverter.build_tokenizer_from_spm_proto(proto=proto, vocab=vocab, legacy=True)
    if fast is None:
        raise ValueError("transformers' converter built no tokenizer from the model")
    meta = [i for i in (ids.unk, ids.bos, ids.eos) if i >= 0]
    fast.add_special_tokens(
        [AddedToken(sp.id_to_piece(i), special=True, normalized=False) for i in meta]
    )
    bos = sp.id_to_piece(ids.bos)
    fast.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0",
        pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
        special_tokens=[(bos, ids.bos)],
    )
    return fast


def hf_tokenizer_config(
    sp: spm.SentencePieceProcessor, model_max_length: int = LLAMA_CONTEXT
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tokenizer_config.json, special_tokens_map.json) contents for the model."""
    # - tokenizer_class PreTrainedTokenizerFast: runs tokenizer.json as written.
    #   transformers 5's LlamaTokenizer rebuilds its pipeline with a Metaspace that adds
    #   the dummy prefix U+2581 only when the text lacks one, so a text starting with a
    #   space loses one (https://github.com/huggingface/transformers/pull/47700).
    # - legacy true: transformers 4's slow LlamaTokenizer then encodes as SentencePiece.
    # - split_special_tokens true: a literal "<s>" in a document is its characters, as
    #   in our shards, not the BOS id.
    # - no add_prefix_space key: any value makes transformers 4 convert the slow tokenizer
    #   instead of reading tokenizer.json.
    ids = special_ids(sp)
    meta = {i: sp.id_to_piece(i) for i in (ids.unk, ids.bos, ids.eos) if i >= 0}
    config: dict[str, Any] = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {str(i): _added_token(piece) for i, piece in meta.items()},
        "bos_token": sp.id_to_piece(ids.bos),
        "clean_up_tokenization_spaces": False,
        "eos_token": sp.id_to_piece(ids.eos),
        "legacy": True,
        "model_max_length": model_max_length,
        "pad_token": None,
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "split_special_tokens": True,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": sp.id_to_piece(ids.unk) if ids.unk >= 0 else None,
        "use_default_system_prompt": False,
    }
    special = {
        "bos_token": _added_token(sp.id_to_piece(ids.bos)),
        "eos_token": _added_token(sp.id_to_piece(ids.eos)),
    }
    if ids.unk >= 0:
        special["unk_token"] = _added_token(sp.id_to_piece(ids.unk))
    for entry in special.values():
        del entry["special"]  # special_tokens_map.json does not carry the flag
    return config, special


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def export_hf(
    model_path: str | Path, out_dir: str | Path, model_max_length: int = LLAMA_CONTEXT
) -> dict[str, Any]:
    """Write the four Hugging Face tokenizer files of a trained model into `out_dir`.

    Each file is written atomically; other files in `out_dir` are left alone.
    The same model gives the same bytes, and no path of the machine is written.

    Args:
        model_path: a trained SentencePiece `.model` (`tokenizer.train`).
        out_dir: the folder to write (created if missing).
        model_max_length: the context length recorded for transformers.
    Returns:
        {"dir": str, "files": {name: sha256 of the bytes written}, "vocab_size": int}.
    Raises:
        FileNotFoundError, ValueError: as `tokenizer.load`; ValueError also when
            the model is not BPE or lacks BOS/EOS.
    """
    import hashlib

    from pipeline.core.io import atomic_write

    model_path = Path(model_path)
    sp = load(model_path)
    fast = build_fast_tokenizer(sp)
    config, special = hf_tokenizer_config(sp, model_max_length)
    contents = {
        "tokenizer.model": model_path.read_bytes(),
        "tokenizer.json": (fast.to_str(pretty=True) + "\n").encode("utf-8"),
        "tokenizer_config.json": _json_bytes(config),
        "special_tokens_map.json": _json_bytes(special),
    }
    out = Path(out_dir)
    for name in HF_FILES:
        with atomic_write(out / name) as f:
            f.write(contents[name])
    return {
        "dir": str(out),
        "files": {name: hashlib.sha256(contents[name]).hexdigest() for name in HF_FILES},
        "vocab_size": sp.get_piece_size(),
    }
