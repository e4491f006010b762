"""Command line:

    python -m trainer --config configs/demo.yaml [--set trainer.steps=50 ...]   # train
    python -m trainer export --hf DIR [--checkpoint PATH | --config CONFIG]     # to HF Llama
    python -m trainer import --hf DIR --out CKPT                                # from HF Llama

Training runs the same under `torchrun --nproc_per_node N -m trainer ...` (FSDP2).
Paths (shards.out, trainer.out, --checkpoint, import's --out) may be local, s3:// or
gs://; filesystem options (--s3_endpoint_url=URL, ...) come from the config's
beam.extra_args, as for the pipeline, or the clients' environment (AWS_*, ...).
"""

from __future__ import annotations

import argparse
import sys

from pipeline.config import ConfigError, add_override_argument, load_config
from trainer.storage import is_remote

DESCRIPTION = """\
Train a LLaMA model on the token shards of a config.

Reads <shards.out>/manifest.json and the train-split shards it lists (written by the
pipeline's shard job, `python -m pipeline shards`; each shard is checked against its sha256). Writes under
<trainer.out>: log.jsonl (train records: step, loss, lr, grad_norm, tokens, tokens/s,
MFU per logged step; val records: step, val_loss per source, on the manifest's val
shards), checkpoints/step-NNNNNN.pt (model, optimizer, step, RNG and data-stream
state; a sharded folder checkpoints/step-NNNNNN/ under torchrun) and loss.png.
A rerun resumes from the newest checkpoint, on exactly the same tokens.
shards.out and trainer.out may be on an object store (s3://, gs://; options in the
config's beam.extra_args): shards are downloaded once per machine and checked; the run
works in a local staging folder and uploads each checkpoint, log.jsonl and loss.png.

Other commands: `python -m trainer export --help`, `python -m trainer import --help`.
"""


def _configure_storage(cfg, *paths: str) -> None:
    """Hand the config's filesystem options (beam.extra_args: --s3_endpoint_url=...) to
    `pipeline.io` when a path is on an object store (Beam is slow to import: only then)."""
    if any(is_remote(p) for p in paths if p):
        from pipeline import io as pio

        pio.configure(cfg.beam.extra_args)
        try:
            pio.check_reachable(paths)  # a wrong endpoint or key: one line now, not minutes of retries
        except pio.StorageError as e:
            sys.exit(f"error: {e}")


def _train(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/demo.yaml",
                        help="YAML job config (default: %(default)s)")
    add_override_argument(parser)
    parser.add_argument("--no-resume", action="store_true",
                        help="start afresh: delete this run's checkpoints and log")
    parser.add_argument("--peak-flops", type=float, default=None,
                        help="device peak FLOP/s for MFU (default: trainer.peak_flops, else "
                             "312e12 on CUDA, a nominal 100e9 per thread on CPU)")
    opts = parser.parse_args(argv)
    try:
        cfg = load_config(opts.config, opts.overrides)
    except ConfigError as e:
        parser.error(str(e))
    _configure_storage(cfg, cfg.shards.out, cfg.trainer.out)

    from trainer.checkpoint import CheckpointError
    from trainer.data import ShardError
    from trainer.model import MODEL_SIZES
    from trainer.train import train  # after --help: importing torch is slow

    name = cfg.trainer.model
    if name not in MODEL_SIZES:  # before any data is read
        close = [n for n in MODEL_SIZES if n.lower() == name.lower()]
        parser.error(f"trainer.model {name!r} is not a model size ({', '.join(MODEL_SIZES)})"
                     + (f": did you mean {close[0]!r}?" if close else ""))

    try:
        summary = train(cfg, resume=not opts.no_resume, peak_flops=opts.peak_flops)
    except ShardError as e:  # no shards yet, or a corrupt or missing one: named, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (CheckpointError, ValueError) as e:  # a checkpoint that cannot be resumed here
        hint = ("\n(the checkpoints in trainer.out come from another run: pass --no-resume, "
                "or `make clean`, to start afresh)" if "checkpoint" in str(e) or "data state" in str(e)
                else "")
        print(f"error: {e}{hint}", file=sys.stderr)
        return 1
    if summary["plot"] is None:  # ranks > 0 under torchrun: rank 0 reports
        return 0
    if summary["interrupted"]:
        print(f"interrupted after step {summary['steps']}; checkpoint: {summary['checkpoint']}; "
              "run the same command again to resume", file=sys.stderr)
        return 130
    if summary["steps"] > cfg.trainer.steps:
        print(f"note: the latest checkpoint is at step {summary['steps']}, past trainer.steps="
              f"{cfg.trainer.steps}: nothing to train (--no-resume starts afresh)", file=sys.stderr)
    print(f"trained {summary['steps']} steps, {summary['tokens']:,} tokens; "
          f"loss {summary['first_loss']} -> {summary['last_loss']}")
    if summary["val_loss"]:
        print("val loss: " + ", ".join(f"{s} {v:.4f}" for s, v in summary["val_loss"].items()))
    print(f"checkpoint: {summary['checkpoint']}")
    print(f"log:        {summary['log']}")
    print(f"plot:       {summary['plot']}")
    return 0


def _export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer export",
        description="Write a checkpoint's model in the Hugging Face Llama format "
                    "(config.json + model.safetensors, float32), loadable by "
                    "transformers.LlamaForCausalLM.from_pretrained(DIR).")
    parser.add_argument("--hf", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="a checkpoint file or sharded folder (default: the newest "
                             "under the config's trainer.out)")
    parser.add_argument("--config", default=None,
                        help="job config: its newest checkpoint when --checkpoint is not "
                             "given, and the BOS/EOS ids of its shards' tokenizer (default: "
                             "configs/demo.yaml without --checkpoint; else LLaMA's ids 1, 2)")
    add_override_argument(parser)
    opts = parser.parse_args(argv)

    from trainer.checkpoint import latest_checkpoint, load_model_weights
    from trainer.data import ShardError, load_manifest
    from trainer.hf import export_hf
    from trainer.model import ModelArgs
    from trainer.storage import join

    bos, eos = 1, 2
    checkpoint = opts.checkpoint
    config = opts.config or (None if checkpoint else "configs/demo.yaml")
    if config is not None:
        try:
            cfg = load_config(config, opts.overrides)
        except ConfigError as e:
            parser.error(str(e))
        _configure_storage(cfg, cfg.shards.out, cfg.trainer.out, checkpoint)
        if checkpoint is None:
            checkpoint = latest_checkpoint(join(cfg.trainer.out, "checkpoints"))
            if checkpoint is None:
                parser.error(f"no checkpoint under {cfg.trainer.out}/checkpoints")
        try:
            tok = load_manifest(cfg.shards.out)["tokenizer"]
            bos, eos = tok.get("bos_id", bos), tok.get("eos_id", eos)
        except ShardError:
            pass  # no shards beside the config: LLaMA's ids
    try:
        weights, args = load_model_weights(checkpoint)
    except (FileNotFoundError, KeyError) as e:
        parser.error(f"{checkpoint}: {e}")
    out = export_hf(weights, ModelArgs(**args), opts.hf, bos_token_id=bos, eos_token_id=eos)
    print(f"exported {checkpoint} -> {out}")
    return 0


def _import(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trainer import",
        description="Read a Hugging Face Llama folder (config.json + model.safetensors) "
                    "into a checkpoint file holding the model and its ModelArgs "
                    "(no optimizer state), loadable with weights_only.")
    parser.add_argument("--hf", required=True, metavar="DIR", help="input folder")
    parser.add_argument("--out", required=True, metavar="CKPT",
                        help="checkpoint file to write (local, s3:// or gs://)")
    opts = parser.parse_args(argv)

    import tempfile
    from dataclasses import asdict
    from pathlib import Path

    from trainer.checkpoint import save_checkpoint
    from trainer.hf import import_hf
    from trainer.storage import upload

    try:
        weights, args = import_hf(opts.hf)
    except (FileNotFoundError, ValueError, KeyError) as e:
        parser.error(f"{opts.hf}: {e}")
    state = {"step": 0, "model": weights, "model_args": asdict(args)}
    if not is_remote(opts.out):
        path = save_checkpoint(opts.out, state)
    else:  # written here, then uploaded (the object appears only once complete)
        with tempfile.TemporaryDirectory() as tmp:
            upload(save_checkpoint(Path(tmp) / "checkpoint.pt", state), opts.out)
        path = opts.out
    print(f"imported {opts.hf} -> {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "export":
        return _export(argv[1:])
    if argv and argv[0] == "import":
        return _import(argv[1:])
    return _train(argv)


if __name__ == "__main__":
    sys.exit(main())
