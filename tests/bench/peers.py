"""End to end against DataTrove (`make bench-peers`): the same real documents,
the same stages, two workers each, alternating runs.

`python -m tests.bench.peers [--python PEERS_PYTHON] [--mb 64] [--repeats 5]`
(`make bench-peers` builds the peers environment first: DataTrove and what it
needs at run time, pinned in `tests/bench/peers-requirements.txt`, in its own
virtual environment, apart from the project's).

Input (`build_input`, under `out/bench/peers/input/`): `--mb` MB of JSON lines
(`id`, `text`, `url`, `timestamp`) in `FILES` files, from real text: the
documents the project's own readers yield from the demo inputs and, when it is
beside the checkout, the shared sample corpus (C4, Common Crawl, Wikipedia,
Gutenberg, StackExchange), and the documentation of the installed Debian
packages and Python distributions (text, Markdown, reStructuredText, HTML,
gzip), cut into documents of at most `DOC_CHARS` characters at blank lines,
exact duplicates removed, mixed by a seeded hash. Injected: exact copies of
`EXACT_SHARE` of the documents and near copies (`NEAR_EDIT` of the words
replaced, true Jaccard about 0.9) of `NEAR_SHARE`. What lacks to reach `--mb`
is filled with seeded rewrites of documents (`scaled_inputs.swap_words`,
Jaccard far below the threshold: no duplicates).

Both sides read the same files:
- ours: `python -m pipeline clean` on the files as a C4 source, with the
  equivalent config: fastText lid.176 keeping English at >= 0.65, the C4 rules'
  FineWeb variant without the bad-words list (DataTrove has no such rule),
  exact dedup and MinHash near dedup (128 permutations over 5-word shingles,
  Jaccard 0.8), no other stage (`OUR_SETTINGS`), on the demo config's local
  runner with 2 workers;
- DataTrove: `tests/bench/peers_datatrove.py` in the peers environment:
  LanguageFilter(en, 0.65), C4QualityFilter, MinhashDedup stages 1-4 (16 x 8
  hashes, 5-grams), `LocalPipelineExecutor(workers=2)`, the same lid.176 file.
The kept sets differ a little by design: we identify the language of the text
the C4 rules left, DataTrove of the raw text; it counts sentences with spaCy's
sentencizer, we with terminal punctuation.

Each run is measured by `tests.proc_tree` (its wrapper adopts orphans:
DataTrove's forkserver outlives its pool and is counted). Start-up is a run on
`STARTUP_DOCS` documents. Figures (`out/bench/results.json`, as `make bench`):
- `e2e.vs_datatrove_wall` (goal 6), `e2e.vs_datatrove_cpu` (goal 7): median
  wall seconds and CPU seconds (the whole process tree) over `--repeats`
  alternating runs, DataTrove's over ours;
- `e2e.cores_busy` (goal 1.8): our CPU seconds / wall seconds; DataTrove's in
  the reference text;
- `e2e.startup_s`, ours and DataTrove's;
- `e2e.kept_after_filters`, `e2e.kept_after_dedup`: documents each side kept
  (ours first runs the C4 rules, then language ID; DataTrove the reverse);
- `e2e.kept_overlap`: |ours & theirs| / |ours | theirs| of the kept documents.
Details (every run, the kept counts per stage) in `out/bench/peers.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.bench import out_dir, record
from tests.bench.__main__ import print_table, write_results
from tests.conftest import CACHE, SHARED_CORPUS

ROOT = Path(__file__).resolve().parents[2]
PEERS_PYTHON = ROOT / ".cache" / "peers-venv" / "bin" / "python"
LID_MODEL = CACHE / "models" / "lid.176.ftz"
FILES = 4
DOC_CHARS = 16_000
MIN_DOC_CHARS = 500
EXACT_SHARE, NEAR_SHARE, NEAR_EDIT = 0.03, 0.03, 0.01
STARTUP_DOCS = 20
SEED = 18
GOALS = {"wall": 6.0, "cpu": 7.0, "cores_busy": 1.8}
OTHER_SOURCES = ("commoncrawl", "github", "wikipedia", "books", "arxiv", "stackexchange")
OUR_SETTINGS = [
    "corpus_dir=null",
    *(f"sources.{s}.inputs=[]" for s in OTHER_SOURCES),
    "sources.c4.langs=[en]",
    "sources.c4.min_lang_score=0.65",
    "sources.c4.c4_rules=true",
    "clean.c4.variant=fineweb",
    "clean.c4.badwords=null",  # DataTrove's C4QualityFilter has no bad-words rule
    "clean.min_chars=0",
    "sources.commoncrawl.line_dedup=false",
    "sources.c4.near_dedup=web",
    "sources.commoncrawl.near_dedup=null",
    "clean.near_dedup.web.num_perm=128",
    "clean.near_dedup.web.ngram=5",
    "clean.near_dedup.web.threshold=0.8",
    "beam.direct_num_workers=2",
]
_TAGS = re.compile(r"<[^>]+>")
_PARAGRAPHS = re.compile(r"\n[ \t]*\n")


# ---- real text ---------------------------------------------------------------------------


def reader_texts() -> Iterator[tuple[str, str]]:
    """(origin, text) of the documents the project's readers yield from the demo
    inputs and the shared corpus (when present)."""
    from pipeline.core.config import load_config
    from pipeline.sources import books, c4, commoncrawl, stackexchange, wikipedia

    cfg = load_config(ROOT / "configs" / "demo.yaml")
    readers = {
        "c4": lambda p: c4.read(p, cfg),
        "commoncrawl": lambda p: commoncrawl.read(p, cfg),
        "wikipedia": wikipedia.read,
        "books": books.read,
        "stackexchange": stackexchange.read_documents,
    }
    folders = [CACHE / "inputs"] + ([SHARED_CORPUS] if SHARED_CORPUS.is_dir() else [])
    for folder in folders:
        for source, read in readers.items():
            for path in sorted((folder / source).glob("*")):
                if path.name.endswith((".idx", ".idx.bz2", ".wat.gz", ".md")) or "index" in path.name:
                    continue
                try:
                    for doc in read(str(path)):
                        if isinstance(doc, dict):
                            yield source, doc["text"]
                except Exception as e:  # noqa: BLE001 - a file a reader refuses is left out
                    print(f"peers input: {path.name} left out ({type(e).__name__})", file=sys.stderr)


def doc_texts() -> Iterator[tuple[str, str]]:
    """(origin, text) of the documentation files of the installed Debian packages
    and Python distributions: text, Markdown, reStructuredText, HTML (tags
    removed), plain or gzip."""
    roots = [Path("/usr/share/doc"), Path(sysconfig.get_paths()["purelib"])]
    suffixes = (".txt", ".md", ".rst", ".html", ".htm")
    for root in roots:
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            name = path.name.removesuffix(".gz")
            if not (name.endswith(suffixes) or name.startswith(("README", "METADATA", "NEWS"))):
                continue
            try:
                if not path.is_file() or path.stat().st_size > 8 << 20:
                    continue
                data = path.read_bytes()
                if path.suffix == ".gz":
                    data = gzip.decompress(data)
                text = data.decode("utf-8")
            except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
                continue
            if name.endswith((".html", ".htm")):
                from resiliparse.extract.html2text import extract_plain_text

                text = extract_plain_text(text, main_content=False)
            yield "docs", text


def documents(text: str) -> Iterator[str]:
    """`text` cut at blank lines into documents of at most DOC_CHARS characters
    (a longer paragraph is one document), each of at least MIN_DOC_CHARS."""
    piece: list[str] = []
    size = 0
    for para in _PARAGRAPHS.split(text.replace("\r\n", "\n")):
        if size + len(para) > DOC_CHARS and piece:
            yield "\n\n".join(piece)
            piece, size = [], 0
        piece.append(para)
        size += len(para) + 2
    if piece:
        yield "\n\n".join(piece)


def real_documents() -> list[tuple[str, str]]:
    """Distinct real documents (origin, text), in a seeded hash order."""
    seen: dict[str, tuple[str, str]] = {}
    for origin, text in (*reader_texts(), *doc_texts()):
        for doc in documents(text):
            doc = doc.strip()
            if len(doc) >= MIN_DOC_CHARS:
                key = hashlib.sha1(f"{SEED}:{doc}".encode("utf-8", "surrogatepass")).hexdigest()
                seen.setdefault(key, (origin, doc))
    return [seen[k] for k in sorted(seen)]


def build_input(folder: Path, mb: float) -> dict[str, Any]:
    """The JSON lines files of the comparison under `folder` (see the module
    doc); returns what they hold. Rebuilt only when missing or of another size."""
    from tests.bench.bench_dedup import edited_pairs
    from tests.bench.scaled_inputs import swap_words

    summary_path = folder.with_name(folder.name + "-summary.json")  # beside: the folder holds the rows only
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary["mb"] == mb and all((folder / f).is_file() for f in summary["files"]):
            return summary
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    real = real_documents()
    budget = mb * 1e6
    target = budget / (1 + EXACT_SHARE + NEAR_SHARE)  # before the copies
    texts, origins, total = [], {}, 0
    for origin, text in real:
        if total >= target:
            break
        texts.append(text)
        origins[origin] = origins.get(origin, 0) + 1
        total += len(text.encode("utf-8", "surrogatepass"))
    rng = random.Random(SEED)
    rewrites, n_real = 0, len(texts)
    while total < target:  # more text than the machine has: distinct rewrites of it
        text = swap_words(texts[rewrites % n_real], rng)
        texts.append(text)
        rewrites += 1
        total += len(text.encode("utf-8", "surrogatepass"))
    picks = rng.sample(range(len(texts)), round((EXACT_SHARE + NEAR_SHARE) * len(texts)))
    exact = [texts[i] for i in picks[: round(EXACT_SHARE * len(texts))]]
    near_of = [texts[i] for i in picks[len(exact):]]
    near = [d["text"] for d in edited_pairs(near_of, seed=SEED, rates=(NEAR_EDIT,))[0][1::2]]
    docs = texts + exact + near
    order = sorted(range(len(docs)), key=lambda i: hashlib.sha1(f"{SEED}:{i}".encode()).digest())
    files = [f"part-{k:05d}.jsonl" for k in range(FILES)]
    with contextlib.ExitStack() as stack:
        handles = [stack.enter_context(open(folder / f, "w", encoding="utf-8")) for f in files]
        for n, i in enumerate(order):
            row = {"id": f"d{i:07d}", "text": docs[i], "url": f"https://example.org/peers/d{i:07d}",
                   "timestamp": "2024-01-01T00:00:00Z"}
            # ASCII: a reader that splits lines on U+2028 and the like still sees whole rows
            handles[n % FILES].write(json.dumps(row) + "\n")
    summary = {"mb": mb, "files": files, "docs": len(docs), "real_docs": len(texts) - rewrites,
               "rewrites": rewrites, "exact_copies": len(exact), "near_copies": len(near),
               "origins": origins, "bytes": sum((folder / f).stat().st_size for f in files),
               "text_bytes": sum(len(t.encode("utf-8", "surrogatepass")) for t in docs)}
    summary_path.write_text(json.dumps(summary, indent=2))
    return summary


def startup_input(folder: Path, full: Path) -> Path:
    """The first STARTUP_DOCS documents of the input, one file."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(full / "part-00000.jsonl", encoding="utf-8") as f:
        lines = [next(f) for _ in range(STARTUP_DOCS)]
    (folder / "part-00000.jsonl").write_text("".join(lines), encoding="utf-8")
    return folder


# ---- the two sides -----------------------------------------------------------------------


def measured(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """`cmd` run under `tests.proc_tree` (orphans adopted and counted)."""
    wrapper = [sys.executable, "-m", "tests.proc_tree", "--log", str(log), "--", *cmd]
    proc = subprocess.run(wrapper, cwd=ROOT, capture_output=True, text=True, check=True,
                          env={**os.environ, **(env or {})})
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    if m["returncode"] != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"{cmd[:3]} failed ({m['returncode']}), log {log}:\n{tail}")
    return m


def run_ours(inputs: Path, work: Path) -> dict[str, Any]:
    """The clean job on the input files; measurements, kept counts and ids."""
    import pyarrow as pa

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sets = [f"out_dir={work}", f"sources.c4.inputs={json.dumps([str(inputs / '*.jsonl')])}", *OUR_SETTINGS]
    cmd = [sys.executable, "-m", "pipeline", "clean", "--config", "configs/demo.yaml",
           *(a for s in sets for a in ("--set", s))]
    m = measured(cmd, work.with_suffix(".log"))
    m["loadavg"] = os.getloadavg()[0]  # other load on the machine: it slows both sides
    manifest = json.loads((work / "clean" / "manifest.json").read_text())
    c = manifest["counters"].get("c4", {})
    ids = []
    for entry in manifest["files"]:
        with pa.memory_map(str(work / "clean" / entry["file"])) as f:
            ids += [u.rsplit("/", 1)[1] for u in pa.ipc.open_file(f).read_all().column("url").to_pylist()]
    drops = {k.removeprefix("drop."): v for k, v in c.items() if k.startswith("drop.")}
    filters = sum(v for k, v in drops.items() if k == "lang" or k.startswith("c4_") or k == "too_short")
    m["kept"] = {"read": c.get("docs_read", 0), "lid": c.get("docs_read", 0) - drops.get("lang", 0),
                 "filters": c.get("docs_read", 0) - filters, "dedup": c.get("docs_kept", 0)}
    m["drops"], m["ids"] = drops, ids
    shutil.rmtree(work)
    return m


def run_theirs(python: Path, inputs: Path, work: Path) -> dict[str, Any]:
    """DataTrove's pipeline on the input files; measurements, kept counts and ids."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = work.with_suffix(".log")
    cmd = [str(python), str(ROOT / "tests" / "bench" / "peers_datatrove.py"), str(inputs), str(work),
           "--lid-model", str(LID_MODEL), "--workers", "2", "--tasks", str(FILES)]
    # its asset cache (the lid.176 copy) inside the work folder; no hub access
    env = {"HF_HOME": str(work.parent / "hf"), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    m = measured(cmd, log, env)
    m["loadavg"] = os.getloadavg()[0]
    out = json.loads((work / "result.json").read_text())
    m["kept"] = {"lid": out["kept"]["lid"], "filters": out["kept"]["c4"], "dedup": out["kept"]["dedup"]}
    m["ids"] = out["ids"]
    shutil.rmtree(work)
    return m


def _brief(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("seconds", "cpu_seconds", "cpu_by_role", "processes_by_role", "orphans",
                              "tree_peak_mb", "kept", "loadavg")}


def run(python: Path = PEERS_PYTHON, mb: float = 64.0, repeats: int = 5) -> list[dict[str, Any]]:
    if not Path(python).is_file():
        raise SystemExit(f"no peers environment at {python}: `make bench-peers` builds it")
    if not LID_MODEL.is_file():
        raise SystemExit(f"no {LID_MODEL}: `make fetch` brings it")
    work = out_dir() / "peers"
    summary = build_input(work / "input", mb)
    print(f"peers input: {summary['text_bytes'] / 1e6:.1f} MB of text ({summary['bytes'] / 1e6:.1f} MB of "
          f"JSON lines), {summary['docs']} documents "
          f"({summary['real_docs']} real, {summary['rewrites']} rewritten, {summary['exact_copies']} exact and "
          f"{summary['near_copies']} near copies), origins {summary['origins']}", file=sys.stderr, flush=True)
    small = startup_input(work / "startup-input", work / "input")
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "theirs": [], "ours_startup": [], "theirs_startup": []}
    runs["ours_startup"].append(run_ours(small, work / "ours-startup"))
    runs["theirs_startup"].append(run_theirs(python, small, work / "theirs-startup"))
    for i in range(repeats):
        for side, fn in (("ours", lambda: run_ours(work / "input", work / "ours")),
                         ("theirs", lambda: run_theirs(python, work / "input", work / "theirs"))):
            runs[side].append(fn())
            m = runs[side][-1]
            print(f"peers {side} {i + 1}/{repeats}: {m['seconds']:.1f} s wall, {m['cpu_seconds']:.1f} s CPU "
                  f"({m['orphans']} orphans), kept {m['kept']}, load average {m['loadavg']:.1f}",
                  file=sys.stderr, flush=True)
    wall = {s: statistics.median(m["seconds"] for m in runs[s]) for s in ("ours", "theirs")}
    cpu = {s: statistics.median(m["cpu_seconds"] for m in runs[s]) for s in ("ours", "theirs")}
    busy = {s: cpu[s] / wall[s] for s in wall}
    start = {s: runs[f"{s}_startup"][0]["seconds"] for s in wall}
    ours, theirs = runs["ours"][-1], runs["theirs"][-1]
    a, b = set(ours["ids"]), set(theirs["ids"])
    overlap = len(a & b) / len(a | b) if a | b else 1.0
    print(f"peers kept per stage: ours {ours['kept']} (drops {ours['drops']}); DataTrove {theirs['kept']}; "
          f"kept by both {len(a & b)}, ours only {len(a - b)}, DataTrove only {len(b - a)}", file=sys.stderr)
    name = f"DataTrove {datatrove_version(python)}"
    mbs = summary["text_bytes"] / 1e6
    results = [
        record("e2e.vs_datatrove_wall", wall["ours"], "s", f"{name}, {mbs:.0f} MB, 2 workers", wall["theirs"],
               goal=GOALS["wall"], higher_is_better=False),
        record("e2e.vs_datatrove_cpu", cpu["ours"], "cpu-s", f"{name}, process tree", cpu["theirs"],
               goal=GOALS["cpu"], higher_is_better=False),
        record("e2e.cores_busy", busy["ours"], "cores", f"goal; DataTrove {busy['theirs']:.2f}",
               GOALS["cores_busy"], goal=1.0),
        record("e2e.startup_s", start["ours"], "s", f"{name}, {STARTUP_DOCS} documents", start["theirs"],
               higher_is_better=False),
        record("e2e.kept_after_filters", ours["kept"]["filters"], "docs", f"{name} (LID, C4 rules)",
               theirs["kept"]["filters"]),
        record("e2e.kept_after_dedup", ours["kept"]["dedup"], "docs", f"{name} (MinHash)", theirs["kept"]["dedup"]),
        record("e2e.kept_overlap", overlap, "Jaccard", "kept sets: both / either", 1.0),
    ]
    details = {"input": summary, "runs": {s: [_brief(m) for m in ms] for s, ms in runs.items()},
               "kept_both": len(a & b), "kept_ours_only": sorted(a - b), "kept_theirs_only": sorted(b - a)}
    (out_dir() / "peers.json").write_text(json.dumps(details, indent=2))
    return results


def datatrove_version(python: Path) -> str:
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('datatrove'))"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.peers", description=__doc__.splitlines()[0])
    parser.add_argument("--python", type=Path, default=PEERS_PYTHON, help="the peers environment's Python")
    parser.add_argument("--mb", type=float, default=64.0, help="MB of input text")
    parser.add_argument("--repeats", type=int, default=5, help="alternating runs of each side")
    parser.add_argument("--out", type=Path, default=None, help="results file (default out/bench/results.json)")
    args = parser.parse_args(argv)
    results = run(args.python, args.mb, args.repeats)
    out = args.out or out_dir() / "results.json"
    write_results(results, out, partial=True)  # the other benches' figures stay
    print_table(results)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
