"""Hugging Face Llama export and import: transformers loads the export and computes
our logits on real text; import(export(m)) gives back the same weights."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict

import pytest
import torch

from trainer.__main__ import main
from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.hf import (
    args_from_hf_config,
    hf_config,
    permute_for_hf,
    permute_from_hf,
    to_hf_state_dict,
)
from trainer.model import MODEL_SIZES, ModelArgs, Transformer


@pytest.fixture(scope="module")
def model() -> Transformer:
    """The demo shape at byte vocabulary, with weights far from init (std 0.1 matrices,
    norm gains in [0.5, 1.5]) so logits vary by several nats and every weight matters."""
    torch.manual_seed(0)
    model = Transformer(ModelArgs.from_name("demo", vocab_size=259, max_seq_len=128))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand_like(p) + 0.5 if p.dim() == 1 else torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def text_ids(alice) -> torch.Tensor:
    """Two rows of 128 byte ids (UTF-8 byte + 3) of Alice's Adventures in Wonderland."""
    start = alice.index(b"Alice was beginning")
    ids = torch.tensor(list(alice[start:start + 256]), dtype=torch.long) + 3
    return ids.view(2, 128)


def test_transformers_loads_export_with_our_logits(model, text_ids, tmp_path):
    from transformers import LlamaForCausalLM

    ckpt = save_checkpoint(tmp_path / "step-000000.pt",
                           {"step": 0, "model": model.state_dict(),
                            "model_args": asdict(model.args)})
    assert main(["export", "--hf", str(tmp_path / "hf"), "--checkpoint", str(ckpt),
                 "--no-tokenizer"]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"],
            config["num_attention_heads"], config["vocab_size"]) == (128, 352, 4, 4, 259)

    hf = LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert hf.dtype == torch.float32
    with torch.no_grad():
        ours, _ = model(text_ids)
        theirs = hf(text_ids).logits
    assert ours.std() > 1.0  # logits far from uniform: a wrong weight would show
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-4)
    assert (theirs.argmax(-1) == ours.argmax(-1)).all()

    # Without the q/k permutation, HF's rotate-half RoPE pairs the wrong features.
    with torch.no_grad():
        for i, layer in enumerate(hf.model.layers):
            layer.self_attn.q_proj.weight.copy_(model.layers[i].attention.wq.weight)
            layer.self_attn.k_proj.weight.copy_(model.layers[i].attention.wk.weight)
        wrong = hf(text_ids).logits
    assert (wrong - ours).abs().max() > 1e-2


def test_loss_and_gradients_match_transformers(model, text_ids):
    """Our training loss (chunked, gradients made in the forward) against the loss
    transformers computes from `labels` on the same text, and the gradients of the
    weights the export does not permute."""
    from transformers import LlamaConfig, LlamaForCausalLM

    ours = copy.deepcopy(model)
    config = {k: v for k, v in hf_config(ours.args).items()
              if k not in ("architectures", "model_type")}
    hf = LlamaForCausalLM(LlamaConfig(**config)).eval()
    hf.load_state_dict(to_hf_state_dict(ours.state_dict(), ours.args))
    _, loss = ours(text_ids[:, :-1], text_ids[:, 1:])
    loss.backward()
    theirs = hf(input_ids=text_ids, labels=text_ids).loss  # shifts the labels itself
    theirs.backward()
    assert loss.item() == pytest.approx(6.1549, abs=1e-4)  # nats/byte of these weights
    torch.testing.assert_close(loss, theirs, rtol=1e-5, atol=0)
    grads = {n: p.grad for n, p in ours.named_parameters()}
    hf_grads = {n: p.grad for n, p in hf.named_parameters()}
    for name, hf_name in (("output.weight", "lm_head.weight"), ("norm.weight", "model.norm.weight"),
                          ("tok_embeddings.weight", "model.embed_tokens.weight"),
                          ("layers.3.feed_forward.w2.weight", "model.layers.3.mlp.down_proj.weight")):
        torch.testing.assert_close(grads[name], hf_grads[hf_name], rtol=1e-4, atol=1e-6, msg=name)


def test_import_of_export_gives_identical_weights(model, tmp_path):
    ckpt = save_checkpoint(tmp_path / "in.pt", {"step": 7, "model": model.state_dict(),
                                                "model_args": asdict(model.args)})
    assert main(["export", "--hf", str(tmp_path / "hf"), "--checkpoint", str(ckpt),
                 "--no-tokenizer"]) == 0
    assert main(["import", "--hf", str(tmp_path / "hf"), "--out", str(tmp_path / "out.pt")]) == 0
    back = load_checkpoint(tmp_path / "out.pt")
    assert ModelArgs(**back["model_args"]) == model.args
    assert back["model"].keys() == model.state_dict().keys()
    for name, w in model.state_dict().items():
        assert torch.equal(back["model"][name], w), name


def test_permutation_moves_rope_pairs_to_halves():
    """Head of 4 rows = pairs (0, 1), (2, 3): rotate-half order is rows 0, 2, 1, 3."""
    w = torch.arange(16.0).view(8, 2)  # 2 heads of head_dim 4, dim 2
    p = permute_for_hf(w, n_heads=2)
    assert p[:, 0].tolist() == [0, 4, 2, 6, 8, 12, 10, 14]
    assert torch.equal(permute_from_hf(p, n_heads=2), w)


@pytest.mark.parametrize("name", ["demo", "1B", "7B", "65B"])
def test_config_round_trip(name):
    args = ModelArgs.from_name(name, vocab_size=32000, max_seq_len=2048)
    back = args_from_hf_config(json.loads(json.dumps(hf_config(args))))
    assert back.ffn_hidden == args.ffn_hidden
    assert (back.dim, back.n_layers, back.n_heads, back.vocab_size, back.max_seq_len,
            back.norm_eps, back.rope_theta) == (args.dim, args.n_layers, args.n_heads, 32000,
                                                2048, 1e-6, 10000.0)
    assert back.multiple_of == MODEL_SIZES[name].get("multiple_of", 256)


def test_configs_we_cannot_express_are_refused():
    config = hf_config(ModelArgs.from_name("demo", vocab_size=100))
    with pytest.raises(ValueError, match="num_key_value_heads=2"):
        args_from_hf_config({**config, "num_key_value_heads": 2})
    with pytest.raises(ValueError, match="tie_word_embeddings=True"):
        args_from_hf_config({**config, "tie_word_embeddings": True})
    with pytest.raises(ValueError, match="intermediate_size 100"):
        args_from_hf_config({**config, "intermediate_size": 100})
    with pytest.raises(ValueError, match="model_type 'gpt2'"):
        args_from_hf_config({**config, "model_type": "gpt2"})
    with pytest.raises(KeyError, match="no Hugging Face name"):
        to_hf_state_dict({"layers.0.attention.bias": torch.zeros(1)}, ModelArgs())
