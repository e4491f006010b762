"""GitHub source: the BigQuery-style sample exported from the installed
distributions, the reader's licence and file rules, the RedPajama heuristics
and the licence-header stripper, on real installed files."""

from __future__ import annotations

import gzip
import importlib.metadata
import json
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.config import load_config
from pipeline.core.schema import doc_id
from pipeline.fetch import export_installed_distributions
from pipeline.filters.github import (
    CODE_EXTENSIONS,
    alnum_fraction,
    alpha_per_token,
    binary_reason,
    is_license_file,
    max_line_length,
    mean_line_length,
    path_reason,
    quality_reason,
)
from pipeline.sources.base import DeadLetter, Skip
from pipeline.sources.github import read, row_to_document, split, strip_license_header
from pipeline.sources.licenses import (
    LICENSE_TEXT_WINDOW,
    classify_license,
    detect_license_text,
    distribution_license,
    license_family,
)

CFG = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
LLAMA = CFG.sources["github"].licenses  # mit, bsd, apache
FILES_PER_REPO = 5  # a small sample keeps the export under a second


def installed(dist: str, path: str) -> str:
    """Text of a file of an installed distribution (located, not imported)."""
    return Path(importlib.metadata.distribution(dist).locate_file(path)).read_text("utf-8")


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> tuple[Path, dict, list[dict]]:
    out = tmp_path_factory.mktemp("github") / "site-packages.jsonl.gz"
    counts = export_installed_distributions(out, max_files_per_repo=FILES_PER_REPO)
    rows = [json.loads(line) for line in gzip.open(out)]
    return out, counts, rows


# --- export -------------------------------------------------------------------


def test_export_is_byte_identical_twice(export, tmp_path):
    first, _, _ = export
    again = tmp_path / "again.jsonl.gz"
    export_installed_distributions(again, max_files_per_repo=FILES_PER_REPO)
    assert again.read_bytes() == first.read_bytes()


def test_export_rows(export):
    _, counts, rows = export
    assert counts["files"] == len(rows) == counts["code_files"] + counts["license_files"]
    assert counts["repos"] == len({r["repo_name"] for r in rows})
    keys = [(r["repo_name"], r["path"]) for r in rows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    per_repo = defaultdict(list)
    for r in rows:
        assert set(r) == {"repo_name", "path", "license", "language", "content", "size"}
        per_repo[r["repo_name"]].append(r)
    for repo, repo_rows in per_repo.items():
        code = [r for r in repo_rows if r["language"]]
        assert len(code) <= FILES_PER_REPO, repo
        assert all(Path(r["path"]).suffix in CODE_EXTENSIONS for r in code)
    # A known MIT and a known BSD distribution, licences as their metadata says.
    assert {r["license"] for r in per_repo["pytest"]} == {"MIT"}
    assert {r["license"] for r in per_repo["click"]} == {"BSD-3-Clause"}
    # The content is the installed file's, byte for byte.
    click_code = [r for r in per_repo["click"] if r["language"] == "Python"]
    assert len(click_code) == FILES_PER_REPO
    for r in click_code:
        assert r["content"] == installed("click", r["path"])
        assert r["size"] == len(r["content"].encode("utf-8"))
    # Each distribution's licence file rides along (for the reader to skip).
    click_license = [r for r in per_repo["click"] if is_license_file(r["path"])]
    assert len(click_license) == 1 and "Redistribution and use" in click_license[0]["content"]
    # The standard library is one more repository, under the PSF licence.
    assert {r["license"] for r in per_repo["cpython-stdlib"]} == {"PSF-2.0"}


def test_distribution_license_order():
    meta = lambda name: importlib.metadata.distribution(name).metadata  # noqa: E731
    assert distribution_license(meta("click")) == "BSD-3-Clause"  # License-Expression
    assert distribution_license(meta("python-dateutil")) == (  # two classifiers: a choice
        "License :: OSI Approved :: BSD License OR "
        "License :: OSI Approved :: Apache Software License"
    )
    assert distribution_license(meta("protobuf")) == "3-Clause BSD License"  # License field


# --- read ---------------------------------------------------------------------


def test_read_keeps_mit_bsd_apache_only(export):
    path, _, rows = export
    items = list(read(str(path), CFG))
    assert len(items) == len(rows)  # one outcome per row, none dropped silently
    outcome = defaultdict(Counter)
    for row, item in zip(rows, items):
        assert not isinstance(item, DeadLetter)
        outcome[row["repo_name"]]["doc" if isinstance(item, dict) else item.reason] += 1
    kept = {repo for repo, c in outcome.items() if c["doc"]}
    assert {"pytest", "click", "requests", "cryptography", "python-dateutil"} <= kept
    # MPL (certifi; tqdm is MPL-2.0 AND MIT), PSF, ISC, numpy's AND with Zlib/CC0.
    for repo in ("certifi", "tqdm", "typing_extensions", "dnspython", "numpy", "cpython-stdlib"):
        assert set(outcome[repo]) == {"license"}, repo
    assert outcome["click"]["license_file"] == 1 and outcome["click"]["doc"] == FILES_PER_REPO

    doc = next(
        d for r, d in zip(rows, items) if isinstance(d, dict) and r["repo_name"] == "click"
    )
    meta = json.loads(doc["meta"])
    assert meta["repo_name"] == "click" and meta["license_family"] == "bsd"
    assert meta["license"] == "BSD-3-Clause" and meta["language"] == "Python"
    assert doc["id"] == doc_id("github", f"click/{meta['path']}")
    assert doc["url"] == f"github://click/{meta['path']}"
    assert doc["lang"] == "" and doc["source"] == "github"


def test_read_parquet_matches_jsonl(export, tmp_path):
    path, _, rows = export
    subset = [r for r in rows if r["repo_name"] in ("certifi", "click", "pytest")]
    parquet = tmp_path / "github.parquet"
    pq.write_table(pa.Table.from_pylist(subset), parquet)
    jsonl = tmp_path / "github.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in subset), encoding="utf-8")
    from_parquet = list(read(str(parquet), CFG))
    assert from_parquet == list(read(str(jsonl), CFG))
    assert sum(isinstance(x, dict) for x in from_parquet) == 2 * FILES_PER_REPO


@pytest.mark.parametrize("split_bytes", [1, 200_000])
def test_read_in_spans_matches_the_whole_read(export, tmp_path, split_bytes):
    """Parquet by row groups, plain JSON lines by line ranges: each span's rows
    are numbered as in the whole file (the broken row's dead letter names it)."""
    _, _, rows = export
    subset = [dict(r) for r in rows[:200]]
    subset[37]["repo_name"] = None
    parquet = tmp_path / "github.parquet"
    pq.write_table(pa.Table.from_pylist(subset), parquet, row_group_size=16)
    jsonl = tmp_path / "github.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in subset), encoding="utf-8")
    cfg = CFG.model_copy(update={"clean": CFG.clean.model_copy(update={"split_bytes": split_bytes})})
    for path in (parquet, jsonl):
        whole = list(read(str(path), CFG))
        assert len(whole) == 200 and whole[37] == DeadLetter("github", str(path), "line 38", whole[37].reason)
        spans = split(str(path), path.stat().st_size, cfg)
        assert len(spans) == (13 if path == parquet else 200) if split_bytes == 1 else 2 < len(spans) < 13
        assert [r for span in spans for r in read(str(path), CFG, span)] == whole
    gz = export[0]
    assert split(str(gz), gz.stat().st_size, cfg) == []  # gzip: read whole


def test_row_rules_on_real_content(export):
    _, _, rows = export
    row = next(r for r in rows if r["repo_name"] == "click" and r["language"] == "Python")

    def outcome(**change):
        item = row_to_document({**row, **change}, LLAMA, "t.jsonl", 1)
        return item.reason if isinstance(item, Skip) else type(item).__name__

    assert outcome() == "dict"
    assert outcome(path="click/core.txt") == "extension"
    assert outcome(content=row["content"][:100] + "\x00\x00\x01" + row["content"][100:]) == "binary"
    assert outcome(content=None, binary=True) == "binary"
    assert outcome(license="MPL-2.0") == "license"
    assert outcome(path="COPYING") == "license_file"
    assert outcome(content="# Copyright 2024 X. Licensed under MIT.\n\n") == "empty"
    dead = row_to_document({"path": "a.py", "content": "x = 1\n"}, LLAMA, "t.jsonl", 7)
    assert isinstance(dead, DeadLetter) and dead.record == "line 7"


# --- licences -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name, family",
    [
        ("MIT", "mit"),
        ("MIT-0", "mit"),
        ("MIT-CMU", "mit"),
        ("License :: OSI Approved :: MIT License", "mit"),
        ("BSD-3-Clause", "bsd"),
        ("0BSD", "bsd"),
        ("3-Clause BSD License", "bsd"),
        ("License :: OSI Approved :: BSD License", "bsd"),
        ("Apache-2.0", "apache"),
        ("Apache 2.0", "apache"),
        ("License :: OSI Approved :: Apache Software License", "apache"),
        ("Apache-2.0 WITH LLVM-exception", "apache"),
        ("MPL-2.0", "mpl"),
        ("License :: OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)", "mpl"),
        ("GPL-3.0-or-later", "gpl"),
        ("License :: OSI Approved :: GNU General Public License v2 or later (GPLv2+)", "gpl"),
        ("LGPL-2.1-only", "lgpl"),
        ("License :: OSI Approved :: GNU Lesser General Public License v3 (LGPLv3)", "lgpl"),
        ("AGPL-3.0", "agpl"),
        ("ISC", "isc"),
        ("License :: OSI Approved :: ISC License (ISCL)", "isc"),
        ("PSF-2.0", "psf"),
        ("License :: OSI Approved :: Python Software Foundation License", "psf"),
        ("Zlib", "zlib"),
        ("CC0-1.0", "cc0"),
        ("BSL-1.0", "bsl"),
        ("Dual License", "unknown"),
        ("UNKNOWN", "unknown"),
        ("", "unknown"),
    ],
)
def test_license_family(name, family):
    assert license_family(name) == family


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("MIT", (True, "mit")),
        ("Apache-2.0 OR BSD-3-Clause", (True, "apache")),  # cryptography
        ("MPL-2.0 OR MIT", (True, "mit")),  # any option kept
        ("MPL-2.0 AND MIT", (False, "mpl")),  # tqdm: every part must be kept
        ("BSD-3-Clause AND 0BSD AND MIT AND Zlib AND CC0-1.0", (False, "zlib")),  # numpy
        ("Apache-2.0 AND Apache-2.0 WITH LLVM-exception AND BSD-2-Clause AND "
         "BSD-3-Clause AND BSL-1.0 AND MIT", (False, "bsl")),  # torch
        ("(MIT OR GPL-2.0) AND BSD-3-Clause", (True, "mit")),
        ("License :: OSI Approved :: BSD License OR "
         "License :: OSI Approved :: Apache Software License", (True, "bsd")),
        ("License :: OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)", (False, "mpl")),
        ("BSD; GPL; Public Domain; PSF", (False, "gpl")),  # docutils' License field
        ("PSF-2.0", (False, "psf")),
        ("UNKNOWN", (False, "unknown")),
        ("(MIT", (False, "unknown")),  # unbalanced: not trusted
    ],
)
def test_classify_license(expression, expected):
    assert classify_license(expression, LLAMA) == expected


def test_classify_license_follows_the_config():
    numpy = "BSD-3-Clause AND 0BSD AND MIT AND Zlib AND CC0-1.0"
    assert classify_license(numpy, ["mit", "bsd", "apache", "zlib", "cc0"]) == (True, "bsd")


def test_the_file_rules_are_pure_functions_the_reader_applies(export):
    """`pipeline.filters.github`'s rules answer a reason or None; the reader
    skips a row with the first reason a rule gives."""
    _, _, rows = export
    row = next(r for r in rows if r["repo_name"] == "click" and r["language"] == "Python")
    pb2 = installed("protobuf", "google/protobuf/struct_pb2.py")
    assert row_to_document({**row, "content": pb2}, LLAMA, "t.jsonl", 1) == Skip("github", "max_line_length")
    assert quality_reason(pb2, CFG.sources["github"]) == "max_line_length" and quality_reason(row["content"]) is None
    assert path_reason("click/LICENSE.txt") == "license_file" and path_reason("click/core.py") is None
    assert binary_reason("a\x00b") == "binary" and binary_reason(row["content"]) is None


# --- heuristics and header removal on real installed files ---------------------


def test_heuristics_on_real_files():
    pb2 = installed("protobuf", "google/protobuf/struct_pb2.py")  # serialized descriptor
    assert max_line_length(pb2) > 1000 and quality_reason(pb2) == "max_line_length"
    ident = installed("Jinja2", "jinja2/_identifier.py")  # one generated regex
    assert max_line_length(ident) <= 1000 and mean_line_length(ident) > 100
    assert quality_reason(ident) == "mean_line_length"
    plots = installed("sympy", "sympy/plotting/tests/test_textplot.py")  # ASCII-art plots
    assert alnum_fraction(plots) < 0.25 and quality_reason(plots) == "alnum_fraction"
    coeffs = installed("scipy", "scipy/integrate/_ivp/dop853_coefficients.py")  # numbers
    assert alnum_fraction(coeffs) >= 0.25 and alpha_per_token(coeffs) < 1.5
    assert quality_reason(coeffs) == "alpha_per_token"
    assert quality_reason(installed("click", "click/core.py")) is None


def test_strip_license_header_on_real_files():
    beam = installed("apache-beam", "apache_beam/io/filesystems.py")  # 16-line ASF header
    assert beam.startswith("#\n# Licensed to the Apache Software Foundation")
    stripped = strip_license_header(beam, "apache_beam/io/filesystems.py")
    assert stripped.startswith(
        '"""FileSystems interface class for accessing the correct filesystem"""\n'
    )
    assert stripped == beam[beam.index('"""FileSystems'):]

    grpc = strip_license_header(installed("grpcio", "grpc/__init__.py"), "grpc/__init__.py")
    assert grpc.startswith('"""gRPC\'s Python API."""\n\nimport abc\n')

    # Shebang kept; the `#` notice and the blank line after it go.
    path = "beartype/door/__init__.py"
    beartype = strip_license_header(installed("beartype", path), path)
    assert beartype.startswith(
        "#!/usr/bin/env python3\n'''\n"
        "**Beartype Decidedly Object-Oriented Runtime-checking (DOOR) API.**"
    )

    # A module docstring that holds the notice (Pygments' :copyright: field).
    path = "pygments/lexers/comal.py"
    assert strip_license_header(installed("Pygments", path), path).startswith("import re\n")

    # C: a /* MIT */ block, and a run of // lines.
    path = "mwparserfromhell/parser/ctokenizer/tokens.c"
    assert strip_license_header(installed("mwparserfromhell", path), path).startswith(
        '#include "tokens.h"\n'
    )
    path = "grpc/_cython/_cygrpc/private_key_signing/private_key_signer_py_wrapper.h"
    assert strip_license_header(installed("grpcio", path), path).startswith(
        "#ifndef GRPC_PRIVATE_KEY_SIGNER_PY_WRAPPER_H\n"
    )

    # No header: unchanged.
    warcio = installed("warcio", "warcio/__init__.py")
    assert strip_license_header(warcio, "warcio/__init__.py") == warcio


def test_strip_keeps_encoding_line_and_c_preprocessor():
    assert strip_license_header("# coding=utf-8\n# Copyright X\n\nx = 1\n", "a.py") == (
        "# coding=utf-8\nx = 1\n"
    )
    # In C `#` is the preprocessor, not a comment.
    c = "#include <a.h>\n/* Copyright X */\nint x;\n"
    assert strip_license_header(c, "a.c") == c
    # A leading comment that is not a notice stays.
    doc = "# Helpers for parsing.\nimport re\n"
    assert strip_license_header(doc, "a.py") == doc


# --- licences from licence texts ------------------------------------------------


def licence_text(dist: str, name: str) -> str:
    """The top licence file `name` of an installed distribution's .dist-info
    (numpy's also holds its bundled code's, deeper down)."""
    path = min(
        (f for f in importlib.metadata.distribution(dist).files
         if ".dist-info/" in str(f) and f.name == name),
        key=lambda f: len(f.parts),
    )
    return Path(importlib.metadata.distribution(dist).locate_file(path)).read_text("utf-8")


@pytest.mark.parametrize(
    "dist, name, spdx",
    [
        ("click", "LICENSE.txt", "BSD-3-Clause"),
        ("pytest", "LICENSE", "MIT"),
        ("requests", "LICENSE", "Apache-2.0"),
        ("warcio", "LICENSE", "Apache-2.0"),  # the Apache text without its title line
        ("Pygments", "LICENSE", "BSD-2-Clause"),
        ("cryptography", "LICENSE.BSD", "BSD-3-Clause"),
        ("cryptography", "LICENSE", "UNKNOWN"),  # "either of the licenses found in ..."
        ("certifi", "LICENSE", "MPL-2.0"),
        ("dnspython", "LICENSE", "ISC"),
        ("typing_extensions", "LICENSE", "PSF-2.0"),  # after the history of Python
        ("pillow", "LICENSE", "HPND"),  # PIL's licence, then bundled ones
        ("numpy", "LICENSE.txt", "BSD-3-Clause"),  # then GPL-3.0 (bundled libgfortran)
        ("matplotlib", "LICENSE", "UNKNOWN"),  # its own PSF-like text; MIT only at 15,274
    ],
)
def test_detect_license_text_on_installed_licence_files(dist, name, spdx):
    assert detect_license_text(licence_text(dist, name)) == spdx


def test_detect_license_text_rules():
    mit = licence_text("pytest", "LICENSE")
    commented = "".join(f"# {line}\n" for line in mit.splitlines())  # as a source header
    assert detect_license_text(commented) == "MIT"
    bsd3 = licence_text("click", "LICENSE.txt")
    # without its endorsement clause (3.) the same text is BSD-2-Clause
    clause3 = bsd3.index("3.")
    assert detect_license_text(bsd3[:clause3] + bsd3[bsd3.index("THIS SOFTWARE"):]) == "BSD-2-Clause"
    assert detect_license_text("Licensed under the MIT License.") == "UNKNOWN"  # a notice
    assert detect_license_text("x\n" * (LICENSE_TEXT_WINDOW // 2) + mit) == "UNKNOWN"


# --- GitHub: local repositories -------------------------------------------------


def copy_distribution(dist: str, top: str, into: Path, licence: str | None) -> list[str]:
    """Lay out an installed distribution's files under `top/` as a repository
    checkout in `into` (the licence file named `licence` of its .dist-info at
    the top); returns the copied paths."""
    d = importlib.metadata.distribution(dist)
    copied = []
    for f in d.files:
        rel = f.as_posix()
        if rel.startswith(f"{top}/") and "__pycache__" not in rel:
            target = into / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(Path(d.locate_file(f)).read_bytes())
            copied.append(rel)
    if licence:
        (into / licence).write_text(licence_text(dist, licence), encoding="utf-8")
    return sorted(copied)


def by_reason(items: list) -> Counter:
    return Counter(x.reason if isinstance(x, (Skip, DeadLetter)) else "doc" for x in items)


def test_local_repository_with_its_licence_file(tmp_path):
    root = tmp_path / "click"
    copied = copy_distribution("click", "click", root, "LICENSE.txt")
    assert len(copied) == 18 and "click/py.typed" in copied  # 17 .py files and a marker
    items = list(read(str(root), CFG))
    # LICENSE.txt, then click/*.py and click/py.typed in path order
    assert len(items) == 19 and items[0] == Skip("github", "license_file")
    assert by_reason(items) == {"doc": 17, "license_file": 1, "extension": 1}
    core = next(d for d in items if isinstance(d, dict) and d["url"] == "github://click/click/core.py")
    content = (root / "click" / "core.py").read_text("utf-8")
    assert strip_license_header(content, "click/core.py") == content  # no header
    assert core["text"] == content.strip()  # a Document's edges carry no whitespace
    assert core["id"] == doc_id("github", "click/click/core.py")
    assert json.loads(core["meta"]) == {
        "repo_name": "click",
        "path": "click/core.py",
        "license": "BSD-3-Clause",
        "license_family": "bsd",
        "license_source": "file:LICENSE.txt",
        "language": "Python",
    }
    # The same repository under an MPL-2.0 licence text: nothing kept.
    (root / "LICENSE.txt").write_text(licence_text("certifi", "LICENSE"), encoding="utf-8")
    assert by_reason(read(str(root), CFG)) == {"license": 19}


def test_installed_distribution_reads_like_its_checkout(tmp_path):
    click = importlib.metadata.distribution("click")
    dist_info = Path(click.locate_file(f"click-{click.version}.dist-info"))
    installed = list(read(str(dist_info), CFG))
    # RECORD lists click/*.py, py.typed and the bytecode (passed over)
    assert by_reason(installed) == {"doc": 17, "extension": 1}
    checkout = tmp_path / "click"
    copy_distribution("click", "click", checkout, "LICENSE.txt")
    assert [d for d in installed if isinstance(d, dict)] == [
        d for d in read(str(checkout), CFG) if isinstance(d, dict)
    ]


def test_dual_licence_files_and_metadata_fallback(tmp_path):
    # cryptography's LICENSE names two files: LICENSE.APACHE or LICENSE.BSD.
    crypto = tmp_path / "cryptography"
    copy_distribution("cryptography", "cryptography/hazmat/primitives/kdf", crypto, None)
    for name in ("LICENSE", "LICENSE.APACHE", "LICENSE.BSD"):
        (crypto / name).write_text(licence_text("cryptography", name), encoding="utf-8")
    items = list(read(str(crypto), CFG))
    docs = [d for d in items if isinstance(d, dict)]
    assert docs and by_reason(items)["license_file"] == 3
    meta = json.loads(docs[0]["meta"])
    assert (meta["license"], meta["license_source"]) == (
        "Apache-2.0 OR BSD-3-Clause", "files:LICENSE.APACHE,LICENSE.BSD"
    )
    # No licence file, but the sdist's PKG-INFO: the metadata decides (pytest: MIT).
    sdist = tmp_path / "pytest-sdist"
    copy_distribution("pytest", "_pytest/mark", sdist, None)
    pytest_dist = importlib.metadata.distribution("pytest")
    (sdist / "PKG-INFO").write_text(pytest_dist.read_text("METADATA"), encoding="utf-8")
    docs = [d for d in read(str(sdist), CFG) if isinstance(d, dict)]
    assert docs and {json.loads(d["meta"])["license_source"] for d in docs} == {"metadata"}
    assert docs[0]["url"].startswith("github://pytest/_pytest/mark/")  # repo: metadata Name
    # Neither: UNKNOWN, dropped.
    (sdist / "PKG-INFO").unlink()
    assert set(by_reason(read(str(sdist), CFG))) == {"license"}
