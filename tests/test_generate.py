"""Generation from a trained model: the KV cache changes no logit, greedy decoding
equals `transformers`' `generate` on our export token for token, sampling follows its
seed and its top-k / top-p cut, and the command line streams, writes and sizes."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import retrained_tokenizer, tokenizer_refusal
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

PROMPTS = ["Alice was beginning to get very tired of sitting", "Of Man's first disobedience",
           "The Queen"]
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


def test_greedy_equals_transformers_generate(trained_run):
    """3 prompts x 32 tokens from the trained demo model: our KV-cache greedy decoding
    and `LlamaForCausalLM.generate` on the export give the same tokens."""
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(trained_run["hf"]).eval()
    model = load_model(trained_run["checkpoint"])[0]
    from_export = load_model(trained_run["hf"])[0]
    for prompt in PROMPTS:
        ids = encode_prompt(trained_run["sp"], prompt)
        ours = generate(model, ids, 32)
        with torch.no_grad():
            theirs = hf.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
        assert ours == theirs, prompt
        assert generate(from_export, ids, 32) == ours
        assert len(set(ours)) > 3  # a trained model, not one token repeated


def test_command_line_streams_and_writes_samples(trained_run, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS[:2]) + "\n")
    out = tmp_path / "samples.json"
    assert main(["generate", "--checkpoint", trained_run["checkpoint"], "--tokenizer", trained_run["model_path"],
                 "--prompts-file", str(prompts), "--max-new-tokens", "20",
                 "--temperature", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    samples = json.loads(out.read_text())["samples"]
    sp = trained_run["sp"]
    model = load_model(trained_run["checkpoint"])[0]
    for prompt, sample in zip(PROMPTS[:2], samples, strict=True):
        ids = encode_prompt(sp, prompt)
        tokens = generate(model, ids, 20)
        assert sample == {"prompt": prompt, "completion": completion_text(sp, ids, tokens),
                          "tokens": tokens}
        assert sample["completion"][0] in " \n,.;'"  # the first piece's space kept
        assert prompt + sample["completion"] in printed  # streamed after its prompt

    # Sampling is seeded: the same seed, the same text; the export folder finds its tokenizer.
    def sampled(seed: str) -> list:
        main(["generate", "--hf", str(trained_run["hf"]), "--prompt", PROMPTS[2], "--max-new-tokens",
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


def test_generate_refuses_another_tokenizer_than_the_checkpoint_records(trained_run, tmp_path, capsys):
    tok = retrained_tokenizer(trained_run, tmp_path)
    out = tmp_path / "samples.json"
    args = ["--prompt", PROMPTS[0], "--max-new-tokens", "8", "--out", str(out)]
    assert main(["generate", "--checkpoint", tok["checkpoint"], *args]) == 1  # the recorded path
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err.startswith(tokenizer_refusal(tok)) and printed.err.count("\n") == 1
    assert main(["generate", "--checkpoint", tok["checkpoint"], "--tokenizer", str(tok["path"]), *args]) == 1
    assert capsys.readouterr().err.startswith(tokenizer_refusal(tok))
    assert not out.exists()

    # the original checkpoint records no sha256 (the test shards' manifest has none): not checked
    assert main(["generate", "--checkpoint", trained_run["checkpoint"], "--tokenizer", str(tok["path"]),
                 *args]) == 0
    assert len(json.loads(out.read_text())["samples"][0]["tokens"]) == 8
