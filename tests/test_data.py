"""The training stream over token shards: coverage per epoch across readers,
exact resume, and clear errors for missing or corrupt shards."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import SEQ, SIZES, windows
from trainer.data import ShardError, TokenLoader, TokenStream


def one_epoch(shards: Path, workers: int, rank: int = 0, world: int = 1,
              shuffle_block: int = 0, batch: int = 3) -> list[tuple]:
    stream = TokenStream(shards, "train", SEQ, seed=7, rank=rank, world_size=world,
                         num_workers=workers, infinite=False, shuffle_block=shuffle_block)
    return windows(TokenLoader(stream, batch_size=batch))


def stream_of_epoch(epoch: int, seed: int = 7) -> list[tuple]:
    """The epoch's windows by hand: the shards' tokens in the seeded order, cut into 16s."""
    firsts = np.cumsum([0] + [sum(docs) for docs in SIZES])
    order = np.random.default_rng([seed, epoch]).permutation(len(SIZES))
    tokens = np.concatenate([np.arange(firsts[i], firsts[i + 1]) for i in order])
    return [tuple(w) for w in tokens[:125 * 16].reshape(125, 16).tolist()]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 3-4 workers on 2 cores
def test_every_window_once_per_epoch_with_any_worker_count(shards):
    reference = one_epoch(shards, 0)
    assert len(reference) == 2000 // (SEQ + 1) == 125
    tokens = [t for w in reference for t in w]
    assert len(set(tokens)) == len(tokens) == 125 * 16  # disjoint windows
    # The shards' tokens in the seeded order, cut in 16s; 4 windows span record
    # batches (2 documents each) or shards, and are read piece by piece.
    assert reference == stream_of_epoch(0)
    assert one_epoch(shards, 0, batch=125) == reference  # one batch of the whole epoch
    for workers in (1, 3, 4):
        got = one_epoch(shards, workers)
        assert sorted(got) == sorted(reference), workers
    ranks = one_epoch(shards, 2, rank=0, world=2) + one_epoch(shards, 2, rank=1, world=2)
    assert sorted(ranks) == sorted(reference)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_ten_windows_through_a_dataloader(shards):
    """10 windows of 200 tokens, 0, 1, 3 and 4 workers, batches of
    1 and 3 (4 batches for 4 workers: 3 + 3 + 3 + 1)."""
    expected = np.asarray(stream_of_epoch(0)).reshape(10, 200)  # the epoch's 2000 tokens
    for workers, batch in ((0, 3), (1, 3), (3, 3), (4, 3), (4, 1)):
        stream = TokenStream(shards, "train", 199, seed=7, num_workers=workers, infinite=False)
        got = [torch.cat([x, y[:, -1:]], 1) for x, y in TokenLoader(stream, batch)]
        assert [len(b) for b in got] == [batch] * (10 // batch) + [1] * (batch == 3)
        assert np.array_equal(torch.cat(got).numpy(), expected), (workers, batch)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("block", [1, 16, 40, 1000])
def test_shuffled_windows_still_once_per_epoch(shards, block):
    reference = sorted(one_epoch(shards, 0))
    shuffled = one_epoch(shards, 0, shuffle_block=block)
    assert sorted(shuffled) == reference
    order = TokenStream(shards, "train", SEQ, seed=7, shuffle_block=block).window_order(0)
    assert shuffled == [stream_of_epoch(0)[w] for w in order.tolist()]
    if block > 1:
        assert shuffled != one_epoch(shards, 0)  # the order did change
    assert one_epoch(shards, 0, shuffle_block=block) == shuffled  # seeded
    for workers in (1, 3):
        assert sorted(one_epoch(shards, workers, shuffle_block=block)) == reference
    ranks = (one_epoch(shards, 2, rank=0, world=2, shuffle_block=block)
             + one_epoch(shards, 2, rank=1, world=2, shuffle_block=block))
    assert sorted(ranks) == reference


def test_shard_order_is_seeded_per_epoch(shards):
    a = TokenStream(shards, "train", SEQ, seed=7)
    b = TokenStream(shards, "train", SEQ, seed=7)
    assert [a.shard_order(e) for e in range(4)] == [b.shard_order(e) for e in range(4)]
    two_epochs = windows(a, 250)
    first, second = two_epochs[:125], two_epochs[125:]
    assert first != second  # another shard order in epoch 1
    assert a.shard_order(0) != a.shard_order(1)
    assert windows(b, 250) == two_epochs  # same seed, same stream


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("workers,consumed,block", [(0, 5, 0), (0, 47, 0), (2, 7, 0), (3, 46, 0),
                                                    (0, 47, 16), (2, 46, 40)])
def test_resume_sees_exactly_the_same_windows(shards, workers, consumed, block):
    """Stop after `consumed` batches of 3 (47 and 46 cross an epoch boundary), save the
    state, resume in a fresh stream: the next batches are the uninterrupted ones."""
    def loader():
        return TokenLoader(TokenStream(shards, "train", SEQ, seed=7, num_workers=workers,
                                       shuffle_block=block), 3)

    full = windows(loader(), (consumed + 20) * 3)
    first = loader()
    seen = []
    for i, batch in enumerate(first, 1):
        seen += windows([batch])
        if i == consumed:
            break
    state = json.loads(json.dumps(first.state_dict()))  # plain data only
    resumed = loader()
    resumed.load_state_dict(state)
    assert seen == full[:consumed * 3]
    assert windows(resumed, 20 * 3) == full[consumed * 3:(consumed + 20) * 3]


def test_stream_state_in_process(shards):
    stream = TokenStream(shards, "train", SEQ, seed=3)
    it = iter(stream)
    head = [next(it) for _ in range(130)]
    assert stream.state_dict()["epoch"] == 1 and stream.state_dict()["window"] == 5  # 125 per epoch
    fresh = TokenStream(shards, "train", SEQ, seed=3)
    fresh.load_state_dict(stream.state_dict())
    rest = windows(fresh, 10)
    assert rest == windows(TokenStream(shards, "train", SEQ, seed=3), 140)[130:]
    assert len(head) == 130
    with pytest.raises(ValueError, match="seq_len"):
        TokenStream(shards, "train", 31, seed=3).load_state_dict(stream.state_dict())


def test_val_split_reads_only_val_shards(shards):
    got = windows(TokenStream(shards, "val", SEQ))
    assert len(got) == 100 // 16
    assert got[0] == tuple(range(60000, 60016))
    with pytest.raises(ShardError, match="split 'test'"):
        TokenStream(shards, "test", SEQ)


def test_corrupt_or_missing_shard_is_named(shards):
    manifest = json.loads((shards / "manifest.json").read_text())
    name = manifest["shards"][2]["file"]
    data = bytearray((shards / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (shards / name).write_bytes(bytes(data))
    with pytest.raises(ShardError, match=f"shard {name}: sha256"):
        windows(TokenStream(shards, "train", SEQ, infinite=False))
    (shards / name).unlink()
    with pytest.raises(ShardError, match=f"shard {name}: listed in manifest.json but missing"):
        windows(TokenStream(shards, "train", SEQ, infinite=False))


def test_token_count_must_match_manifest(shards):
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["shards"][0]["tokens"] += 1
    (shards / "manifest.json").write_text(json.dumps(manifest))
    name = manifest["shards"][0]["file"]
    with pytest.raises(ShardError, match=f"shard {name}: 462 tokens, manifest says 463"):
        windows(TokenStream(shards, "train", SEQ, infinite=False, verify=False))


def test_missing_manifest(tmp_path):
    with pytest.raises(ShardError, match="manifest.json: cannot read"):
        TokenStream(tmp_path, "train", SEQ)


def read_layout(shards: Path, world: int, workers: int, batches: int, state: dict | None = None,
                block: int = 0) -> tuple[list[tuple], dict]:
    """`batches` batches of 3 on each of `world` ranks (with `workers` DataLoader
    workers each), from `state`: the windows of all ranks, and the state to save
    (the same on every rank)."""
    seen, states = [], []
    for rank in range(world):
        loader = TokenLoader(TokenStream(shards, "train", SEQ, seed=7, rank=rank, world_size=world,
                                         num_workers=workers, shuffle_block=block), 3)
        if state is not None:
            loader.load_state_dict(state)
        seen += windows(itertools.islice(loader, batches))
        states.append(loader.state_dict())
    assert all(s == states[0] for s in states)
    return seen, states[0]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("before,after,block", [
    ((2, 0, 7), [(1, 0, 26), (3, 0, 8), (1, 3, 8)], 0),  # 2 ranks; 42 windows, then to 120
    ((1, 2, 7), [(3, 0, 6), (2, 2, 9)], 16),  # 2 workers (4 and 3 batches): 42, then 96 and 96
    ((2, 0, 23), [(3, 0, 10), (1, 3, 30)], 40),  # 138 windows: into epoch 1, then to 228
])
def test_resume_with_other_ranks_and_workers(shards, before, after, block):
    """Read by 2 readers, saved, resumed by 1, 3 or 4 readers: together they read
    what one reader reads, each window once per epoch, and the state counts the
    same global windows (so tokens) as the one reader's."""
    world, workers, batches = before
    first, state = read_layout(shards, world, workers, batches, block=block)
    consumed = world * batches * 3
    assert state["epoch"] * 125 + state["window"] == consumed
    for world2, workers2, batches2 in after:
        rest, end = read_layout(shards, world2, workers2, batches2, json.loads(json.dumps(state)),
                                block=block)
        total = consumed + world2 * batches2 * 3
        one = TokenLoader(TokenStream(shards, "train", SEQ, seed=7, shuffle_block=block), 3)
        single = windows(itertools.islice(one, total // 3))
        assert len(first + rest) == len(single) == total
        assert sorted(first + rest) == sorted(single)
        for epoch in range(total // 125 + 1):  # no window twice in an epoch
            part = single[epoch * 125:(epoch + 1) * 125]
            assert len(set(part)) == len(part)
        assert end == one.state_dict() and end["epoch"] * 125 + end["window"] == total
        assert sum(len(w) - 1 for w in first + rest) == total * SEQ  # tokens trained on


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("world,batch,workers,dropped", [
    (2, 3, 0, 0), (4, 10, 0, 0), (3, 20, 2, 0),  # last round split: 3+2, 2+1+1+1, 2+2+1
    (2, 2, 0, 1), (3, 41, 0, 2), (2, 2, 3, 1),  # last round of 1 or 2 windows: dropped
])
def test_finite_epoch_gives_every_rank_the_same_batch_count(shards, world, batch, workers, dropped):
    reference = stream_of_epoch(0)
    seen, counts = [], []
    for rank in range(world):
        stream = TokenStream(shards, "train", SEQ, seed=7, rank=rank, world_size=world,
                             num_workers=workers, infinite=False)
        loader = TokenLoader(stream, batch)
        batches = list(loader)
        counts.append(len(batches))
        assert all(len(x) == batch for x, _ in batches[:-1]) and 0 < len(batches[-1][0]) <= batch
        seen += windows(batches)
        assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["window"] == 0
    assert counts == [counts[0]] * world == [-(-(125 - dropped) // (world * batch))] * world
    assert sorted(seen) == sorted(reference[:125 - dropped])  # the last windows are dropped


def test_state_of_an_earlier_version_with_one_reader(shards):
    old = {"split": "train", "seq_len": SEQ, "seed": 7, "shuffle_block": 0, "num_readers": 1,
           "first_reader": 0, "positions": [[1, 5]], "rotation": 0}
    stream = TokenStream(shards, "train", SEQ, seed=7)
    stream.load_state_dict(old)
    assert windows(stream, 2) == stream_of_epoch(1)[5:7]
    with pytest.raises(ValueError, match="2 readers from an earlier version"):
        stream.load_state_dict({**old, "num_readers": 2, "positions": [[1, 4], [1, 5]]})
    with pytest.raises(ValueError, match="windows_per_epoch=124"):
        stream.load_state_dict({**stream.state_dict(), "windows_per_epoch": 124})
