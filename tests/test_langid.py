"""fastText lid.176 under numpy 2, with newlines and other line separators."""

from __future__ import annotations

import bz2

import numpy as np
import pytest

from pipeline.filters.langid import LanguageIdentifier, check_fasttext_module, to_single_line


@pytest.fixture(scope="module")
def lid(lid_model):
    return LanguageIdentifier(lid_model)


def test_pinned_fasttext_module_is_the_one_imported():
    check_fasttext_module()  # raises if fasttext-predict & co. are installed beside it
    import fasttext

    assert fasttext.__file__.replace("\\", "/").endswith("fasttext/__init__.py")


def test_raw_single_string_predict_fails_under_numpy2_and_ours_does_not(lid):
    # The trap this wrapper exists for: fastText 0.9.3 calls np.array(copy=False).
    if int(np.__version__.split(".")[0]) >= 2:
        with pytest.raises(ValueError, match="Unable to avoid copy"):
            lid.model.predict("The quick brown fox jumps over the lazy dog.")
    [(lang, score)] = lid.predict(["The quick brown fox jumps over the lazy dog."])
    assert lang == "en" and score > 0.5


def test_line_separators_become_spaces():
    assert to_single_line("a\nb\r\nc\u2028d\x85e\u2029f\vg\fh") == "a b c d e f g h"


def test_real_texts_multiline(lid, demo_inputs):
    alice = demo_inputs["inputs/books/alice29.txt"].read_text(encoding="latin-1")
    paragraph = alice[alice.index("Alice was beginning") :][:2000]  # many lines
    assert "\n" in paragraph
    bg_xml = bz2.open(demo_inputs["inputs/wikipedia/bgwiki-latest-pages-articles-shortened.xml.bz2"]).read()
    bg = bg_xml.decode("utf-16")
    bg_text = bg[bg.index("<text") :][:3000]
    got = lid.predict([paragraph, bg_text, "", " \n\t "])
    assert got[0][0] == "en" and got[0][1] > 0.9
    assert got[1][0] == "bg"
    assert got[2] == ("", 0.0) and got[3] == ("", 0.0)  # no words: no guess


def test_batch_equals_one_by_one(lid, demo_inputs):
    text = demo_inputs["inputs/books/plrabn12.txt"].read_text(encoding="latin-1")
    chunks = [text[i : i + 500] for i in range(0, 20000, 500)]
    batched = lid.predict(chunks)
    assert batched == [lid.predict([c])[0] for c in chunks]


def test_missing_model_is_a_clear_error(tmp_path):
    from pipeline.filters.langid import LangIdError

    with pytest.raises(LangIdError, match="lid.176"):
        LanguageIdentifier(tmp_path / "lid.176.ftz")


def test_two_line_document_scores_as_its_space_joined_form(lid, demo_inputs):
    alice = demo_inputs["inputs/books/alice29.txt"].read_text(encoding="latin-1")
    start = alice.index("Alice was beginning")
    first, second = alice[start:].split("\n")[:2]
    assert lid.predict([first + "\n" + second]) == lid.predict([first + " " + second])


def test_all_caps_text_is_read_in_lower_case(lid, demo_inputs):
    from pipeline.filters.langid import case_view

    alice = demo_inputs["inputs/books/alice29.txt"].read_text(encoding="latin-1")
    paragraph = " ".join(alice.split("\n\n")[40:46])  # six paragraphs of real English
    upper = paragraph.upper()
    assert lid.predict([upper]) == lid.predict([paragraph.lower()])
    assert lid.predict([upper])[0][0] == "en" and lid.predict([upper])[0][1] > 0.9
    assert lid.predict(["MY FRIEND IS A BIRD"])[0][0] == "en"
    # capitals a minority (acronyms, names, a title line): the text is read as it is
    assert case_view(paragraph) is paragraph
    assert case_view("NASA and the ESA launched it") == "NASA and the ESA launched it"
    assert case_view("THE TITLE\n" + paragraph).startswith("THE TITLE\n")


def test_cased_letters_count_as_str_methods_do(demo_inputs):
    """The ASCII shortcut counts exactly what testing each character does, on
    real books and on letters whose case is not plain A-Z."""
    from pipeline.filters.langid import cased_letters

    texts = [demo_inputs[k].read_text(encoding="latin-1") for k in ("inputs/books/alice29.txt",
                                                                    "inputs/books/plrabn12.txt")]
    texts += ["ÀÉÎ abc", "Привет МИР", "ǅ titlecase", "ß straße", "lone \ud83d surrogate", "ΣΑΣ σας",
              "ﬀ ligature", "ⅷ Ⅷ roman", "Ⓐ ⓐ", "", "1234 !?", "MY FRIEND IS A BIRD"]
    for text in texts:
        assert cased_letters(text) == (sum(map(str.isupper, text)), sum(map(str.islower, text)))
    assert cased_letters("MY FRIEND IS A BIRD") == (15, 0)
