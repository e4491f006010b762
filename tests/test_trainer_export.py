"""Export and import: `trainer export --hf` writes one folder that transformers loads
and generates from (the model and the tokenizer that trained it, checked by sha256),
a mismatched tokenizer is refused, `trainer import` reads sharded safetensors, and
`trainer.init_from` continues a run from a checkpoint or an HF folder."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
import sentencepiece as spm
import torch

import tokenizer.__main__ as tokenizer_cli
from tests.conftest import CACHE, ROOT, read_log, write_shards
from tests.conftest import trainer_config as config
from trainer.__main__ import main
from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.model import ModelArgs, Transformer
from trainer.train import SetupError, cosine_lr, train

MILTON = "inputs/books/plrabn12.txt"
HF_FOLDER = ["config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
             "tokenizer.model", "tokenizer_config.json"]
PROMPT = "Alice was beginning to get very tired of sitting by her sister"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tokenizers(alice, request, tmp_path_factory) -> dict[str, Path]:
    """Two SentencePiece BPE models of 400 pieces with LLaMA's settings: "alice" trained
    on Alice's Adventures in Wonderland, "milton" on Paradise Lost (same size, other
    pieces)."""
    from tokenizer.train import LLAMA_TRAINER_SPEC

    path = CACHE / MILTON
    if not path.exists():
        path = request.getfixturevalue("demo_inputs")[MILTON]
    folder = tmp_path_factory.mktemp("tokenizers")
    out = {}
    for name, raw in (("alice", alice), ("milton", path.read_bytes())):
        lines = [line for line in raw.decode("utf-8", "replace").splitlines() if line.strip()]
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model,
                                       vocab_size=400, num_threads=1, minloglevel=2,
                                       **{**LLAMA_TRAINER_SPEC, "shuffle_input_sentence": False})
        out[name] = folder / f"{name}.model"
        out[name].write_bytes(model.getvalue())
    assert _sha256(out["alice"]) != _sha256(out["milton"])
    return out


def _shards(alice: bytes, model: Path, shard_dir: Path) -> Path:
    """Alice's chapters encoded with `model` (BOS 1, EOS 2): 10 train chapters in two
    shards, the last 3 held out; the manifest records the tokenizer as the shard job does."""
    sp = spm.SentencePieceProcessor(model_file=str(model))
    chapters = [c for c in re.split(rb"(?<=\n)(?= *CHAPTER [IVX]+\r?\n)", alice) if c.strip()]
    docs = [("books", f"alice-{i}", [1] + sp.encode(c.decode("utf-8")) + [2])
            for i, c in enumerate(chapters)]
    manifest = write_shards(shard_dir, [docs[0:10:2], docs[1:10:2]], val=[docs[10:]],
                            vocab_size=sp.get_piece_size(), rows_per_batch=2)
    manifest["tokenizer"] = {"path": str(model), "sha256": _sha256(model),
                             "vocab_size": sp.get_piece_size(), "bos_id": 1, "eos_id": 2}
    (shard_dir / "manifest.json").write_text(json.dumps(manifest))
    return shard_dir


@pytest.fixture(scope="module")
def run(alice, tokenizers, tmp_path_factory) -> SimpleNamespace:
    """A demo-sized run on those shards: 24 steps, validation every 8, checkpoints at 12, 24."""
    root = tmp_path_factory.mktemp("run")
    shards = _shards(alice, tokenizers["alice"], root / "shards")
    cfg = config(shards, root / "source", steps=24, ckpt_every=12, val_every=8, val_batches=2)
    summary = train(cfg)
    return SimpleNamespace(shards=shards, out=root / "source", summary=summary,
                           checkpoint=Path(summary["checkpoint"]), log=read_log(root / "source"))


def _greedy(model: Transformer, ids: list[int], n: int, eos: int) -> list[int]:
    """Our model's greedy continuation: the argmax of the last position, n times, or to EOS."""
    ids = list(ids)
    with torch.no_grad():
        for _ in range(n):
            logits, _ = model(torch.tensor([ids]))
            ids.append(int(logits[0, -1].argmax()))
            if ids[-1] == eos:
                break
    return ids


def test_export_is_one_folder_that_transformers_loads_and_generates_from(run, tokenizers,
                                                                          tmp_path, capsys):
    from transformers import AutoTokenizer, LlamaForCausalLM

    out = tmp_path / "hf"
    # no config: the tokenizer is the one the checkpoint records, checked by its sha256
    assert main(["export", "--hf", str(out), "--checkpoint", str(run.checkpoint)]) == 0
    printed = capsys.readouterr().out
    assert f"tokenizer: {tokenizers['alice']}, the one recorded by the checkpoint {run.checkpoint}" in printed
    assert sorted(os.listdir(out)) == HF_FOLDER
    assert (out / "tokenizer.model").read_bytes() == tokenizers["alice"].read_bytes()
    for path in [run.checkpoint, *(out / name for name in HF_FOLDER)]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path

    state = load_checkpoint(run.checkpoint)
    assert state["tokenizer"]["sha256"] == _sha256(tokenizers["alice"])
    ours = Transformer(ModelArgs(**state["model_args"])).eval()
    ours.load_state_dict(state["model"])
    sp = spm.SentencePieceProcessor(model_file=str(tokenizers["alice"]))

    tok = AutoTokenizer.from_pretrained(out)
    hf = LlamaForCausalLM.from_pretrained(out).eval()
    inputs = tok(PROMPT, return_tensors="pt")
    assert inputs["input_ids"][0].tolist() == [1] + sp.encode(PROMPT)
    with torch.no_grad():
        generated = hf.generate(**inputs, max_new_tokens=20, do_sample=False)[0].tolist()
    expected = _greedy(ours, [1] + sp.encode(PROMPT), 20, eos=2)
    assert generated == expected
    assert len(generated) > len(inputs["input_ids"][0])  # it did continue the text
    text = tok.decode(generated, skip_special_tokens=True)
    assert text == sp.decode(expected[1:]) and text.startswith(PROMPT)


def test_export_dtype(run, tmp_path):
    from safetensors import safe_open

    for dtype in ("float32", "bfloat16", "float16"):
        assert main(["export", "--hf", str(tmp_path / dtype), "--checkpoint", str(run.checkpoint),
                     "--dtype", dtype]) == 0
        assert json.loads((tmp_path / dtype / "config.json").read_text())["torch_dtype"] == dtype
    with safe_open(str(tmp_path / "float32" / "model.safetensors"), "pt") as full, \
         safe_open(str(tmp_path / "bfloat16" / "model.safetensors"), "pt") as half:
        names = sorted(full.keys())
        assert names == sorted(half.keys())
        for name in names:
            w = full.get_tensor(name)
            assert w.dtype == torch.float32 and half.get_tensor(name).dtype == torch.bfloat16
            assert torch.equal(half.get_tensor(name), w.to(torch.bfloat16)), name
    assert (tmp_path / "bfloat16" / "model.safetensors").stat().st_size < 0.51 * (
        tmp_path / "float32" / "model.safetensors").stat().st_size


def test_a_mismatched_tokenizer_is_refused(run, tokenizers, tmp_path, capsys):
    alice_sha, milton_sha = _sha256(tokenizers["alice"])[:16], _sha256(tokenizers["milton"])[:16]
    ckpt = str(run.checkpoint)
    assert main(["export", "--hf", str(tmp_path / "a"), "--checkpoint", ckpt,
                 "--tokenizer", str(tokenizers["milton"])]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: {tokenizers['milton']} (sha256 {milton_sha}) is not the tokenizer of the "
                   f"checkpoint {ckpt}, which records {tokenizers['alice']} (sha256 {alice_sha}): "
                   "exported together, the model's ids would decode to the wrong text; export the "
                   "recorded tokenizer, or the checkpoint of a run trained on this one\n")
    assert not (tmp_path / "a").exists()  # nothing written

    # the config's tokenizer, against its newest checkpoint and its shard manifest
    sets = [f"shards.out={run.shards}", f"trainer.out={run.out}",
            f"tokenizer.model_prefix={tokenizers['milton'].with_suffix('')}"]
    argv = ["--config", str(ROOT / "configs" / "demo.yaml")] + [a for kv in sets for a in ("--set", kv)]
    assert main(["export", "--hf", str(tmp_path / "b"), *argv]) == 1
    assert f"is not the tokenizer of the checkpoint {ckpt}, which records" in capsys.readouterr().err

    # `tokenizer export` checks too: against --checkpoint, and the config's records
    assert tokenizer_cli.main(["export", "--hf", str(tmp_path / "c"), "--model",
                               str(tokenizers["milton"]), "--checkpoint", ckpt]) == 1
    assert f"is not the tokenizer of the checkpoint {ckpt}" in capsys.readouterr().err
    assert tokenizer_cli.main(["export", "--hf", str(tmp_path / "d"), *argv]) == 1
    assert f"is not the tokenizer of the shard manifest in {run.shards}" in capsys.readouterr().err
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()
    assert tokenizer_cli.main(["export", "--hf", str(tmp_path / "e"), "--model",
                               str(tokenizers["alice"]), "--checkpoint", ckpt]) == 0
    assert f"the tokenizer recorded by the checkpoint {ckpt}" in capsys.readouterr().out

    # a checkpoint that records no tokenizer: named, and --no-tokenizer writes the model alone
    bare = load_checkpoint(run.checkpoint)
    del bare["tokenizer"]
    bare_path = save_checkpoint(tmp_path / "bare.pt", bare)
    with pytest.raises(SystemExit):
        main(["export", "--hf", str(tmp_path / "f"), "--checkpoint", str(bare_path)])
    assert "records no tokenizer: give the one it was trained with" in capsys.readouterr().err
    assert main(["export", "--hf", str(tmp_path / "f"), "--checkpoint", str(bare_path),
                 "--no-tokenizer"]) == 0
    assert sorted(os.listdir(tmp_path / "f")) == ["config.json", "model.safetensors"]


def test_import_reads_sharded_safetensors(run, tmp_path, capsys):
    """The export cut into two files and an index, as published Llama checkpoints are."""
    from safetensors.torch import load_file, save_file

    hf = tmp_path / "hf"
    assert main(["export", "--hf", str(hf), "--checkpoint", str(run.checkpoint)]) == 0
    weights = load_file(str(hf / "model.safetensors"))
    names = sorted(weights)
    parts = {"model-00001-of-00002.safetensors": names[::2],
             "model-00002-of-00002.safetensors": names[1::2]}
    for file, part in parts.items():
        save_file({n: weights[n] for n in part}, str(hf / file), metadata={"format": "pt"})
    (hf / "model.safetensors.index.json").write_text(json.dumps({
        "metadata": {"total_size": sum(w.numel() * 4 for w in weights.values())},
        "weight_map": {n: file for file, part in parts.items() for n in part}}))
    (hf / "model.safetensors").unlink()

    assert main(["import", "--hf", str(hf), "--out", str(tmp_path / "in.pt")]) == 0
    back, source = load_checkpoint(tmp_path / "in.pt"), load_checkpoint(run.checkpoint)
    assert back["model_args"] == source["model_args"]
    assert back["model"].keys() == source["model"].keys()
    for name, w in source["model"].items():
        assert torch.equal(back["model"][name], w), name
    assert back["tokenizer"]["sha256"] == source["tokenizer"]["sha256"]  # from its tokenizer.model

    (hf / "model-00002-of-00002.safetensors").unlink()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["import", "--hf", str(hf), "--out", str(tmp_path / "x.pt")])
    assert "model-00002-of-00002.safetensors: named by model.safetensors.index.json, missing" in (
        capsys.readouterr().err)


@pytest.mark.parametrize("source", ["checkpoint", "hf"])
def test_init_from_continues_with_the_source_validation_loss(run, source, tmp_path):
    """Before its first update the continued run computes the validation loss of the
    weights it starts from (the source's last, within 1e-6); then it trains with a new
    optimizer, schedule and data stream."""
    init = run.checkpoint
    if source == "hf":
        init = tmp_path / "hf"
        assert main(["export", "--hf", str(init), "--checkpoint", str(run.checkpoint)]) == 0
    cfg = config(run.shards, tmp_path / "continued", steps=6, val_every=3, val_batches=2,
                 lr=1e-3, warmup_steps=2, ckpt_every=6, init_from=str(init))
    summary = train(cfg)
    log = read_log(tmp_path / "continued")
    source_val = [r for r in run.log if "val_loss" in r][-1]
    assert source_val["step"] == 24
    assert log[0]["step"] == 0 and log[0]["val_tokens"] == source_val["val_tokens"]
    assert log[0]["val_loss"].keys() == source_val["val_loss"].keys() == {"books"}
    for name, loss in source_val["val_loss"].items():
        assert log[0]["val_loss"][name] == pytest.approx(loss, abs=1e-6)

    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    for r in steps:  # the schedule starts again: warmup from step 1
        assert r["lr"] == cosine_lr(r["step"], lr=1e-3, warmup_steps=2, steps=6, min_lr_ratio=0.1)
    first_source_loss = next(r for r in run.log if "loss" in r)["loss"]
    assert steps[0]["loss"] < 0.8 * first_source_loss  # trained weights, not a fresh init
    state = load_checkpoint(summary["checkpoint"])
    assert state["step"] == 6 and (state["data"]["epoch"], state["data"]["window"]) == (0, 6 * 8)
    assert all(int(s["step"]) == 6 for s in state["optimizer"]["state"].values())  # new AdamW

    again = train(cfg)  # it resumes its own checkpoint, not init_from: nothing left to do
    assert (again["start_step"], again["steps"]) == (6, 6)
    assert read_log(tmp_path / "continued") == log


def test_init_from_refuses_another_shape_or_tokenizer(run, tokenizers, alice, tmp_path):
    with pytest.raises(SetupError, match=r"init_from=.*: a model \{'dim': 128"):
        train(config(run.shards, tmp_path / "a", steps=2, model="15M", init_from=str(run.checkpoint)))
    other = _shards(alice, tokenizers["milton"], tmp_path / "milton-shards")
    with pytest.raises(SetupError, match=f"trained with the tokenizer {tokenizers['alice']} "
                                         f"\\(sha256 {_sha256(tokenizers['alice'])[:16]}\\), the shards"):
        train(config(other, tmp_path / "b", steps=2, init_from=str(run.checkpoint)))
    with pytest.raises(SetupError, match="no such checkpoint"):
        train(config(run.shards, tmp_path / "c", steps=2, init_from=str(tmp_path / "none.pt")))
    assert not (tmp_path / "a").exists() and not (tmp_path / "c" / "checkpoints").exists()


def test_a_finished_run_says_it_is_complete(run, tmp_path, capsys):
    shutil.copytree(run.out, tmp_path / "out")
    argv = ["--config", str(ROOT / "configs" / "demo.yaml"), "--set", f"shards.out={run.shards}",
            "--set", f"trainer.out={tmp_path / 'out'}", "--set", "trainer.steps=24",
            "--set", "trainer.seq_len=64", "--set", "trainer.batch_size=8",
            "--set", "trainer.num_threads=1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "trained 24 steps" not in printed
    assert printed.startswith("already complete: the latest checkpoint is at step 24 = "
                              "trainer.steps=24; nothing was trained")
    assert main(argv[:-8] + ["--set", "trainer.steps=28", "--set", "trainer.seq_len=64",
                             "--set", "trainer.batch_size=8", "--set", "trainer.num_threads=1"]) == 0
    assert capsys.readouterr().out.startswith("trained 4 steps (steps 25-28, resumed), ")
