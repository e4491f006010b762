"""File helpers shared by every stage: input matching, decompression, atomic writes.

Inputs go through Beam's `FileSystems`, so `gs://`, `s3://` and local paths are
the same code (DESIGN.md, "Scale-out").
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import lzma
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.config import PipelineError

_MAGIC = (
    # multi-member gzip (one member per WARC record) reads to the end
    (b"\x1f\x8b", lambda f: gzip.GzipFile(fileobj=f, mode="rb")),
    (b"BZh", bz2.BZ2File),
    (b"\xfd7zXZ\x00", lzma.LZMAFile),
)


def match_inputs(patterns: list[str], directories: bool = False) -> list[str]:
    """Expand file patterns through Beam's filesystems; sorted, de-duplicated paths.

    Args:
        directories: also return local directories a pattern matches (sources
            whose record is a folder: a GitHub repository, an arXiv paper).
    A pattern that matches nothing is not an error here (the caller reports it).
    """
    import glob

    paths: set[str] = set()
    for pattern in patterns:
        for result in FileSystems.match([pattern]):
            paths.update(m.path for m in result.metadata_list)
        if directories and "://" not in pattern:
            paths.update(p for p in glob.glob(pattern) if os.path.isdir(p))
    return sorted(paths)


def open_input(path: str) -> IO[bytes]:
    """Open a file for binary reading, decompressing gzip, bzip2 or xz by magic bytes."""
    raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    head = raw.read(6)
    raw.seek(0)
    for magic, opener in _MAGIC:
        if head.startswith(magic):
            return opener(raw)
    return raw


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside `path`, then rename it into place.

    A killed job never leaves a file under the final name that looks complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class OutputBusy(PipelineError):
    """Another job is writing the same output folder."""


@contextlib.contextmanager
def exclusive_output(final: str | Path) -> Iterator[None]:
    """Hold `<final>.lock` (an advisory `flock`) while a job writes `final`, so
    two runs on one output folder cannot delete each other's temporary files.

    The lock goes with the process (a killed job leaves no stale lock); the
    file stays, empty. No-op where `fcntl` is missing (not POSIX).

    Raises:
        OutputBusy: another process holds the lock (its pid in the message).
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    lock = Path(f"{final}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise OutputBusy(f"{final} is being written by another job (pid {holder}, "
                             f"lock {lock}); wait for it or stop it") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def count_rows(path: str | Path) -> int:
    """Rows of an Arrow IPC file, from its record batches (memory-mapped, no copy)."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_file(source)
        return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
