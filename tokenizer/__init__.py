"""The LLaMA tokenizer: a SentencePiece BPE model.

`tokenizer.train` trains it on a mixture-weighted sample of the cleaned text;
`tokenizer.hf` exports it for Hugging Face transformers; this module loads a
trained model and encodes with it. Import this module in
workers (it pulls in neither Beam nor the trainer); load the model once per
worker (`DoFn.setup`), never pickle it.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Any, NamedTuple

import sentencepiece as spm

__all__ = ["SpecialIds", "decode_batch", "encode_batch", "load", "model_proto", "special_ids"]


class SpecialIds(NamedTuple):
    """Ids of the meta pieces; LLaMA: unk 0, bos 1, eos 2, no pad (-1)."""

    unk: int
    bos: int
    eos: int
    pad: int


def load(model_path: str | Path) -> spm.SentencePieceProcessor:
    """Load a trained SentencePiece model (`<model_prefix>.model`).

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
        ValueError: the file is not a SentencePiece model (names the file).
    """
    if "://" in str(model_path):  # on an object store: this machine's cached copy
        from pipeline.core.io import local_copy

        model_path = local_copy(model_path)
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such SentencePiece model file")
    sp = spm.SentencePieceProcessor()
    try:
        sp.load(str(path))
    except (OSError, RuntimeError) as e:
        raise ValueError(f"{path}: not a SentencePiece model: {e}") from e
    return sp


def encode_batch(
    sp: spm.SentencePieceProcessor, texts: list[str], num_threads: int = -1
) -> list[list[int]]:
    """Encode documents to token ids with SentencePiece's own batched encoder.

    No BOS or EOS is added: callers add them where documents are joined
    (the shard job). With byte fallback every UTF-8 string is
    encodable and `sp.decode(ids) == text` byte for byte.

    Args:
        sp: a loaded model (`load`).
        texts: N strings.
        num_threads: SentencePiece encoder threads; -1 lets it choose.
    Returns:
        N lists of int ids, each in `[0, sp.get_piece_size())`.
    Raises:
        TypeError: `texts` is not a list of str.
    """
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise TypeError("encode_batch expects a list of str")
    if not texts:
        return []
    return sp.encode(texts, out_type=int, add_bos=False, add_eos=False, num_threads=num_threads)


def decode_batch(sp: spm.SentencePieceProcessor, ids: list[list[int]]) -> list[str]:
    """Decode N lists of ids back to N strings (inverse of `encode_batch`).

    Raises:
        IndexError: an id is outside `[0, sp.get_piece_size())`.
    """
    if not ids:
        return []
    return sp.decode([list(row) for row in ids])


def special_ids(sp: spm.SentencePieceProcessor) -> SpecialIds:
    """The model's unk, bos, eos and pad ids (-1 where a piece is absent).

    Raises:
        ValueError: the model has no BOS or no EOS piece; token shards need both.
    """
    ids = SpecialIds(sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id())
    if ids.bos < 0 or ids.eos < 0:
        raise ValueError(f"the SentencePiece model has no BOS/EOS piece: {ids}")
    return ids


_MODEL_PROTO_CLASS: Any = None


def _model_proto_class() -> Any:
    """`sentencepiece_model_pb2.ModelProto`, even under an older protobuf runtime.

    The generated module in sentencepiece 0.2.3 refuses to import under the
    protobuf runtime Beam pins (gencode 7.x vs runtime 6.x: VersionError), so
    we take the serialized schema it carries and build the class ourselves.
    """
    global _MODEL_PROTO_CLASS
    if _MODEL_PROTO_CLASS is not None:
        return _MODEL_PROTO_CLASS
    try:
        from sentencepiece import sentencepiece_model_pb2

        _MODEL_PROTO_CLASS = sentencepiece_model_pb2.ModelProto
        return _MODEL_PROTO_CLASS
    except Exception:  # protobuf's VersionError; fall back to the schema itself
        pass
    from google.protobuf import descriptor_pool, message_factory

    spec = importlib.util.find_spec("sentencepiece.sentencepiece_model_pb2")
    if spec is None or spec.origin is None:
        raise ImportError("sentencepiece ships no sentencepiece_model_pb2 module")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    blobs = [
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", "") == "AddSerializedFile"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    ]
    if len(blobs) != 1:
        raise ImportError(f"{spec.origin}: cannot find the serialized model schema")
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(blobs[0])
    _MODEL_PROTO_CLASS = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("sentencepiece.ModelProto")
    )
    return _MODEL_PROTO_CLASS


def model_proto(sp: spm.SentencePieceProcessor | bytes) -> Any:
    """The model as a `sentencepiece.ModelProto` message (pieces, trainer and
    normalizer specs), parsed from `sp.serialized_model_proto()` or raw bytes."""
    blob = sp if isinstance(sp, bytes) else sp.serialized_model_proto()
    proto = _model_proto_class()()
    proto.ParseFromString(blob)
    return proto
