"""Trainer: the LLaMA model (`trainer.model`), the token-shard stream and the
per-source validation windows (`trainer.data`), compile / activation
checkpointing / FSDP2 applied from outside the model (`trainer.parallelize`),
checkpoints and the manager that saves and loads every stateful part of a run
(`trainer.checkpoint`), the chunked CPU loss (`trainer.loss`), the training loop
(`trainer.train`), the
Hugging Face Llama export and import (`trainer.hf`) and the GPU benchmark
(`trainer.bench_gpu`).

`python -m trainer --config configs/demo.yaml` trains (the same under `torchrun`);
`python -m trainer export --hf DIR` / `import --hf DIR --out CKPT` convert.
Nothing is imported here, so `python -m trainer --help` answers without torch.
"""
