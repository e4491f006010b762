"""Storage for every stage: paths on any Beam filesystem (local, `gs://`, `s3://`).

Everything a job, the tokenizer, the trainer or the report reads or writes goes
through here, so a local folder and a bucket are the same code (workers
share no disk):

- `atomic_write`: a file appears under its final name only once complete
  (temporary name, then rename; a failed write leaves nothing).
- `Run`: a job writes under a run-specific prefix `<final>/run-<id>/` and commits
  by writing `<final>/manifest.json` last; readers trust only that manifest, so a
  killed run's files are never seen and never mixed with the rerun's. One run at
  a time per output: a `flock` on local disks, a lease object on object stores.
- `local_copy`: a model or word list named by any path, copied once per machine
  into a local cache (workers share nothing with the launcher).
- `open_input`: an input decompressed by its magic bytes (gzip, bzip2, xz); a
  truncated or corrupt file gives every byte decoded before the damage, then
  an error naming its offset (`Decompressed`).

Object stores need options (an S3 endpoint, credentials): `configure` hands
Beam's pipeline options to `FileSystems` before anything is listed or read.
Local paths never import Beam: the tokenizer and the trainer run without it.
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import io as _io
import json
import lzma
import os
import re
import socket
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Iterator

from pipeline.core.errors import PipelineError

# What `open_input` decompresses: (name, magic bytes, a decompressor of one
# stream). Several members or streams one after the other (a gzip member per
# WARC record, a bzip2 stream per 100 pages of a multistream dump) read as one.
_FORMATS = (
    ("gzip", b"\x1f\x8b", lambda: zlib.decompressobj(31)),  # 31: gzip header and trailer, CRC-32 checked
    ("bzip2", b"BZh", bz2.BZ2Decompressor),
    ("xz", b"\xfd7zXZ\x00", lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ)),
)
_MAGIC_BYTES = 6
MANIFEST = "manifest.json"
RUN_PREFIX = "run-"
CACHE_ENV = "LLAMA_STACK_CACHE"  # the per-machine cache of models and shards
_configured = False


class StorageError(PipelineError):
    """A path that cannot be read or written (missing, unreachable, not configured)."""


class OutputBusy(PipelineError):
    """Another job is writing the same output folder."""


def configure(args: list[str] | None = None, *, force: bool = False) -> None:
    """Hand filesystem options (`--s3_endpoint_url`, `--s3_access_key_id`, GCP
    project...) to Beam's `FileSystems` for this process. Beam's workers do this
    themselves from the job's options; the launcher, the tokenizer and the
    trainer call it once, before any remote path is touched. Without arguments
    the clients fall back to their environment (`AWS_*`, Google's default
    credentials). Idempotent unless `force`."""
    global _configured
    if _configured and not force and not args:
        return
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    FileSystems.set_options(PipelineOptions(list(args or [])))
    _configured = True


def _fs():
    """Beam's `FileSystems`, configured: for remote paths only (imports Beam)."""
    from apache_beam.io.filesystems import FileSystems

    reuse_s3_clients()
    if FileSystems._pipeline_options is None:  # noqa: SLF001 (Beam keeps no public getter)
        configure()
    return FileSystems


# what Beam's S3 client is built from (apache_beam.io.aws.clients.s3.boto3_client)
_S3_SETTINGS = ("access_key_id", "secret_access_key", "session_token", "endpoint_url", "disable_ssl",
                "region_name", "api_version", "verify")


def reuse_s3_clients() -> None:
    """Beam's S3 filesystem builds a new boto3 client for every call (exists,
    open, create, rename...): about 0.25 s of CPU each, re-reading botocore's
    service model, which made most of the time of a small object's write. A
    client is thread-safe, so one per process and set of options is reused.
    Does nothing when Beam's S3 client is not there or has another shape."""
    try:
        from apache_beam.io.aws.clients.s3 import boto3_client
    except ImportError:
        return
    client_class = getattr(boto3_client, "Client", None)
    if client_class is None or getattr(client_class, "_reused", False):
        return
    build = client_class.__init__
    clients: dict[tuple, Any] = {}

    def init(self, options) -> None:
        if hasattr(options, "view_as"):
            from apache_beam.options.pipeline_options import S3Options

            s3 = options.view_as(S3Options)
            settings = tuple(getattr(s3, f"s3_{name}", None) for name in _S3_SETTINGS)
        else:
            settings = tuple(options.get(f"s3_{name}") for name in _S3_SETTINGS)
        key = (os.getpid(), settings)  # never across a fork: a client's connections are the process's
        if key in clients:
            self.client = clients[key]
            self._download_request = self._download_stream = None
            self._download_pos = 0
        else:
            build(self, options)
            clients[key] = self.client

    client_class.__init__ = init
    client_class._reused = True


def check_reachable(paths) -> None:
    """Fail fast, in one line, when an S3 bucket among `paths` cannot be reached
    with this process's options (a wrong endpoint, wrong credentials, no such
    bucket): Beam's own calls retry for about ten minutes first. One quick
    request per bucket, no retries. Other schemes are not probed.

    Raises:
        StorageError: naming the bucket, the endpoint and what was answered.
    """
    buckets = sorted({str(p).split("/")[2] for p in paths if p and str(p).startswith("s3://")})
    if not buckets:
        return
    FileSystems = _fs()
    import boto3
    from botocore.config import Config as BotoConfig
    from apache_beam.options.pipeline_options import S3Options

    s3 = FileSystems._pipeline_options.view_as(S3Options)  # noqa: SLF001
    client = boto3.session.Session().client(
        "s3", region_name=s3.s3_region_name, endpoint_url=s3.s3_endpoint_url, use_ssl=not s3.s3_disable_ssl,
        verify=s3.s3_verify, aws_access_key_id=s3.s3_access_key_id, aws_secret_access_key=s3.s3_secret_access_key,
        aws_session_token=s3.s3_session_token,
        config=BotoConfig(connect_timeout=5, read_timeout=20, retries={"max_attempts": 1}))
    where = s3.s3_endpoint_url or "AWS's default endpoint"
    for bucket in buckets:
        try:
            client.head_bucket(Bucket=bucket)
        except Exception as e:  # noqa: BLE001 - any answer but success is the user's to fix
            code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
            if type(e).__name__ == "NoCredentialsError":
                code = "403"
            hint = {"403": "check the credentials (--s3_access_key_id/--s3_secret_access_key, AWS_*, or the "
                           "machine's role)",
                    "404": "no such bucket"}.get(str(code), "check --s3_endpoint_url and the network")
            raise StorageError(f"cannot reach s3://{bucket} at {where}: {type(e).__name__}: {e}; {hint}") from None


def is_remote(path: str | Path) -> bool:
    """Whether `path` names an object store (`scheme://...`), not a local file."""
    return "://" in str(path)


def join(base: str | Path, *parts: str) -> str:
    """`base/part/...` on any filesystem (object stores always use `/`)."""
    base = str(base)
    if is_remote(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts if p)])
    return os.path.join(base, *parts)


def relative(path: str, base: str) -> str:
    """`path` relative to the folder `base` (both on the same filesystem)."""
    if is_remote(base):
        prefix = base.rstrip("/") + "/"
        if not path.startswith(prefix):
            raise ValueError(f"{path} is not under {base}")
        return path[len(prefix):]
    return os.path.relpath(path, base)


def exists(path: str | Path) -> bool:
    """Whether a file (or local folder) exists."""
    path = str(path)
    if not is_remote(path):
        return os.path.exists(path)
    return _fs().exists(path)


def match(pattern: str, limit: int | None = None) -> list[tuple[str, int]]:
    """(path, bytes) of the files a glob pattern matches, sorted; [] for none."""
    if not is_remote(pattern):
        return _match_local(pattern, limit)
    try:
        result = _fs().match([pattern], limits=[limit] if limit else None)[0]
    except Exception as e:  # noqa: BLE001 (Beam raises BeamIOError for "no match" on some filesystems)
        if "No files found" in str(e) or "matched no files" in str(e).lower():
            return []
        raise StorageError(f"cannot list {pattern}: {e}") from e
    return sorted((m.path, m.size_in_bytes) for m in result.metadata_list)


def _match_local(pattern: str, limit: int | None) -> list[tuple[str, int]]:
    """`match` on a local disk, as Beam's LocalFileSystem matches: the folder
    before the first wildcard is walked, `*` stops at `/`, `**` does not."""
    if pattern.endswith(("/", "\\")):
        pattern += "*"
    prefix = re.match(r"^[^[*?]*", pattern).group(0)
    if prefix == pattern:
        return [(pattern, os.path.getsize(pattern))] if os.path.exists(pattern) else []
    regex = re.compile(_glob_regex(pattern))
    found = []
    for folder, _, files in os.walk(os.path.dirname(prefix) or "."):
        for name in files:
            path = os.path.join(folder, name)
            if regex.match(path):
                with contextlib.suppress(OSError):  # gone since listed
                    found.append((path, os.path.getsize(path)))
    return sorted(found)[:limit] if limit else sorted(found)


def _glob_regex(pattern: str) -> str:
    """Beam's file pattern syntax as a regular expression (as its
    `FileSystem.translate_pattern`): fnmatch's, `*` not crossing `/`, `**` crossing it."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c, i = pattern[i], i + 1
        if c == "*":
            double = pattern[i:i + 1] == "*"
            i += double
            out.append(".*" if double else r"[^/\\]*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i + (pattern[i:i + 1] == "!")
            j += pattern[j:j + 1] == "]"
            j = pattern.find("]", j)
            if j < 0:
                out.append(r"\[")
                continue
            body, i = pattern[i:j].replace("\\", "\\\\"), j + 1
            out.append("[" + ("^" + body[1:] if body[:1] == "!" else "\\" + body if body[:1] == "^" else body) + "]")
        else:
            out.append(re.escape(c))
    return "(?ms)" + "".join(out) + r"\Z"


def list_tree(prefix: str | Path) -> list[tuple[str, int]]:
    """Every file under a folder or prefix, recursively: sorted (path, bytes)."""
    prefix = str(prefix)
    if not is_remote(prefix):
        root = Path(prefix)
        if not root.is_dir():
            return []
        return sorted((str(p), p.stat().st_size) for p in root.rglob("*") if p.is_file())
    return match(prefix.rstrip("/") + "/**")


def open_read(path: str | Path) -> IO[bytes]:
    """A file's bytes as stored (no decompression), seekable."""
    path = str(path)
    if not is_remote(path):
        return open(path, "rb")
    from apache_beam.io.filesystem import CompressionTypes

    return _fs().open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def is_compressed(path: str | Path) -> bool:
    """Whether a file starts with the magic bytes of gzip, bzip2 or xz (what
    `open_input` decompresses)."""
    with open_read(path) as f:
        head = f.read(_MAGIC_BYTES)
    return any(head.startswith(magic) for _, magic, _ in _FORMATS)


def open_input(path: str) -> IO[bytes]:
    """Open a file for binary reading, decompressing gzip, bzip2 or xz by magic
    bytes (`decompressing`).

    Raises:
        OSError: the file cannot be opened. A damaged compressed stream raises
            later, from the read that meets the damage (`Decompressed`).
    """
    return decompressing(open_read(path))


def decompressing(raw: IO[bytes], base: int = 0) -> IO[bytes]:
    """`raw` (seekable, at the start of its data) decompressed when it starts
    with the magic bytes of gzip, bzip2 or xz (a `Decompressed`), else `raw`
    itself. `base`: the file offset of `raw`'s position 0 (a byte range of a
    file), so that error messages give offsets in the file."""
    start = raw.tell()
    head = raw.read(_MAGIC_BYTES)
    raw.seek(start)
    for name, magic, new in _FORMATS:
        if head.startswith(magic):
            return Decompressed(raw, name, magic, new, base)
    return raw


def read_input(path: str) -> tuple[bytes, Exception | None]:
    """A whole (small) input, decompressed (`open_input`): (bytes, None), or
    for a damaged compressed stream (bytes decoded before the damage, the
    EOFError or OSError that says where it is).

    Raises:
        OSError: the file cannot be opened.
    """
    parts: list[bytes] = []
    with open_input(path) as f:
        try:
            while chunk := f.read(1 << 20):
                parts.append(chunk)
        except (EOFError, OSError) as e:
            return b"".join(parts), e
    return b"".join(parts), None


_RAW_CHUNK = 1 << 16  # compressed bytes read at a time
_OUT_CHUNK = 1 << 16  # most bytes one decompressor call makes: memory stays flat on a zip bomb
# What a decompressor raises on bad data (bz2: OSError "Invalid data stream").
_DECOMPRESS_ERRORS = (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError)


class Decompressed(_io.BufferedIOBase):
    """The decompressed bytes of a gzip, bzip2 or xz stream, made as they are read.

    Python's `GzipFile`, `BZ2File` and `LZMAFile` raise from inside a buffered
    read, losing what that read had already decompressed: a 64 KiB read that
    meets the end of a truncated `.xz` loses up to 64 KiB of good records, a
    `read()` of a truncated book loses the book, and a truncated bzip2 file of
    one block raises on its first read. Here decompressor objects are fed
    directly, and a damaged stream gives every byte decoded before the damage:

    - `read(n)`, `read1(n)`, `readinto(b)` return the bytes decoded before the
      damage (fewer than asked); the next read raises;
    - `read()` (to the end) and `readline()` raise at the damage: what they
      would return is incomplete, and must not pass for the whole;
    - damage that no read has raised yet (a caller took a short read for the
      end) is raised by `close()` (not when the stream closes on another error).

    Errors, with offsets in the file: EOFError "<format> stream truncated: the
    input ends at byte N inside the stream that starts at byte M"; OSError
    "corrupt <format> data ...": a decompressor error (a bad CRC, corrupt
    deflate or bzip2 blocks), or bytes after a stream that start no stream
    (NUL padding after the last one is allowed). An error of the underlying
    file's own read passes through as it is. Members and streams one after the
    other read as one, as with the standard library's readers.

    What a truncated stream gave is the file's own bytes. Corrupt data is
    found where its checksum ends (a gzip member's end, a bzip2 or xz
    block's), so bytes given shortly before a "corrupt" error may be wrong.

    Seekable when `raw` is: backwards by decompressing again from the start.
    """

    def __init__(self, raw: IO[bytes], fmt: str, magic: bytes, new: Any, base: int = 0):
        self.raw, self.format, self._magic, self._new = raw, fmt, magic, new
        self._base = base  # file offset of raw's position 0
        self._raw_start = raw.tell()
        self._reset()

    def _reset(self) -> None:
        self.raw.seek(self._raw_start)
        self._raw_pos = self._base + self._raw_start  # file offset just past what was read
        self._in = b""  # read, not yet given to a decompressor
        self._d: Any = None  # the current stream's decompressor, None between streams
        self._stream_start = 0
        self._hungry = True  # the decompressor has made all it can of its input
        self._raw_eof = False
        self._buf, self._off = b"", 0  # decompressed, not yet returned: _buf[_off:]
        self._pos = 0  # decompressed bytes returned
        self._end = False
        self._error: Exception | None = None
        self._raised = False

    # -- decompression ------------------------------------------------------

    def _read_raw(self) -> bool:
        chunk = self.raw.read(_RAW_CHUNK)
        if not chunk:
            self._raw_eof = True
            return False
        self._in += chunk
        self._raw_pos += len(chunk)
        return True

    def _decompress(self) -> bytes:
        """The next decompressed bytes; b"" at the end of the data.

        Raises:
            EOFError, OSError: see the class doc.
        """
        while True:
            if self._d is None:  # between streams
                if len(self._in) < len(self._magic) and not self._raw_eof:
                    self._read_raw()
                    continue
                padding = len(self._in) - len(self._in.lstrip(b"\x00"))
                if padding:
                    self._in = self._in[padding:]
                    continue
                if not self._in:
                    return b""
                at = self._raw_pos - len(self._in)
                if not self._in.startswith(self._magic):
                    raise OSError(f"corrupt {self.format} data: the bytes at byte {at} start no {self.format} stream")
                self._d, self._stream_start, self._hungry = self._new(), at, True
            if self._hungry and not self._in and not self._read_raw():
                raise EOFError(
                    f"{self.format} stream truncated: the input ends at byte {self._raw_pos} inside "
                    f"the stream that starts at byte {self._stream_start}"
                )
            try:
                out = self._d.decompress(self._in, _OUT_CHUNK)
            except _DECOMPRESS_ERRORS as e:
                raise OSError(
                    f"corrupt {self.format} data in the stream that starts at byte {self._stream_start} "
                    f"(read up to byte {self._raw_pos}): {type(e).__name__}: {e}"
                ) from None
            if self._d.eof:
                self._in, self._d = self._d.unused_data, None
            elif hasattr(self._d, "needs_input"):  # bz2, lzma: they keep their unused input
                self._in, self._hungry = b"", self._d.needs_input
            else:  # zlib: the input it did not take is handed back
                self._in = self._d.unconsumed_tail
                self._hungry = not self._in and len(out) < _OUT_CHUNK
            if out:
                return out

    def _next(self) -> bytes:
        """More decompressed bytes (the buffer is empty); b"" at the end or at damage."""
        if self._end or self._error is not None:
            return b""
        try:
            out = self._decompress()
        except (EOFError, OSError) as e:
            self._error = e
            return b""
        self._end = not out
        return out

    def _raise(self) -> None:
        self._raised = True
        raise self._error

    # -- reading ------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self.raw.seekable()

    def tell(self) -> int:
        return self._pos

    def _take(self, n: int) -> bytes:
        data = self._buf[self._off : self._off + n]
        self._off += len(data)
        self._pos += len(data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        want = None if size is None or size < 0 else size
        parts = [self._take(len(self._buf) if want is None else want)]
        got = len(parts[0])
        while want is None or got < want:
            out = self._next()
            if not out:
                break
            self._buf, self._off = out, 0
            parts.append(self._take(len(out) if want is None else want - got))
            got += len(parts[-1])
        if self._error is not None and want != 0 and (want is None or not got):
            self._raise()
        return b"".join(parts)

    def read1(self, size: int = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if self._off >= len(self._buf) and size != 0:
            out = self._next()
            if not out and self._error is not None:
                self._raise()
            self._buf, self._off = out, 0
        return self._take(len(self._buf) if size is None or size < 0 else size)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readinto1(self, b: Any) -> int:
        data = self.read1(len(b))
        b[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        limit = None if size is None or size < 0 else size
        nl = self._buf.find(b"\n", self._off)
        if nl >= 0 and limit is None:  # the usual case, kept short
            line = self._buf[self._off : nl + 1]
            self._off = nl + 1
            self._pos += len(line)
            return line
        parts: list[bytes] = []
        got = 0
        while limit is None or got < limit:
            nl = self._buf.find(b"\n", self._off)
            n = len(self._buf) - self._off if nl < 0 else nl + 1 - self._off
            parts.append(self._take(n if limit is None else min(n, limit - got)))
            got += len(parts[-1])
            if nl >= 0 and self._off > nl:
                break
            if self._off < len(self._buf):
                continue
            out = self._next()
            if not out:
                if self._error is not None:  # the line is incomplete
                    self._raise()
                break
            self._buf, self._off = out, 0
        return b"".join(parts)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_CUR:
            offset += self._pos
        elif whence != os.SEEK_SET:
            raise _io.UnsupportedOperation("seek from the end of a compressed stream")
        if offset < self._pos:
            self._reset()
        while self._pos < offset:
            if not self.read(min(offset - self._pos, 1 << 20)):
                break
        return self._pos

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.raw.close()
        finally:
            super().close()
        if self._error is not None and not self._raised:
            self._raise()

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None:
            self._raised = True  # the error in flight is the one to see
        self.close()

    def __del__(self) -> None:
        self._raised = True  # never raise from the garbage collector
        super().__del__()


class ByteRange(_io.RawIOBase):
    """Bytes [start, end) of an open file as a read-only, seekable stream whose
    position 0 is `start`: reads stop at `end` (None: the file's end; both
    clamped to the file). `size` is the whole file's size, so a reader can tell
    whether its range reaches the end. Closing it closes the file."""

    def __init__(self, f: IO[bytes], start: int, end: int | None = None):
        self._f = f
        f.seek(0, os.SEEK_END)
        self.size = f.tell()
        self.start = max(0, min(start, self.size))
        self.end = self.size if end is None else max(self.start, min(end, self.size))
        self._pos = 0
        f.seek(self.start)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.end - self.start}[whence]
        self._pos = max(0, min(base + offset, self.end - self.start))
        self._f.seek(self.start + self._pos)
        return self._pos

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.end - self.start - self._pos)
        if n <= 0:
            return 0
        data = self._f.read(n)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


def open_range(path: str | Path, start: int, end: int | None = None, buffer_size: int = 1 << 20) -> IO[bytes]:
    """Bytes [start, end) of a file as stored (no decompression), on any
    filesystem: one part of a large input that several workers read in pieces.
    A buffered stream over a `ByteRange` (its `raw`: `size`, `start`, `end`)."""
    return _io.BufferedReader(ByteRange(open_read(path), start, end), buffer_size)


def read_bytes(path: str | Path) -> bytes:
    """A whole (small) file: a manifest, a config, a log."""
    with open_read(path) as f:
        return f.read()


def read_json(path: str | Path) -> Any:
    """A JSON file (a manifest).

    Raises:
        StorageError: missing, unreadable or not JSON (the message names the path).
    """
    try:
        return json.loads(read_bytes(path))
    except FileNotFoundError:
        raise StorageError(f"{path}: no such file") from None
    except (OSError, ValueError) as e:
        if not exists(path):
            raise StorageError(f"{path}: no such file") from None
        raise StorageError(f"{path}: cannot read: {e}") from e


class HashingWriter:
    """A binary sink that passes writes on and keeps their SHA-256 and size, so a
    writer can describe its file without reading it back."""

    def __init__(self, f: IO[bytes]):
        self.f, self.sha = f, hashlib.sha256()
        self.bytes = 0
        self.closed = False

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self.bytes += len(view)
        self.f.write(view)
        return len(view)

    def flush(self) -> None:
        self.f.flush()

    def tell(self) -> int:
        return self.bytes

    def close(self) -> None:  # the owner (`atomic_write`) closes the real file
        self.closed = True

    def writable(self) -> bool:
        return True

    @property
    def sha256(self) -> str:
        return self.sha.hexdigest()


def _tmp_name(path: str) -> str:
    """A unique temporary name beside `path` (hidden: a dot first)."""
    sep = "/" if is_remote(path) else os.sep
    head, _, name = path.rpartition(sep)
    return f"{head}{sep}.{name}.{uuid.uuid4().hex[:12]}.tmp"


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary name beside `path`, then rename it into place.

    A killed or failed write never leaves a file under the final name: locally
    `mkstemp` + `fsync` + `os.replace`; on an object store the upload goes to a
    temporary object, renamed (copied) once complete and deleted on failure.
    `mode` is "wb" or "w" (UTF-8 text).
    """
    path = str(path)
    if not is_remote(path):
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        try:
            with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary files
            os.replace(tmp, p)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return
    FileSystems = _fs()
    tmp = _tmp_name(path)
    raw = FileSystems.create(tmp)
    ok = False
    try:
        if "b" in mode:
            yield raw
        else:
            import io as _io

            text = _io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
            yield text
            text.flush()
            text.detach()
        if raw.tell() == 0:
            _allow_empty(raw)
        ok = True
    finally:
        try:
            raw.close()  # completes the upload (also after a failure: removed below)
        except Exception:  # noqa: BLE001
            if ok:
                raise
        if not ok:
            with contextlib.suppress(Exception):
                FileSystems.delete([tmp])
    FileSystems.rename([tmp], [path])


def _allow_empty(raw) -> None:
    """Beam's S3 writer completes a multipart upload of no parts when nothing was
    written, which S3 rejects (MalformedXML); one empty part is valid (only a
    part before the last has a minimum size)."""
    uploader = getattr(getattr(raw, "raw", None), "_uploader", None)
    if uploader is not None and hasattr(uploader, "_write_to_s3") and not uploader.parts:
        uploader._write_to_s3(b"")


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)


def write_json(path: str | Path, obj: Any) -> None:
    """Indented, key-sorted JSON, atomically: reproducible bytes."""
    write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode())


def delete_tree(prefix: str | Path) -> None:
    """Remove a folder or every object under a prefix (absent: no error)."""
    prefix = str(prefix)
    if not is_remote(prefix):
        import shutil

        shutil.rmtree(prefix, ignore_errors=True)
        return
    paths = [p for p, _ in list_tree(prefix)]
    if paths:
        _fs().delete(paths)


def delete(path: str | Path) -> None:
    """Remove one file (absent: no error)."""
    path = str(path)
    if not is_remote(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    with contextlib.suppress(Exception):
        _fs().delete([path])


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open_read(path) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --- the per-machine cache -------------------------------------------------


def cache_dir() -> Path:
    """This machine's cache of remote models and shards: `$LLAMA_STACK_CACHE`, else
    `<system temp>/llama-stack-cache` (a worker's scratch disk)."""
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "llama-stack-cache")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive `flock` on a local file (several worker processes of one machine)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: downloads may repeat, the rename keeps them safe
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def copy(src: str | Path, dest: str | Path) -> dict[str, Any]:
    """Copy a file between any filesystems (`atomic_write`); returns {"bytes",
    "sha256"} of what was written, hashed on the way."""
    import shutil

    with open_read(src) as f, atomic_write(dest) as out:
        sink = HashingWriter(out)
        shutil.copyfileobj(f, sink, 1 << 22)
    return {"bytes": sink.bytes, "sha256": sink.sha256}


def upload(local: str | Path, dest: str | Path) -> None:
    """Copy a local file to `dest` on any filesystem (`copy`)."""
    copy(local, dest)


def download(src: str | Path, local: str | Path, sha256: str | None = None) -> str:
    """Copy `src` (any filesystem) to the local file `local`: temporary name, then
    rename, so a killed download leaves nothing under that name. Returns `local`.

    Raises:
        StorageError: the bytes disagree with `sha256` (when given).
    """
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".tmp", dir=local.parent)
    try:
        with os.fdopen(fd, "wb") as out, open_read(src) as f:
            while block := f.read(1 << 22):
                h.update(block)
                out.write(block)
        if sha256 and h.hexdigest() != sha256:
            raise StorageError(f"{src}: sha256 {h.hexdigest()} differs from the manifest's {sha256}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, local)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return str(local)


def local_copy(path: str | Path, sha256: str | None = None, cache: Path | None = None) -> str:
    """A local file with the bytes of `path`: the path itself when local, else a
    copy in this machine's cache, downloaded once (a lock keeps the worker
    processes of one machine from fetching it twice; temporary name, then
    rename). The cache key is `sha256` when given (then checked), else the
    path, size and modification time of the object.

    Raises:
        StorageError: the file does not exist, or its bytes disagree with `sha256`.
    """
    path = str(path)
    if not is_remote(path):
        if not os.path.isfile(path):
            raise StorageError(f"{path}: no such file")
        return path
    try:
        meta = _fs().match([path], limits=[1])[0].metadata_list
    except Exception as e:  # noqa: BLE001
        raise StorageError(f"{path}: cannot read: {e}") from e
    if not meta or meta[0].path != path:
        raise StorageError(f"{path}: no such file")
    nbytes, stamp = meta[0].size_in_bytes, meta[0].last_updated_in_seconds
    key = sha256 or hashlib.sha1(f"{path}\x00{nbytes}\x00{stamp}".encode()).hexdigest()
    name = path.rstrip("/").rsplit("/", 1)[-1]
    local = (cache or cache_dir()) / key[:24] / name
    if local.is_file() and local.stat().st_size == nbytes:
        return str(local)
    with _file_lock(local.parent / ".lock"):
        if not (local.is_file() and local.stat().st_size == nbytes):
            download(path, local, sha256)
    return str(local)


# --- runs: one job's output, committed by its manifest ----------------------


@contextlib.contextmanager
def in_background(work: Callable[[], None], name: str, stop: Callable[[], None]) -> Iterator[None]:
    """Run `work` in a daemon thread for the block; on leaving it, call `stop`
    (which makes `work` return) and wait up to 5 s for the thread to end."""
    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop()
        thread.join(timeout=5)


def _lease_seconds() -> float:
    return float(os.environ.get("LLAMA_STACK_LEASE_SECONDS", "120"))


class Run:
    """One job writing the output folder `final`: its files go under
    `<final>/run-<id>/` (`self.dir`), and `commit(manifest)` makes them visible
    by writing `<final>/manifest.json`, then removes older runs' folders.

    Only one run at a time per output: locally a `flock` on `<final>.lock` (it
    dies with the process); on object stores a lease object `<final>.lock`
    renewed while the run lives and taken over once expired (a killed run's
    lease expires by itself).
    """

    def __init__(self, final: str | Path):
        self.final = str(final)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self.id = f"{stamp}-{uuid.uuid4().hex[:8]}"
        self.dir = join(self.final, f"{RUN_PREFIX}{self.id}")
        self._lock_path = f"{self.final.rstrip('/')}.lock"
        self._stop = threading.Event()
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Run:
        if is_remote(self.final):
            self._stack.enter_context(self._lease())
        else:
            self._stack.enter_context(_exclusive_local(self._lock_path))
            Path(self.dir).mkdir(parents=True)
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def commit(self, manifest: dict[str, Any]) -> None:
        """Write the manifest (the commit point), then delete every other run's files."""
        write_json(join(self.final, MANIFEST), manifest)
        for path in _run_folders(self.final):
            if path.rstrip("/") != self.dir.rstrip("/"):
                delete_tree(path)

    def abandon(self) -> None:
        """Remove this run's own files (the job failed; the old manifest stays),
        and locally the output folder too when that leaves it empty."""
        delete_tree(self.dir)
        if not is_remote(self.final):
            with contextlib.suppress(OSError):  # not empty: an earlier run's output
                os.rmdir(self.final)

    @contextlib.contextmanager
    def _lease(self) -> Iterator[None]:
        me = {"run": self.id, "host": socket.gethostname(), "pid": os.getpid()}
        ttl = _lease_seconds()
        if exists(self._lock_path):
            try:
                held = read_json(self._lock_path)
            except StorageError:
                held = {}
            if held.get("run") != self.id and held.get("expires", 0) > time.time() and not _dead_here(held):
                raise OutputBusy(
                    f"{self.final} is being written by another job (run {held.get('run')}, host "
                    f"{held.get('host')}, pid {held.get('pid')}; lease {self._lock_path} expires in "
                    f"{held['expires'] - time.time():.0f} s, sooner if it was killed); wait for it or stop it")
        write_json(self._lock_path, {**me, "expires": time.time() + ttl})
        time.sleep(min(1.0, ttl / 10))  # two runs starting together: the last writer wins
        if read_json(self._lock_path).get("run") != self.id:
            raise OutputBusy(f"{self.final}: another job took the lease {self._lock_path} at the same time")

        def renew() -> None:
            while not self._stop.wait(ttl / 3):
                with contextlib.suppress(Exception):
                    write_json(self._lock_path, {**me, "expires": time.time() + ttl})

        try:
            with in_background(renew, "lease", self._stop.set):
                yield
        finally:
            delete(self._lock_path)


def _dead_here(lease: dict[str, Any]) -> bool:
    """Whether a lease's holder was a process of this machine that is gone (a
    killed run: its lease need not run out)."""
    if lease.get("host") != socket.gethostname() or not isinstance(lease.get("pid"), int):
        return False
    try:
        os.kill(lease["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


def _run_folders(final: str) -> list[str]:
    """The `run-*` folders (prefixes) under an output folder."""
    if not is_remote(final):
        root = Path(final)
        return sorted(str(p) for p in root.glob(f"{RUN_PREFIX}*")) if root.is_dir() else []
    runs = {relative(p, final).split("/", 1)[0] for p, _ in list_tree(final)}
    return sorted(join(final, r) for r in runs if r.startswith(RUN_PREFIX))


@contextlib.contextmanager
def _exclusive_local(lock_path: str) -> Iterator[None]:
    """Hold `lock_path` (an advisory `flock`) while a job writes, so two runs on
    one output folder cannot interleave. The lock goes with the process; the
    file stays, empty. No-op where `fcntl` is missing (not POSIX).

    Raises:
        OutputBusy: another process holds the lock (its pid in the message).
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    lock = Path(lock_path)
    final = lock.with_suffix("") if lock.suffix == ".lock" else lock
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


def exclusive_output(final: str | Path):
    """Hold the one-run-at-a-time lock of the output folder `final` (see `Run`)."""
    return _exclusive_local(f"{final}.lock")
