"""StackExchange reader and assembler on a few rows copied from the real coffee
dump, then on the two real Posts.xml files of the shared corpus, then through
the clean job with a question and its answers in different files. Counts come
from the corpus MANIFEST; answer orders were read by hand from the raw XML."""

from __future__ import annotations

import collections
import gzip
import json

import pytest

from pipeline.core.schema import doc_id
from pipeline.sources import stackexchange
from pipeline.sources.base import DeadLetter, Part, Skip

# Rows of coffee.stackexchange.com_2015-03_Posts.xml, verbatim except where a
# comment says otherwise. Answer 57 comes first: file order must not matter.
SMALL_POSTS = r"""<?xml version="1.0" encoding="utf-8"?>
<posts>
  <row Id="57" PostTypeId="2" ParentId="48" CreationDate="2015-01-27T22:36:32.920" Score="4" Body="&lt;p&gt;First, lets ignore blad grinders entirely.  Any grinder that doesn't have a motor will be relatively quiet.  You'll be at the mercy of the crunching beans, but that's it.  Add to this that the more the grinder weighs, or the more &quot;heft&quot; it has to it, the quieter it will typically be to the additional mass damping any vibration.  When adding a motor to the mix, each step between the motor and the burrs adds an opportunity for noise.  As such, a direct drive grinder will typically be quieter than anything involving a gearbox.   &lt;/p&gt;&#xA;&#xA;&lt;p&gt;&lt;strong&gt;The pecking order is basically...&lt;/strong&gt;&lt;/p&gt;&#xA;&#xA;&lt;p&gt;Hand Grinder --&gt; Direct Drive Flat Burr --&gt; Direct Drive Conical Burr --&gt; Gear-Reduced Burr&lt;/p&gt;&#xA;&#xA;&lt;p&gt;While Decibel ratings are available from most manufacturers, they're difficult to translate into a subjective estimate of &quot;harshness.&quot;  I deal with these regularly and found that some of my favorite grinders are technically louder than several others, including the Baratza Vario; The difference is that they have a much more mellow drone rather than the gear motor's quieter whine.&lt;/p&gt;&#xA;" OwnerUserId="26" LastActivityDate="2015-01-27T22:36:32.920" CommentCount="0" />
  <row Id="48" PostTypeId="1" AcceptedAnswerId="57" CreationDate="2015-01-27T22:20:11.957" Score="4" ViewCount="23" Body="&lt;p&gt;Perhaps my question should be &quot;What is the best type of grinder to use at my desk if I work in a cubicle and use a French Press?&quot;. &lt;/p&gt;&#xA;&#xA;&lt;p&gt;I have tried finding decibel measurements on Amazon's website, but most of the coffee grinders listed don't specify them.&lt;/p&gt;&#xA;" OwnerUserId="44" LastActivityDate="2015-01-27T22:36:32.920" Title="Which type of coffee grinder is the quietest?" Tags="&lt;grinder&gt;" AnswerCount="3" CommentCount="0" FavoriteCount="1" />
  <row Id="49" PostTypeId="2" ParentId="48" CreationDate="2015-01-27T22:22:40.400" Score="1" Body="&lt;p&gt;A manual coffee grinder like the &quot;Hario Ceramic Coffee Mill&quot;.&lt;/p&gt;&#xA;" OwnerUserId="54" LastActivityDate="2015-01-27T22:22:40.400" CommentCount="0" />
  <row Id="51" PostTypeId="2" ParentId="48" CreationDate="2015-01-27T22:30:48.523" Score="1" Body="&lt;p&gt;&lt;a href=&quot;http://www.wholelattelove.com&quot; rel=&quot;nofollow&quot;&gt;WholeLatteLove.com&lt;/a&gt; actually provides decibel ratings for many of their coffee grinders such as the &lt;a href=&quot;http://www.wholelattelove.com/products/mazzer-mini-electronic-type-a-coffee-grinder&quot; rel=&quot;nofollow&quot;&gt;Mazzer Mini&lt;/a&gt;. Perhaps you could compare some grinders there.&lt;/p&gt;&#xA;&#xA;&lt;blockquote&gt;&#xA;  &lt;p&gt;&lt;strong&gt;NOTE&lt;/strong&gt; I do happen to work for Whole Latte Love, and would therefor have a bias toward using their site. However, I don't know of any other other site that provides decibel readings for their grinders.&lt;/p&gt;&#xA;&lt;/blockquote&gt;&#xA;" OwnerUserId="4" LastActivityDate="2015-01-27T22:30:48.523" CommentCount="0" />
  <!-- an answer to question 38, which is left out: an orphan -->
  <row Id="45" PostTypeId="2" ParentId="38" CreationDate="2015-01-27T22:15:19.220" Score="7" Body="&lt;p&gt;Your method most closely resembles &lt;a href=&quot;http://en.wikipedia.org/wiki/Turkish_coffee&quot;&gt;Turkish Coffee&lt;/a&gt;, which is suggested to be served at hot, &lt;strong&gt;but not boiling&lt;/strong&gt; temperatures. Since the exposure to the grounds is so direct, it's easy to burn the coffee at boiling temperatures. You want a full body, but not a burnt taste (yuck!) &lt;a href=&quot;http://www.turkishcoffeeworld.com/How-to-make-Turkish-Coffee-s/54.htm&quot;&gt;Turkish Coffee World&lt;/a&gt; recommends about 158 degrees Fahrenheit or 70 degrees Celsius.&lt;/p&gt;&#xA;" OwnerUserId="4" LastActivityDate="2015-01-27T22:15:19.220" CommentCount="0" />
  <!-- Score="2" changed to "n/a" -->
  <row Id="42" PostTypeId="2" ParentId="38" CreationDate="2015-01-27T22:11:07.213" Score="n/a" Body="&lt;p&gt;I'm no expert, but a frequent enjoyer, and I also use freshly ground coffee in a cup, then pour water over it. &lt;strong&gt;I always go with boiling water and have never heard of any reason to change.&lt;/strong&gt; My coffee tastes great too, so I think I'm doing it right.&lt;/p&gt;&#xA;&#xA;&lt;p&gt;By the way, in my country (Sweden) we call that a 'Turkish' brew.&lt;/p&gt;&#xA;" OwnerUserId="52" LastActivityDate="2015-01-27T22:11:07.213" CommentCount="1" />
  <row Id="370" PostTypeId="4" CreationDate="2015-02-06T13:58:36.317" Score="0" Body="" OwnerUserId="-1" LastEditorUserId="-1" LastEditDate="2015-02-06T13:58:36.317" LastActivityDate="2015-02-06T13:58:36.317" CommentCount="0" />
  <!-- row 370 again, its Id removed -->
  <row PostTypeId="4" CreationDate="2015-02-06T13:58:36.317" Score="0" Body="" OwnerUserId="-1" LastEditorUserId="-1" LastEditDate="2015-02-06T13:58:36.317" LastActivityDate="2015-02-06T13:58:36.317" CommentCount="0" />
</posts>
"""

QUESTION_48 = (
    "Which type of coffee grinder is the quietest?\n\n"
    'Perhaps my question should be "What is the best type of grinder to use at my desk if I work '
    'in a cubicle and use a French Press?".\n\n'
    "I have tried finding decibel measurements on Amazon's website, but most of the coffee "
    "grinders listed don't specify them."
)
ANSWER_57 = (  # score 4
    "First, lets ignore blad grinders entirely. Any grinder that doesn't have a motor will be "
    "relatively quiet. You'll be at the mercy of the crunching beans, but that's it. Add to this "
    'that the more the grinder weighs, or the more "heft" it has to it, the quieter it will '
    "typically be to the additional mass damping any vibration. When adding a motor to the mix, "
    "each step between the motor and the burrs adds an opportunity for noise. As such, a direct "
    "drive grinder will typically be quieter than anything involving a gearbox.\n\n"
    "The pecking order is basically...\n\n"
    "Hand Grinder --> Direct Drive Flat Burr --> Direct Drive Conical Burr --> Gear-Reduced Burr\n\n"
    "While Decibel ratings are available from most manufacturers, they're difficult to translate "
    'into a subjective estimate of "harshness." I deal with these regularly and found that some '
    "of my favorite grinders are technically louder than several others, including the Baratza "
    "Vario; The difference is that they have a much more mellow drone rather than the gear "
    "motor's quieter whine."
)
ANSWER_49 = 'A manual coffee grinder like the "Hario Ceramic Coffee Mill".'  # score 1, lower Id
ANSWER_51 = (  # score 1
    "WholeLatteLove.com actually provides decibel ratings for many of their coffee grinders such "
    "as the Mazzer Mini. Perhaps you could compare some grinders there.\n\n"
    "NOTE I do happen to work for Whole Latte Love, and would therefor have a bias toward using "
    "their site. However, I don't know of any other other site that provides decibel readings "
    "for their grinders."
)


def test_small_dump(tmp_path):
    path = tmp_path / "coffee.stackexchange.com_2015-03_Posts.xml"
    path.write_text(SMALL_POSTS, encoding="utf-8")
    records = list(stackexchange.read_documents(str(path), None))
    site = "coffee.stackexchange.com"
    assert records[:-1] == [
        DeadLetter("stackexchange", str(path), "Id 42", "Id 42: bad Score 'n/a'"),
        Skip("stackexchange", "post_type"),
        DeadLetter("stackexchange", str(path), "row 8", "row 8: no Id"),
        Skip("stackexchange", "orphan_answer"),
    ]
    doc = records[-1]
    # answers by score, highest first; 49 and 51 tie at 1: lower Id first
    assert doc["text"] == f"{QUESTION_48}\n\n{ANSWER_57}\n\n{ANSWER_49}\n\n{ANSWER_51}"
    assert doc["id"] == doc_id("stackexchange", f"{site}/48")
    assert doc["url"] == f"https://{site}/questions/48"
    assert doc["lang"] == ""
    assert json.loads(doc["meta"]) == {
        "site": site,
        "question_id": 48,
        "title": "Which type of coffee grinder is the quietest?",
        "score": 4,
        "answers": 3,
        "tags": ["grinder"],
    }

    compressed = tmp_path / "coffee.stackexchange.com_Posts.xml.gz"
    compressed.write_bytes(gzip.compress(SMALL_POSTS.encode("utf-8")))
    assert list(stackexchange.read_documents(str(compressed), None))[-1] == doc



def _rows(*ids: int) -> str:
    """A Posts.xml of the SMALL_POSTS rows with these Ids, in this order."""
    lines = {line.split('"')[1]: line for line in SMALL_POSTS.splitlines() if line.startswith('  <row Id="')}
    rows = "\n".join(lines[str(i)] for i in ids)
    return f'<?xml version="1.0" encoding="utf-8"?>\n<posts>\n{rows}\n</posts>\n'


def _groups(*paths) -> dict[str, list]:
    """{key: Part values} of the files, as the clean job groups them."""
    groups: dict[str, list] = {}
    for path in paths:
        for rec in stackexchange.read(str(path), None):
            if isinstance(rec, Part):
                groups.setdefault(rec.key, []).append(rec.value)
    return groups


def test_read_yields_a_part_per_post_as_rows_come(tmp_path):
    path = tmp_path / "coffee.stackexchange.com_2015-03_Posts.xml"
    path.write_text(SMALL_POSTS, encoding="utf-8")
    records = list(stackexchange.read(str(path), None))
    site = "coffee.stackexchange.com"
    assert [(r.key, r.value[:2]) if isinstance(r, Part) else r for r in records] == [
        (f"{site}/48", ("2", 57)),
        (f"{site}/48", ("1", 48)),
        (f"{site}/48", ("2", 49)),
        (f"{site}/48", ("2", 51)),
        (f"{site}/38", ("2", 45)),  # its question is not in the file
        DeadLetter("stackexchange", str(path), "Id 42", "Id 42: bad Score 'n/a'"),
        Skip("stackexchange", "post_type"),
        DeadLetter("stackexchange", str(path), "row 8", "row 8: no Id"),
    ]
    # converted as read: the body as text, the score, title and tags
    assert records[1].value[4:] == (4, QUESTION_48.split("\n\n", 1)[1],
                                    "Which type of coffee grinder is the quietest?", ["grinder"])
    assert records[2].value[4:] == (1, ANSWER_49)


def test_duplicate_ids_keep_the_first_copy(tmp_path):
    # File a: answer 49 twice, the second copy's text changed; file b: question
    # 48 again, retitled. The first copy by (path, line) is kept, whatever order
    # the values come in; every other copy is a DeadLetter with its own path.
    first = tmp_path / "a" / "coffee.stackexchange.com_Posts.xml"
    later = tmp_path / "b" / "coffee.stackexchange.com_Posts.xml"
    first.parent.mkdir()
    later.parent.mkdir()
    text, copy = _rows(48, 57, 49, 49), "A manual coffee grinder"
    cut = text.rindex(copy)
    first.write_text(text[:cut] + "A second copy" + text[cut + len(copy) :], encoding="utf-8")
    later.write_text(_rows(48).replace("the quietest?", "the loudest?"), encoding="utf-8")
    key = "coffee.stackexchange.com/48"
    values = _groups(first, later)[key]
    assert [v[:2] for v in values] == [("1", 48), ("2", 57), ("2", 49), ("2", 49), ("1", 48)]
    for order in (values, values[::-1], values[3:] + values[:3]):
        records = list(stackexchange.assemble(key, iter(order), None))
        assert sorted(r for r in records if isinstance(r, DeadLetter)) == [
            DeadLetter("stackexchange", str(first), "Id 49", "Id 49: duplicate Id"),
            DeadLetter("stackexchange", str(later), "Id 48", "Id 48: duplicate Id"),
        ]
        (doc,) = [r for r in records if isinstance(r, dict)]
        assert doc["text"] == f"{QUESTION_48}\n\n{ANSWER_57}\n\n{ANSWER_49}"
        assert json.loads(doc["meta"])["answers"] == 2
    # answers without their question: a Skip per answer (after the duplicate's DeadLetter)
    assert list(stackexchange.assemble(key, iter(values[1:4]), None)) == [
        DeadLetter("stackexchange", str(first), "Id 49", "Id 49: duplicate Id"),
        Skip("stackexchange", "orphan_answer"),
        Skip("stackexchange", "orphan_answer"),
    ]


def test_seven_zip_and_broken_xml_are_dead_letters(tmp_path):
    archive = tmp_path / "coffee.stackexchange.com.7z"
    archive.write_bytes(b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(32))  # the 7z signature header
    assert list(stackexchange.read(str(archive), None)) == [
        DeadLetter("stackexchange", str(archive), "", "7z archive: extract Posts.xml first")
    ]
    cut = tmp_path / "Posts.xml"
    cut.write_text(SMALL_POSTS[: SMALL_POSTS.index('<row Id="49"') + 40], encoding="utf-8")
    records = list(stackexchange.read_documents(str(cut), None))
    assert len(records) == 2
    # Row 49 is cut: it never closes (line 5 of the file).
    assert records[0] == DeadLetter(
        "stackexchange", str(cut), "Id 49", "Id 49: malformed XML on line 5: row never closed"
    )
    assert records[1]["url"] == "https://unknown/questions/48"  # no site in the name
    assert json.loads(records[1]["meta"])["answers"] == 1  # 57, read before the cut


def test_malformed_row_costs_only_itself(tmp_path):
    # Answer 51 loses the closing quote of its Score: not well-formed XML. The
    # question and its other answers (57, 49) come as before.
    broken = SMALL_POSTS.replace('Id="51" PostTypeId="2" ParentId="48" CreationDate="2015-01-27T22:30:48.523" Score="1"',
                                 'Id="51" PostTypeId="2" ParentId="48" CreationDate="2015-01-27T22:30:48.523" Score="1')
    assert broken != SMALL_POSTS
    path = tmp_path / "coffee.stackexchange.com_Posts.xml"
    path.write_text(broken, encoding="utf-8")
    records = list(stackexchange.read_documents(str(path), None))
    assert records[0] == DeadLetter(
        "stackexchange", str(path), "Id 51",
        "Id 51: malformed XML on line 6, column 96 of the row: not well-formed (invalid token)",
    )
    assert records[1:-1] == [
        DeadLetter("stackexchange", str(path), "Id 42", "Id 42: bad Score 'n/a'"),
        Skip("stackexchange", "post_type"),
        DeadLetter("stackexchange", str(path), "row 8", "row 8: no Id"),
        Skip("stackexchange", "orphan_answer"),
    ]
    assert records[-1]["text"] == f"{QUESTION_48}\n\n{ANSWER_57}\n\n{ANSWER_49}"


def test_malformed_row_in_a_real_dump(shared_corpus, tmp_path):
    raw = (shared_corpus / "stackexchange" / "coffee.stackexchange.com_2015-03_Posts.xml").read_bytes()
    # Answer 82 (to question 66, score 10), its Body's closing quote removed
    start = raw.index(b'<row Id="82" ')
    end = raw.index(b"/>", start)
    row = raw[start:end]
    body_end = row.index(b'" OwnerUserId=')
    path = tmp_path / "coffee.stackexchange.com_Posts.xml"
    path.write_bytes(raw[: start + body_end] + raw[start + body_end + 1 :])
    read = Read(path)
    assert len(read.dead) == 1 and read.dead[0].record == "Id 82"
    assert len(read.docs) == 225  # MANIFEST: 225 questions, 327 answers
    assert sum(m["answers"] for m in read.meta.values()) == 327 - 1
    assert read.meta[66]["answers"] == 3


def test_html_to_text_keeps_code_blocks():
    html = (
        "<p>Use <code>f</code>:</p>\n<pre><code>def f(x):\n    return x &lt; 1\n\n\nprint(f(0))\n"
        '</code></pre>\n<p><img src="a.png" alt="enter image description here"></p>'
        "<ul><li>one</li><li>two</li></ul>"
    )
    assert stackexchange.html_to_text(html) == (
        "Use f:\n\ndef f(x):\n    return x < 1\n\n\nprint(f(0))\n\n  • one\n  • two"
    )


def test_site_and_tags():
    assert stackexchange.site_from_path("beer.stackexchange.com_2017-03_Posts.xml") == "beer.stackexchange.com"
    assert stackexchange.site_from_path("gs://b/dumps/mathoverflow.net/Posts.xml") == "mathoverflow.net"
    assert stackexchange.site_from_path("Posts.xml") == "unknown"
    assert stackexchange.parse_tags("<storage><whole-bean>") == ["storage", "whole-bean"]
    assert stackexchange.parse_tags("|storage|whole-bean|") == ["storage", "whole-bean"]


class Read:
    def __init__(self, path):
        self.records = list(stackexchange.read_documents(str(path), None))
        self.docs = [r for r in self.records if isinstance(r, dict)]
        self.skips = collections.Counter(r.reason for r in self.records if isinstance(r, Skip))
        self.dead = [r for r in self.records if isinstance(r, DeadLetter)]
        self.meta = {json.loads(d["meta"])["question_id"]: json.loads(d["meta"]) for d in self.docs}


@pytest.mark.parametrize(
    "name, questions, answers, other",
    [
        ("coffee.stackexchange.com_2015-03_Posts.xml", 225, 327, 40),  # MANIFEST counts
        ("beer.stackexchange.com_2017-03_Posts.xml", 663, 1572, 119),
    ],
)
def test_real_dump_counts(shared_corpus, name, questions, answers, other):
    read = Read(shared_corpus / "stackexchange" / name)
    assert len(read.docs) == questions
    assert read.skips == {"post_type": other}  # no orphans: every answer's question is there
    assert read.dead == []
    assert sum(m["answers"] for m in read.meta.values()) == answers
    ids = [m["question_id"] for m in read.meta.values()]
    assert ids == sorted(ids) and len({d["id"] for d in read.docs}) == questions


def test_real_answers_sorted_by_score(shared_corpus):
    read = Read(shared_corpus / "stackexchange" / "coffee.stackexchange.com_2015-03_Posts.xml")
    doc = next(d for d in read.docs if d["url"].endswith("/questions/66"))
    text = doc["text"]
    assert text.startswith("What coffees are the least acidic?\n\nI don't like coffees with an acidic/sour taste.")
    # In the file: 71 (score 7), 82 (10), 143 (5), 181 (16); sorted: 181, 82, 71, 143.
    openings = [
        "\n\nLets answer this question with some data!",  # 181
        "\n\nSumatran coffees (and others from the Asia/Pacific region",  # 82
        "\n\nI find that most of the Brazil dry processed coffee",  # 71
        "\n\n  1. Coffee enthusiasts & aficionados identify acidity",  # 143, an <ol>
    ]
    positions = [text.index(o) for o in openings]
    assert positions == sorted(positions)
    assert read.meta[66]["answers"] == 4 and read.meta[66]["tags"] == ["flavor", "rating", "bean-varieties"]


BEER_1 = (
    "What is a citra hop, and how does it differ from other hops?\n\n"
    "I was offered a beer the other day that was reportedly made with citra hops. What are citra "
    "hops? Why should I care that my beer is made with them?\n\n"
    "Citra is a registered trademark since 2007. Citra Brand hops have fairly high alpha acids and "
    "total oil contents with a low percentage of cohumulone content and imparts interesting citrus "
    "and tropical fruit characters to beer.\n\n"
    "For more information, you can read the Wikipedia article on the Citra brand."
)
BEER_4771 = (
    'Is the german "Warsteiner" a Pilsner?\n\n'
    "I've heard lately, that the german beer Warsteiner does not fullfill the german "
    "Reinheitsgebot and therefore is is not allowed to be called Pilsner, that is why they call "
    "it a Premium Verum.\n\nIs that true and if yes, why?\n\n"
    # answers 4777 (score 4), 4794 (1), 4775 (-2); in the file 4775 comes first
    "I think your friend got the wrong end of a stick :p\n\n"
    "Wikipedia lists it as a pilsner, so does BeerAdvocate and the Warsteiner site.\n\n"
    "I think Premium Verum is just a name.\n\n"
    '"premium verum" is just a marketing-joke. Warsteiner is a real "Pilsener". And they brew '
    "according to the german purity law.\n\n"
    "Martin (I studied Brewing Science in Weihenstephan and know Warsteiner very well)\n\n"
    "As far as I read, Warsteiner is not a Pilsener because they don't use enough hops. It's like "
    "a Pilsener but less bitter."
)


def test_real_documents(shared_corpus):
    beer = Read(shared_corpus / "stackexchange" / "beer.stackexchange.com_2017-03_Posts.xml")
    coffee = Read(shared_corpus / "stackexchange" / "coffee.stackexchange.com_2015-03_Posts.xml")
    # characters of all texts, as the reader made them when it held a whole file
    assert sum(len(d["text"]) for d in beer.docs) == 1_505_968
    assert sum(len(d["text"]) for d in coffee.docs) == 441_584
    docs = {d["url"].rsplit("/", 1)[1]: d for d in beer.docs}
    site = "beer.stackexchange.com"
    assert docs["1"]["id"] == doc_id("stackexchange", f"{site}/1")
    assert docs["1"]["text"] == BEER_1
    assert docs["4771"]["id"] == doc_id("stackexchange", f"{site}/4771")
    assert docs["4771"]["text"] == BEER_4771
    assert json.loads(docs["4771"]["meta"]) == {
        "site": site,
        "question_id": 4771,
        "title": 'Is the german "Warsteiner" a Pilsner?',
        "score": 4,
        "answers": 3,
        "tags": ["brewing", "breweries", "german-beers"],
    }


def test_answers_in_other_files_through_the_clean_job(tmp_path, lid_model):
    # Question 48 and answer 57 in one file, answers 49 and 51 (and the orphan 45)
    # in another, question 48 retitled in a third: the clean job on the local
    # FnApiRunner (two worker processes) joins them into one document; the third
    # file's copy, later by path, is dead-lettered.
    from pipeline.clean import run_clean
    from pipeline.core.config import SOURCES, load_config
    from pipeline.core.schema import clean_files, read_batches
    from tests.conftest import ROOT

    files = {"a": _rows(48, 57), "b": _rows(49, 45, 51), "c": _rows(48).replace("the quietest?", "the loudest?")}
    for name, text in files.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "coffee.stackexchange.com_Posts.xml").write_text(text, encoding="utf-8")
    inputs = json.dumps([str(tmp_path / "*" / "coffee.stackexchange.com_Posts.xml")])
    cfg = load_config(ROOT / "configs" / "demo.yaml", [
        f"out_dir={tmp_path / 'out'}", "corpus_dir=null", f"langid.model={lid_model}",
        *(f"sources.{s}.inputs={inputs if s == 'stackexchange' else '[]'}" for s in SOURCES),
    ])
    manifest = run_clean(cfg)
    assert manifest["counters"]["stackexchange"] == {
        "docs_read": 1, "docs_kept": 1, "dead_letter": 1, "skip.orphan_answer": 1,
    }
    (path,) = clean_files(cfg.out_dir, manifest)["stackexchange"]
    (doc,) = [row for batch in read_batches(path) for row in batch.to_pylist()]
    assert doc["text"] == f"{QUESTION_48}\n\n{ANSWER_57}\n\n{ANSWER_49}\n\n{ANSWER_51}"
    assert doc["id"] == doc_id("stackexchange", "coffee.stackexchange.com/48")
    assert json.loads(doc["meta"])["answers"] == 3
