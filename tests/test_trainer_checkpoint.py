"""The checkpoint manager: every stateful part of a run comes back from a checkpoint."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import asdict

import torch

from trainer.checkpoint import CheckpointManager, RNGState
from trainer.data import TokenLoader, TokenStream
from trainer.model import ModelArgs, Transformer
from trainer.parallelize import Dist
from trainer.train import CosineSchedule, build_optimizer, cosine_lr, train_step

SEQ = 32


def _parts(shards, folder, seed: int) -> tuple[CheckpointManager, Iterator]:
    """A tiny run's parts over `shards`, with weights from `seed`, under one manager."""
    torch.manual_seed(seed)
    random.seed(seed)
    args = ModelArgs.from_name("demo", vocab_size=259, max_seq_len=SEQ)
    model = Transformer(args)
    optimizer = build_optimizer(model, 1e-3, 0.1, (0.9, 0.95))
    schedule = CosineSchedule(optimizer, lr=1e-3, warmup_steps=2, steps=10, min_lr_ratio=0.1)
    loader = TokenLoader(TokenStream(shards, "train", SEQ, seed=7), 4)
    meta = {"model_args": asdict(args), "config_digest": "d", "tokenizer": None,
            "batch": {"batch_size": 4, "grad_accum": 1, "world_size": 1}}
    return CheckpointManager(folder, model=model, optimizer=optimizer, schedule=schedule,
                             rng=RNGState(torch.device("cpu")), loader=loader, meta=meta,
                             world=Dist()), iter(loader)


def test_a_checkpoint_restores_every_part(book_shards, tmp_path):
    saved, batches = _parts(book_shards, tmp_path / "checkpoints", seed=1)
    for _ in range(3):
        saved.schedule.advance()
        train_step(saved.model, saved.optimizer, [next(batches)], grad_clip=1.0)
    path = saved.save(saved.schedule.step)
    assert path.name == "step-000003.pt" and saved.latest() == path
    draws = (torch.rand(4), random.random())  # what the RNG gives next, then the loader
    after = next(batches)

    restored, _ = _parts(book_shards, tmp_path / "checkpoints", seed=2)
    assert not torch.equal(restored.model.output.weight, saved.model.output.weight)
    state = restored.load(path)
    assert state["step"] == restored.schedule.step == 3
    assert state["config_digest"] == "d"
    assert torch.equal(torch.rand(4), draws[0]) and random.random() == draws[1]
    x, y = next(iter(restored.loader))
    assert torch.equal(x, after[0]) and torch.equal(y, after[1])
    for name, tensor in saved.model.state_dict().items():
        assert torch.equal(restored.model.state_dict()[name], tensor), name
    mine, theirs = restored.optimizer.state_dict(), saved.optimizer.state_dict()
    assert mine["param_groups"] == theirs["param_groups"]
    for i, s in theirs["state"].items():
        assert set(mine["state"][i]) == set(s) == {"step", "exp_avg", "exp_avg_sq"}
        assert all(torch.equal(mine["state"][i][k], v) for k, v in s.items())
    # the next update is the same too: same learning rate, same loss
    lrs = saved.schedule.advance(), restored.schedule.advance()
    assert lrs[0] == lrs[1] == cosine_lr(4, lr=1e-3, warmup_steps=2, steps=10, min_lr_ratio=0.1)
    losses = [train_step(m.model, m.optimizer, [after], grad_clip=1.0)[0] for m in (saved, restored)]
    assert torch.equal(*losses)
