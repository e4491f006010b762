"""Generation from a trained model: the KV cache changes no logit, greedy decoding
equals `transformers`' `generate` on our export token for token, sampling follows its
seed and its top-k / top-p cut, and the command line streams, writes and sizes."""

from __future__ import annotations

import json
import re

import pytest
import torch

from tests import test_trainer
from tests.conftest import CACHE
from tests.test_data import write_shards
from tests.test_trainer import config
from trainer.__main__ import main
from trainer.generate import (
    completion_text,
    encode_prompt,
    generate,
    inference_memory,
    load_model,
    sample_next,
)
from trainer.model import ModelArgs, Transformer

alice = test_trainer.alice  # the fixture (pytest finds fixtures among module attributes)

MILTON = "inputs/books/plrabn12.txt"
VOCAB = 1000
SEQ_LEN = 128
PROMPTS = ["Alice was beginning to get very tired of sitting", "Of Man's first disobedience",
           "The Queen"]
_RUN: dict = {}


def trained_run(tmp_path_factory, alice: bytes, milton: bytes) -> dict:
    """A real tokenizer, shards and model, built once per session:

    - SentencePiece BPE with LLaMA's trainer spec, vocabulary 1000, trained on Alice in
      Wonderland and Paradise Lost (CRLF -> LF);
    - shards as the shard job writes them (`[BOS] + ids + [EOS]` per document; the
      manifest names the tokenizer): source "books" = Alice's chapters, "poetry" =
      Milton in ~6 kB pieces; validation = Alice's last 2 chapters and Milton's last
      4 pieces;
    - the demo model trained 120 steps at seq_len 128 (`python -m trainer`'s `train`);
    - its HF export with the tokenizer's HF files (`trainer export --hf`).

    Returns {"cfg", "sp", "model_path", "checkpoint", "hf", "summary", "texts"}.
    """
    if _RUN:
        return _RUN
    import sentencepiece as spm

    import tokenizer
    from tokenizer.train import LLAMA_TRAINER_SPEC
    from trainer.train import train

    out = tmp_path_factory.mktemp("generate-run")
    a = alice.decode("utf-8").replace("\r\n", "\n")
    m = milton.decode("utf-8").replace("\r\n", "\n")[:150_000]
    chapters = [c.strip() for c in re.split(r"(?<=\n)(?= *CHAPTER [IVX]+\n)", a) if c.strip()]
    pieces = [m[i:i + 6000].strip() for i in range(0, len(m), 6000)]
    lines = [line for line in (a + "\n" + m).splitlines() if line.strip()]
    spm.SentencePieceTrainer.Train(sentence_iterator=iter(lines),
                                   model_prefix=str(out / "tok"), vocab_size=VOCAB,
                                   character_coverage=1.0, num_threads=1, minloglevel=2,
                                   **LLAMA_TRAINER_SPEC)
    model_path = str(out / "tok.model")
    sp = tokenizer.load(model_path)

    def docs(source: str, texts: list[str]) -> list:
        ids = tokenizer.encode_batch(sp, texts, num_threads=1)
        return [(source, f"{source}-{i}", [1, *x, 2]) for i, x in enumerate(ids)]

    books, poetry = docs("books", chapters), docs("poetry", pieces)
    train_docs, val_docs = books[:-2] + poetry[:-4], books[-2:] + poetry[-4:]
    shard_dir = out / "shards"
    manifest = write_shards(shard_dir, [train_docs[0::2], train_docs[1::2]], val=[val_docs],
                            vocab_size=VOCAB, rows_per_batch=4)
    manifest["tokenizer"].update(path=model_path, vocab_size=sp.get_piece_size())
    (shard_dir / "manifest.json").write_text(json.dumps(manifest))

    cfg = config(shard_dir, out / "train", steps=120, seq_len=SEQ_LEN, batch_size=8,
                 warmup_steps=10, log_every=10, val_batches=4)
    summary = train(cfg)
    hf = out / "hf"
    assert main(["export", "--hf", str(hf), "--checkpoint", summary["checkpoint"]]) == 0
    from tokenizer.hf import export_hf

    export_hf(model_path, hf)
    _RUN.update(cfg=cfg, sp=sp, model_path=model_path, checkpoint=summary["checkpoint"], hf=hf,
                summary=summary, texts={"books": chapters, "poetry": pieces})
    return _RUN


@pytest.fixture(scope="module")
def run(tmp_path_factory, alice, request) -> dict:
    path = CACHE / MILTON
    if not path.exists():
        path = request.getfixturevalue("demo_inputs")[MILTON]
    return trained_run(tmp_path_factory, alice, path.read_bytes())


@pytest.fixture(scope="module")
def random_model() -> Transformer:
    """The demo shape with weights far from init, so every logit differs."""
    torch.manual_seed(0)
    model = Transformer(ModelArgs.from_name("demo", vocab_size=300, max_seq_len=96))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand_like(p) + 0.5 if p.dim() == 1 else torch.randn_like(p) * 0.1)
    return model.eval()


def test_kv_cache_gives_the_logits_of_the_full_forward(random_model):
    """Prompt of 30, a chunk of 10 after it, then 20 single tokens, against one causal
    forward over all 60 tokens; and the cache leaves no trace on the model."""
    x = torch.randint(0, 300, (2, 60), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, _ = random_model(x)
        random_model.setup_kv_cache(2, 60)
        parts = [random_model(x[:, :30])[0], random_model(x[:, 30:40], start_pos=30)[0]]
        parts += [random_model(x[:, i:i + 1], start_pos=i)[0] for i in range(40, 60)]
        random_model.remove_kv_cache()
        again, _ = random_model(x)
    assert full.std() > 0.5
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=0, atol=2e-5)
    assert torch.equal(again, full)
    assert set(random_model.state_dict()) == set(Transformer(random_model.args).state_dict())


def test_cached_and_recomputed_generation_agree(random_model):
    prompt = [1, 17, 42, 99, 5]
    cached = generate(random_model, prompt, 40)
    recomputed = generate(random_model, prompt, 40, use_cache=False)
    assert cached == recomputed and len(cached) == 40
    sampled = [generate(random_model, prompt, 40, temperature=1.0, use_cache=c,
                        generator=torch.Generator().manual_seed(7)) for c in (True, False)]
    assert sampled[0] == sampled[1] != cached
    with pytest.raises(ValueError, match="exceed the model's context of 96"):
        generate(random_model, prompt, 92)


def test_top_k_and_top_p_keep_only_their_tokens():
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0])  # p = .64 .23 .086 .032 .012

    def draws(**kw) -> set[int]:
        g = torch.Generator().manual_seed(0)
        return {sample_next(logits, 1.0, generator=g, **kw) for _ in range(1000)}

    assert draws(top_k=2) == {0, 1}
    assert draws(top_p=0.7) == {0, 1}  # .64 < .7: the second token completes the nucleus
    assert draws(top_p=0.5) == {0}
    assert draws() == {0, 1, 2, 3, 4}
    assert sample_next(logits, 0.0) == 0


def test_greedy_equals_transformers_generate(run):
    """3 prompts x 32 tokens from the trained demo model: our KV-cache greedy decoding
    and `LlamaForCausalLM.generate` on the export give the same tokens."""
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(run["hf"]).eval()
    model = load_model(run["checkpoint"])[0]
    from_export = load_model(run["hf"])[0]
    for prompt in PROMPTS:
        ids = encode_prompt(run["sp"], prompt)
        ours = generate(model, ids, 32)
        with torch.no_grad():
            theirs = hf.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
        assert ours == theirs, prompt
        assert generate(from_export, ids, 32) == ours
        assert len(set(ours)) > 3  # a trained model, not one token repeated


def test_command_line_streams_and_writes_samples(run, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS[:2]) + "\n")
    out = tmp_path / "samples.json"
    assert main(["generate", "--checkpoint", run["checkpoint"], "--tokenizer", run["model_path"],
                 "--prompts-file", str(prompts), "--max-new-tokens", "20",
                 "--temperature", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    samples = json.loads(out.read_text())["samples"]
    sp = run["sp"]
    model = load_model(run["checkpoint"])[0]
    for prompt, sample in zip(PROMPTS[:2], samples, strict=True):
        ids = encode_prompt(sp, prompt)
        tokens = generate(model, ids, 20)
        assert sample == {"prompt": prompt, "completion": completion_text(sp, ids, tokens),
                          "tokens": tokens}
        assert sample["completion"][0] in " \n,.;'"  # the first piece's space kept
        assert prompt + sample["completion"] in printed  # streamed after its prompt

    # Sampling is seeded: the same seed, the same text; the export folder finds its tokenizer.
    def sampled(seed: str) -> list:
        main(["generate", "--hf", str(run["hf"]), "--prompt", PROMPTS[2], "--max-new-tokens",
              "24", "--temperature", "1.0", "--top-k", "50", "--seed", seed, "--out", str(out)])
        return json.loads(out.read_text())["samples"][0]["tokens"]

    assert sampled("3") == sampled("3") != sampled("4")


def test_memory_of_13b_at_bf16_with_a_2048_token_cache(capsys):
    """LLaMA-13B "runs on a single GPU" (paper, Section 1): at bf16 its 13.0B weights
    and a 2048-token cache fit one 40 GB GPU, counted on the meta device."""
    m = inference_memory("13B", cache_tokens=2048)
    assert m.params == 13_015_864_320
    assert m.weights == 2 * m.params
    assert m.cache == 2 * 40 * 2048 * 5120 * 2  # k and v, 40 layers, 2048 positions, bf16
    assert main(["generate", "--memory", "13B"]) == 0
    printed = capsys.readouterr().out
    assert "13B: 13.02B parameters" in printed
    assert "total:" in printed and "25.81 GiB" in printed
    assert "one 80 GB GPU: fits" in printed and "one 40 GB GPU: fits" in printed
    assert main(["generate", "--memory", "65B"]) == 0
    assert "one 80 GB GPU: does NOT fit" in capsys.readouterr().out
