"""Language identification with fastText `lid.176` (Joulin et al. 2016; CCNet, LLaMA 2.1).

The `fasttext` module must be the source-built `fasttext` 0.9.3 distribution:
three other PyPI packages (fasttext-predict, fasttext-wheel,
fasttext-numpy2-wheel) install a module of the same name over it without any
error, and the last one installed wins. `check_fasttext_module()` refuses them.

Two traps of fastText 0.9.3 handled here:
- under numpy 2 its single-string `predict` raises "Unable to avoid copy"
  (it calls `np.array(probs, copy=False)`); the list form does not, so we only
  ever predict on lists;
- it rejects text containing a newline, and splits words on other line
  separators inconsistently; every line separator becomes a space first.

fastText holds every word and n-gram id of the line it predicts on (about 7
bytes per character), and a language is settled long before a megabyte, so a
text longer than `SAMPLE_CHARS` is identified on `lid_sample(text)`: evenly
spaced windows that add up to `SAMPLE_CHARS`. Shorter texts (every document of
the samples and demos) are predicted on whole, as before.
"""

from __future__ import annotations

import importlib.metadata
import re
import string
from pathlib import Path

from pipeline.core.config import PipelineError

PINNED_FASTTEXT = ("fasttext", "0.9.3")
_IMPOSTORS = ("fasttext-predict", "fasttext-wheel", "fasttext-numpy2-wheel")

# \n \r \v \f, NEL (U+0085), LINE SEPARATOR (U+2028), PARAGRAPH SEPARATOR (U+2029)
_LINE_SEPARATORS = re.compile("[\n\r\v\f\x85\u2028\u2029]+")
_LABEL_PREFIX = "__label__"
_WHITESPACE = re.compile(r"\s")
_LAST_WORD = re.compile(r"\s\S*\Z")

# A longer text is identified on SAMPLE_WINDOWS windows of SAMPLE_CHARS in all
# (4 Mi characters: longer than any single document of the sample corpus, the
# largest being a 2.2 MB book).
SAMPLE_CHARS = 1 << 22
SAMPLE_WINDOWS = 8
CASE_PROBE_CHARS = 4096  # enough letters to tell all-caps text, at no cost beside fastText's


class LangIdError(PipelineError):
    """The fastText module or model is not usable."""


def check_fasttext_module() -> None:
    """Raise LangIdError unless `import fasttext` is the pinned source-built package.

    Raises:
        LangIdError: `fasttext` 0.9.3 is not installed, or another distribution
            that ships a `fasttext` module is installed beside it.
    """
    name, version = PINNED_FASTTEXT
    try:
        found = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        raise LangIdError(f"the {name}=={version} package is not installed") from None
    if found != version:
        raise LangIdError(f"{name} {found} is installed; the pinned version is {version}")
    others = []
    for impostor in _IMPOSTORS:
        try:
            others.append(f"{impostor} {importlib.metadata.version(impostor)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    if others:
        raise LangIdError(
            "these packages also install a `fasttext` module and may have replaced the "
            f"pinned one: {', '.join(others)}; uninstall them"
        )


def to_single_line(text: str) -> str:
    """Replace every run of line separators by one space (fastText reads one line)."""
    return _LINE_SEPARATORS.sub(" ", text)


def case_view(text: str) -> str:
    """The text language ID reads: lower-cased when most of its cased letters are
    capitals (counted on `CASE_PROBE_CHARS` evenly spaced characters at most).
    lid.176 learnt mixed-case text and takes all-caps English for another
    language ("MY FRIEND IS A BIRD" -> mr 0.80); ordinary text, where capitals
    are a minority, is read as it is."""
    upper, lower = cased_letters(lid_sample(text, CASE_PROBE_CHARS))
    return text.lower() if upper > lower else text


_ASCII_UPPER, _ASCII_LOWER = string.ascii_uppercase.encode(), string.ascii_lowercase.encode()
_NOT_ASCII = re.compile(r"[^\x00-\x7f]+")


def cased_letters(text: str) -> tuple[int, int]:
    """How many characters of `text` are upper case and how many lower case
    (`str.isupper`, `str.islower`): the ASCII ones counted by `bytes.translate`,
    5x faster than testing each character, the others one by one."""
    ascii_part = text.encode("ascii", "ignore")
    rest = "".join(_NOT_ASCII.findall(text)) if len(ascii_part) < len(text) else ""
    n = len(ascii_part)
    return (n - len(ascii_part.translate(None, _ASCII_UPPER)) + sum(map(str.isupper, rest)),
            n - len(ascii_part.translate(None, _ASCII_LOWER)) + sum(map(str.islower, rest)))


def lid_sample(text: str, max_chars: int = SAMPLE_CHARS, windows: int = SAMPLE_WINDOWS) -> str:
    """What language ID reads of a text: the text itself when it has at most
    `max_chars` characters; else `windows` evenly spaced windows of
    `max_chars // windows` characters (the first at the start, the last at
    the end) joined by spaces, each without the word cut at either edge
    (unless the window holds no whitespace: unspaced scripts)."""
    if len(text) <= max_chars:
        return text
    width = max_chars // windows
    parts = []
    for i in range(windows):
        lo = (len(text) - width) * i // max(windows - 1, 1)
        part = text[lo : lo + width]
        if lo > 0 and (m := _WHITESPACE.search(part)):
            part = part[m.end() :]
        if lo + width < len(text) and (m := _LAST_WORD.search(part)):
            part = part[: m.start()]
        parts.append(part)
    return " ".join(parts)


class LanguageIdentifier:
    """A loaded `lid.176` model (`.ftz` or `.bin`); predicts in batches.

    Load once per worker (Beam `DoFn.setup`); never pickle it.
    """

    def __init__(self, model_path: str | Path):
        check_fasttext_module()
        import fasttext

        path = Path(model_path)
        if not path.is_file():
            raise LangIdError(
                f"language-ID model not found: {path} (run `python -m pipeline fetch`, "
                "or set langid.model to a lid.176.ftz or lid.176.bin)"
            )
        fasttext.FastText.eprint = lambda *a, **k: None  # silence the load_model warning
        self.model = fasttext.load_model(str(path))

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        """Top language and probability for each text.

        Args:
            texts: N strings, any length, any line separators; one longer than
                `SAMPLE_CHARS` is identified on `lid_sample(text)`, a mostly
                upper-case one on its lower case (`case_view`).
        Returns:
            N pairs (ISO 639 code such as "en", probability in [0, 1]);
            ("", 0.0) for a text with no words.
        """
        if not texts:
            return []
        lines = [to_single_line(case_view(lid_sample(t))) for t in texts]
        labels, probs = self.model.predict(lines, k=1)
        out = []
        for line, label, prob in zip(lines, labels, probs):
            if len(label) == 0 or not line.strip():  # fastText still guesses on no words
                out.append(("", 0.0))
            else:
                out.append((label[0][len(_LABEL_PREFIX):], min(1.0, float(prob[0]))))
        return out
