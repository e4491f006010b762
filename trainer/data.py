"""The training stream: token shards, memory-mapped, cut into fixed-length windows.

The shards and their `manifest.json` are written by the pipeline's shard job (`python -m pipeline shards`)
(schema: `pipeline.core.schema`). Readers trust only the manifest, never a glob.
Per epoch the split's shards are concatenated in a seeded order into one token
stream (documents already carry BOS/EOS) and cut into the epoch's N windows of
`seq_len + 1` tokens (the tail under one window is dropped); window w gives
x = w[:-1], y = w[1:]. The windows are read in a seeded order (`shuffle_block`)
and the epochs follow each other, so a run reads one global sequence of windows,
G = epoch * N + read index, whatever its number of readers.

That sequence is dealt out in batches of B windows: the k-th batch of rank r of R
holds windows [S + (k * R + r) * B, S + (k * R + r + 1) * B) from the start S, and
DataLoader worker i of W makes the batches k = i, i + W, ..., which the DataLoader
hands on in the order k. So once every rank has handed on k batches, exactly the
windows [S, S + k * R * B) have been read, each once: the stream's state is that
one number (saved as epoch and window), and a run resumed with any number of ranks
or workers continues at the same global window and token count.

`shard_dir` may be local, where the shards are memory-mapped in place, or on an
object store (`s3://`, `gs://`): each shard is then downloaded once per machine
into `pipeline.core.io`'s cache, checked against the manifest's sha256 on the way, and
memory-mapped there (`shard_file`), as mosaicml-streaming's remote/local does.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.core.contracts import ShardError, load_shard_manifest
from pipeline.core.io import MANIFEST, sha256_file
from trainer.storage import is_remote, join

__all__ = ["ShardError", "TokenLoader", "TokenStream", "shard_file", "source_windows",
           "split_sources"]  # ShardError: the shard contract's (`pipeline.core.contracts`)

# Batches located per vectorised step, so its numpy calls are amortised over many
# batches (at most GROUP_WINDOWS windows, which bounds its index arrays' memory).
GROUP_BATCHES, GROUP_WINDOWS = 1024, 1 << 16
OPEN_SHARDS = 16  # memory maps a reader keeps open, least recently used closed first


def shard_file(shard_dir: str | Path, entry: dict, verify: bool = True) -> Path:
    """The local file to memory-map for the manifest entry `entry` of `shard_dir`.

    A local shard is used in place, its sha256 checked when `verify`. A remote one
    is this machine's cached copy (`pipeline.core.io.local_copy`), downloaded once and
    always checked against the manifest's sha256 as it is (the check is part of the
    download, and the cache is keyed by that sha256).

    Raises:
        ShardError: the shard is missing, or its bytes disagree with the manifest (named).
    """
    name = entry["file"]
    if not is_remote(shard_dir):
        path = Path(shard_dir) / name
        if not path.is_file():
            raise ShardError(f"shard {name}: listed in {MANIFEST} but missing from {shard_dir}")
        if verify and (digest := sha256_file(path)) != entry["sha256"]:
            raise ShardError(f"shard {name}: sha256 {digest} does not match the manifest's "
                             f"{entry['sha256']} (corrupt or replaced)")
        return path
    from pipeline.core import io as pio

    remote = pio.join(str(shard_dir), name)
    try:
        return Path(pio.local_copy(remote, sha256=entry["sha256"]))
    except pio.StorageError as e:
        if not pio.exists(remote):
            raise ShardError(f"shard {name}: listed in {MANIFEST} but missing from {shard_dir}") from None
        raise ShardError(f"shard {name}: {e} (corrupt or replaced)") from None


class _Shard:
    """One memory-mapped shard, read in place. A record batch's `input_ids` values
    are contiguous across its rows (`flatten` honours a sliced array's offsets), and
    all of them lie in the file's one mapping: `flat` is the whole file as one token
    array, in which record batch c's tokens start at `at[c]`; `starts[c]` is where
    they start in the shard's tokens; `windows` views `flat` as a row of `span`
    tokens from every position (so one fancy index gathers a batch)."""

    def __init__(self, path: Path, entry: dict, dtype: str, span: int):
        dtype = np.dtype(dtype)
        try:
            mapped = pa.memory_map(str(path))
            reader = pa.ipc.open_file(mapped)
            self.chunks = [
                reader.get_batch(i).column("input_ids").flatten().to_numpy(zero_copy_only=True)
                for i in range(reader.num_record_batches)
            ]
            mapped.seek(0)
            data = np.frombuffer(mapped.read_buffer(), dtype=np.uint8)  # zero-copy
        except (pa.ArrowException, KeyError, ValueError) as e:
            raise ShardError(f"shard {entry['file']}: cannot read input_ids: {e}") from e
        self.starts = np.cumsum([0] + [len(c) for c in self.chunks], dtype=np.int64)
        if self.starts[-1] != entry["tokens"]:
            raise ShardError(f"shard {entry['file']}: {self.starts[-1]} tokens, "
                             f"manifest says {entry['tokens']}")
        if any(c.dtype != dtype for c in self.chunks):
            raise ShardError(f"shard {entry['file']}: input_ids are not {dtype}")
        self.flat = data[:len(data) - len(data) % dtype.itemsize].view(dtype)
        at = [(c.ctypes.data - self.flat.ctypes.data) if len(c) else 0 for c in self.chunks]
        if any(a < 0 or a % dtype.itemsize or a // dtype.itemsize + len(c) > len(self.flat)
               for a, c in zip(at, self.chunks)):  # IPC buffers are 8-byte aligned
            raise ShardError(f"shard {entry['file']}: input_ids are not stored in place "
                             "(a compressed IPC file?); write the shards uncompressed")
        self.at = np.array(at, dtype=np.int64) // dtype.itemsize
        self.windows = (np.lib.stride_tricks.sliding_window_view(self.flat, span)
                        if len(self.flat) >= span else None)

    def copy(self, lo: int, out: np.ndarray) -> int:
        """Copy this shard's tokens from `lo` into `out` until it is full or the shard
        ends; returns the number of tokens copied."""
        n = 0
        c = int(np.searchsorted(self.starts, lo, side="right")) - 1
        while n < len(out) and c < len(self.chunks):
            a = lo + n - int(self.starts[c])
            piece = self.chunks[c][a:a + len(out) - n]
            out[n:n + len(piece)] = piece
            n, c = n + len(piece), c + 1
        return n


class _Epoch:
    """One epoch's layout: its shards in their seeded order, where each starts in the
    epoch's token stream, and the seeded order in which its windows are read."""

    def __init__(self, stream: TokenStream, epoch: int):
        self.entries = [stream.shards[i] for i in stream.shard_order(epoch)]
        tokens = np.array([s["tokens"] for s in self.entries], dtype=np.int64)
        self.ends = np.cumsum(tokens)
        self.starts = self.ends - tokens
        self.seed, self.epoch, self.k = stream.seed, epoch, stream.shuffle_block
        n = stream.windows_per_epoch
        if self.k > 0:
            self.blocks = np.random.default_rng([self.seed, epoch, 1]).permutation(-(-n // self.k))
            self.sizes = np.minimum(self.k, n - self.blocks * self.k)
            self.block_ends = np.cumsum(self.sizes)
            self.perms: dict[int, np.ndarray] = {}

    def windows(self, reads: np.ndarray) -> np.ndarray:
        """int64 window index in the epoch's token stream of each read index.

        Identity without shuffling; else the b-th block read is block blocks[b] of
        `shuffle_block` windows, read in its own seeded order (memory O(blocks +
        block), whatever the epoch's size).
        """
        if self.k <= 0:
            return reads
        b = np.searchsorted(self.block_ends, reads, side="right")
        out = np.empty_like(reads)
        cuts = np.flatnonzero(np.diff(b)) + 1  # runs of one block (reads ascend: few runs)
        for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(b)]):
            i = int(b[lo])
            block, size = int(self.blocks[i]), int(self.sizes[i])
            if block not in self.perms:
                if len(self.perms) >= 4:
                    self.perms.clear()
                self.perms[block] = np.random.default_rng(
                    [self.seed, self.epoch, 2, block]).permutation(size)
            first = int(self.block_ends[i]) - size
            out[lo:hi] = block * self.k + self.perms[block][reads[lo:hi] - first]
        return out


class _Reader:
    """A reader's open shards (a few, least recently used closed first) and epochs."""

    def __init__(self, stream: TokenStream):
        self.stream = stream
        self.shards: OrderedDict[str, _Shard] = OrderedDict()
        self.epochs: dict[int, _Epoch] = {}

    def shard(self, entry: dict) -> _Shard:
        name = entry["file"]
        if name in self.shards:
            self.shards.move_to_end(name)
        else:
            if len(self.shards) >= OPEN_SHARDS:
                self.shards.popitem(last=False)
            self.shards[name] = self.stream._open(entry)
        return self.shards[name]

    def epoch(self, epoch: int) -> _Epoch:
        if epoch not in self.epochs:
            if len(self.epochs) >= 2:
                del self.epochs[min(self.epochs)]
            self.epochs[epoch] = _Epoch(self.stream, epoch)
        return self.epochs[epoch]

    def read_window(self, epoch: int, tok: int, out: np.ndarray) -> None:
        """Copy the window starting at token `tok` of `epoch`'s stream into `out`,
        across record batches and shards."""
        ep, n = self.epoch(epoch), 0
        while n < len(out):
            s = int(np.searchsorted(ep.ends, tok + n, side="right"))
            n += self.shard(ep.entries[s]).copy(tok + n - int(ep.starts[s]), out[n:])


class TokenStream(IterableDataset):
    """Batches (x, y), int64 [batch_size, seq_len], of windows from the manifest's
    shards of a split; y is x shifted by one token.

    Use it through `TokenLoader`, or a DataLoader with `batch_size=None` (the
    stream batches, so that the windows read are a prefix of the global sequence;
    see the module docstring).

    Finite streams (`infinite=False`) read the rest of the current epoch, and
    every rank hands on the same number of batches, so none is left waiting in a
    collective: the epoch's last round of fewer than world_size x batch_size
    windows is split into one short batch per rank (sizes differing by at most
    one); when that round has fewer windows than there are ranks, it is dropped
    instead. So each window is read exactly once per epoch, but for those fewer
    than world_size last windows (none with one rank). Infinite streams run on
    across epochs, nothing dropped: a batch may end one epoch and start the next.

    Args:
        shard_dir: the folder holding `manifest.json` and the shards, local or on an
            object store (see the module docstring).
        split: "train" or "val" (the manifest's `split` field).
        seq_len: tokens per sample; each window holds seq_len + 1 tokens.
        batch_size: windows per batch (`TokenLoader` sets it).
        seed: seeds the shard order, drawn afresh each epoch, and the window order.
        rank, world_size: this process among the data-parallel ranks.
        num_workers: DataLoader worker processes for `TokenLoader` (0: iterated in
            this process). The windows read do not depend on it.
        infinite: loop over epochs forever (default: only for "train").
        verify: check each local shard's sha256 against the manifest when a reader
            first opens it (reads the whole file once per reader process); remote
            shards are always checked, once per machine, as they are downloaded.
        shuffle_block: 0 reads the epoch's windows in stream order; K > 0 reads them
            in a seeded order, permuting blocks of K consecutive windows and the
            windows inside each block, so a batch mixes documents (a book is not
            read for fifty steps in a row) while reads stay within K windows.
    Raises:
        ShardError: bad manifest, or no shard of that split; when iterating, a shard
            that is missing, corrupt, or disagrees with the manifest (named).
        ValueError: the split holds fewer tokens than one window.
    """

    def __init__(self, shard_dir: str | Path, split: str = "train", seq_len: int = 2048, *,
                 batch_size: int = 1, seed: int = 0, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, infinite: bool | None = None, verify: bool = True,
                 shuffle_block: int = 0):
        super().__init__()
        self.dir = shard_dir if is_remote(shard_dir) else Path(shard_dir)
        self.manifest = load_shard_manifest(self.dir)
        self.shards = [s for s in self.manifest["shards"] if s["split"] == split]
        if not self.shards:
            raise ShardError(f"{join(self.dir, MANIFEST)}: no shard with split {split!r}")
        self.split, self.seq_len, self.seed, self.verify = split, seq_len, seed, verify
        self.batch_size, self.shuffle_block = batch_size, shuffle_block
        self.infinite = split == "train" if infinite is None else infinite
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.tokens_per_epoch = sum(s["tokens"] for s in self.shards)
        self.windows_per_epoch = self.tokens_per_epoch // (seq_len + 1)
        if self.windows_per_epoch == 0:
            raise ValueError(f"{split}: {self.tokens_per_epoch} tokens per epoch, "
                             f"fewer than one window of {seq_len + 1}")
        self.position = 0  # see the property
        self._verified: set[str] = set()

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocab_size"])

    def shard_order(self, epoch: int) -> list[int]:
        """Indices into `self.shards` in the order read in `epoch` (seeded permutation)."""
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.shards)).tolist()

    def window_order(self, epoch: int) -> np.ndarray:
        """int64 [windows_per_epoch]: the window (index into the epoch's token stream,
        its shards in `shard_order(epoch)`) read at each read index of `epoch`. Memory
        O(windows_per_epoch), for tests and benchmarks; readers work a group at a time."""
        return _Epoch(self, epoch).windows(np.arange(self.windows_per_epoch))

    def _open(self, entry: dict) -> _Shard:
        path = shard_file(self.dir, entry, self.verify and entry["file"] not in self._verified)
        self._verified.add(entry["file"])
        return _Shard(path, entry, self.manifest.get("dtype", "uint16"), self.seq_len + 1)

    def _rounds(self, start: int) -> tuple[int | None, int]:
        """(full rounds of world_size batches, windows of the last short round) left in
        a finite stream from global window `start`; (None, 0) for an infinite one."""
        if self.infinite:
            return None, 0
        left = self.windows_per_epoch - start % self.windows_per_epoch
        full, tail = divmod(left, self.world_size * self.batch_size)
        return full, tail if tail >= self.world_size else 0

    def rank_batches(self, start: int) -> int | None:
        """Batches each rank hands on from global window `start` (None: infinite)."""
        full, tail = self._rounds(start)
        return None if full is None else full + (tail > 0)

    def position_after(self, start: int, batches: int) -> int:
        """The global window reached from `start` once every rank has handed on
        `batches` batches: start + batches x world_size x batch_size, or the next
        epoch's first window when a finite stream is done."""
        done = self.rank_batches(start)
        if done is not None and batches >= done:
            return (start // self.windows_per_epoch + 1) * self.windows_per_epoch
        return start + batches * self.world_size * self.batch_size

    def _locate(self, los: np.ndarray, n: int, reader: _Reader) -> tuple[list, tuple | None]:
        """Where the batches of the n windows from each global window in `los`
        (ascending) lie, found for all of them at once (numpy, not a loop per window).

        Returns (batches, where): batches[i] = (0, flat, a) when batch i is the tokens
        flat[a:a + n * (seq_len + 1)] of one shard (consecutive windows), (1, windows,
        i) when it is windows[where[2][i]] (each window inside a record batch of one
        shard), else (2, None, i): copied window by window (`_gather`).
        """
        span, per_epoch = self.seq_len + 1, self.windows_per_epoch
        g = (los[:, None] + np.arange(n)).ravel()
        epochs = g // per_epoch
        tok = np.empty_like(g)  # first token of each window in its epoch's stream
        sid = np.empty_like(g)  # its shard, an index into `shards`
        pos = np.empty_like(g)  # its first token in that shard's `flat`
        fits = np.empty(g.shape, dtype=bool)  # inside one record batch
        shards: list[_Shard] = []
        for e in range(int(epochs[0]), int(epochs[-1]) + 1):
            a, b = np.searchsorted(epochs, [e, e + 1])
            ep = reader.epoch(e)
            t = tok[a:b] = ep.windows(g[a:b] - e * per_epoch) * span
            where = np.searchsorted(ep.ends, t, side="right")
            for s in np.unique(where).tolist():
                idx = a + np.flatnonzero(where == s)
                shard = reader.shard(ep.entries[s])
                local = tok[idx] - ep.starts[s]
                c = np.searchsorted(shard.starts, local, side="right") - 1
                fits[idx] = local + span <= shard.starts[c + 1]
                pos[idx] = shard.at[c] + local - shard.starts[c]
                sid[idx] = len(shards)
                shards.append(shard)
        sid, pos, fits = sid.reshape(-1, n), pos.reshape(-1, n), fits.reshape(-1, n)
        one = fits.all(1) & (sid == sid[:, :1]).all(1)
        run = one & (np.diff(pos, axis=1) == span).all(1)
        flats, views = [s.flat for s in shards], [s.windows for s in shards]
        batches = [(0, flats[s], p) if r else (1, views[s], i) if o else (2, None, i)
                   for i, (r, o, s, p) in enumerate(zip(run.tolist(), one.tolist(),
                                                        sid[:, 0].tolist(), pos[:, 0].tolist()))]
        return batches, (flats, pos, sid, fits, epochs.reshape(-1, n), tok.reshape(-1, n))

    def _gather(self, where: tuple, i: int, reader: _Reader) -> np.ndarray:
        """int64 [n, seq_len + 1]: batch i of a `_locate`, copied window by window."""
        flats, pos, sid, fits, epochs, tok = where
        span, at = self.seq_len + 1, pos[i].tolist()
        out = np.empty((len(at), span), dtype=np.int64)
        for j, (s, fit) in enumerate(zip(sid[i].tolist(), fits[i].tolist())):
            if fit:
                out[j] = flats[s][at[j]:at[j] + span]
            else:  # across record batches or shards
                reader.read_window(int(epochs[i, j]), int(tok[i, j]), out[j])
        return out

    def _read(self, start: int, worker: int, workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches k = worker, worker + workers, ... from global window
        `start`, located a group at a time; counts them in `_handed`."""
        B, R, r, span = self.batch_size, self.world_size, self.rank, self.seq_len + 1
        full, tail = self._rounds(start)
        reader, k = _Reader(self), worker
        group = max(1, min(GROUP_BATCHES, GROUP_WINDOWS // B)) * workers
        while True:
            if full is None or k < full:
                ks = np.arange(k, k + group if full is None else min(full, k + group), workers)
                los, n = start + (ks * R + r) * B, B
                k = int(ks[-1]) + workers
            elif tail and k == full:  # the last, short round: one batch per rank
                base, extra = divmod(tail, R)
                los = np.array([start + full * R * B + r * base + min(r, extra)])
                n, k = base + (r < extra), k + workers
            else:
                return
            batches, where = self._locate(los, n, reader)
            size, pos = n * span, where[1]
            for kind, src, a in batches:
                if kind == 0:  # one slice, one conversion
                    w = src[a:a + size].reshape(n, span).astype(np.int64)
                elif kind == 1:  # one gather, one conversion
                    w = src[pos[a]].astype(np.int64)
                else:
                    w = self._gather(where, a, reader)
                w = torch.from_numpy(w)
                self._handed += 1
                yield w[:, :-1], w[:, 1:]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        start = self.position
        self.position = start  # from here, count the batches handed on
        return self._read(start, *((0, 1) if info is None else (info.id, info.num_workers)))

    @property
    def position(self) -> int:
        """Global index (epoch x windows_per_epoch + read index) of the next window,
        as tracked by iterating in this process, assuming every rank has handed on as
        many batches."""
        return self.position_after(self._start, self._handed)

    @position.setter
    def position(self, value: int) -> None:
        self._start, self._handed = value, 0

    def state_dict(self, position: int | None = None) -> dict:
        """Where the stream is, as plain ints (safe for `torch.load(weights_only=True)`):
        {"epoch", "window": the next read index in that epoch, ...the settings that
        fix the sequence of windows}. Independent of the ranks and workers.

        Args:
            position: the global window to save; default: as tracked by iterating in
                this process, assuming every rank has handed on as many batches
                (worker processes keep their own copies, so a DataLoader's caller
                passes it, see TokenLoader).
        """
        position = self.position if position is None else position
        epoch, window = divmod(position, self.windows_per_epoch)
        return {"split": self.split, "seq_len": self.seq_len, "seed": self.seed,
                "shuffle_block": self.shuffle_block, "windows_per_epoch": self.windows_per_epoch,
                "epoch": epoch, "window": window}

    def load_state_dict(self, state: dict) -> None:
        """Resume at a saved position, with any number of ranks, workers and any batch size.

        Also reads the single-reader states of earlier versions ({"positions":
        [[epoch, window]], ...}).

        Raises:
            ValueError: the state was saved with another split, seq_len, seed,
                shuffle_block or number of windows per epoch (other shards), which
                would change the windows; or an earlier version's state of several readers.
        """
        if "positions" in state:  # earlier versions: one [epoch, window] per reader
            if len(state["positions"]) != 1 or state.get("num_readers") != 1:
                raise ValueError(f"data state of {state.get('num_readers')} readers from an "
                                 "earlier version: resume it with that version")
            epoch, window = state["positions"][0]
            state = {**state, "epoch": epoch, "window": window,
                     "windows_per_epoch": self.windows_per_epoch}
        mine = self.state_dict()
        for key in ("split", "seq_len", "seed", "shuffle_block", "windows_per_epoch"):
            if state[key] != mine[key]:
                raise ValueError(f"data state has {key}={state[key]!r}, this stream {mine[key]!r}")
        self.position = state["epoch"] * self.windows_per_epoch + state["window"]


class TokenLoader:
    """A DataLoader over a TokenStream that counts the batches it hands on, so its
    `state_dict()` is exact with worker processes too: after k batches on every
    rank, the windows [S, S + k x world_size x batch_size) of the global sequence
    have been read (see the module docstring).

    Args:
        stream: the TokenStream; its `num_workers` worker processes read it.
        batch_size: windows per batch; sets the stream's (default: keep it).
        pin_memory: the DataLoader's pin_memory.
    Yields (x, y): int64 [batch_size, seq_len] (the end of a finite stream may be shorter).
    """

    def __init__(self, stream: TokenStream, batch_size: int | None = None, pin_memory: bool = False):
        if batch_size is not None:
            stream.batch_size = batch_size
        self.stream, self.batch_size, self.pin_memory = stream, stream.batch_size, pin_memory
        self._start = stream.position
        self.batches = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.stream.position = self._start
        self.batches = 0
        loader = DataLoader(self.stream, batch_size=None, pin_memory=self.pin_memory,
                            num_workers=self.stream.num_workers)
        for batch in loader:
            self.batches += 1
            yield batch

    def state_dict(self) -> dict:
        """The stream's state after the batches handed on so far (see TokenStream)."""
        return self.stream.state_dict(self.stream.position_after(self._start, self.batches))

    def load_state_dict(self, state: dict) -> None:
        """Resume at a state saved by `state_dict` (any ranks, workers, batch size)."""
        self.stream.load_state_dict(state)
        self._start = self.stream.position
        self.batches = 0


def split_sources(shard_dir: str | Path, split: str = "val") -> dict[str, int]:
    """{source: tokens} of the manifest's shards of `split`, from `tokens_per_source`,
    sorted by source name; empty when the manifest has no shard of that split.

    Raises:
        ShardError: bad manifest.
    """
    return _split_sources(load_shard_manifest(shard_dir), split)


def _split_sources(manifest: dict, split: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    for entry in manifest["shards"]:
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

    manifest = load_shard_manifest(shard_dir)
    span = seq_len + 1
    need = max_windows * span
    pieces: dict[str, list[np.ndarray]] = {s: [] for s in _split_sources(manifest, split)}
    have = dict.fromkeys(pieces, 0)
    for entry in manifest["shards"]:
        wanted = [s for s in entry.get("tokens_per_source", {}) if s in have and have[s] < need]
        if entry["split"] != split or not wanted:
            continue
        path = shard_file(shard_dir, entry, verify)
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
