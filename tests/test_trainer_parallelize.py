"""Activation checkpointing and torch.compile, applied from outside the model:
same losses and gradients, plain state-dict keys, checkpoints that load strictly
into a plain model and into the exporter.

Compilation is tested with the "aot_eager" backend: it traces forward and backward
through Dynamo and AOTAutograd as inductor does, but generates no C++ (inductor's
build takes over a minute on 2 CPU cores, too slow for `make test`).
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import read_log
from tests.conftest import trainer_config as config
from trainer.__main__ import main
from trainer.checkpoint import load_checkpoint
from trainer.hf import import_hf
from trainer.model import ModelArgs, Transformer
from trainer.parallelize import apply_ac, apply_compile, parallelize

# Fixtures of the trainer tests (pytest finds fixtures among a module's attributes).


def _pair(**wrap) -> tuple[Transformer, Transformer]:
    torch.manual_seed(0)
    args = ModelArgs.from_name("demo", vocab_size=259, max_seq_len=32)
    plain, wrapped = Transformer(args), Transformer(args)
    wrapped.load_state_dict(plain.state_dict())
    return plain, parallelize(wrapped, **wrap)


def _loss_and_grads(model: Transformer, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    _, loss = model(x[:, :-1], x[:, 1:])
    loss.backward()
    return loss.detach(), [p.grad for p in model.parameters()]


def test_activation_checkpointing_is_bitwise_and_keeps_plain_keys():
    plain, ac = _pair(ac=True)
    assert type(ac.layers[0]).__name__ == "CheckpointWrapper"
    assert list(ac.state_dict()) == list(plain.state_dict())
    x = torch.randint(0, 259, (2, 33), generator=torch.Generator().manual_seed(1))
    loss_p, grads_p = _loss_and_grads(plain, x)
    loss_a, grads_a = _loss_and_grads(ac, x)
    assert torch.equal(loss_a, loss_p)
    for a, p in zip(grads_a, grads_p, strict=True):
        assert torch.equal(a, p)
    Transformer(plain.args).load_state_dict(ac.state_dict(), strict=True)
    ac.load_state_dict(plain.state_dict(), strict=True)  # and back into the wrapped model


def test_compile_and_ac_keep_plain_keys():
    torch.manual_seed(0)
    model = Transformer(ModelArgs.from_name("demo", vocab_size=259, max_seq_len=32))
    names = list(model.state_dict())
    apply_ac(model)
    apply_compile(model, backend="aot_eager")  # lazy: nothing is traced before a forward
    assert list(model.state_dict()) == names
    assert not any("_orig_mod" in k or "_checkpoint_wrapped" in k for k in model.state_dict())


def test_compiled_run_checkpoint_loads_strictly_into_plain_model_and_exporter(
        book_shards, tmp_path):
    """A run with trainer.compile and trainer.activation_checkpointing: the same
    losses as the plain run within 1e-5 (steps 2 and 3 depend on the gradients of the
    traced backward), and its checkpoint serves a plain model and the HF export."""
    plain_cfg = config(book_shards, tmp_path / "plain", steps=3)
    wrapped_cfg = config(book_shards, tmp_path / "wrapped", steps=3, compile=True,
                         activation_checkpointing=True)
    from trainer.train import train

    train(plain_cfg)
    summary = train(wrapped_cfg, compile_backend="aot_eager")
    plain_log, wrapped_log = read_log(tmp_path / "plain"), read_log(tmp_path / "wrapped")
    assert [r["loss"] for r in wrapped_log] == pytest.approx([r["loss"] for r in plain_log],
                                                             abs=1e-5)

    state = load_checkpoint(summary["checkpoint"])
    model = Transformer(ModelArgs(**state["model_args"]))
    model.load_state_dict(state["model"], strict=True)
    assert main(["export", "--hf", str(tmp_path / "hf"), "--checkpoint",
                 summary["checkpoint"], "--no-tokenizer"]) == 0
    weights, args = import_hf(tmp_path / "hf")
    assert args == model.args
    assert weights.keys() == state["model"].keys()
    for name, w in state["model"].items():
        assert torch.equal(weights[name], w), name
