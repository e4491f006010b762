"""arXiv: LaTeX sources (a `.tex`, a directory, or arXiv's `.tar.gz`) to one Document per paper.

LLaMA (paper, 2.1): "We removed everything before the first section, as well as
the bibliography. We also removed the comments from the .tex files, and
inline-expanded definitions and macros written by users to increase consistency
across papers." The text stays LaTeX (as in RedPajama's arXiv subset); the steps,
in order:

1. Load the paper. An archive is read member by member in memory with `tarfile`
   (never extracted to disk); an unsafe member path or link, more than
   `MAX_ARCHIVE_MEMBERS` members or more than `MAX_ARCHIVE_BYTES` uncompressed
   make the paper a DeadLetter. arXiv serves some papers as one gzipped `.tex`:
   after decompression, a file that is not a tar is read as a single source.
2. Strip comments from every file (`strip_comments`).
3. Find the main file (`find_main_file`) and merge `\\input`/`\\include`
   recursively (`merge_inputs`), as TeX would: relative to the main file's
   folder, `.tex` tried first. A cycle or nesting deeper than `MAX_INPUT_DEPTH`
   is a DeadLetter. A missing file is left out and the paper kept (`clean_project`):
   every missing `\\include` and `\\input` target is listed in
   `meta["files_missing"]` (most are harmless: a TeX distribution file such as
   `bmpsize-hack.tex` in the preamble, which is cut anyway), and those missing
   where the kept text needed them (a generated `\\jobname.listing`, a section
   not in the bundle) also in `meta["inputs_missing"]`.
4. Collect and remove the user's macro definitions (`parse_macros`).
5. Keep the body (`cut_body`): from the first `\\part`, `\\chapter` or `\\section`
   after `\\begin{document}` (that command kept) up to the bibliography or
   `\\end{document}`, whichever comes first. Unlike RedPajama, `\\appendix` is
   kept: the paper only removes the bibliography.
6. Inline-expand the macros in the body (`expand_macros`), then drop trailing
   blanks on lines and collapse runs of blank lines.

Known gaps: `\\DeclareMathOperator`, `\\newenvironment` and delimited `\\def`
parameters (`\\def\\a#1.{...}`) are not expanded (delimited definitions are still
removed); macros that program TeX (`\\@ifnextchar`, `\\if...`, `\\csname`,
internal `@` names) are left as written, since a textual expansion of them is
noise; `\\verb` and `\\url` are protected from comment stripping only on their
line, verbatim environments line by line.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import tarfile
import zlib
from typing import IO, Any, Iterator, Mapping, NamedTuple

from pipeline.formats.decode import Undecodable, decode_text
from pipeline.core.io import open_input
from pipeline.sources.base import Count, DeadLetter, Formats, Skip, make_document

SOURCE = "arxiv"

# Guards against decompression bombs and path traversal, for one paper.
MAX_ARCHIVE_BYTES = 200 * 1024 * 1024  # uncompressed bytes read from one input
MAX_ARCHIVE_MEMBERS = 10_000
MAX_INPUT_DEPTH = 20  # nesting of \input / \include
MAX_DOCUMENT_CHARS = 50_000_000  # merged or expanded text of one paper
MAX_MACRO_DEPTH = 32  # nested expansions; a recursive macro stops there
MAX_MACRO_EXPANSIONS = 500_000  # per paper: exponential definitions stop here

# Members never read into memory: figures and binaries are not LaTeX.
BINARY_EXTENSIONS = frozenset(
    ".pdf .png .jpg .jpeg .gif .eps .ps .svg .tif .tiff .bmp .ico .webp .dvi .zip .gz"
    " .tgz .bz2 .xz .7z .tar .rar .mp3 .mp4 .wav .avi .mov .mpg .so .o .pyc .class .jar"
    " .xls .xlsx .doc .docx .ppt .pptx .fig .mat .h5 .npy .npz .pkl".split()
)
TEX_EXTENSIONS = (".tex", ".ltx", ".latex")
# A lone file with one of these is part of a paper, not a paper (Skip "support_file").
SUPPORT_EXTENSIONS = (".bbl", ".bib", ".bst", ".sty", ".cls", ".clo", ".cfg")
FORMATS = Formats(
    describe=("LaTeX sources: a .tex (.ltx, .latex) file, arXiv's .tar, .tar.gz, .tgz or gzipped .tex "
              "(ID.gz), or a local paper folder (one holding a .tex); a lone .bbl, .bib, .sty... is "
              "counted, as part of a paper (skip support_file)"),
    names=(*(f"*{e}" for e in TEX_EXTENSIONS + SUPPORT_EXTENSIONS), "*.tar", "*.tgz", "*.gz"),
    folders=tuple(f"*{e}" for e in TEX_EXTENSIONS),
)


class LatexError(ValueError):
    """A paper that cannot be assembled; the message is the DeadLetter reason."""


# --- arXiv identifiers -----------------------------------------------------------

# New style (April 2007 on): YYMM.NNNN or YYMM.NNNNN, optional version.
_NEW_ID_RE = re.compile(r"(?<![\d.])(\d{2}(?:0[1-9]|1[0-2])\.\d{4,5})(?:v\d+)?(?![\d])")
# Old style: archive[.SC]/YYMMNNN; file names drop the slash (hep-th9901001.gz).
_OLD_ID_RE = re.compile(r"(?<![A-Za-z-])([a-z]+(?:-[a-z]+)?(?:\.[A-Z]{2})?)[/_]?(\d{7})(?!\d)")


def arxiv_id_from_filename(name: str) -> str:
    """The arXiv identifier in a file name, without its version; "" if none.

    "arXiv-1602.00123_src.tar.gz" -> "1602.00123"; "hep-th9901001.gz" ->
    "hep-th/9901001" (arXiv's identifier schemes, arxiv.org/help/arxiv_identifier).
    """
    base = os.path.basename(name.rstrip("/"))
    m = _NEW_ID_RE.search(base)
    if m:
        return m.group(1)
    m = _OLD_ID_RE.search(base)
    return f"{m.group(1)}/{m.group(2)}" if m else ""


# --- comments ----------------------------------------------------------------------

_VERBATIM_SPAN_RE = re.compile(r"\\verb\*?([^\sA-Za-z*])(.*?)\1|\\url\s*\{[^{}]*\}")
_BEGIN_VERBATIM_RE = re.compile(r"\\begin\s*\{(verbatim\*?|Verbatim\*?|lstlisting|minted|alltt)\}")
_BEGIN_COMMENT_RE = re.compile(r"\\begin\s*\{comment\}")
_END_COMMENT_RE = re.compile(r"\\end\s*\{comment\}")


def _escaped(text: str, i: int) -> bool:
    """True if text[i] follows an odd number of backslashes (`\\%`, `\\\\\\%`)."""
    j = i
    while j > 0 and text[j - 1] == "\\":
        j -= 1
    return (i - j) % 2 == 1


def _comment_start(line: str) -> int:
    """Index of the `%` starting a comment on `line`, or -1: the first `%` after
    an even number of backslashes (after an odd number it is a literal `\\%`)."""
    probe = line
    if "\\verb" in line or "\\url" in line:  # blank out verbatim spans, same length
        probe = _VERBATIM_SPAN_RE.sub(lambda m: "x" * len(m.group(0)), line)
    i = probe.find("%")
    while i >= 0 and _escaped(probe, i):
        i = probe.find("%", i + 1)
    return i


def strip_comments(tex: str) -> str:
    """Remove LaTeX comments (LLaMA 2.1: "removed the comments from the .tex files").

    A `%` preceded by an odd number of backslashes (`\\%`, `\\\\\\%`) is text; one
    preceded by an even number (`%`, `\\\\%`) starts a comment that runs to the end
    of its line. A line that holds only a comment disappears entirely; a line
    with text before its comment keeps that text, right-stripped. Lines of a
    `comment` environment (package `verbatim`) are removed with its `\\begin`
    and `\\end`; verbatim environments (`verbatim`, `lstlisting`, `minted`,
    `alltt`) and `\\verb`/`\\url` spans are left as written.

    Args:
        tex: LaTeX source with "\\n" line ends.
    Returns:
        The source without comments; a final newline is kept if there was one.
    """
    out: list[str] = []
    verbatim_end = ""  # "\end{name}" while inside a verbatim environment
    in_comment_env = False
    for line in tex.split("\n"):
        if in_comment_env:
            if _END_COMMENT_RE.search(line):
                in_comment_env = False
            continue
        if verbatim_end:
            out.append(line)
            if verbatim_end in line:
                verbatim_end = ""
            continue
        cut = _comment_start(line) if "%" in line else -1
        code = line if cut < 0 else line[:cut].rstrip()
        if cut >= 0 and not code.strip():
            continue  # a whole-line comment: the line disappears
        m = _BEGIN_COMMENT_RE.search(code)
        if m:
            end = _END_COMMENT_RE.search(code, m.end())
            if end:
                code = code[: m.start()] + code[end.end() :]
            else:
                code = code[: m.start()].rstrip()
                in_comment_env = True
            if not code.strip():
                continue
        else:
            v = _BEGIN_VERBATIM_RE.search(code)
            if v and f"\\end{{{v.group(1)}}}" not in code[v.end() :]:
                verbatim_end = f"\\end{{{v.group(1)}}}"
        out.append(code)
    return "\n".join(out)


# --- main file and \input / \include -----------------------------------------------

class _Command:
    """A control-sequence pattern that skips matches after an escaping backslash
    (`\\\\section` is a line break followed by the word "section"). Group 1 is
    the whole match; the body's own groups follow."""

    def __init__(self, body: str) -> None:
        self.pattern = re.compile("(" + body + ")")

    def search(self, text: str, pos: int = 0) -> re.Match[str] | None:
        m = self.pattern.search(text, pos)
        while m is not None and _escaped(text, m.start()):
            m = self.pattern.search(text, m.start() + 1)
        return m

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        m = self.search(text)
        while m is not None:
            yield m
            m = self.search(text, max(m.end(), m.start() + 1))


_DOCUMENTCLASS_RE = _Command(r"\\document(?:class|style)(?![A-Za-z@])")
_BEGIN_DOCUMENT_RE = _Command(r"\\begin\s*\{document\}")
_END_DOCUMENT_RE = _Command(r"\\end\s*\{document\}")
_INPUT_RE = _Command(r"\\(input|include)(?![A-Za-z@])\s*(?:\{([^{}]*)\}|([^\s{}%\\]+))")
_JOBNAME_RE = re.compile(r"\\jobname(?![A-Za-z@])")
_TEX_SUFFIX_RE = re.compile(r"\.(?:tex|ltx|latex)$", re.IGNORECASE)


def find_main_file(files: Mapping[str, str]) -> str | None:
    """The main file of a LaTeX project, or None.

    The `.tex` (`.ltx`, `.latex`) file that holds `\\documentclass` (or LaTeX
    2.09's `\\documentstyle`); if several, those that also hold
    `\\begin{document}`; then the shortest path, then the first in sort order
    (deterministic whatever the archive's member order).

    Args:
        files: {path in the project: comment-stripped text}.
    """
    with_class = [
        name
        for name, text in files.items()
        if name.lower().endswith(TEX_EXTENSIONS) and _DOCUMENTCLASS_RE.search(text)
    ]
    with_begin = [name for name in with_class if _BEGIN_DOCUMENT_RE.search(files[name])]
    pool = with_begin or with_class
    return min(pool, key=lambda name: (len(name), name)) if pool else None


class Merged(NamedTuple):
    """The main file with its inputs merged, and what was merged or missing."""

    text: str  # a missing \input leaves `missing_marker(i)` in its place
    files_merged: list[str]  # in order of first inclusion, the main file first
    files_missing: list[str]  # \include and \input targets absent, in order
    missing_inputs: list[tuple[str, str]]  # (\input target, file asking for it), by marker


def missing_marker(index: int) -> str:
    """Placeholder left by the `index`-th missing `\\input` (NUL never occurs in
    decoded sources: `decode_tex` drops it)."""
    return f"\x00{index}\x00"


_MISSING_MARKER_RE = re.compile(r"\x00(\d+)\x00")


def _resolve(name: str, command: str, base: str, files: Mapping[str, str]) -> tuple[str | None, str]:
    """Project path of an \\input/\\include target (None if absent), and the
    path reported when it is missing."""
    name = name.strip().strip('"')
    # TeX tries "<name>.tex" first, then "<name>"; LaTeX's \include always adds .tex.
    if command == "include":
        names = [name + ".tex"]
    elif name.lower().endswith(".tex"):
        names = [name]
    else:
        names = [name + ".tex", name]
    for folder in dict.fromkeys((base, "")):  # the main file's folder, then the root
        for candidate in names:
            path = posixpath.normpath(posixpath.join(folder, candidate))
            if path in files:
                return path, path
    # reported as TeX names it: `\input{x.listing}` misses x.listing, `\input{x}` x.tex
    reported = names[-1] if command == "input" and posixpath.splitext(name)[1] else names[0]
    return None, posixpath.normpath(posixpath.join(base, reported))


def merge_inputs(main: str, files: Mapping[str, str]) -> Merged:
    """Merge `\\input{x}` and `\\include{x}` (and `\\input x`) into the main file,
    recursively, as TeX resolves them.

    Paths are relative to the main file's folder (TeX's working directory), then
    to the project root; `.tex` is tried first; `\\jobname` is the main file's
    name without `.tex`, as when TeX compiles it. The texts should already be
    comment-stripped, so a commented-out `% \\input{old}` is not followed. A
    missing `\\include` is dropped (LaTeX only warns); a missing `\\input` leaves
    a `missing_marker`, so that the caller can tell whether it falls in the
    text it keeps (`clean_project`).

    Args:
        main: path of the main file in `files`.
        files: {path: comment-stripped text} of the project.
    Returns:
        `Merged(text, files_merged, files_missing, missing_inputs)`.
    Raises:
        LatexError: an input cycle (the reason names it: "\\input cycle: a.tex ->
            b.tex -> a.tex"), nesting deeper than `MAX_INPUT_DEPTH`, or a merged
            text over `MAX_DOCUMENT_CHARS` (one file input many times over).
    """
    base = posixpath.dirname(main)
    jobname = _TEX_SUFFIX_RE.sub("", posixpath.basename(main))
    merged: list[str] = [main]
    files_missing: list[str] = []
    missing_inputs: list[tuple[str, str]] = []
    size = 0

    def expand(path: str, stack: list[str]) -> str:
        nonlocal size
        text = files[path]
        out: list[str] = []
        pos = 0
        for m in _INPUT_RE.finditer(text):
            command, target = m.group(2), m.group(3) or m.group(4) or ""
            if "#" in target:  # inside a macro definition: a parameter, not a file
                continue
            out.append(text[pos : m.start(1)])
            pos = m.end()
            target = _JOBNAME_RE.sub(lambda _: jobname, target)
            found, tried = _resolve(target, command, base, files)
            if found is None:
                files_missing.append(tried)
                if command == "input":
                    out.append(missing_marker(len(missing_inputs)))
                    missing_inputs.append((tried, path))
                continue
            if found in stack:
                cycle = " -> ".join(stack[stack.index(found) :] + [found])
                raise LatexError(f"\\input cycle: {cycle}")
            if len(stack) > MAX_INPUT_DEPTH:
                raise LatexError(f"\\input nested deeper than {MAX_INPUT_DEPTH} at {found}")
            if found not in merged:
                merged.append(found)
            out.append(expand(found, stack + [found]))
        out.append(text[pos:])
        size += len(text)
        if size > MAX_DOCUMENT_CHARS:
            raise LatexError(f"merged source larger than {MAX_DOCUMENT_CHARS} characters")
        return "".join(out)

    return Merged(expand(main, [main]), merged, files_missing, missing_inputs)


# --- user macros ----------------------------------------------------------------------


class Macro(NamedTuple):
    """A user macro: `nargs` parameters, the first optional when `default` is set."""

    nargs: int
    default: str | None
    body: str


_DEFINITION_RE = _Command(
    r"\\(newcommand|renewcommand|providecommand|DeclareRobustCommand|def|gdef|edef|xdef|let)"
    r"(?![A-Za-z@])"
)
_NAME_RE = re.compile(r"\\(?:[A-Za-z@]+|.)", re.DOTALL)
_LET_RE = re.compile(r"\s*(\\[A-Za-z@]+)\s*=?\s*(\\[A-Za-z@]+)")
# Bodies that program TeX rather than abbreviate text: left unexpanded.
_PROGRAMMING_RE = re.compile(
    r"\\(?:[A-Za-z]*@[A-Za-z@]*|if|ifx|ifcat|ifnum|ifdim|ifodd|ifcase|ifmmode|ifvmode|"
    r"ifhmode|ifinner|ifvoid|iftrue|iffalse|ifdefined|ifcsname|ifdef|ifundef|ifthenelse|"
    r"IfFileExists|else|fi|expandafter|csname|endcsname|futurelet|afterassignment|noexpand|"
    r"let|def|gdef|edef|xdef|newcommand|renewcommand|providecommand|detokenize|string)"
    r"(?![A-Za-z@])"
)
_PARAM_RE = re.compile(r"#(#|[1-9])")


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\n":
        pos += 1
    return pos


# _read_group's answers besides an end position
_UNBALANCED = -1  # a closing brace before the group closes
_INCOMPLETE = -2  # the text ends before the group closes


def _read_group(text: str, pos: int, close: str = "}") -> int:
    """End (exclusive) of the balanced group opening at text[pos], or
    `_UNBALANCED` / `_INCOMPLETE`.

    `close` is "}" for a `{...}` group or "]" for an optional `[...]` argument,
    which ends at the first `]` outside braces. Escaped braces (`\\{`) do not count.
    """
    depth = 0
    i = pos + 1 if close == "]" else pos
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth < 0:
                return _UNBALANCED
            if depth == 0 and close == "}":
                return i + 1
        elif c == "]" and close == "]" and depth == 0:
            return i + 1
        i += 1
    return _INCOMPLETE


def _parse_definition(text: str, m: re.Match[str]) -> tuple[int, str, Macro | None] | None:
    """Parse the definition starting at match `m`: (end, name, macro or None).

    macro is None for a definition that is removed but not expanded (delimited
    `\\def` parameters). Returns None if the text is not a definition understood
    here (it is then left in place).
    """
    kind = m.group(2)
    pos = _skip_space(text, m.end())
    if kind in ("def", "gdef", "edef", "xdef"):
        name_m = _NAME_RE.match(text, pos)
        if not name_m:
            return None
        brace = text.find("{", name_m.end())
        if brace < 0:
            return None
        params = text[name_m.end() : brace].strip()
        end = _read_group(text, brace)
        if end < 0 or "}" in params:
            return None
        body = text[brace + 1 : end - 1]
        if params != "".join(f"#{i}" for i in range(1, len(params) // 2 + 1)):
            return end, name_m.group(0), None  # delimited parameters: not expanded
        return end, name_m.group(0), Macro(len(params) // 2, None, body)
    # \newcommand family: *? {\name} or \name, [n], [default], {body}
    if text.startswith("*", pos):
        pos = _skip_space(text, pos + 1)
    if text.startswith("{", pos):
        name_m = _NAME_RE.match(text, _skip_space(text, pos + 1))
        if not name_m:
            return None
        close = _skip_space(text, name_m.end())
        if not text.startswith("}", close):
            return None
        pos = close + 1
    else:
        name_m = _NAME_RE.match(text, pos)
        if not name_m:
            return None
        pos = name_m.end()
    nargs, default = 0, None
    pos = _skip_space(text, pos)
    if text.startswith("[", pos):
        end = _read_group(text, pos, "]")
        if end < 0 or not text[pos + 1 : end - 1].strip().isdigit():
            return None
        nargs = int(text[pos + 1 : end - 1])
        pos = _skip_space(text, end)
        if text.startswith("[", pos):
            end = _read_group(text, pos, "]")
            if end < 0:
                return None
            default = text[pos + 1 : end - 1]
            pos = _skip_space(text, end)
    if not text.startswith("{", pos) or not 0 <= nargs <= 9:
        return None
    end = _read_group(text, pos)
    if end < 0:
        return None
    return end, name_m.group(0), Macro(nargs, default, text[pos + 1 : end - 1])


def _whole_lines(text: str, start: int, end: int, floor: int) -> tuple[int, int]:
    """Widen the span [start, end) to its whole line(s) when only blanks share
    them, so that a removed definition leaves no empty line; never below `floor`."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end + 1
    if line_start < floor or text[line_start:start].strip() or text[end:line_end].strip():
        return start, end
    return line_start, line_end


def parse_macros(tex: str) -> tuple[str, dict[str, Macro]]:
    """Collect the user's macro definitions and remove them from the text.

    Understood: `\\newcommand`, `\\renewcommand`, `\\providecommand`,
    `\\DeclareRobustCommand` (starred too) with `[n]` arguments and a
    `[default]` for an optional first one; `\\def` (`\\gdef`, `\\edef`, `\\xdef`)
    with undelimited parameters `#1#2...`; `\\let\\a\\b` where `\\b` is a user
    macro (an alias). A later definition replaces an earlier one, except
    `\\providecommand`, which never replaces. Definitions that are not
    understood stay in the text.

    Returns:
        (text without the definitions, {"\\name": Macro}) with only the macros
        that `expand_macros` should expand: those whose name has letters only
        and whose body does not program TeX (see module doc).
    """
    macros: dict[str, Macro] = {}
    out: list[str] = []
    pos = 0
    for m in _DEFINITION_RE.finditer(tex):
        if m.start(1) < pos:
            continue  # inside a definition already consumed
        if m.group(2) == "let":
            let = _LET_RE.match(tex, m.end())
            if not let or let.group(2) not in macros:
                continue
            macros[let.group(1)] = macros[let.group(2)]
            start, end = _whole_lines(tex, m.start(1), let.end(), pos)
            out.append(tex[pos:start])
            pos = end
            continue
        parsed = _parse_definition(tex, m)
        if parsed is None:
            continue
        end, name, macro = parsed
        start, end = _whole_lines(tex, m.start(1), end, pos)
        out.append(tex[pos:start])
        pos = end
        if macro is None:
            macros.pop(name, None)
            continue
        if m.group(2) == "providecommand" and name in macros:
            continue
        if re.fullmatch(r"\\[A-Za-z]+", name) and not _PROGRAMMING_RE.search(macro.body):
            macros[name] = macro
        else:
            macros.pop(name, None)  # redefined as something not expanded
    out.append(tex[pos:])
    return "".join(out), macros


class _Incomplete:
    """The text ended before a macro's arguments were all read."""


INCOMPLETE = _Incomplete()


def _read_arg(text: str, pos: int) -> tuple[str, int] | None | _Incomplete:
    """One undelimited TeX argument at `pos` (spaces skipped before it): a
    `{group}` without its braces, a control sequence or one character. None if
    a `}` comes first; INCOMPLETE if the text ends first."""
    pos = _skip_space(text, pos)
    if pos >= len(text):
        return INCOMPLETE
    if text[pos] == "}":
        return None
    if text[pos] == "{":
        end = _read_group(text, pos)
        if end == _INCOMPLETE:
            return INCOMPLETE
        return (text[pos + 1 : end - 1], end) if end > 0 else None
    if text[pos] == "\\":
        if pos + 1 >= len(text):
            return INCOMPLETE
        m = _NAME_RE.match(text, pos)
        return (m.group(0), m.end()) if m else None
    return text[pos], pos + 1


def _read_args(text: str, pos: int, macro: Macro) -> tuple[list[str], int] | None | _Incomplete:
    """The arguments of a use of `macro` whose name ends at `pos`, and where they end."""
    args: list[str] = []
    count = macro.nargs
    if macro.default is not None:
        count -= 1
        opt = _skip_space(text, pos)
        if opt >= len(text):
            return INCOMPLETE
        if text[opt] == "[":
            end = _read_group(text, opt, "]")
            if end < 0:
                return INCOMPLETE if end == _INCOMPLETE else None
            args.append(text[opt + 1 : end - 1])
            pos = end
        else:
            args.append(macro.default)
    for _ in range(count):
        arg = _read_arg(text, pos)
        if arg is None or arg is INCOMPLETE:
            return arg
        args.append(arg[0])
        pos = arg[1]
    return args, pos


def _read_args_below(frames: list[list[Any]], after: int, macro: Macro) -> list[str] | None:
    """Arguments of a use whose name ends at `after` in the top frame, read on
    into the frames below when the top one ends first, as TeX reads on past the
    end of an expansion. On success the frames are advanced past the arguments
    (text below is never moved into a deeper frame); else they are unchanged.
    """
    top = frames[-1]
    parts = [(top, after, len(top[0]))]  # (frame, start, end) pieces of `combined`
    combined = top[0][after:]
    parsed: Any = INCOMPLETE
    take = 1024
    i = len(frames) - 2
    while parsed is INCOMPLETE and i >= 0:
        below = frames[i]
        lo = parts[-1][2] if parts[-1][0] is below else below[1]
        if lo >= len(below[0]):
            i -= 1
            continue
        hi = min(len(below[0]), lo + take)
        take *= 2
        combined += below[0][lo:hi]
        if parts[-1][0] is below:
            parts[-1] = (below, parts[-1][1], hi)
        else:
            parts.append((below, lo, hi))
        parsed = _read_args(combined, 0, macro)
    if parsed is None or parsed is INCOMPLETE:
        return None
    args, end = parsed
    for frame, lo, hi in parts:
        used = min(end, hi - lo)
        frame[1] = lo + used
        end -= used
    return args


def _substitute(body: str, args: list[str]) -> str:
    def param(m: re.Match[str]) -> str:
        if m.group(1) == "#":
            return "#"
        i = int(m.group(1))
        return args[i - 1] if i <= len(args) else m.group(0)

    return _PARAM_RE.sub(param, body) if "#" in body else body


def expand_macros(tex: str, macros: Mapping[str, Macro]) -> tuple[str, int]:
    """Inline-expand user macros (LLaMA 2.1), arguments substituted, the result
    expanded again like TeX does.

    `\\name` is expanded where it is a whole control word (not `\\namex`, not
    after an escaping backslash); arguments are read as TeX reads undelimited
    ones (a `{group}`, a control sequence or one character, spaces skipped
    before), the optional first one from `[...]` or its default. A use whose
    arguments are missing is left as written. An expansion nested
    `MAX_MACRO_DEPTH` deep is not expanded further, so a recursive definition
    stops: `\\def\\loop{\\loop a}` turns `\\loop` into `\\loop` followed by
    `MAX_MACRO_DEPTH` times " a".

    Args:
        tex: LaTeX text, definitions already removed (`parse_macros`).
        macros: {"\\name": Macro}.
    Returns:
        (expanded text, number of expansions made).
    Raises:
        LatexError: more than `MAX_MACRO_EXPANSIONS` expansions or
            `MAX_DOCUMENT_CHARS` characters (an exponential definition).
    """
    if not macros:
        return tex, 0
    names = sorted((name[1:] for name in macros), key=lambda s: (-len(s), s))
    use_re = _Command(r"\\(?:" + "|".join(map(re.escape, names)) + r")(?![A-Za-z])")
    out: list[str] = []
    size = count = 0
    # Expansions are pushed as frames [text, position, depth] and read before
    # the rest of the enclosing text, like TeX's input stack.
    frames: list[list[Any]] = [[tex, 0, 0]]
    while frames:
        frame = frames[-1]
        text, pos, depth = frame
        m = use_re.search(text, pos)
        if m is None:
            out.append(text[pos:])
            size += len(text) - pos
            frames.pop()
            continue
        out.append(text[pos : m.start(1)])
        size += m.start(1) - pos
        name = m.group(1)
        macro = macros[name]
        after = m.end()
        if depth >= MAX_MACRO_DEPTH:  # a recursive definition: stop here
            out.append(name)
            frame[1] = after
            continue
        parsed = _read_args(text, after, macro)
        if parsed is INCOMPLETE:  # e.g. \b{x} after \newcommand{\b}{\a}
            args = _read_args_below(frames, after, macro)
        elif parsed is None:
            args = None
        else:
            args, frame[1] = parsed
        if args is None:  # arguments missing: left as written
            out.append(name)
            frame[1] = after
            continue
        count += 1
        if count > MAX_MACRO_EXPANSIONS or size > MAX_DOCUMENT_CHARS:
            raise LatexError(
                f"macro expansion exceeds {MAX_MACRO_EXPANSIONS} expansions or "
                f"{MAX_DOCUMENT_CHARS} characters (at {name})"
            )
        frames.append([_substitute(macro.body, args), 0, depth + 1])
    return "".join(out), count


def expand_user_macros(tex: str) -> str:
    """`parse_macros` then `expand_macros`: definitions removed, uses expanded."""
    body, macros = parse_macros(tex)
    return expand_macros(body, macros)[0]


# --- the body -----------------------------------------------------------------------

_SECTION_RE = _Command(r"\\(?:part|chapter|section)(?![A-Za-z@])\s*\*?\s*[\[{]")
_BIBLIOGRAPHY_RE = _Command(
    r"\\begin\s*\{thebibliography\}|\\bibliography\s*\{|\\printbibliography(?![A-Za-z@])"
)
_TRAILING_BLANKS_RE = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANK_LINES_RE = re.compile(r"\n{3,}")


def cut_body(tex: str) -> str | None:
    """The part of a merged LaTeX document kept by LLaMA 2.1.

    From the first `\\part`, `\\chapter` or `\\section` (starred too, command
    kept) after `\\begin{document}` (or anywhere, if there is none) up to the
    bibliography (`\\begin{thebibliography}`, `\\bibliography{...}`,
    `\\printbibliography`) or `\\end{document}`, whichever comes first: "We
    removed everything before the first section, as well as the bibliography."

    Returns:
        The body, or None if there is no sectioning command.
    """
    begin = _BEGIN_DOCUMENT_RE.search(tex)
    section = _SECTION_RE.search(tex, begin.end() if begin else 0)
    if section is None:
        return None
    start = section.start(1)
    stops = (_BIBLIOGRAPHY_RE.search(tex, start), _END_DOCUMENT_RE.search(tex, start))
    ends = [m.start(1) for m in stops if m]
    return tex[start : min(ends, default=len(tex))]


def normalize_whitespace(tex: str) -> str:
    """Drop blanks at line ends and collapse runs of blank lines to one; strip."""
    return _BLANK_LINES_RE.sub("\n\n", _TRAILING_BLANKS_RE.sub("", tex)).strip()


class Cleaned(NamedTuple):
    text: str | None  # None: no sectioning command in the body
    merged: Merged
    macros_expanded: int
    inputs_missing: list[str]  # \input targets missing from the kept text, in order


def clean_project(files: Mapping[str, str], main: str) -> Cleaned:
    """Steps 3-6 of the module doc on a project already in memory.

    A missing file is left out and the rest kept: a missing `\\include` (LaTeX
    warns and goes on), a missing `\\input` in the preamble (most likely a file
    of the TeX distribution, such as `bmpsize-hack.tex`) or in text that is cut
    anyway, and a missing `\\input` in the kept body too (a file generated at
    build time, such as `\\jobname.listing`, or one the authors did not
    upload): one missing piece should not lose the whole paper. All of them are
    in `merged.files_missing`; the body's, which leave a hole in the text, also
    in `inputs_missing`.

    Args:
        files: {path: comment-stripped LaTeX text} (`strip_comments`).
        main: the main file's path in `files`.
    Raises:
        LatexError: see `merge_inputs` and `expand_macros`.
    """
    merged = merge_inputs(main, files)
    tex, macros = parse_macros(merged.text)
    body = cut_body(tex)
    if body is None:
        return Cleaned(None, merged, 0, [])
    body, count = expand_macros(body, macros)  # a macro may carry a marker into the body
    holes = sorted({int(i) for i in _MISSING_MARKER_RE.findall(body)})
    inputs_missing = list(dict.fromkeys(merged.missing_inputs[i][0] for i in holes))
    body = _MISSING_MARKER_RE.sub("", body)
    return Cleaned(normalize_whitespace(body), merged, count, inputs_missing)


# --- loading a paper ---------------------------------------------------------------------


def decode_tex(data: bytes) -> str:
    """Text of a LaTeX file, decoded by `pipeline.formats.decode.decode_text` (UTF-8
    with a few bad bytes replaced, else the detected encoding: Latin-1 in older
    arXiv papers; UTF-16 by its mark or byte pattern); line ends normalised to "\\n".

    Raises:
        Undecodable: not text in any encoding (a font or data file).
    """
    text = decode_text(data).text
    # NUL is not LaTeX (TeX drops it as invalid); it marks missing inputs here
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


class _BoundedReader:
    """Reads through a stream, failing once more than `limit` bytes came out
    (the decompression-bomb guard: a tar.gz is inflated as it is read)."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self.stream, self.limit, self.count = stream, limit, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(self.limit + 1 - self.count if size < 0 else size)
        self.count += len(data)
        if self.count > self.limit:
            raise LatexError(f"archive larger than {self.limit} bytes uncompressed")
        return data


def _confined(path: str) -> str | None:
    """Normalised path if it stays inside the archive, else None."""
    path = path.replace("\\", "/")
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        return None
    norm = posixpath.normpath(path)
    return None if norm == ".." or norm.startswith("../") else norm


def _is_text_member(name: str) -> bool:
    return posixpath.splitext(name)[1].lower() not in BINARY_EXTENSIONS


def _load_tar(stream: IO[bytes]) -> dict[str, bytes]:
    """{path: bytes} of the text members of a tar stream, in memory, checked."""
    files: dict[str, bytes] = {}
    links: list[tuple[str, str]] = []
    total = 0
    with tarfile.open(fileobj=_BoundedReader(stream, MAX_ARCHIVE_BYTES), mode="r|") as tar:
        for n, member in enumerate(tar, 1):
            if n > MAX_ARCHIVE_MEMBERS:
                raise LatexError(f"archive has more than {MAX_ARCHIVE_MEMBERS} members")
            name = _confined(member.name)
            if name is None:
                raise LatexError(f"unsafe member path {member.name}")
            if member.issym() or member.islnk():
                # a symlink is relative to its folder, a hard link to the root
                start = posixpath.dirname(name) if member.issym() else ""
                target = _confined(posixpath.join(start, member.linkname))
                if target is None or member.linkname.startswith("/"):
                    raise LatexError(f"unsafe link {member.name} -> {member.linkname}")
                links.append((name, target))
                continue
            if member.isdir():
                continue
            if not member.isfile():
                raise LatexError(f"unsupported member type {member.name}")
            total += member.size
            if total > MAX_ARCHIVE_BYTES:
                raise LatexError(f"archive larger than {MAX_ARCHIVE_BYTES} bytes uncompressed")
            if _is_text_member(name):
                data = tar.extractfile(member)
                files[name] = data.read() if data is not None else b""
    for name, target in links:  # in-archive links are aliases
        if target in files:
            files.setdefault(name, files[target])
    return files


def _load_directory(root: str) -> dict[str, bytes]:
    """{path: bytes} of the text files under a directory; links must stay inside."""
    files: dict[str, bytes] = {}
    real_root = os.path.realpath(root)
    total = count = 0
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for fname in sorted(names):
            full = os.path.join(folder, fname)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            count += 1
            if count > MAX_ARCHIVE_MEMBERS:
                raise LatexError(f"directory has more than {MAX_ARCHIVE_MEMBERS} files")
            real = os.path.realpath(full)
            if os.path.commonpath([real, real_root]) != real_root:
                raise LatexError(f"unsafe link {rel} -> {os.readlink(full)}")
            if not os.path.isfile(real) or not _is_text_member(rel):
                continue
            total += os.path.getsize(real)
            if total > MAX_ARCHIVE_BYTES:
                raise LatexError(f"directory larger than {MAX_ARCHIVE_BYTES} bytes")
            with open(real, "rb") as f:
                files[rel] = f.read()
    return files


def _is_tar(head: bytes) -> bool:
    """True if `head` (the first 512 bytes) is a valid tar header block."""
    if len(head) < tarfile.BLOCKSIZE:
        return False
    try:
        tarfile.TarInfo.frombuf(head[: tarfile.BLOCKSIZE], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


_COMPRESSED_SUFFIX_RE = re.compile(r"\.(gz|bz2|xz)$", re.IGNORECASE)


def load_paper(path: str) -> tuple[dict[str, bytes], bool]:
    """Read a paper's files into memory: ({path: bytes}, is_single_file).

    A directory is walked; a file is decompressed by magic (gzip, bzip2, xz),
    then read as a tar if it is one, else as a single LaTeX file named after
    the input without its compression suffix.

    Raises:
        LatexError: an unsafe archive (member path or link outside it, more than
            `MAX_ARCHIVE_MEMBERS` members, more than `MAX_ARCHIVE_BYTES`
            uncompressed) or a corrupt one.
        OSError: the input cannot be opened.
    """
    if os.path.isdir(path):
        return _load_directory(path), False
    with open_input(path) as stream:
        head = stream.read(tarfile.BLOCKSIZE)
        try:
            if _is_tar(head):
                stream.seek(0)
                return _load_tar(stream), False
            data = head + stream.read(MAX_ARCHIVE_BYTES + 1 - len(head))
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise LatexError(f"corrupt archive: {type(e).__name__}: {e}") from None
    if len(data) > MAX_ARCHIVE_BYTES:
        raise LatexError(f"file larger than {MAX_ARCHIVE_BYTES} bytes uncompressed")
    name = _COMPRESSED_SUFFIX_RE.sub("", os.path.basename(path.rstrip("/")))
    return {name: data}, True


def read(path: str, cfg: Any = None) -> Iterator[dict[str, Any] | Skip | DeadLetter]:
    """Read one arXiv paper (LLaMA 2.1 arXiv; see the module doc for each step).

    Documents: native_id the arXiv id from the file name (else the file name),
    url "https://arxiv.org/abs/<id>" when the id is known (else the path), lang
    "", meta {arxiv_id, main_file, files_merged, files_missing, inputs_missing,
    macros_expanded} (`inputs_missing`: the `\\input` targets absent where the
    kept text needed them, the paper kept without them; `macros_expanded`:
    number of macro uses expanded).
    Skip reasons: "no_section" (no `\\part`/`\\chapter`/`\\section` in the
    body), "empty" (nothing left after cleaning), "support_file" (a lone
    `.bbl`, `.bib`, `.sty`... file: part of a paper, not a paper).

    Args:
        path: a `.tex` file (optionally gzip/bzip2/xz-compressed), a `.tar`/
            `.tar.gz` as arXiv serves it, or a directory (local).
        cfg: the job's `pipeline.core.config.Config` (unused).
    Yields:
        Exactly one Document, Skip or DeadLetter for the paper, after a
        Count "input_missing" when its `inputs_missing` is not empty. DeadLetter
        reasons: "unsafe member path ...", "unsafe link ...", "archive larger
        than ...", "archive has more than ... members", "corrupt archive: ...",
        "cannot open: ...", "PDF, not LaTeX", "no main .tex file ...",
        "\\input cycle: ...", "\\input nested deeper than ...", "macro
        expansion exceeds ...", "undecodable: ..." (a single file that is
        not text in any encoding; in an archive such a file is left out).
    Raises:
        Nothing from the data: every failure becomes a DeadLetter.
    """
    record = _read_paper(path)
    if isinstance(record, dict) and (missing := json.loads(record["meta"])["inputs_missing"]):
        yield Count(SOURCE, "input_missing", len(missing))  # kept without them: counted
    yield record


def _read_paper(path: str) -> dict[str, Any] | Skip | DeadLetter:
    arxiv_id = arxiv_id_from_filename(path)
    native_id = arxiv_id or os.path.basename(path.rstrip("/"))
    try:
        raw, single = load_paper(path)
    except LatexError as e:
        return DeadLetter(SOURCE, path, native_id, str(e))
    except OSError as e:
        return DeadLetter(SOURCE, path, native_id, f"cannot open: {e}")
    if single:
        ((name, data),) = raw.items()
        if name.lower().endswith(SUPPORT_EXTENSIONS):
            return Skip(SOURCE, "support_file")
        if data.startswith(b"%PDF"):
            return DeadLetter(SOURCE, path, native_id, "PDF, not LaTeX")
    files = {}
    for name, data in raw.items():
        try:
            files[name] = strip_comments(decode_tex(data))
        except Undecodable as e:  # not text: left out, as a missing file is (`clean_project`)
            if single:
                return DeadLetter(SOURCE, path, native_id, f"undecodable: {e}")
    if single:  # the one file is the main file, whatever its extension
        (name,) = files
        main = name if _DOCUMENTCLASS_RE.search(files[name]) else None
    else:
        main = find_main_file(files)
    if main is None:
        return DeadLetter(SOURCE, path, native_id, "no main .tex file (none has \\documentclass)")
    try:
        cleaned = clean_project(files, main)
    except LatexError as e:
        return DeadLetter(SOURCE, path, native_id, str(e))
    if cleaned.text is None:
        return Skip(SOURCE, "no_section")
    if not cleaned.text:
        return Skip(SOURCE, "empty")
    meta = {
        "arxiv_id": arxiv_id,
        "main_file": main,
        "files_merged": cleaned.merged.files_merged,
        "files_missing": cleaned.merged.files_missing,
        "inputs_missing": cleaned.inputs_missing,
        "macros_expanded": cleaned.macros_expanded,
    }
    url = f"https://arxiv.org/abs/{arxiv_id}" if arxiv_id else path
    return make_document(SOURCE, native_id, cleaned.text, url, meta=meta)
