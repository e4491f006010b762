"""Evaluation of a trained model: bytes per token exactly those of the text, loss and
bits per byte per source on the validation shards, perplexity on real documents
(Paloma's C4 sample), multiple-choice accuracy equal to lm-evaluation-harness's own on
our HF export, the in-loop evaluation in the training log, and the report."""

from __future__ import annotations

import gzip
import itertools
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core.config import load_config
from pipeline.report import collect, render_markdown
from tests.conftest import ROOT, read_log, retrained_tokenizer, tokenizer_refusal
from trainer.__main__ import main
from trainer.data import source_windows
from trainer.evaluate import (
    DocSet,
    load_docs,
    load_task,
    score_docs,
    starts_with_space,
    target_bytes,
    task_loglikelihoods,
    token_bytes,
    val_bits_per_byte,
)
from trainer.generate import load_model

PALOMA = "c4/paloma_c4_100_domains_www.theguardian.com.jsonl.gz"
TRICKY = ["naïve café — 東京 🙂", "tabs\tand  two spaces", " a leading space",
          "digits 2048 and ⅔", "line\nbreaks\n\n"]


@pytest.fixture(scope="module")
def model(trained_run):
    return load_model(trained_run["checkpoint"])[0]


@pytest.fixture(scope="module")
def paloma_texts(shared_corpus) -> list[str]:
    with gzip.open(shared_corpus / PALOMA, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def cloze_items(text: str, n: int = 24) -> list[dict]:
    """Multiple-choice items from real sentences of `text`: the context is a
    sentence's first 6 words, the gold choice its rest, the 3 others the rests of
    sentences further on; the gold index cycles 0..3."""
    sentences = [" ".join(s.split()) for s in re.split(r"(?<=[.!?])\s+", text)]
    sentences = [s for s in sentences if 10 <= len(s.split()) <= 22 and '"' not in s]
    rest = [" ".join(s.split()[6:]) for s in sentences]
    items = []
    for i in range(n):
        k = 3 * i
        choices = [rest[(k + d) % len(rest)] for d in (17, 41, 67)]
        choices.insert(i % 4, rest[k])
        items.append({"context": " ".join(sentences[k].split()[:6]), "choices": choices,
                      "gold": i % 4})
    return items


@pytest.fixture(scope="module")
def task_file(trained_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("task") / "alice_cloze.jsonl"
    items = cloze_items("\n".join(trained_run["texts"]["books"]))
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def test_token_bytes_add_up_to_the_text(trained_run, paloma_texts):
    """Per document ([BOS] + ids + [EOS]), the bytes the targets stand for are the
    UTF-8 bytes of the text: the training texts, Paloma's (curly quotes, pound signs
    in byte-fallback pieces), and strings with other scripts, emoji and spaces; per
    token they are what decoding one more token adds."""
    sp = trained_run["sp"]
    sizes, spaced = token_bytes(sp), starts_with_space(sp)
    texts = trained_run["texts"]["books"] + trained_run["texts"]["poetry"][:5] + paloma_texts + TRICKY
    for text in texts:
        ids = [1, *sp.encode(text), 2]
        assert target_bytes(torch.tensor([ids]), sizes, spaced, (1, 2)) == len(text.encode()), text
    assert any(sp.is_byte(i) for t in paloma_texts for i in sp.encode(t))  # fallback exercised
    for text in TRICKY + [paloma_texts[0][:300]]:
        ids = sp.encode(text)
        grown = [len(sp.decode(ids[:k]).encode()) for k in range(len(ids) + 1)]
        per_token = []
        for k, t in enumerate(ids):  # a byte piece only shows once its character is whole
            per_token.append(int(sizes[t]) - (k == 0 and bool(spaced[t])))
        assert sum(per_token) == grown[-1]
        complete = [k for k in range(len(ids) + 1) if not sp.decode(ids[:k]).endswith("\ufffd")]
        for a, b in itertools.pairwise(complete):
            assert sum(per_token[a:b]) == grown[b] - grown[a], (text, a, b)


def decoded_bytes(sp, w: list[int]) -> int:
    """UTF-8 bytes of the text of a window's targets w[1:], by decoding: each run of
    pieces between BOS/EOS decoded with the piece before it (then less that piece's
    own text), or alone after a boundary (decoding drops the dummy prefix there)."""
    total, j = 0, 1
    while j < len(w):
        if w[j] in (1, 2):
            j += 1
            continue
        k = j
        while k < len(w) and w[k] not in (1, 2):
            k += 1
        if w[j - 1] in (1, 2):
            total += len(sp.decode(w[j:k]).encode())
        else:
            total += len(sp.decode(w[j - 1:k]).encode()) - len(sp.decode(w[j - 1:j]).encode())
        j = k
    return total


def test_val_loss_and_bits_per_byte_per_source(trained_run, model):
    """The loss equals the training log's last validation loss (the same windows),
    and bits per byte is that loss in bits over the windows' bytes."""
    cfg = trained_run["cfg"]
    val = val_bits_per_byte(model, cfg.shards.out, cfg.trainer.seq_len,
                            cfg.trainer.val_batches * cfg.trainer.batch_size, 8, trained_run["sp"])
    logged = trained_run["summary"]["val"][-1]
    windows = source_windows(cfg.shards.out, cfg.trainer.seq_len, 32)
    assert set(val) == {"books", "poetry"}
    for source, r in val.items():
        assert r["loss"] == pytest.approx(logged["val_loss"][source], abs=1e-6)
        assert r["tokens"] == logged["val_tokens"][source] == 32 * 128
        assert r["bytes"] == sum(decoded_bytes(trained_run["sp"], w) for w in windows[source].tolist())
        assert 2.0 * r["tokens"] < r["bytes"] < 4.0 * r["tokens"]  # 1000 pieces: short ones
        assert r["bits_per_byte"] == pytest.approx(r["loss"] * r["tokens"] / math.log(2) / r["bytes"])
        assert 1.0 < r["bits_per_byte"] < math.log2(256)


def test_paloma_perplexity(trained_run, model, shared_corpus, paloma_texts, tmp_path):
    """Paloma's C4 sample: 10 documents, every token after BOS scored in windows of
    128, the same sum as one forward per window; bad lines are counted, not fatal."""
    sp = trained_run["sp"]
    docs = load_docs("paloma", str(shared_corpus / PALOMA), sp)
    assert len(docs.docs) == 10 and docs.skipped == {}
    assert docs.bytes == sum(len(t.encode()) for t in paloma_texts) == 31_586
    r = score_docs(model, docs, 128, batch_size=5)
    ids = [[1, *sp.encode(t)] for t in paloma_texts]
    assert r["tokens"] == sum(len(x) - 1 for x in ids)
    nats = 0.0
    with torch.no_grad():
        for s in ids:
            for k in range(0, len(s) - 1, 128):
                w = torch.tensor([s[k:k + 129]])
                nats += model(w[:, :-1], w[:, 1:], reduction="sum")[1].item()
    assert r["loss"] == pytest.approx(nats / r["tokens"], rel=1e-6)
    assert r["perplexity"] == pytest.approx(math.exp(r["loss"]))
    assert r["bits_per_byte"] == pytest.approx(nats / math.log(2) / 31_586, rel=1e-6)
    assert 2.0 < r["bits_per_byte"] < 8.0  # a tiny model trained on two books

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "One good line."}\nnot json\n[1, 2]\n{"url": "x"}\n{"text": ""}\n\n')
    d = load_docs("bad", str(bad), sp)
    assert (len(d.docs), d.bytes) == (1, 14)
    assert d.skipped == {"empty_text": 1, "no_text": 1, "not_an_object": 1, "not_json": 1}
    assert score_docs(model, DocSet("none", "-", [], 0), 128)["loss"] is None


def test_multiple_choice_equals_lm_eval_harness(trained_run, model, task_file, tmp_path):
    """lm-evaluation-harness (the `lm_eval` package), offline, on our HF export and a
    local task file in its own YAML format: every choice's log-likelihood equals ours
    within 1e-4, and so do acc and acc_norm."""
    task = load_task("alice_cloze", str(task_file), trained_run["sp"])
    assert len(task.gold) == 24 and task.skipped == {}
    ours = task_loglikelihoods(model, task)
    from trainer.evaluate import task_accuracy

    mine = task_accuracy(task, ours)

    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    (tasks_dir / "alice_cloze.yaml").write_text(
        "task: alice_cloze\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {task_file}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\n'
        "doc_to_choice: choices\n"
        "doc_to_target: gold\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"),
           "HF_DATASETS_CACHE": str(tmp_path / "datasets"), "TOKENIZERS_PARALLELISM": "false"}
    out = tmp_path / "lm-eval"
    proc = subprocess.run(
        [sys.executable, "-m", "lm_eval", "run", "--model", "hf",
         "--model_args", f"pretrained={trained_run['hf']},dtype=float32,add_bos_token=True",
         "--tasks", "alice_cloze", "--include_path", str(tasks_dir), "--device", "cpu",
         "--batch_size", "4", "--output_path", str(out), "--log_samples"],
        env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]["alice_cloze"]
    samples = [json.loads(line) for line in next(out.rglob("samples_alice_cloze_*.jsonl")).open()]
    samples.sort(key=lambda s: s["doc_id"])
    theirs = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    assert len(theirs) == 24
    np.testing.assert_allclose(np.array(theirs), np.array(ours), rtol=0, atol=1e-4)
    assert results["acc,none"] == mine["acc"]
    assert results["acc_norm,none"] == mine["acc_norm"]
    assert min(np.ptp(x) for x in ours) > 0.5  # the choices' scores differ: argmax decides


def test_eval_command_and_report(trained_run, task_file, shared_corpus, tmp_path, capsys):
    """`trainer eval` prints loss and bits per byte per source, the Paloma sample's
    perplexity and the task's accuracy, writes eval.json with greedy samples, and
    `pipeline report` shows it."""
    cfg = trained_run["cfg"]
    overrides = [f"shards.out={cfg.shards.out}", f"trainer.out={cfg.trainer.out}",
                 f"out_dir={tmp_path}", "trainer.seq_len=128", "trainer.batch_size=8",
                 "trainer.val_batches=4", f"trainer.eval.tasks.cloze={task_file}",
                 'trainer.eval.prompts=["Alice was", "The Queen said", "Of Man"]',
                 "trainer.eval.max_new_tokens=12"]
    args = ["eval", "--checkpoint", trained_run["checkpoint"], "--docs",
            str(shared_corpus / PALOMA)] + [x for o in overrides for x in ("--set", o)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    report = json.loads((Path(cfg.trainer.out) / "eval.json").read_text())
    for source in ("books", "poetry"):
        r = report["val"][source]
        assert f"{source:<14} loss {r['loss']:.4f}  bpb {r['bits_per_byte']:.4f}" in printed
    paloma = report["docs"]["paloma_c4_100_domains_www.theguardian.com"]
    assert paloma["docs"] == 10 and paloma["bytes"] == 31_586
    assert f"perplexity {paloma['perplexity']:.2f}" in printed
    assert report["tasks"]["cloze"]["items"] == 24
    assert [s["prompt"] for s in report["samples"]] == ["Alice was", "The Queen said", "Of Man"]
    assert all(len(s["tokens"]) == 12 for s in report["samples"])

    data = collect(load_config(ROOT / "configs" / "demo.yaml", overrides))
    assert data["eval"] == report
    text = render_markdown({**data, "shards": None})  # the test shards' manifest is minimal
    assert "## Evaluation" in text
    assert f"| books | {report['val']['books']['loss']:.4f} | {report['val']['books']['bits_per_byte']:.4f} |" in text
    assert f"{paloma['perplexity']:.2f}" in text
    assert report["samples"][0]["completion"].strip().splitlines()[0] in text


def test_eval_refuses_another_tokenizer_than_the_checkpoint_records(trained_run, tmp_path, capsys):
    """A tokenizer retrained at the recorded path scores the model on the wrong ids
    (wrong bits per byte): refused in one line, eval.json left as it was."""
    tok = retrained_tokenizer(trained_run, tmp_path)
    report = tmp_path / "train" / "eval.json"
    report.parent.mkdir()
    report.write_text('{"model": "before"}')
    sets = [f"shards.out={trained_run['cfg'].shards.out}", f"trainer.out={report.parent}",
            "trainer.seq_len=128", 'trainer.eval.prompts=["Alice was"]']
    assert main(["eval", "--checkpoint", tok["checkpoint"]] + [x for o in sets for x in ("--set", o)]) == 1
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err.startswith(tokenizer_refusal(tok)) and printed.err.count("\n") == 1
    assert report.read_text() == '{"model": "before"}'
    assert sorted(p.name for p in report.parent.iterdir()) == ["eval.json"]


def test_in_loop_evaluation_in_log_and_plot(trained_run, task_file, tmp_path):
    """trainer.eval.docs and .tasks run every 3 steps and at the end; their records
    hold the numbers `score_docs` and `score_task` give on the final checkpoint."""
    from trainer.evaluate import score_task
    from trainer.train import train

    cfg = trained_run["cfg"]
    books = tmp_path / "books.jsonl"
    books.write_text("".join(json.dumps({"text": t}) + "\n" for t in trained_run["texts"]["books"][-2:]))
    overrides = [f"shards.out={cfg.shards.out}", f"trainer.out={tmp_path / 'train'}",
                 "trainer.model=demo", "trainer.seq_len=128", "trainer.batch_size=4",
                 "trainer.steps=7", "trainer.warmup_steps=2", "trainer.num_threads=1",
                 "trainer.log_every=1", "trainer.val_batches=1", "trainer.eval.every=3",
                 f"trainer.eval.docs.books={books}", f"trainer.eval.tasks.cloze={task_file}"]
    summary = train(load_config(ROOT / "configs" / "demo.yaml", overrides))
    log = read_log(tmp_path / "train")
    evals = [r for r in log if "eval_loss" in r]
    assert [r["step"] for r in evals] == [3, 6, 7]
    assert set(evals[-1]) == {"step", "eval_loss", "eval_bpb", "eval_acc", "eval_acc_norm",
                              "eval_acc_per_token"}
    last = evals[-1]
    model = load_model(summary["checkpoint"])[0]
    sp = trained_run["sp"]
    docs = score_docs(model, load_docs("books", str(books), sp), 128)
    assert last["eval_loss"]["books"] == pytest.approx(docs["loss"], rel=1e-6)
    assert last["eval_bpb"]["books"] == pytest.approx(docs["bits_per_byte"], rel=1e-6)
    task = score_task(model, load_task("cloze", str(task_file), sp))
    for key in ("acc", "acc_norm", "acc_per_token"):
        assert last[f"eval_{key}"]["cloze"] == task[key]
    assert evals[0]["eval_loss"]["books"] > last["eval_loss"]["books"]  # it learns
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 8))  # train records as ever
    assert (tmp_path / "train" / "loss.png").read_bytes()[:4] == b"\x89PNG"
