"""The trainer's files on any filesystem: a local path is used as it is; an object
store path (`s3://`, `gs://`) goes through `pipeline.core.io` (Beam's FileSystems),
imported only then, so a local run needs no Beam.

Shards on an object store are copied once per machine into `pipeline.core.io`'s cache
and memory-mapped there (`trainer.data`); a run whose `trainer.out` is on an
object store works in a local staging folder that it mirrors there
(`trainer.checkpoint`, `trainer.train`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def is_remote(path: str | Path) -> bool:
    """Whether `path` names an object store (`scheme://...`), as `pipeline.core.io` decides."""
    return "://" in str(path)


def join(base: str | Path, *parts: str) -> str | Path:
    """`base/part/...`: a Path under a local `base`, an object store path (str) else."""
    if not is_remote(base):
        return Path(base, *parts)
    from pipeline.core import io as pio

    return pio.join(str(base), *parts)


def is_file(path: str | Path) -> bool:
    """Whether the file (or object) `path` exists."""
    if not is_remote(path):
        return Path(path).is_file()
    from pipeline.core import io as pio

    return pio.exists(path)


def read_bytes(path: str | Path) -> bytes:
    """A whole (small) file: a manifest, a log."""
    if not is_remote(path):
        return Path(path).read_bytes()
    from pipeline.core import io as pio

    return pio.read_bytes(path)


def delete(path: str | Path) -> None:
    """Remove one file or object (absent: no error)."""
    if not is_remote(path):
        Path(path).unlink(missing_ok=True)
        return
    from pipeline.core import io as pio

    pio.delete(path)


def staging_dir(out: str) -> Path:
    """This machine's working folder for the object store folder `out`: the same for
    every process of the machine, another for every `out`."""
    from pipeline.core import io as pio

    key = hashlib.sha256(out.rstrip("/").encode()).hexdigest()[:16]
    return pio.cache_dir() / "trainer-out" / key


def upload(local: str | Path, dest: str) -> None:
    """Copy a local file to the object `dest`, which appears only once complete."""
    from pipeline.core import io as pio

    pio.upload(local, dest)


def download(src: str, local: Path) -> Path:
    """Copy the object `src` to the local file `local` (temporary name, then rename,
    so a killed download leaves nothing under that name). Returns `local`."""
    from pipeline.core import io as pio

    return Path(pio.download(src, local))
