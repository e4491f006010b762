"""Trainer: the LLaMA model (`trainer.model`), the token-shard stream
(`trainer.data`), checkpoints and the training loop (`trainer.train`).

`python -m trainer --config configs/demo.yaml` trains; see `trainer.train.train`.
Nothing is imported here, so `python -m trainer --help` answers without torch.
"""
