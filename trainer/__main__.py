"""Command line: `python -m trainer --config configs/demo.yaml [--set trainer.steps=50 ...]`."""

from __future__ import annotations

import argparse
import sys

from pipeline.config import ConfigError, load_config

DESCRIPTION = """\
Train a LLaMA model on the token shards of a config.

Reads <shards.out>/manifest.json and the train-split shards it lists (written by the
pipeline's tokenize job; each shard is checked against its sha256). Writes under
<trainer.out>: log.jsonl (loss, lr, grad_norm, tokens/s, MFU per logged step),
checkpoints/step-NNNNNN.pt (model, optimizer, step, RNG and data-stream state) and
loss.png. A rerun resumes from the newest checkpoint, on exactly the same tokens.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml",
                        help="YAML job config (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config value, e.g. trainer.steps=50 (repeatable)")
    parser.add_argument("--no-resume", action="store_true",
                        help="start afresh: delete this run's checkpoints and log")
    parser.add_argument("--peak-flops", type=float, default=None,
                        help="device peak FLOP/s for MFU (default: 312e12 on CUDA, "
                             "a nominal 100e9 per thread on CPU)")
    opts = parser.parse_args(argv)
    try:
        cfg = load_config(opts.config, opts.overrides)
    except ConfigError as e:
        parser.error(str(e))

    from trainer.train import train  # after --help: importing torch is slow

    summary = train(cfg, resume=not opts.no_resume, peak_flops=opts.peak_flops)
    print(f"trained {summary['steps']} steps, {summary['tokens']:,} tokens; "
          f"loss {summary['first_loss']} -> {summary['last_loss']}")
    print(f"checkpoint: {summary['checkpoint']}")
    print(f"log:        {summary['log']}")
    print(f"plot:       {summary['plot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
