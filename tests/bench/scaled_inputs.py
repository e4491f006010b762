"""N times the demo input, as N times as much *distinct* text, in the native formats.

Copy 0 is the demo input as fetched into `<cache>/inputs/<source>/`. Copy k > 0
rewrites every input document with `swap_words`: in each line, seeded swaps of
adjacent plain words (letters, with at most one trailing punctuation mark).
Why this transformation:

- it defeats every dedup stage, so the Nx run has N times the work: the record
  ids change (a book's file name, a repository name, a Wikipedia page id, a
  WARC-Record-ID per copy), exact dedup sees new content hashes, and most
  5-word shingles change: a copy's 5-shingle Jaccard with its original is 0.06
  for the books, 0.09 for the Common Crawl page and 0.08 for the median
  Wikipedia page, far below the 0.8 / 0.9 thresholds of near and book dedup;
  CCNet line dedup finds only lines of one word (the boilerplate it is meant
  to find) repeated;
- it keeps the per-document work representative: the same words in the same
  lines, so lengths, line structure, language (fastText sees the same words and
  character n-grams), the quality heuristics' line statistics and the tokens
  per byte are those of the original, the compressed size within a few percent
  (moved words compress a little worse: +5-7% for gzip and bzip2); markup
  (wikitext links, templates, HTML tags, code punctuation) is never a "plain
  word", so parsers see the same structure. Shuffling the sentences of each
  paragraph instead keeps every shingle inside a sentence: the demo's books keep
  a 5-shingle Jaccard of 0.78 (Alice) and 0.67 (Paradise Lost) with their
  original that way, against 0.06 here, too close to the 0.8 near-dedup
  threshold for shorter pages of long sentences;
- code files also have their lines (below the licence header) rotated by k
  non-blank lines: a short file has few words to move, and copies could
  otherwise coincide (what is left: files of a few lines, about 0.2% of the
  GitHub files at 8x, which exact dedup then drops, as `docs_kept` shows);
- what it does not grow is the vocabulary: N copies hold the same word types,
  where N times more real text would hold more (Heaps' law). The tokenizer's
  BPE merge phase, which works on word types, is therefore a lower bound here.

Only the parts a reader keeps are rewritten: Gutenberg headers and footers, the
licence header of a code file, WARC/HTTP headers and the XML around `<text>`
stay as they are, so what the readers strip is identical in every copy.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import random
import re
import shutil
import uuid
from pathlib import Path

from pipeline.core.io import atomic_write, open_input

SWAP_RATE = 0.5  # per eligible adjacent pair; a swapped word is not swapped again
_SPLIT = re.compile(r"(\s+)")
_PLAIN = re.compile(r"[^\W\d_]+[,.;:!?]?\Z")
_IDENTIFIER = re.compile(r"[\w.]+[,:]?\Z")  # code: names, dotted names, numbers

# {source: glob of the demo's input files} (configs/demo.yaml)
DEMO_PATTERNS = {
    "commoncrawl": "*.warc.gz",
    "github": "*.jsonl.gz",
    "wikipedia": "*.bz2",
    "books": "*.txt",
}
WIKI_PAGE_ID_OFFSET = 1_000_000_000  # copy k's page ids: id + k * offset
_WIKI_ID = re.compile(r"^(\s*<id>)(\d+)(</id>\s*)$")


def swap_words(
    text: str, rng: random.Random, rate: float = SWAP_RATE, word: re.Pattern = _PLAIN
) -> str:
    """`text` with seeded swaps of adjacent plain words on the same line.

    A plain word is letters with at most one trailing `,.;:!?` (so markup,
    numbers and identifiers with digits or underscores never move). Each pair of
    adjacent plain words separated by whitespace without a newline is swapped with
    probability `rate`; the two words then take no part in the next pair. The
    characters, the whitespace and hence every line's length are kept. `word`
    widens what may move (code: `_IDENTIFIER`).
    """
    parts = _SPLIT.split(text)  # words at even indices, whitespace at odd ones
    i = 0
    while i + 2 < len(parts):
        if (
            "\n" not in parts[i + 1]
            and "\r" not in parts[i + 1]
            and word.match(parts[i])
            and word.match(parts[i + 2])
            and rng.random() < rate
        ):
            parts[i], parts[i + 2] = parts[i + 2], parts[i]
            i += 4
        else:
            i += 2
    return "".join(parts)


def _rotate_lines(lines: list[str], k: int) -> str:
    """The lines (with their ends) rotated left by k non-blank lines (blank ones
    would change nothing once exact dedup has collapsed whitespace), as one text;
    a last line without a line end keeps being the text's end."""
    starts = [i for i, line in enumerate(lines) if line.strip()]
    if len(starts) < 2:
        return "".join(lines)
    trailing = lines[-1].endswith("\n")
    lines = [*lines[:-1], lines[-1] if trailing else lines[-1] + "\n"]
    at = starts[k % len(starts)]
    out = "".join(lines[at:] + lines[:at])
    return out if trailing else out[:-1]


def copy_name(name: str, k: int) -> str:
    """File name of copy k: `.copy<k>` before the compound extension, so the
    Wikipedia database name and the demo's input globs still match."""
    stem, dot, ext = name.partition(".")
    return f"{stem}.copy{k}{dot}{ext}"


def _rng(k: int, *key: object) -> random.Random:
    return random.Random("\x1f".join(map(str, (k, *key))))


def rewrite_book(data: bytes, k: int, name: str) -> bytes:
    """A plain-text book with its body's lines rewritten (header and footer kept,
    the encoding and line ends of the original)."""
    from pipeline.sources.books import decode_book, gutenberg_span, normalize_text

    decoded = decode_book(data)
    raw, encoding = decoded.text, decoded.encoding
    norm = normalize_text(raw)
    span = gutenberg_span(norm)
    first, last = norm.count("\n", 0, span.start), norm.count("\n", 0, span.end)
    lines = raw.split("\n")  # CRLF stays in the line
    if len(lines) != norm.count("\n") + 1:  # lone CRs: the line numbers would not match
        lines = norm.split("\n")
    end = last if span.end < len(norm) else len(lines)  # the END marker's line stays
    rng = _rng(k, "books", name)
    # the body's first line stays too: a 1991-93 release finds its start by the title
    for i in range(first + 1, end):
        lines[i] = swap_words(lines[i], rng)
    out = "\n".join(lines)
    if gutenberg_span(normalize_text(out))[:2] != span[:2]:
        raise ValueError(f"{name}: the rewrite moved the book's header or footer")
    return out.encode(encoding)


def rewrite_github(data: bytes, k: int) -> bytes:
    """A `github_repos`-style JSON-lines table: every row's repo renamed (the native
    id is repo/path) and its code rewritten below the licence header."""
    from pipeline.sources.github import (  # the reader's rules
        _PRESERVED,
        strip_license_header,
    )

    out = []
    for n, line in enumerate(io.BytesIO(data)):
        if not line.strip():
            continue
        row = json.loads(line)
        content, path = row.get("content"), row.get("path")
        if isinstance(content, str) and isinstance(path, str):
            lines = content.splitlines(keepends=True)
            kept = strip_license_header(content, path).splitlines(keepends=True)
            # the shebang and encoding lines and the licence header stay, so the reader
            # strips the same text (strip_license_header keeps lines[:first] + lines[head:])
            first = 0
            while first < min(2, len(lines)) and _PRESERVED.match(lines[first]):
                first += 1
            head = len(lines) - len(kept) + first
            rng = _rng(k, "github", n)
            # a short file has few words to move, and copies could coincide: rotating
            # the lines by k keeps them apart
            body = _rotate_lines(lines[head:], k)
            new = swap_words(body, rng)
            if new == body:  # no two plain words side by side (imports, constants)
                new = swap_words(body, rng, word=_IDENTIFIER)
            row["content"] = "".join(lines[:head]) + new
        if isinstance(row.get("repo_name"), str):
            row["repo_name"] = f"{row['repo_name']}-copy{k}"
        out.append(json.dumps(row, ensure_ascii=False) + "\n")
    return "".join(out).encode("utf-8")


def rewrite_wikipedia(text: str, k: int, name: str) -> str:
    """A MediaWiki XML dump: page ids offset by k * WIKI_PAGE_ID_OFFSET, the lines
    inside `<text>` rewritten; the dump's database name (its language) is kept."""
    lines = text.split("\n")
    rng = _rng(k, "wikipedia", name)
    in_text = page_id_next = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped == "<page>":
            page_id_next = True
        elif page_id_next and (m := _WIKI_ID.match(line)):
            lines[i] = f"{m.group(1)}{int(m.group(2)) + k * WIKI_PAGE_ID_OFFSET}{m.group(3)}"
            page_id_next = False
        elif in_text or (stripped.startswith("<text") and not stripped.endswith("/>")):
            start = 0 if in_text else line.find(">") + 1  # after <text ...>
            end = line.find("</text>")
            in_text = end < 0
            end = len(line) if end < 0 else end
            lines[i] = line[:start] + swap_words(line[start:end], rng) + line[end:]
    return "\n".join(lines)


def rewrite_warc(data: bytes, k: int, name: str) -> bytes:
    """A WARC file (gzip per record): each HTML response gets a new WARC-Record-ID
    (the native id) and its body rewritten, served without transfer coding; the
    other records are copied as they are."""
    from warcio.archiveiterator import ArchiveIterator
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    out = io.BytesIO()
    writer = WARCWriter(out, gzip=True)
    rng = _rng(k, "commoncrawl", name)
    for record in ArchiveIterator(io.BytesIO(data)):
        http = record.http_headers
        ctype = (http.get_header("Content-Type") or "") if http else ""
        if record.rec_type != "response" or "html" not in ctype.lower():
            writer.write_record(record)
            continue
        body = record.content_stream().read()  # de-chunked, decoded transfer coding
        charset = re.search(r"charset=([\w-]+)", ctype)
        codec = charset.group(1) if charset else "utf-8"
        body = swap_words(body.decode(codec, "surrogateescape"), rng).encode(codec, "surrogateescape")
        headers = [
            (h, v) for h, v in http.headers
            if h.lower() not in ("transfer-encoding", "content-encoding", "content-length")
        ]
        headers.append(("Content-Length", str(len(body))))
        warc_headers = {h: v for h, v in record.rec_headers.headers}
        old_id = warc_headers.get("WARC-Record-ID", name)
        warc_headers["WARC-Record-ID"] = f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{old_id} copy {k}')}>"
        for h in ("Content-Length", "WARC-Block-Digest", "WARC-Payload-Digest"):
            warc_headers.pop(h, None)
        new = writer.create_warc_record(
            record.rec_headers.get_header("WARC-Target-URI"),
            "response",
            payload=io.BytesIO(body),
            length=len(body),
            warc_headers_dict=warc_headers,
            http_headers=StatusAndHeaders(http.statusline, headers, protocol=http.protocol),
        )
        writer.write_record(new)
    return out.getvalue()


def write_copy(source: str, src: Path, dest_dir: Path, k: int) -> Path:
    """Write copy k of the demo input file `src` into `dest_dir`; returns its path.

    Raises:
        ValueError: `source` is not one of DEMO_PATTERNS' sources.
    """
    dest = dest_dir / copy_name(src.name, k)
    with open_input(str(src)) as f:
        data = f.read()
    if source == "books":
        blob = rewrite_book(data, k, src.name)
    elif source == "github":
        blob = gzip.compress(rewrite_github(data, k), compresslevel=6, mtime=0)
    elif source == "wikipedia":
        from pipeline.sources.wikipedia import _dump_encoding  # the reader's own rule

        codec = _dump_encoding(data[:4096])  # bgwiki's sample is UTF-16 with a BOM
        text = rewrite_wikipedia(data.decode(codec, "surrogateescape"), k, src.name)
        blob = bz2.compress(text.encode(codec, "surrogateescape"))
    elif source == "commoncrawl":
        blob = rewrite_warc(Path(src).read_bytes(), k, src.name)
    else:
        raise ValueError(f"no rewriter for source {source!r}")
    with atomic_write(dest) as f:
        f.write(blob)
    return dest


def thin_out(source: str, data: bytes, every: int) -> bytes:
    """Every `every`-th record of a demo input file (the first one included), in
    its native format: GitHub rows, Wikipedia pages (the dump's header and footer
    kept), a book's first 1/every of lines; a WARC file as it is (the demo's holds
    one page). For the fixed-overhead run: a small input that still goes through
    every reader and model of the real one.
    """
    if source == "github":
        rows = [line for line in io.BytesIO(data) if line.strip()]
        return b"".join(rows[::every])
    if source == "books":
        lines = data.split(b"\n")
        return b"\n".join(lines[: max(1, len(lines) // every)])
    if source == "wikipedia":
        from pipeline.sources.wikipedia import _dump_encoding

        codec = _dump_encoding(data[:4096])
        out, page, keep = [], -1, True
        for line in data.decode(codec, "surrogateescape").split("\n"):
            if line.strip() == "<page>":
                page += 1
                keep = page % every == 0
            if keep or line.strip() == "</mediawiki>":
                out.append(line)
            if line.strip() == "</page>":
                keep = True  # what follows the page (the dump's end) is kept
        return "\n".join(out).encode(codec, "surrogateescape")
    if source == "commoncrawl":
        return data
    raise ValueError(f"no thinning rule for source {source!r}")


def build_sample(inputs: Path, work: Path, every: int) -> dict[str, list[Path]]:
    """`thin_out` of every demo input file, written (in its stored compression)
    under `work/sample<every>/<source>/`: {source: files}."""
    out: dict[str, list[Path]] = {}
    for source, pattern in DEMO_PATTERNS.items():
        out[source] = []
        for src in sorted((inputs / source).glob(pattern)):
            with open_input(str(src)) as f:
                data = thin_out(source, f.read(), every)
            if src.suffix == ".gz" and source != "commoncrawl":
                data = gzip.compress(data, compresslevel=6, mtime=0)
            elif src.suffix == ".bz2":
                data = bz2.compress(data)
            elif source == "commoncrawl":
                data = src.read_bytes()  # gzip per record, as stored
            dest = work / f"sample{every}" / source / src.name
            with atomic_write(dest) as f:
                f.write(data)
            out[source].append(dest)
    return out


def build_copies(inputs: Path, work: Path, n: int) -> dict[int, dict[str, list[Path]]]:
    """Copies 0..n-1 of the demo inputs: {k: {source: files}}.

    Copy 0 is the fetched files themselves; copy k > 0 is written once under
    `work/<version>/copy<k>/<source>/` and kept between runs (the rewrite is
    deterministic); the version is a digest of this module's source, so a changed
    rewrite never reuses stale copies (older versions are removed).
    """
    version = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    for old in work.glob("v*"):
        if old.is_dir() and old.name != f"v{version}":
            shutil.rmtree(old)
    work = work / f"v{version}"
    copies: dict[int, dict[str, list[Path]]] = {}
    for k in range(n):
        copies[k] = {}
        for source, pattern in DEMO_PATTERNS.items():
            originals = sorted((inputs / source).glob(pattern))
            if k == 0:
                copies[k][source] = originals
                continue
            dest_dir = work / f"copy{k}" / source
            files = []
            for src in originals:
                dest = dest_dir / copy_name(src.name, k)
                files.append(dest if dest.exists() else write_copy(source, src, dest_dir, k))
            copies[k][source] = files
    return copies
