"""The training stream: token shards, memory-mapped, cut into fixed-length windows.

The shards and their `manifest.json` are written by the pipeline's shard job (`python -m pipeline shards`)
(DESIGN.md, "Data contracts"). Readers trust only the manifest, never a glob.
Per epoch the split's shards are concatenated in a seeded order into one token
stream (documents already carry BOS/EOS), which is cut into non-overlapping
windows of `seq_len + 1` tokens; window g gives x = w[:-1], y = w[1:]. With R
readers (ranks x DataLoader workers), reader r yields the windows g = r, r + R,
r + 2R, ... so each window is read exactly once per epoch (DESIGN.md,
"Training stream"). A reader's position is (epoch, next window), saved in every
checkpoint, so a resumed run sees exactly the windows the uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "llama-token-shards/1"


class ShardError(RuntimeError):
    """A manifest or shard that is missing, corrupt or disagrees with the manifest."""


def load_manifest(shard_dir: str | Path) -> dict:
    """Read and check `<shard_dir>/manifest.json` (format `llama-token-shards/1`).

    Raises:
        ShardError: the manifest is missing, not JSON, or of another format.
    """
    path = Path(shard_dir) / MANIFEST
    if not path.is_file():
        raise ShardError(f"{path}: cannot read the shard manifest: no such file (write the shards first: `python -m pipeline shards`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ShardError(f"{path}: cannot read the shard manifest: {e}") from e
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ShardError(f"{path}: format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    return manifest


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class _Shard:
    """One memory-mapped shard: its flattened `input_ids`, one zero-copy array per batch."""

    def __init__(self, path: Path, entry: dict, dtype: str):
        try:
            reader = pa.ipc.open_file(pa.memory_map(str(path)))
            self.chunks = [
                reader.get_batch(i).column("input_ids").flatten().to_numpy(zero_copy_only=True)
                for i in range(reader.num_record_batches)
            ]
        except (pa.ArrowException, KeyError, ValueError) as e:
            raise ShardError(f"shard {entry['file']}: cannot read input_ids: {e}") from e
        self.starts = np.cumsum([0] + [len(c) for c in self.chunks])
        if self.starts[-1] != entry["tokens"]:
            raise ShardError(f"shard {entry['file']}: {self.starts[-1]} tokens, "
                             f"manifest says {entry['tokens']}")
        if any(c.dtype != np.dtype(dtype) for c in self.chunks):
            raise ShardError(f"shard {entry['file']}: input_ids are not {dtype}")

    def read(self, lo: int, hi: int) -> list[np.ndarray]:
        """Views of tokens [lo, hi) of this shard, in order."""
        pieces = []
        while lo < hi:
            i = int(np.searchsorted(self.starts, lo, side="right")) - 1
            end = min(hi, int(self.starts[i + 1]))
            pieces.append(self.chunks[i][lo - self.starts[i]:end - self.starts[i]])
            lo = end
        return pieces


class TokenStream(IterableDataset):
    """(x, y) int64 windows of `seq_len` tokens from the manifest's shards of a split.

    Args:
        shard_dir: the folder holding `manifest.json` and the shards.
        split: "train" or "val" (the manifest's `split` field).
        seq_len: tokens per sample; each window holds seq_len + 1 tokens.
        seed: seeds the shard order, drawn afresh each epoch.
        rank, world_size: this process among the data-parallel ranks.
        num_workers: the DataLoader's num_workers (0: iterated in this process).
        infinite: loop over epochs forever (default: only for "train").
        verify: check each shard's sha256 against the manifest when a reader first
            opens it (reads the whole file once per reader process).
        shuffle_block: 0 reads the epoch's windows in stream order; K > 0 reads them
            in a seeded order, permuting blocks of K consecutive windows and the
            windows inside each block, so a batch mixes documents (a book is not
            read for fifty steps in a row) while reads stay within K windows.
    Raises:
        ShardError: bad manifest, or no shard of that split; when iterating, a shard
            that is missing, corrupt, or disagrees with the manifest (named).
        ValueError: fewer windows per epoch than readers.
    """

    def __init__(self, shard_dir: str | Path, split: str = "train", seq_len: int = 2048, *,
                 seed: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 infinite: bool | None = None, verify: bool = True, shuffle_block: int = 0):
        super().__init__()
        self.dir = Path(shard_dir)
        self.manifest = load_manifest(self.dir)
        self.shards = [s for s in self.manifest["shards"] if s["split"] == split]
        if not self.shards:
            raise ShardError(f"{self.dir / MANIFEST}: no shard with split {split!r}")
        self.split, self.seq_len, self.seed, self.verify = split, seq_len, seed, verify
        self.shuffle_block = shuffle_block
        self.infinite = split == "train" if infinite is None else infinite
        self.num_workers = num_workers
        self.local_readers = max(1, num_workers)
        self.first_reader = rank * self.local_readers
        self.num_readers = world_size * self.local_readers
        self.tokens_per_epoch = sum(s["tokens"] for s in self.shards)
        self.windows_per_epoch = self.tokens_per_epoch // (seq_len + 1)
        if self.windows_per_epoch < self.num_readers:
            raise ValueError(f"{split}: {self.windows_per_epoch} windows of {seq_len + 1} "
                             f"tokens per epoch, fewer than the {self.num_readers} readers")
        # Next window of each local reader: [epoch, global window index].
        self.positions = [[0, self.first_reader + i] for i in range(self.local_readers)]
        # The local reader that DataLoader worker 0 plays: a resumed DataLoader starts
        # at worker 0, so the readers rotate to keep the batches' round-robin order.
        self.rotation = 0
        self._verified: set[str] = set()

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocab_size"])

    def shard_order(self, epoch: int) -> list[int]:
        """Indices into `self.shards` in the order read in `epoch` (seeded permutation)."""
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.shards)).tolist()

    def _open(self, entry: dict) -> _Shard:
        path = self.dir / entry["file"]
        if not path.is_file():
            raise ShardError(f"shard {entry['file']}: listed in {MANIFEST} "
                             f"but missing from {self.dir}")
        if self.verify and entry["file"] not in self._verified:
            digest = _sha256(path)
            if digest != entry["sha256"]:
                raise ShardError(f"shard {entry['file']}: sha256 {digest} does not match "
                                 f"the manifest's {entry['sha256']} (corrupt or replaced)")
            self._verified.add(entry["file"])
        return _Shard(path, entry, self.manifest.get("dtype", "uint16"))

    def window_order(self, epoch: int) -> Callable[[int], int]:
        """Maps the j-th window read in `epoch` to its index in the epoch's stream.

        Identity without shuffling; else a seeded permutation built from a
        permutation of blocks of `shuffle_block` windows and one inside each block
        (memory O(blocks + block), whatever the epoch's size).
        """
        k, n = self.shuffle_block, self.windows_per_epoch
        if k <= 0:
            return lambda j: j
        blocks = np.random.default_rng([self.seed, epoch, 1]).permutation(-(-n // k))
        sizes = np.minimum(k, n - blocks * k)
        ends = np.cumsum(sizes)
        cache: dict[int, np.ndarray] = {}

        def order(j: int) -> int:
            b = int(np.searchsorted(ends, j, side="right"))
            block = int(blocks[b])
            if block not in cache:
                cache.clear()
                cache[block] = np.random.default_rng([self.seed, epoch, 2, block]).permutation(int(sizes[b]))
            return block * k + int(cache[block][j - (int(ends[b]) - int(sizes[b]))])

        return order

    def _epoch(self, epoch: int, window: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Windows window, window + R, ... of `epoch` in the epoch's window order:
        (read index, int64 [seq_len + 1])."""
        order = [self.shards[i] for i in self.shard_order(epoch)]
        ends = np.cumsum([s["tokens"] for s in order])
        span = self.seq_len + 1
        window_at = self.window_order(epoch)
        opened: dict[int, _Shard] = {}
        for g in range(window, self.windows_per_epoch, self.num_readers):
            w = window_at(g)
            lo, hi = w * span, (w + 1) * span
            pieces = []
            while lo < hi:
                i = int(np.searchsorted(ends, lo, side="right"))
                start = int(ends[i]) - order[i]["tokens"]
                if i not in opened:
                    if self.shuffle_block <= 0:  # sequential: unmap passed shards
                        opened = {j: s for j, s in opened.items() if j > i}
                    opened[i] = self._open(order[i])
                end = min(hi, int(ends[i]))
                pieces += opened[i].read(lo - start, end - start)
                lo = end
            window = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)  # one copy, not two
            yield g, torch.from_numpy(window.astype(np.int64))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        local = 0 if info is None else (info.id + self.rotation) % self.local_readers
        if (0 if info is None else info.num_workers) != self.num_workers:
            raise ValueError(f"TokenStream built for num_workers={self.num_workers}, "
                             f"iterated with {0 if info is None else info.num_workers}")
        reader = self.first_reader + local
        epoch, window = self.positions[local]
        while True:
            for g, w in self._epoch(epoch, window):
                self.positions[local] = self._advance(reader, [epoch, g], 1)
                yield w[:-1], w[1:]
            if not self.infinite:
                return
            epoch, window = epoch + 1, reader
            self.positions[local] = [epoch, window]

    def _advance(self, reader: int, position: list[int], samples: int) -> list[int]:
        """The position of `reader` after it yields `samples` more windows from `position`."""
        per_epoch = len(range(reader, self.windows_per_epoch, self.num_readers))
        done = position[0] * per_epoch + (position[1] - reader) // self.num_readers + samples
        return [done // per_epoch, reader + (done % per_epoch) * self.num_readers]

    def advance(self, positions: list[list[int]], consumed: list[int]) -> list[list[int]]:
        """Positions of the local readers after each yields `consumed[i]` more windows."""
        return [self._advance(self.first_reader + i, p, n)
                for i, (p, n) in enumerate(zip(positions, consumed))]

    def state_dict(self, positions: list[list[int]] | None = None,
                   rotation: int | None = None) -> dict:
        """Where each local reader is, as plain ints (safe for `torch.load(weights_only=True)`).

        Args:
            positions: [epoch, next window] per local reader; default: as tracked by
                iterating in this process (worker processes track their own copies,
                so a DataLoader's caller passes them, see TokenLoader).
            rotation: the local reader DataLoader worker 0 plays next time.
        """
        positions = self.positions if positions is None else positions
        return {"split": self.split, "seq_len": self.seq_len, "seed": self.seed,
                "shuffle_block": self.shuffle_block,
                "num_readers": self.num_readers, "first_reader": self.first_reader,
                "positions": [list(p) for p in positions],
                "rotation": self.rotation if rotation is None else rotation}

    def load_state_dict(self, state: dict) -> None:
        """Resume at a saved position.

        Raises:
            ValueError: the state was saved with another split, seq_len, seed or
                reader layout (ranks x workers), which would change the windows.
        """
        mine = self.state_dict()
        for key in ("split", "seq_len", "seed", "shuffle_block", "num_readers", "first_reader"):
            if state[key] != mine[key]:
                raise ValueError(f"data state has {key}={state[key]!r}, this stream {mine[key]!r}")
        self.positions = [list(p) for p in state["positions"]]
        self.rotation = state["rotation"]


class TokenLoader:
    """A DataLoader over a TokenStream that counts the batches it hands on, so its
    `state_dict()` is exact even with worker processes.

    It relies on the DataLoader's in-order round robin: batch k comes from worker
    k % num_workers, each worker batching its own windows. Exact for infinite
    streams (a finite one may end in a short batch).
    Yields (x, y): int64 [batch_size, seq_len].
    """

    def __init__(self, stream: TokenStream, batch_size: int, pin_memory: bool = False):
        self.stream, self.batch_size, self.pin_memory = stream, batch_size, pin_memory
        self._start = stream.state_dict()
        self.batches = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.stream.load_state_dict(self._start)
        self.batches = 0
        loader = DataLoader(self.stream, batch_size=self.batch_size, pin_memory=self.pin_memory,
                            num_workers=self.stream.num_workers)
        for batch in loader:
            self.batches += 1
            yield batch

    def state_dict(self) -> dict:
        """The stream's state after the batches handed on so far (see TokenStream)."""
        n, rotation = self.stream.local_readers, self._start["rotation"]
        consumed = [0] * n
        for worker in range(n):  # batch k came from worker k % n
            batches = len(range(worker, self.batches, n))
            consumed[(worker + rotation) % n] = self.batch_size * batches
        positions = self.stream.advance(self._start["positions"], consumed)
        return self.stream.state_dict(positions, (rotation + self.batches) % n)

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)
        self._start = self.stream.state_dict()
        self.batches = 0


def split_sources(shard_dir: str | Path, split: str = "val") -> dict[str, int]:
    """{source: tokens} of the manifest's shards of `split`, from `tokens_per_source`,
    sorted by source name; empty when the manifest has no shard of that split.

    Raises:
        ShardError: bad manifest.
    """
    totals: dict[str, int] = {}
    for entry in load_manifest(shard_dir)["shards"]:
        if entry["split"] == split:
            for source, n in entry.get("tokens_per_source", {}).items():
                totals[source] = totals.get(source, 0) + int(n)
    return dict(sorted(totals.items()))



def source_windows(shard_dir: str | Path, seq_len: int, max_windows: int, split: str = "val",
                   verify: bool = True) -> dict[str, torch.Tensor]:
    """Per source, the first `max_windows` windows of `seq_len + 1` tokens of `split`.

    For each source, the rows of the split's shards whose `source` column is that
    source are read in manifest order (shards) and row order, their `input_ids`
    joined (documents already carry BOS/EOS, as in `TokenStream`) and cut into
    non-overlapping windows; a tail shorter than a window is dropped. One pass over
    the shards, which stops once every source has its windows, so memory is
    O(sources * max_windows * seq_len) whatever the split's size. Deterministic:
    the same windows every call, on every rank.

    Returns: {source: int64 [n, seq_len + 1]} for every source of the split's
        `tokens_per_source`, sorted by name; n = min(max_windows, tokens // (seq_len + 1))
        (n may be 0). Empty when the manifest has no shard of `split`.
    Raises:
        ShardError: bad manifest, or a listed shard missing, corrupt (sha256, when
            `verify`), or without `input_ids` / `source` columns.
    """
    import pyarrow.compute as pc

    shard_dir = Path(shard_dir)
    manifest = load_manifest(shard_dir)
    span = seq_len + 1
    need = max_windows * span
    pieces: dict[str, list[np.ndarray]] = {s: [] for s in split_sources(shard_dir, split)}
    have = dict.fromkeys(pieces, 0)
    for entry in manifest["shards"]:
        wanted = [s for s in entry.get("tokens_per_source", {}) if s in have and have[s] < need]
        if entry["split"] != split or not wanted:
            continue
        path = shard_dir / entry["file"]
        if not path.is_file():
            raise ShardError(f"shard {entry['file']}: listed in {MANIFEST} but missing from {shard_dir}")
        if verify and _sha256(path) != entry["sha256"]:
            raise ShardError(f"shard {entry['file']}: sha256 does not match the manifest's "
                             f"{entry['sha256']} (corrupt or replaced)")
        try:
            reader = pa.ipc.open_file(pa.memory_map(str(path)))
            for i in range(reader.num_record_batches):
                batch = reader.get_batch(i)
                for source in wanted:
                    if have[source] >= need:
                        continue
                    rows = batch.filter(pc.equal(batch.column("source"), source))
                    ids = rows.column("input_ids").flatten().to_numpy(zero_copy_only=False)
                    pieces[source].append(ids[:need - have[source]].astype(np.int64))
                    have[source] += len(pieces[source][-1])
                if all(have[s] >= need for s in wanted):
                    break
        except (pa.ArrowException, KeyError) as e:
            raise ShardError(f"shard {entry['file']}: cannot read input_ids/source: {e}") from e
    windows = {}
    for source, parts in pieces.items():
        tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        n = len(tokens) // span
        windows[source] = torch.from_numpy(tokens[:n * span].reshape(n, span))
    return windows
