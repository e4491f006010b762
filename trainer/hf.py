"""Hugging Face Llama format: export our weights so `transformers.LlamaForCausalLM`
loads them, and import them back.

A folder with `config.json` (LlamaConfig fields) and `model.safetensors` (weights
under HF's names, float32 by default), and the tokenizer that trained them
(`tokenizer.hf`, written by `python -m trainer export`). Import also reads weights
sharded as published checkpoints are (`model.safetensors.index.json` naming
`model-0000N-of-0000M.safetensors`). Names map one to one (Meta's names -> HF's, as in
transformers' `convert_llama_weights_to_hf.py`):

    tok_embeddings.weight            model.embed_tokens.weight
    layers.N.attention.wq/wk/wv/wo   model.layers.N.self_attn.q_proj/k_proj/v_proj/o_proj
    layers.N.feed_forward.w1/w2/w3   model.layers.N.mlp.gate_proj/down_proj/up_proj
    layers.N.attention_norm          model.layers.N.input_layernorm
    layers.N.ffn_norm                model.layers.N.post_attention_layernorm
    norm.weight                      model.norm.weight
    output.weight                    lm_head.weight

RoPE: our `apply_rope` rotates interleaved pairs (x[2i], x[2i+1]) (Meta's layout);
HF's `apply_rotary_pos_emb` rotates halves (x[i], x[i + D/2]) (`rotate_half`).
Both use frequency theta^(-2i/D) for pair i, so permuting the output rows of wq
and wk within each head, interleaved -> halves, makes HF's attention scores equal
ours (`permute_for_hf`; `convert_llama_weights_to_hf.py`'s `permute`). wv, wo and
everything else are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch

from trainer.model import ModelArgs, Transformer

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
TOKENIZER_MODEL = "tokenizer.model"

# the weights' dtypes an export may write (`--dtype`)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

_LAYER = {
    "attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj", "attention.wo": "self_attn.o_proj",
    "feed_forward.w1": "mlp.gate_proj", "feed_forward.w2": "mlp.down_proj",
    "feed_forward.w3": "mlp.up_proj",
    "attention_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
_TOP = {"tok_embeddings.weight": "model.embed_tokens.weight",
        "norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}


def permute_for_hf(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of a q/k projection [n_heads * head_dim, dim] from interleaved RoPE pairs
    to rotate-half order: within each head, row 2i goes to i, row 2i+1 to i + head_dim/2."""
    out, dim = w.shape
    return w.view(n_heads, out // n_heads // 2, 2, dim).transpose(1, 2).reshape(out, dim)


def permute_from_hf(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of `permute_for_hf`."""
    out, dim = w.shape
    return w.view(n_heads, 2, out // n_heads // 2, dim).transpose(1, 2).reshape(out, dim)


def _hf_name(name: str) -> str:
    if name in _TOP:
        return _TOP[name]
    m = re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", name)
    if not m or m.group(2) not in _LAYER:
        raise KeyError(f"no Hugging Face name for parameter {name!r}")
    return f"model.layers.{m.group(1)}.{_LAYER[m.group(2)]}.weight"


def to_hf_state_dict(weights: dict[str, torch.Tensor], args: ModelArgs,
                     dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Our state dict -> HF Llama's (renamed; wq/wk permuted; contiguous copies in `dtype`).

    Raises:
        KeyError: a parameter name that is not one of the model's.
    """
    out = {}
    for name, w in weights.items():
        w = w.detach().to("cpu", torch.float32)
        if name.endswith(("attention.wq.weight", "attention.wk.weight")):
            w = permute_for_hf(w, args.n_heads)
        out[_hf_name(name)] = w.to(dtype).contiguous().clone()
    return out


def from_hf_state_dict(weights: dict[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    """HF Llama's state dict -> ours (inverse of `to_hf_state_dict`).

    Raises:
        KeyError: a name with no counterpart in our model (e.g. biases).
    """
    names = {_hf_name(n): n for n in _TOP} | {
        f"model.layers.{i}.{hf}.weight": f"layers.{i}.{ours}.weight"
        for i in range(args.n_layers) for ours, hf in _LAYER.items()}
    out = {}
    for hf_name, w in weights.items():
        if hf_name not in names:
            raise KeyError(f"Hugging Face weight {hf_name!r} has no counterpart in our model")
        name = names[hf_name]
        if name.endswith(("attention.wq.weight", "attention.wk.weight")):
            w = permute_from_hf(w, args.n_heads)
        out[name] = w.contiguous()
    return out


def hf_config(args: ModelArgs, bos_token_id: int | None = 1, eos_token_id: int | None = 2,
              dtype: str = "float32") -> dict:
    """`config.json` of `LlamaForCausalLM` for `args` (multi-head attention, untied
    embeddings, no biases, SiLU), weights in `dtype`. The RoPE base is written both as
    transformers 5's `rope_parameters` and the older top-level `rope_theta`."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": args.vocab_size, "hidden_size": args.dim,
        "intermediate_size": args.ffn_hidden, "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads, "num_key_value_heads": args.n_heads,
        "head_dim": args.head_dim, "hidden_act": "silu",
        "max_position_embeddings": args.max_seq_len, "rms_norm_eps": args.norm_eps,
        "rope_theta": args.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": args.rope_theta},
        "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
        "attention_dropout": 0.0, "initializer_range": 0.02,
        "bos_token_id": bos_token_id, "eos_token_id": eos_token_id,
        "dtype": dtype, "torch_dtype": dtype,
    }


def args_from_hf_config(config: dict) -> ModelArgs:
    """`ModelArgs` from an HF Llama `config.json`.

    `intermediate_size` is matched by `multiple_of`: 256 or 32 when either rounds
    2/3 * 4d to it (LLaMA's own sizes), else the size itself (any size >= 2/3 * 4d).

    Raises:
        ValueError: not a Llama config, or one our model cannot express (grouped-query
            attention, tied embeddings, biases, RoPE scaling, another activation,
            an intermediate size below 2/3 * 4d).
    """
    if config.get("model_type") != "llama":
        raise ValueError(f"model_type {config.get('model_type')!r}, expected 'llama'")
    n_heads = config["num_attention_heads"]
    rope = config.get("rope_parameters") or {}
    problems = [
        f"{k}={config.get(k)!r}" for k, ok in (
            ("num_key_value_heads", config.get("num_key_value_heads", n_heads) == n_heads),
            ("tie_word_embeddings", not config.get("tie_word_embeddings", False)),
            ("attention_bias", not config.get("attention_bias", False)),
            ("mlp_bias", not config.get("mlp_bias", False)),
            ("hidden_act", config.get("hidden_act", "silu") == "silu"),
            ("rope_scaling", not config.get("rope_scaling")),
            ("head_dim", config.get("head_dim") in (None, config["hidden_size"] // n_heads)),
        ) if not ok]
    if rope.get("rope_type", "default") != "default":
        problems.append(f"rope_parameters.rope_type={rope['rope_type']!r}")
    if problems:
        raise ValueError("Llama config our model cannot express: " + ", ".join(problems))
    hidden = config["intermediate_size"]
    base = dict(dim=config["hidden_size"], n_layers=config["num_hidden_layers"], n_heads=n_heads,
                vocab_size=config["vocab_size"], max_seq_len=config["max_position_embeddings"],
                norm_eps=config["rms_norm_eps"],
                rope_theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    for multiple_of in (256, 32, hidden):
        args = ModelArgs(**base, multiple_of=multiple_of)
        if args.ffn_hidden == hidden:
            return args
    raise ValueError(f"intermediate_size {hidden} is below 2/3 * 4 * {base['dim']}")


def export_hf(weights: dict[str, torch.Tensor], args: ModelArgs, out_dir: str | Path,
              bos_token_id: int | None = 1, eos_token_id: int | None = 2,
              dtype: str = "float32") -> Path:
    """Write `config.json` and `model.safetensors` (weights in `dtype`, a key of
    `DTYPES`) to `out_dir`; returns it.

    `weights` are our plain-named weights (`model.state_dict()`, or a checkpoint's
    "model"); `bos/eos_token_id` go into the config (the tokenizer's ids). Each file
    is written under a temporary name, then renamed, mode 0644.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = to_hf_state_dict(weights, args, DTYPES[dtype])
    config = (json.dumps(hf_config(args, bos_token_id, eos_token_id, dtype), indent=2) + "\n").encode()
    for name, write in ((WEIGHTS, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"})),
                        (CONFIG, lambda tmp: tmp.write_bytes(config))):
        tmp = out_dir / f".{name}.tmp"
        try:
            write(tmp)
            os.chmod(tmp, 0o644)  # safetensors creates its file 0600
            os.replace(tmp, out_dir / name)
        finally:
            tmp.unlink(missing_ok=True)
    return out_dir


def read_safetensors(hf_dir: str | Path) -> dict[str, torch.Tensor]:
    """The weights of an HF folder, as stored: `model.safetensors`, or the files that
    `model.safetensors.index.json` maps each weight to (how sharded checkpoints are
    published), every weight taken from the file the index names.

    Raises:
        FileNotFoundError: neither file, or a file the index names.
        KeyError: a weight the index names is not in its file.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    hf_dir = Path(hf_dir)
    if (hf_dir / WEIGHTS).is_file():
        return load_file(str(hf_dir / WEIGHTS))
    if not (hf_dir / WEIGHTS_INDEX).is_file():
        raise FileNotFoundError(f"{hf_dir}: no {WEIGHTS} or {WEIGHTS_INDEX}")
    weight_map = json.loads((hf_dir / WEIGHTS_INDEX).read_text())["weight_map"]
    by_file: dict[str, list[str]] = {}
    for name, file in weight_map.items():
        by_file.setdefault(file, []).append(name)
    weights = {}
    for file, names in sorted(by_file.items()):
        if not (hf_dir / file).is_file():
            raise FileNotFoundError(f"{hf_dir / file}: named by {WEIGHTS_INDEX}, missing")
        with safe_open(str(hf_dir / file), framework="pt") as f:
            have = set(f.keys())
            for name in names:
                if name not in have:
                    raise KeyError(f"{hf_dir / file}: no weight {name!r} ({WEIGHTS_INDEX} names it)")
                weights[name] = f.get_tensor(name)
    return weights


def import_hf(hf_dir: str | Path) -> tuple[dict[str, torch.Tensor], ModelArgs]:
    """Read an HF Llama folder (`config.json` + `model.safetensors`, or sharded weights
    with `model.safetensors.index.json`) into our weights (float32) and `ModelArgs`.

    Raises:
        FileNotFoundError: no config.json, or no weights (`read_safetensors`).
        ValueError: a config our model cannot express (`args_from_hf_config`).
        KeyError: weights missing, or a weight with no counterpart in our model.
    """
    hf_dir = Path(hf_dir)
    args = args_from_hf_config(json.loads((hf_dir / CONFIG).read_text()))
    weights = {k: v.float() for k, v in read_safetensors(hf_dir).items()}
    ours = from_hf_state_dict(weights, args)
    with torch.device("meta"):
        expected = set(Transformer(args).state_dict())
    if missing := sorted(expected - set(ours)):
        raise KeyError(f"{hf_dir}: missing weights {missing[:5]}")
    return ours, args


def tokenizer_record(hf_dir: str | Path) -> dict | None:
    """What is known of the tokenizer of an HF folder, in the shard manifest's form
    ({"path", "sha256", "vocab_size", "bos_id", "eos_id"}), or None when the folder
    has no `tokenizer.model` (SentencePiece) to identify it by."""
    hf_dir = Path(hf_dir)
    if not (hf_dir / TOKENIZER_MODEL).is_file():
        return None
    config = json.loads((hf_dir / CONFIG).read_text())
    return {"path": str(hf_dir / TOKENIZER_MODEL),
            "sha256": hashlib.sha256((hf_dir / TOKENIZER_MODEL).read_bytes()).hexdigest(),
            "vocab_size": config.get("vocab_size"), "bos_id": config.get("bos_token_id"),
            "eos_id": config.get("eos_token_id")}
