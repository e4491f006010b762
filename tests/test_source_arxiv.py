"""arXiv reader: comment stripping, input merging, macro expansion and archive
safety on small LaTeX projects written here, then the real papers of the shared
corpus. Expected openings were copied by hand from the raw .tex files."""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from pipeline.core.schema import doc_id
from pipeline.sources import arxiv
from pipeline.sources.base import Count, DeadLetter, Skip


def make_tar(path: Path, members: dict[str, str]) -> str:
    """A tar.gz at `path` with the given text members, as arXiv serves them."""
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def read_one(path: str):
    """The one record of a paper; a Count of its missing inputs must match its meta."""
    records = list(arxiv.read(path, None))
    count = None
    if isinstance(records[0], Count):
        count, *records = records
        assert count == Count("arxiv", "input_missing", len(json.loads(records[0]["meta"])["inputs_missing"]))
    assert len(records) == 1, records
    if isinstance(records[0], dict):
        assert (count is not None) == bool(json.loads(records[0]["meta"])["inputs_missing"])
    return records[0]


MAIN = r"""\documentclass{article}
\newcommand{\A}{Alpha}
\begin{document}
\title{Not kept}
\maketitle
\section{Intro}
\input{sec/a}
% \input{sec/old}
\end{document}
after the end
"""


# --- (a) comments -------------------------------------------------------------------


def test_comments_removed_by_backslash_parity():
    tex = "frequency 60\\% and 1\\%). Done.\na \\\\% drop me\nb \\\\\\% keep me\n% whole-line comment\n"
    assert arxiv.strip_comments(tex) == (
        "frequency 60\\% and 1\\%). Done.\n"  # escaped: unchanged
        "a \\\\\n"  # `\\` is a line break, so the `%` after it starts a comment
        "b \\\\\\% keep me\n"  # `\\` then `\%`: text
    )  # the whole-line comment is gone, line and all


def test_comment_environment_and_verbatim():
    tex = (
        "keep 1\n"
        "\\begin{comment}\n50% of this \\end{document} goes\n\\end{comment}\n"
        "keep 2 % note\n"
        "\\begin{verbatim}\nprintf(\"%d\")\n\\end{verbatim}\n"
        "\\verb|50%| and \\url{http://x.org/a%20b} stay % but not this\n"
    )
    assert arxiv.strip_comments(tex) == (
        "keep 1\n"
        "keep 2\n"
        "\\begin{verbatim}\nprintf(\"%d\")\n\\end{verbatim}\n"
        "\\verb|50%| and \\url{http://x.org/a%20b} stay\n"
    )


# --- (b) \input merging, (e) cycles and missing files -----------------------------------


def test_inputs_merged_recursively_and_commented_input_ignored(tmp_path):
    path = make_tar(
        tmp_path / "arXiv-2101.00001_src.tar.gz",
        {
            "main.tex": MAIN,
            "sec/a.tex": "Text A, see \\A.\n\\input{sec/b}\n",
            "sec/b.tex": "Text B.\n",
            "sec/old.tex": "Text OLD.\n",
        },
    )
    doc = read_one(path)
    assert doc["text"] == "\\section{Intro}\nText A, see Alpha.\nText B."
    assert doc["id"] == doc_id("arxiv", "2101.00001")
    assert doc["url"] == "https://arxiv.org/abs/2101.00001"
    assert doc["lang"] == ""
    assert json.loads(doc["meta"]) == {
        "arxiv_id": "2101.00001",
        "main_file": "main.tex",
        "files_merged": ["main.tex", "sec/a.tex", "sec/b.tex"],
        "files_missing": [],
        "inputs_missing": [],
        "macros_expanded": 1,
    }


def test_directory_reads_like_the_tar(tmp_path):
    files = {"main.tex": MAIN, "sec/a.tex": "Text A.\n\\input{sec/b}\n", "sec/b.tex": "Text B.\n"}
    for name, text in files.items():
        (tmp_path / "paper" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "paper" / name).write_text(text)
    doc = read_one(str(tmp_path / "paper"))
    assert doc["text"] == "\\section{Intro}\nText A.\nText B."
    assert doc["url"] == str(tmp_path / "paper")  # no arXiv id in the name


def test_input_cycle_is_a_dead_letter(tmp_path):
    main = MAIN.replace("\\input{sec/a}", "\\input{a}")
    path = make_tar(tmp_path / "p.tar.gz", {"main.tex": main, "a.tex": "A \\input{b}", "b.tex": "B \\input{a}"})
    record = read_one(path)
    assert record == DeadLetter("arxiv", path, "p.tar.gz", "\\input cycle: a.tex -> b.tex -> a.tex")


def test_missing_input_in_the_body_leaves_the_paper_without_it(tmp_path):
    doc = read_one(make_tar(tmp_path / "p.tar.gz", {"main.tex": MAIN}))
    assert doc["text"] == "\\section{Intro}"
    meta = json.loads(doc["meta"])
    assert (meta["files_missing"], meta["inputs_missing"]) == (["sec/a.tex"], ["sec/a.tex"])


# A listing the template writes at build time (`\jobname.listing`), which the
# bundle does not hold, input once directly and once through a macro.
LISTING_MAIN = r"""\documentclass{article}
\newcommand{\listing}{\input{\jobname.listing}}
\begin{document}
\section{Code}
The program:
\input{\jobname.listing}
\section{Method}
\input{method}
Again:
\listing
Done.
\end{document}
"""


def test_generated_listing_missing_keeps_the_paper(tmp_path):
    path = make_tar(
        tmp_path / "arXiv-2101.00002_src.tar.gz",
        {"paper.tex": LISTING_MAIN, "method.tex": "We compute.\n"},
    )
    doc = read_one(path)
    assert doc["text"] == (
        "\\section{Code}\nThe program:\n\n\\section{Method}\nWe compute.\n\nAgain:\n\nDone."
    )
    assert "\x00" not in doc["text"]  # no placeholder of the missing file is left
    assert json.loads(doc["meta"]) == {
        "arxiv_id": "2101.00002",
        "main_file": "paper.tex",
        "files_merged": ["paper.tex", "method.tex"],
        "files_missing": ["paper.listing", "paper.listing"],  # TeX's \jobname: paper
        "inputs_missing": ["paper.listing"],
        "macros_expanded": 1,
    }
    # shipped with the bundle, the listing is merged in both places
    path = make_tar(
        tmp_path / "with-listing.tar.gz",
        {"paper.tex": LISTING_MAIN, "method.tex": "We compute.\n", "paper.listing": "print(1)\n"},
    )
    doc = read_one(path)
    assert doc["text"].count("print(1)") == 2
    assert json.loads(doc["meta"])["inputs_missing"] == []


def test_input_cycle_beside_a_missing_input_is_still_a_dead_letter(tmp_path):
    main = MAIN.replace("\\input{sec/a}", "\\input{gone}\n\\input{a}")
    members = {"main.tex": main, "a.tex": "A \\input{b}", "b.tex": "B \\input{a}"}
    path = make_tar(tmp_path / "p.tar.gz", members)
    assert read_one(path) == DeadLetter("arxiv", path, "p.tar.gz", "\\input cycle: a.tex -> b.tex -> a.tex")


def test_missing_include_and_preamble_input_are_tolerated(tmp_path):
    # LaTeX only warns about a missing \include; a missing \input in the preamble
    # is a distribution file (bmpsize-hack.tex in the HoTT book) and is cut anyway.
    main = MAIN.replace("\\input{sec/a}", "\\include{chap}").replace(
        "\\begin{document}", "\\input{hack}\n\\begin{document}"
    )
    doc = read_one(make_tar(tmp_path / "p.tar.gz", {"main.tex": main}))
    assert doc["text"] == "\\section{Intro}"
    assert json.loads(doc["meta"])["files_missing"] == ["hack.tex", "chap.tex"]
    assert json.loads(doc["meta"])["inputs_missing"] == []  # no hole in the kept text


# --- (c) archive safety -------------------------------------------------------------------


def test_member_outside_the_archive_is_a_dead_letter(tmp_path):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    path = make_tar(work / "evil.tar.gz", {"main.tex": MAIN, "../../evil.tex": "\\documentclass{x}"})
    assert read_one(path) == DeadLetter("arxiv", path, "evil.tar.gz", "unsafe member path ../../evil.tex")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "evil.tar.gz"]  # nothing written


def test_link_outside_the_archive_is_a_dead_letter(tmp_path):
    path = tmp_path / "link.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("main.tex")
        info.type, info.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        tar.addfile(info)
    assert read_one(str(path)).reason == "unsafe link main.tex -> ../../../etc/passwd"


def test_decompression_bomb_and_member_count_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(arxiv, "MAX_ARCHIVE_BYTES", 64 * 1024)
    bomb = make_tar(tmp_path / "bomb.tar.gz", {"main.tex": MAIN, "zeros.tex": "0" * (1 << 20)})
    assert Path(bomb).stat().st_size < 8 * 1024  # a small file that inflates 100x
    assert read_one(bomb).reason == "archive larger than 65536 bytes uncompressed"

    monkeypatch.setattr(arxiv, "MAX_ARCHIVE_MEMBERS", 2)
    many = make_tar(tmp_path / "many.tar.gz", {"main.tex": MAIN, "a.tex": "a", "b.tex": "b"})
    assert read_one(many).reason == "archive has more than 2 members"


# --- (d) macros ------------------------------------------------------------------------------


def test_user_macros_expanded_with_arguments():
    tex = (
        "\\newcommand{\\R}{\\mathbb{R}}\n"
        "\\newcommand{\\pair}[2]{(#1,#2)}\n"
        "\\newcommand{\\opt}[2][x]{#1+#2}\n"
        "\\def\\eps{\\varepsilon}\n"
        "\\def\\loop{\\loop a}\n"
        "$\\R^n$, \\pair{a}{b}, \\pair ab, \\opt{y}, \\opt[z]{y}, $\\eps$, \\Real, \\\\R\n"
        "\\loop\n"
    )
    assert arxiv.expand_user_macros(tex) == (
        "$\\mathbb{R}^n$, (a,b), (a,b), x+y, z+y, $\\varepsilon$, \\Real, \\\\R\n"
        # recursive: expanded MAX_MACRO_DEPTH times, then the name is left as is
        "\\loop" + " a" * arxiv.MAX_MACRO_DEPTH + "\n"
    )
    assert arxiv.MAX_MACRO_DEPTH == 32


def test_macro_alias_reads_arguments_after_its_expansion():
    tex = "\\newcommand{\\two}{\\pair}\n\\newcommand{\\pair}[2]{(#1,#2)}\n\\let\\p\\pair\n\\two{a}{b} \\p xy \\two"
    assert arxiv.expand_user_macros(tex) == "(a,b) (x,y) \\pair"


def test_exponential_macros_are_bounded(monkeypatch):
    monkeypatch.setattr(arxiv, "MAX_MACRO_EXPANSIONS", 1000)
    defs = "".join(f"\\def\\m{chr(97 + i)}{{\\m{chr(98 + i)}\\m{chr(98 + i)}}}" for i in range(20))
    with pytest.raises(arxiv.LatexError, match="macro expansion exceeds 1000 expansions"):
        arxiv.expand_user_macros(defs + "\\ma")


def test_programming_macros_left_as_written():
    tex = "\\def\\lam#1{\\lambda\\@ifnextchar\\bgroup{#1}{}}\n\\lam{x}"
    assert arxiv.expand_user_macros(tex) == "\\lam{x}"


def test_arxiv_ids_from_file_names():
    assert arxiv.arxiv_id_from_filename("arXiv-1602.00123_src.tar.gz") == "1602.00123"
    assert arxiv.arxiv_id_from_filename("2301.12345v2.tar.gz") == "2301.12345"
    assert arxiv.arxiv_id_from_filename("hep-th9901001.gz") == "hep-th/9901001"
    assert arxiv.arxiv_id_from_filename("paper.tex") == ""


# --- (f) real papers ----------------------------------------------------------------------------

PAIRING_OPENING = (
    "\\section{SUPPLEMENTAL MATERIAL}\n\n"
    "\\subsection*{Peak-Dip Structure In Single Layer HgBa$_2$Cu$_4$O$_6$}\n\n"
    "In Fig.1 is displayed the normal (100 K) and the superconducting (12 K) "
    "\\ensuremath{B_{1g}\\,} Raman responses of a slightly UD HgBa$_2$Cu$_4$O$_6$ (Hg-1201) "
    "single crystal with a \\ensuremath{T_{\\rm c}\\,}=92 K  (\\ensuremath{T_{\\rm c}\\,} (max) =96 K)."
)


def test_real_arxiv_bundle(shared_corpus):
    path = str(shared_corpus / "arxiv" / "arXiv-1602.00123_src.tar.gz")
    doc = read_one(path)
    text = doc["text"]
    # The authors commented out "%\section{Introduction}" and "%\section{Results}":
    # the first real \section is the supplement (line 299 of 331).
    assert text.startswith(PAIRING_OPENING)
    assert text.endswith("$\\chi^{\\prime \\prime}_{\\ensuremath{B_{1g}\\,}} (\\omega)$.\n\n\\clearpage")
    for absent in ("\\bibitem", "\\bibliography", "\\newcommand", "\\BAN", "\\Tc", "\\end{document}"):
        assert absent not in text
    assert not re.search(r"^\s*%", text, re.M)
    assert json.loads(doc["meta"]) == {
        "arxiv_id": "1602.00123",
        "main_file": "Unconventional_pairing.tex",
        "files_merged": ["Unconventional_pairing.tex"],
        "files_missing": [],
        "inputs_missing": [],
        "macros_expanded": 6,  # \BAN x3, \Tc x3 in the supplement
    }
    single = read_one(str(shared_corpus / "arxiv" / "arXiv-1602.00123_Unconventional_pairing.tex"))
    assert single["text"] == text
    assert single["id"] == doc["id"]  # same arXiv id, same document id


def test_gzipped_single_tex_is_not_a_tar(shared_corpus, tmp_path):
    raw = (shared_corpus / "arxiv" / "arXiv-1602.00123_Unconventional_pairing.tex").read_bytes()
    path = tmp_path / "1602.00123.gz"  # arXiv serves single-file papers like this
    path.write_bytes(gzip.compress(raw))
    doc = read_one(str(path))
    assert doc["text"].startswith(PAIRING_OPENING)
    assert json.loads(doc["meta"])["main_file"] == "1602.00123"


def test_bbl_alone_is_skipped(shared_corpus):
    record = read_one(str(shared_corpus / "arxiv" / "arXiv-1602.00123_Unconventional_pairing.bbl"))
    assert record == Skip("arxiv", "support_file")


def test_hott_book_macros_expanded(shared_corpus):
    path = shared_corpus / "arxiv" / "arXiv-1308.0729_hott-book_src.tar.gz"
    with tarfile.open(path) as tar:
        raw = "".join(
            tar.extractfile(m).read().decode() for m in tar.getmembers() if m.name.endswith(".tex")
        )
    assert len(re.findall(r"\\jdeq(?![A-Za-z])", raw)) == 322  # macros.tex: \newcommand{\jdeq}{\equiv}
    doc = read_one(str(path))
    text = doc["text"]
    assert text.startswith("\\chapter*{Preface}\n\\label{cha:preface}\n\n\\subsection*{IAS Special Year")
    assert "\\jdeq" not in text and "\\equiv" in text
    # preliminaries.tex: "a collection of \define{rules}", \newcommand{\define}[1]{\textbf{#1}}
    assert "\\define{" not in text
    assert "a deductive system is a collection of \\textbf{rules}" in text
    # "When $\id[A]ab$ is inhabited", \newcommand{\id}[3][]{\ensuremath{#2 =_{#1} #3}\xspace}
    assert "When $\\ensuremath{a =_{A} b}\\xspace$ is inhabited" in text
    assert "\\bibliography{" not in text and "\\newcommand" not in text
    meta = json.loads(doc["meta"])
    assert meta["main_file"] == "hott-book/main.tex"
    assert len(meta["files_merged"]) == 18  # main, macros and 16 of the \include'd files
    # not in the bundle: hits.tex (\include, a whole chapter), bmpsize-hack.tex
    # (preamble), frontpage.tex (before the first chapter), version.tex and
    # blurb.tex (after the bibliography)
    assert meta["files_missing"] == [
        "hott-book/bmpsize-hack.tex",
        "hott-book/frontpage.tex",
        "hott-book/version.tex",
        "hott-book/hits.tex",
        "hott-book/blurb.tex",
    ]
    assert meta["inputs_missing"] == []  # none of them falls in the kept text
    assert meta["macros_expanded"] > 10_000


def test_scipy_paper(shared_corpus):
    doc = read_one(str(shared_corpus / "arxiv" / "arXiv-1907.10121_scipy-1.0_src.tar.gz"))
    assert doc["text"].startswith(
        "\\section*{Introduction}\n\nSciPy is a library of numerical routines for the Python programming\n"
    )
    meta = json.loads(doc["meta"])
    assert meta["files_merged"] == [
        "scipy-1.0/paper.tex",
        "scipy-1.0/core-dev.tex",
        "scipy-1.0/subpackages.tex",
        "scipy-1.0/ckdtree.tex",
        "scipy-1.0/scipy-optimize.tex",
        "scipy-1.0/poly.tex",
        "scipy-1.0/consortium.tex",
    ]
    assert "\\bibliography" not in doc["text"]


def test_scipy_paper_without_one_input_is_kept_without_it(shared_corpus, tmp_path):
    src = shared_corpus / "arxiv" / "arXiv-1907.10121_scipy-1.0_src.tar.gz"
    with tarfile.open(src) as tar:
        members = {
            m.name: tar.extractfile(m).read().decode()
            for m in tar.getmembers()
            if m.isfile() and m.name != "scipy-1.0/poly.tex"
        }
    assert "\\input{poly}" in members["scipy-1.0/paper.tex"]  # paper.tex line 773
    doc = read_one(make_tar(tmp_path / "arXiv-1907.10121_src.tar.gz", members))
    # the whole paper's text, less what poly.tex gave under its subsection
    whole = read_one(str(src))["text"]
    head, rest = whole.split("\\subsection*{Polynomial interpolators}\n\n", 1)
    poly, tail = rest.split("\n\n\\subsection*{Test and benchmark suite}", 1)
    assert poly.startswith("Historically, SciPy relied heavily on the venerable FITPACK\n")
    assert doc["text"] == (
        head
        + "\\subsection*{Polynomial interpolators}\n\n\\subsection*{Test and benchmark suite}"
        + tail
    )
    meta = json.loads(doc["meta"])
    assert "scipy-1.0/poly.tex" not in meta["files_merged"] and len(meta["files_merged"]) == 6
    assert meta["files_missing"] == meta["inputs_missing"] == ["scipy-1.0/poly.tex"]


def test_paper_without_sections_is_skipped(tmp_path):
    main = MAIN.replace("\\section{Intro}\n\\input{sec/a}\n", "Only a preamble and prose.\n")
    assert read_one(make_tar(tmp_path / "p.tar.gz", {"main.tex": main})) == Skip("arxiv", "no_section")
