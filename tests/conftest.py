"""What the tests share, so that no test module imports another: the real demo
inputs (fetched from the package registries once into the project's cache), the
shared sample corpus when present, config builders, real texts, and the runs that
several test modules read (a small demo run, token shards, a trained tokenizer and
model, a shard run on real documents), each built once a session."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import html
import json
import os
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("LLAMA_CACHE", ROOT / ".cache"))
SHARED_CORPUS = ROOT.parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def demo_inputs() -> dict[str, Path]:
    """{path relative to the cache: absolute path} of every fetched demo input."""
    from pipeline.fetch import fetch_demo_inputs

    return fetch_demo_inputs(CACHE)


@pytest.fixture(scope="session")
def lid_model(demo_inputs) -> Path:
    return demo_inputs["models/lid.176.ftz"]


@pytest.fixture(scope="session")
def shared_corpus() -> Path:
    """The shared real-sample corpus of all seven sources (present on CI)."""
    if not SHARED_CORPUS.is_dir():
        pytest.skip("the shared sample corpus is not beside this checkout")
    return SHARED_CORPUS


def demo_input(request: pytest.FixtureRequest, rel: str) -> Path:
    """A demo input (path relative to the cache) from the cache; fetched through
    `demo_inputs` if missing."""
    path = CACHE / rel
    if path.is_file():
        return path
    return request.getfixturevalue("demo_inputs")[rel]


def demo_config(*overrides: str):
    """configs/demo.yaml with `overrides` (`key=value`, as `--set` takes them)."""
    from pipeline.core.config import load_config

    return load_config(ROOT / "configs" / "demo.yaml", list(overrides))


def clean_config(out: Path, cache: Path, inputs: dict[str, object] | None = None, *overrides: str):
    """The demo config writing under `out`, with its language-id model and cache in
    `cache`; with `inputs` ({source: input path or pattern, or a list of them}) every
    other source reads nothing."""
    sets = [f"out_dir={out}", f"cache_dir={cache}", f"langid.model={cache}/models/lid.176.ftz"]
    if inputs is not None:
        names = demo_config().sources
        sets += [f"sources.{s}.inputs={_as_list(inputs.get(s, []))}" for s in names]
    return demo_config(*sets, *overrides)


def small_run_overrides(out: object) -> list[str]:
    """The stages after clean at test size, writing under `out` (a folder or an URL):
    a 1000-piece tokenizer, 400k tokens in 100k-token shards, 64-token windows."""
    return [f"tokenizer.model_prefix={out}/tokenizer/m", "tokenizer.vocab_size=1000",
            f"shards.out={out}/shards", "shards.total_tokens=400000", "shards.shard_tokens=100000",
            f"trainer.out={out}/train", "trainer.seq_len=64", "trainer.log_every=5"]


def _as_list(value) -> list[str]:
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


# --- the demo at test size ----------------------------------------------------------------

SMALL_DEMO_INPUTS = {"commoncrawl": "*.warc.gz", "github": "*.jsonl.gz", "wikipedia": "*.bz2", "books": "*.txt"}


def small_demo_config(out: Path, cache: Path, *overrides: str):
    """The demo on its inputs in `cache` (of the web pages, the one WARC file), the
    stages after clean at test size (`small_run_overrides`)."""
    inputs = {s: f"{cache}/inputs/{s}/{pattern}" for s, pattern in SMALL_DEMO_INPUTS.items()}
    return clean_config(out, cache, inputs, *small_run_overrides(out), *overrides)


@pytest.fixture(scope="session")
def small_demo_run(tmp_path_factory, demo_inputs) -> dict:
    """clean -> tokenizer train -> shards of `small_demo_config`, once a session, for
    the tests that only read them (each trains its model into a folder of its own):
    {"cfg", "out", "cache", "clean", "tokenizer", "shards"}."""
    from pipeline.clean import run_clean
    from pipeline.shards import run_shards
    from tokenizer.train import train_tokenizer

    cache = demo_inputs["models/lid.176.ftz"].parents[1]
    out = tmp_path_factory.mktemp("small-demo")
    cfg = small_demo_config(out, cache)
    run = {"cfg": cfg, "out": out, "cache": cache, "clean": run_clean(cfg)}
    run["tokenizer"] = train_tokenizer(cfg)
    run["shards"] = run_shards(cfg)
    return run


# --- real text ----------------------------------------------------------------------------


MIN_WORDS = 40  # paragraphs and documents shorter than this are not used


def book_paragraphs(path: Path, min_words: int = MIN_WORDS) -> list[str]:
    """Paragraphs (blank-line separated) of a plain-text book with >= min_words words."""
    text = path.read_bytes().decode("latin-1").replace("\r\n", "\n")
    return [p.strip() for p in re.split(r"\n\s*\n", text) if len(p.split()) >= min_words]


def json_texts(path: Path, min_words: int = MIN_WORDS) -> list[str]:
    """`text` of every JSON line (gzip) with >= min_words words."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        texts = [json.loads(line).get("text") or "" for line in f if line.strip()]
    return [t for t in texts if len(t.split()) >= min_words]


def poem_passages(demo_inputs) -> list[str]:
    """20-line passages of Paradise Lost, past the preamble."""
    poem = demo_inputs["inputs/books/plrabn12.txt"].read_text(encoding="latin-1")
    lines = [line for line in poem.splitlines() if line.strip()][100:]
    return ["\n".join(lines[i : i + 20]) for i in range(0, 20 * 70, 20)]


def python_files(demo_inputs) -> list[str]:
    """Real Python files of more than 300 characters."""
    with gzip.open(demo_inputs["inputs/github/site-packages.jsonl.gz"], "rt", encoding="utf-8") as f:
        return [r["content"] for r in map(json.loads, f) if r["path"].endswith(".py") and len(r["content"]) > 300]


def write_texts(out: Path, parts: dict[str, list[str]], num_parts: int = 1) -> dict:
    """Texts as a committed clean output; a source's documents dealt round-robin
    into `num_parts` parts (ids do not depend on the split)."""
    import pyarrow as pa

    from pipeline.core.schema import (
        DOCUMENT_FIELDS,
        DOCUMENT_SCHEMA,
        write_clean_output,
    )
    from pipeline.sources.base import make_document

    tables = {}
    for source, texts in parts.items():
        docs = [make_document(source, f"{source}-{i}", t, f"u:{i}") for i, t in enumerate(texts)]
        tables[source] = [
            pa.Table.from_pydict({f: [d[f] for d in docs[k::num_parts]] for f in DOCUMENT_FIELDS}, schema=DOCUMENT_SCHEMA)
            for k in range(num_parts)
        ]
    return write_clean_output(str(out), tables, max_chunksize=7)  # several record batches per part


def datasketch_minhash(text: str, num_perm: int = 128, ngram: int = 5, seed: int = 1):
    """The oracle: datasketch configured explicitly as our signatures claim to be."""
    from datasketch import MinHash

    from pipeline.dedup.minhash import shingle_hash32, shingles

    m = MinHash(num_perm=num_perm, seed=seed, hashfunc=shingle_hash32, scheme="affine32")
    m.update_batch([s.encode("utf-8", "surrogatepass") for s in shingles(text, ngram)])
    return m


# --- the clean job ------------------------------------------------------------------------


def run_clean_job(out: Path, cache: Path, *overrides: str) -> tuple[dict, dict[str, dict], list[dict]]:
    """The clean job of the demo config in one in-process worker (so a test's
    patches reach it) with only the inputs `overrides` give; returns (manifest,
    {id: Document} of every part, the dead letters)."""
    import pyarrow as pa

    from pipeline.clean import run_clean
    from pipeline.core.schema import clean_files

    cfg = clean_config(out, cache, {}, "beam.direct_num_workers=1", "beam.direct_running_mode=in_memory",
                       *overrides)
    manifest = run_clean(cfg)
    docs = {}
    for paths in clean_files(str(out), manifest).values():
        for path in paths:
            with pa.memory_map(path) as f:
                docs.update((d["id"], d) for d in pa.ipc.open_file(f).read_all().to_pylist())
    dead = [json.loads(line) for entry in manifest["dead_letters"]
            for line in (out / "clean" / entry["file"]).read_text().splitlines()]
    return manifest, docs, dead


# --- token shards and the trainer ---------------------------------------------------------

ALICE = "inputs/books/alice29.txt"
MILTON = "inputs/books/plrabn12.txt"
Doc = tuple[str, str, list[int]]  # (source, doc_id, input_ids)


def write_shards(shard_dir: Path, train: list[list[Doc]], val: list[list[Doc]] = (),
                 vocab_size: int = 1 << 16, rows_per_batch: int = 2) -> dict:
    """Write token shards (one list of documents per shard) and their manifest.json,
    as the pipeline's tokenize job does; returns the manifest."""
    import pyarrow as pa

    from pipeline.core.schema import token_shard_schema

    shard_dir.mkdir(parents=True, exist_ok=True)
    schema = token_shard_schema(vocab_size)
    entries = []
    for split, shards in (("train", train), ("val", val)):
        for i, docs in enumerate(shards):
            name = f"{split}-{i:05d}-of-{len(shards):05d}.arrow"
            table = pa.table({"input_ids": [d[2] for d in docs],
                              "source": [d[0] for d in docs],
                              "doc_id": [d[1] for d in docs]}, schema=schema)
            with pa.OSFile(str(shard_dir / name), "wb") as f, pa.ipc.new_file(f, schema) as w:
                w.write_table(table, max_chunksize=rows_per_batch)
            per_source: dict[str, int] = {}
            for source, _, ids in docs:
                per_source[source] = per_source.get(source, 0) + len(ids)
            data = (shard_dir / name).read_bytes()
            entries.append({"file": name, "split": split, "rows": len(docs),
                            "tokens": sum(per_source.values()), "tokens_per_source": per_source,
                            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"format": "llama-token-shards/1", "config_digest": "test",
                "tokenizer": {"path": "test", "sha256": "", "vocab_size": vocab_size,
                              "bos_id": 1, "eos_id": 2},
                "add_bos": True, "add_eos": True,
                "dtype": "uint16" if vocab_size <= 1 << 16 else "uint32",
                "sources": {}, "shards": entries}
    (shard_dir / "manifest.json").write_text(json.dumps(manifest))
    return manifest


SEQ = 15  # windows of 16 tokens
SIZES = [[37, 5, 120, 300], [1, 222], [400, 13, 90, 12], [800]]  # documents' tokens per shard


@pytest.fixture
def shards(tmp_path) -> Path:
    """4 train shards of uneven sizes whose 2000 tokens are all distinct (token t
    is the integer t), so a window is known by its tokens; plus one val shard."""
    train, t = [], 0
    for s, docs in enumerate(SIZES):
        shard = []
        for d, n in enumerate(docs):
            shard.append(("books" if d % 2 else "c4", f"{s}-{d}", list(range(t, t + n))))
            t += n
        train.append(shard)
    assert t == 2000
    val = [[("c4", "v0", list(range(60000, 60100)))]]
    write_shards(tmp_path, train, val)
    return tmp_path


def windows(stream_or_loader, n: int | None = None) -> list[tuple[int, ...]]:
    """The (SEQ + 1)-token windows of a stream's or loader's batches (the first `n`)."""
    import torch

    out = []
    for x, y in stream_or_loader:
        for xi, yi in zip(x.reshape(-1, SEQ), y.reshape(-1, SEQ)):
            assert torch.equal(xi[1:], yi[:-1])  # y is x shifted by one
            out.append(tuple(xi.tolist()) + (yi[-1].item(),))
        if n is not None and len(out) >= n:
            break
    return out


def _chapters(text: bytes) -> list[bytes]:
    return [c for c in re.split(rb"(?<=\n)(?= *CHAPTER [IVX]+\r?\n)", text) if c.strip()]


def _byte_doc(source: str, i: int, text: bytes) -> Doc:
    """Byte-level ids (UTF-8 byte + 3; BOS 1, EOS 2)."""
    return (source, f"{source}-{i}", [1] + [b + 3 for b in text] + [2])


@pytest.fixture(scope="session")
def alice(request) -> bytes:
    """Alice's Adventures in Wonderland, from the demo inputs."""
    return demo_input(request, ALICE).read_bytes()


@pytest.fixture(scope="session")
def book_shards(alice, tmp_path_factory) -> Path:
    """Three shards of Alice's chapters, byte-level ids (UTF-8 byte + 3; BOS 1, EOS 2)."""
    docs = [_byte_doc("books", i, c) for i, c in enumerate(_chapters(alice))]
    assert len(docs) == 13  # the title page and 12 chapters
    shard_dir = tmp_path_factory.mktemp("alice") / "shards"
    write_shards(shard_dir, [docs[i::3] for i in range(3)], vocab_size=259, rows_per_batch=4)
    return shard_dir


@pytest.fixture(scope="session")
def two_source_shards(alice, request, tmp_path_factory) -> Path:
    """Train and val shards of two sources, byte-level ids (UTF-8 byte + 3; BOS 1, EOS 2):
    "books" = the chapters of Alice in Wonderland, "poetry" = Paradise Lost in ~6 kB
    pieces. Val holds Alice's last 3 chapters and the last 6 pieces of Milton, spread
    over two shards of 2-row record batches, the sources interleaved."""
    milton = demo_input(request, MILTON).read_bytes()[:120_000]
    pieces = [milton[i:i + 6000] for i in range(0, len(milton), 6000)]
    books = [_byte_doc("books", i, c) for i, c in enumerate(_chapters(alice))]
    poetry = [_byte_doc("poetry", i, p) for i, p in enumerate(pieces)]
    train_docs = books[:10] + poetry[:14]
    val_docs = [d for pair in zip(poetry[14:], books[10:] + [None] * 3) for d in pair if d]
    shard_dir = tmp_path_factory.mktemp("two-sources") / "shards"
    write_shards(shard_dir, [train_docs[0::2], train_docs[1::2]],
                 val=[val_docs[:5], val_docs[5:]], vocab_size=259, rows_per_batch=2)
    return shard_dir


def trainer_config(shards: Path, out: Path, **trainer):
    """The demo config, pointed at test shards, with a smaller batch and `trainer` overrides."""
    base = {"model": "demo", "seq_len": 64, "batch_size": 8, "grad_accum": 1, "steps": 12, "lr": 3e-3,
            "warmup_steps": 10, "log_every": 1, "ckpt_every": 1000, "keep_checkpoints": 2,
            "num_threads": 1}  # a tiny model: 2 threads are 4x slower on a busy 2-core machine
    base.update(trainer)
    overrides = [f"shards.out={shards}", f"trainer.out={out}"]
    overrides += [f"trainer.{k}={v}" for k, v in base.items()]
    return demo_config(*overrides)


def read_log(out: Path) -> list[dict]:
    """The records of a training run's log.jsonl."""
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


# --- a trained model ----------------------------------------------------------------------

GENERATE_VOCAB = 1000
GENERATE_SEQ_LEN = 128


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, alice, request) -> dict:
    """A real tokenizer, shards and model, built once per session:

    - SentencePiece BPE with LLaMA's trainer spec, vocabulary 1000, trained on Alice in
      Wonderland and Paradise Lost (CRLF -> LF);
    - shards as the shard job writes them (`[BOS] + ids + [EOS]` per document; the
      manifest names the tokenizer): source "books" = Alice's chapters, "poetry" =
      Milton in ~6 kB pieces; validation = Alice's last 2 chapters and Milton's last
      4 pieces;
    - the demo model trained 120 steps at seq_len 128 (`python -m trainer`'s `train`);
    - its HF export with the tokenizer's HF files (`trainer export --hf`).

    Returns {"cfg", "sp", "model_path", "checkpoint", "hf", "summary", "texts"}.
    """
    import sentencepiece as spm

    import tokenizer
    from tokenizer.hf import export_hf
    from tokenizer.train import LLAMA_TRAINER_SPEC
    from trainer.__main__ import main
    from trainer.train import train

    out = tmp_path_factory.mktemp("generate-run")
    a = alice.decode("utf-8").replace("\r\n", "\n")
    m = demo_input(request, MILTON).read_bytes().decode("utf-8").replace("\r\n", "\n")[:150_000]
    chapters = [c.strip() for c in re.split(r"(?<=\n)(?= *CHAPTER [IVX]+\n)", a) if c.strip()]
    pieces = [m[i:i + 6000].strip() for i in range(0, len(m), 6000)]
    lines = [line for line in (a + "\n" + m).splitlines() if line.strip()]
    spm.SentencePieceTrainer.Train(sentence_iterator=iter(lines),
                                   model_prefix=str(out / "tok"), vocab_size=GENERATE_VOCAB,
                                   character_coverage=1.0, num_threads=1, minloglevel=2,
                                   **LLAMA_TRAINER_SPEC)
    model_path = str(out / "tok.model")
    sp = tokenizer.load(model_path)

    def docs(source: str, texts: list[str]) -> list:
        ids = tokenizer.encode_batch(sp, texts, num_threads=1)
        return [(source, f"{source}-{i}", [1, *x, 2]) for i, x in enumerate(ids)]

    books, poetry = docs("books", chapters), docs("poetry", pieces)
    train_docs, val_docs = books[:-2] + poetry[:-4], books[-2:] + poetry[-4:]
    shard_dir = out / "shards"
    manifest = write_shards(shard_dir, [train_docs[0::2], train_docs[1::2]], val=[val_docs],
                            vocab_size=GENERATE_VOCAB, rows_per_batch=4)
    manifest["tokenizer"].update(path=model_path, vocab_size=sp.get_piece_size())
    (shard_dir / "manifest.json").write_text(json.dumps(manifest))

    cfg = trainer_config(shard_dir, out / "train", steps=120, seq_len=GENERATE_SEQ_LEN, batch_size=8,
                         warmup_steps=10, log_every=10, val_batches=4)
    summary = train(cfg)
    hf = out / "hf"
    assert main(["export", "--hf", str(hf), "--checkpoint", summary["checkpoint"]]) == 0
    export_hf(model_path, hf)
    return {"cfg": cfg, "sp": sp, "model_path": model_path, "checkpoint": summary["checkpoint"], "hf": hf,
            "summary": summary, "texts": {"books": chapters, "poetry": pieces}}


def retrained_tokenizer(trained_run, folder) -> dict:
    """A checkpoint of `trained_run`'s model that records its tokenizer (path, sha256),
    whose file at that path is then replaced by another of the same vocabulary size
    trained on other text (Alice alone), as a second `python -m tokenizer train` does.
    Returns {"checkpoint", "path", "recorded" and "now": the sha256s}."""
    import hashlib
    import io
    import shutil

    import sentencepiece as spm

    from tokenizer.train import LLAMA_TRAINER_SPEC
    from trainer.checkpoint import load_model as load_checkpoint_model
    from trainer.checkpoint import save_checkpoint
    from trainer.generate import load_model as load_inference_model

    path = folder / "tokenizer" / "llama-demo.model"
    path.parent.mkdir(parents=True)
    shutil.copyfile(trained_run["model_path"], path)
    recorded = hashlib.sha256(path.read_bytes()).hexdigest()
    weights, state = load_checkpoint_model(trained_run["checkpoint"])
    record = {"path": str(path), "sha256": recorded, "vocab_size": GENERATE_VOCAB, "bos_id": 1, "eos_id": 2}
    checkpoint = str(save_checkpoint(folder / "step-000120.pt",
                                     {**state, "model": weights, "tokenizer": record}))
    assert load_inference_model(checkpoint)[1] == record

    alice = [line for line in trained_run["texts"]["books"] for line in line.splitlines() if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(alice), model_writer=model, vocab_size=GENERATE_VOCAB,
                                   character_coverage=1.0, num_threads=1, minloglevel=2,
                                   **LLAMA_TRAINER_SPEC)
    path.write_bytes(model.getvalue())
    now = hashlib.sha256(path.read_bytes()).hexdigest()
    assert now != recorded and spm.SentencePieceProcessor(model_file=str(path)).get_piece_size() == GENERATE_VOCAB
    return {"checkpoint": checkpoint, "path": path, "recorded": recorded, "now": now}


def tokenizer_refusal(tok: dict) -> str:
    """The start of the one line that refuses `retrained_tokenizer`'s pair."""
    return (f"error: {tok['path']} (sha256 {tok['now'][:16]}) is not the tokenizer of the checkpoint "
            f"{tok['checkpoint']}, which records {tok['path']} (sha256 {tok['recorded'][:16]}): ")


# --- a cleaned corpus and a tokenizer trained on it ---------------------------------------

BOOKS = ("inputs/books/alice29.txt", "inputs/books/plrabn12.txt")
BGWIKI = "inputs/wikipedia/bgwiki-latest-pages-articles-shortened.xml.bz2"
STDLIB_MODULES = ("json/decoder.py", "json/encoder.py", "textwrap.py", "string.py", "base64.py")
TOKENIZER_VOCAB = 600

TRICKY = [
    "Hello, world!",
    " leading space and trailing space ",
    "runs of   spaces\tand\t\ttabs \t \n\nand blank lines\n",
    "emoji: 🦙🚀👩‍👩‍👧 and flags 🇫🇷",
    "CJK: 日本語のテキスト、中文文本，한국어 텍스트",
    "combining: e\u0301 a\u0300 n\u0303 (decomposed) vs é à ñ (composed)",
    "digits 0123456789 and 3.14159 and 1,000,000",
    "control \x00 \x07 \x1b and reserved \u2585 and <s></s><unk>",
    "windows\r\nline\rends",
    "Ελληνικά, русский, עברית, العربية",
    "",
]


def _book_documents(path: Path) -> list[dict]:
    """A book split into documents of 10 paragraphs each, CRLF made LF."""
    from pipeline.sources.base import make_document

    text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", text) if p.strip()]
    docs = []
    for i in range(0, len(paragraphs), 10):
        body = "\n\n".join(paragraphs[i : i + 10])
        docs.append(make_document("books", f"{path.name}#{i}", body, path.name))
    # One document that is a single 12 kB line: the sample must cut it, not lose it.
    docs.append(make_document("books", f"{path.name}#long", long_line(text), path.name))
    return docs


def long_line(text: str) -> str:
    """A book's words on one 12 000-character line."""
    return " ".join(text.split())[:12_000]


def _wiki_documents(path: Path) -> list[dict]:
    from pipeline.sources.base import make_document

    xml = bz2.decompress(path.read_bytes()).decode("utf-16")  # this dump is UTF-16 with a BOM
    pages = re.findall(r"<title>(.*?)</title>.*?<text[^>]*>(.*?)</text>", xml, re.DOTALL)
    return [
        make_document("wikipedia", title, html.unescape(body), f"bgwiki/{title}", lang="bg")
        for title, body in pages
        if body.strip()
    ]


def _code_documents() -> list[dict]:
    from pipeline.sources.base import make_document

    lib = Path(textwrap.__file__).parent
    return [
        make_document("github", rel, (lib / rel).read_text(encoding="utf-8"), f"cpython/Lib/{rel}")
        for rel in STDLIB_MODULES
    ]


def write_clean_docs(out_dir: Path, source: str, docs: list[dict], n_files: int = 2) -> None:
    """Cleaned Arrow IPC files as the pipeline writes them: several files, small
    batches, listed by the clean manifest (sources written before are kept)."""
    import pyarrow as pa

    from pipeline.core.schema import DOCUMENT_SCHEMA, clean_files, write_clean_output

    parts = {source: [pa.Table.from_pylist(docs[k::n_files], schema=DOCUMENT_SCHEMA) for k in range(n_files)]}
    if (out_dir / "clean" / "manifest.json").exists():  # keep the sources written before
        for other, paths in clean_files(str(out_dir)).items():
            parts.setdefault(other, [pa.ipc.open_file(pa.memory_map(p)).read_all() for p in paths])
    write_clean_output(str(out_dir), parts, max_chunksize=25)


def tokenizer_config(out_dir: Path, *extra: str):
    """The demo config training a TOKENIZER_VOCAB tokenizer on the clean output in `out_dir`."""
    return demo_config(f"out_dir={out_dir}", f"tokenizer.model_prefix={out_dir}/tokenizer/llama-test",
                       f"tokenizer.vocab_size={TOKENIZER_VOCAB}", *extra)


def build_clean_corpus(tmp_path_factory, corpus: dict[str, list[dict]], name: str) -> Path:
    """A new folder holding `corpus` as a clean output."""
    out_dir = tmp_path_factory.mktemp(name)
    for source, docs in corpus.items():
        write_clean_docs(out_dir, source, docs)
    return out_dir


@pytest.fixture(scope="session")
def text_corpus(request) -> dict[str, list[dict]]:
    """{source: documents in file order} of a real-text cleaned corpus: the two demo
    books (books), Bulgarian wikitext of the demo's bgwiki dump (wikipedia; markup kept,
    it stands in for cleaned articles), Python standard-library modules (github)."""
    docs = {
        "github": _code_documents(),
        "wikipedia": _wiki_documents(demo_input(request, BGWIKI)),
        "books": [d for rel in BOOKS for d in _book_documents(demo_input(request, rel))],
    }
    assert all(docs.values())
    return docs


@pytest.fixture(scope="session")
def trained_tokenizer(tmp_path_factory, text_corpus):
    """(config, summary) of one tokenizer training on `text_corpus`."""
    from tokenizer.train import train_tokenizer

    cfg = tokenizer_config(build_clean_corpus(tmp_path_factory, text_corpus, "trained"))
    return cfg, train_tokenizer(cfg)


@pytest.fixture(scope="session")
def tokenizer_model(trained_tokenizer):
    """The SentencePiece processor of `trained_tokenizer`."""
    import tokenizer

    return tokenizer.load(trained_tokenizer[1]["model"])


# --- a shard run on real documents ---------------------------------------------------------

MIXTURE_SOURCES = {  # demo inputs read by the pipeline's own readers
    "wikipedia": "inputs/wikipedia/*.bz2",
    "github": "inputs/github/*.jsonl.gz",
    "books": "inputs/books/*.txt",
    "commoncrawl": "inputs/commoncrawl/*.warc.gz",
}
MIXTURE_TOKENS = 8_000_000  # enough for Wikipedia to qualify (test_mixture)


def _read_sources(cache: Path) -> dict[str, list[dict]]:
    from pipeline.sources import get_reader

    cfg = demo_config()
    docs = {}
    for source, pattern in MIXTURE_SOURCES.items():
        docs[source] = [  # the Documents; not the skips, drops and dead letters
            rec
            for path in sorted(cache.glob(pattern))
            for rec in get_reader(source)(str(path), cfg)
            if isinstance(rec, dict)
        ]
    # a third of the 560 GitHub files (by id) keeps the test to seconds
    docs["github"] = sorted(docs["github"], key=lambda d: d["id"])[::3]
    return docs


def _write_sorted_clean(out: Path, docs: dict[str, list[dict]]) -> None:
    """`<out>/clean/` as the clean job leaves it: Arrow files and a manifest."""
    import pyarrow as pa

    from pipeline.core.schema import CLEAN_FORMAT, DOCUMENT_FIELDS, DOCUMENT_SCHEMA

    files = []
    for source, rows in docs.items():
        for k in range(2):
            rel = f"{source}/part-{k:05d}-of-00002.arrow"
            (out / "clean" / source).mkdir(parents=True, exist_ok=True)
            part = sorted(rows[k::2], key=lambda d: d["id"])
            table = pa.Table.from_pydict({f: [d[f] for d in part] for f in DOCUMENT_FIELDS}, schema=DOCUMENT_SCHEMA)
            with pa.OSFile(str(out / "clean" / rel), "wb") as f, pa.ipc.new_file(f, DOCUMENT_SCHEMA) as w:
                w.write_table(table, max_chunksize=64)
            files.append({"source": source, "file": rel})
    (out / "clean" / "manifest.json").write_text(json.dumps({"format": CLEAN_FORMAT, "files": files}))


@pytest.fixture(scope="session")
def shard_run(tmp_path_factory, demo_inputs: dict[str, Path]) -> dict:
    """Real documents (the demo's Wikipedia, GitHub, Gutenberg and Common Crawl
    inputs through the pipeline's readers) -> tokenizer -> the Beam shard job,
    with no max_epochs cap: {"cfg", "out", "lengths", "manifest"}."""
    import tokenizer
    from pipeline.mixture import hash_unit
    from pipeline.shards import run_shards
    from tokenizer.train import train_tokenizer

    out = tmp_path_factory.mktemp("mixture")
    docs = _read_sources(demo_inputs["models/lid.176.ftz"].parents[1])
    _write_sorted_clean(out, docs)
    cfg = demo_config(
        f"out_dir={out}",
        f"tokenizer.model_prefix={out}/tokenizer/m",
        "tokenizer.vocab_size=1000",
        "tokenizer.sample_bytes=1000000",
        f"shards.out={out}/shards",
        f"shards.total_tokens={MIXTURE_TOKENS}",
        "shards.shard_tokens=4000000",
        "shards.max_epochs=null",
        "beam.direct_num_workers=1",
        "beam.direct_running_mode=in_memory",
    )
    train_tokenizer(cfg)
    sp = tokenizer.load(f"{out}/tokenizer/m.model")
    lengths = {}  # {source: [(doc_id, tokens incl. BOS and EOS, held out)]}
    for source, rows in docs.items():
        ids = tokenizer.encode_batch(sp, [d["text"] for d in rows])
        lengths[source] = [
            (d["id"], len(x) + 2, hash_unit(cfg.seed, "val", d["id"]) < cfg.shards.val_fraction)
            for d, x in zip(rows, ids)
        ]
    return {"cfg": cfg, "out": out, "lengths": lengths, "manifest": run_shards(cfg)}
