"""Command line: `python -m tokenizer {train,export,encode,decode} ...` (see --help)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from pipeline.core.config import (  # pydantic and yaml only, no Beam
    PipelineError,
    add_override_argument,
)

DEMO_CONFIG = "configs/demo.yaml"


def _train(args: argparse.Namespace) -> int:
    from pipeline.core.config import load_config
    from tokenizer.train import train_tokenizer

    cfg = load_config(args.config, args.overrides)
    from pipeline.core import io

    io.configure(cfg.beam.extra_args)  # s3/gcs options, when the clean output is on a bucket
    io.check_reachable([cfg.out_dir, cfg.tokenizer.model_prefix])
    summary = train_tokenizer(cfg, force=args.force, allow_mixed=args.allow_mixed)
    if summary.get("skipped"):
        print(f"tokenizer: skipped: {summary['model']} (sha256 {summary['sha256'][:16]}) is up to date with "
              f"clean run {summary['clean_run']} and these settings (--force retrains it)")
        return 0
    print(f"model: {summary['model']} (sha256 {summary['sha256']})")
    print(f"vocab: {summary['vocab']} ({summary['vocab_size']} pieces)")
    print(f"sample: {summary['sample']} ({summary['sentences']} lines given to the trainer)")
    print(f"{'source':<14} {'share':>7} {'docs':>8} {'lines':>9} {'bytes':>12} {'target':>12}")
    for name, s in summary["sample_stats"].items():
        print(
            f"{name:<14} {s['share']:>7.2%} {s['docs']:>8} {s['lines']:>9} "
            f"{s['bytes']:>12} {s['target_bytes']:>12}"
        )
    print(
        f"skipped lines: {summary['skipped_lines']}; sample {summary['sample_seconds']:.1f} s, "
        f"training {summary['train_seconds']:.1f} s"
    )
    return 0


def _recorded_tokenizers(cfg, checkpoint: str | None) -> list[tuple[str, dict | None]]:
    """(where, record) of the tokenizer the model must be exported with: the
    checkpoint's (--checkpoint, else the newest under the config's trainer.out) and
    the config's shard manifest's, each where there is one."""
    from pipeline.core import io
    from pipeline.core.contracts import (
        CHECKPOINTS,
        ShardError,
        latest_checkpoint,
        load_shard_manifest,
        saved_state,
    )

    records = []
    if cfg is not None:
        try:
            records.append((f"shard manifest in {cfg.shards.out}",
                            load_shard_manifest(cfg.shards.out).get("tokenizer")))
        except ShardError:
            pass  # no shards yet: nothing recorded there
        checkpoint = checkpoint or latest_checkpoint(io.join(cfg.trainer.out, CHECKPOINTS))
    if checkpoint is not None:
        records.append((f"checkpoint {checkpoint}", saved_state(checkpoint).get("tokenizer")))
    return records


def _export(args: argparse.Namespace) -> int:
    # imports transformers: only here
    from tokenizer.hf import LLAMA_CONTEXT, check_recorded, export_hf

    cfg = None
    if args.config or not args.model:
        from pipeline.core.config import load_config

        cfg = load_config(args.config or DEMO_CONFIG, args.overrides)
        model, context = f"{cfg.tokenizer.model_prefix}.model", cfg.trainer.seq_len
    else:
        if args.overrides:
            print("error: --set needs --config", file=sys.stderr)
            return 2
        model, context = args.model, LLAMA_CONTEXT
    records = [(w, r) for w, r in _recorded_tokenizers(cfg, args.checkpoint) if (r or {}).get("sha256")]
    check_recorded(model, records)  # TokenizerMismatch (a ValueError): one line, exit 1
    summary = export_hf(model, args.hf, model_max_length=context)
    print(f"model: {model} ({summary['vocab_size']} pieces)")
    if records:
        print("the tokenizer recorded by the " + " and the ".join(w for w, _ in records))
    for name, digest in summary["files"].items():
        print(f"wrote {summary['dir']}/{name} (sha256 {digest})")
    return 0


def _model_path(args: argparse.Namespace) -> str:
    """--model, else <tokenizer.model_prefix>.model of --config."""
    if args.model:
        return args.model
    from pipeline.core.config import load_config

    return f"{load_config(args.config, args.overrides).tokenizer.model_prefix}.model"


def _encode(args: argparse.Namespace) -> int:
    from tokenizer import load

    sp = load(_model_path(args))
    ids = sp.encode(args.text, out_type=int)
    print(json.dumps({"ids": ids, "pieces": [sp.id_to_piece(i) for i in ids]}, ensure_ascii=False))
    return 0


def _decode(args: argparse.Namespace) -> int:
    from tokenizer import load

    model = _model_path(args)
    sp = load(model)
    size = sp.get_piece_size()
    bad = [i for i in args.ids if not 0 <= i < size]
    if bad:
        print(f"error: ids {bad} are outside [0, {size}) of {model}", file=sys.stderr)
        return 2
    print(sp.decode(args.ids))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m tokenizer`: one subcommand each."""
    parser = argparse.ArgumentParser(
        prog="python -m tokenizer",
        description=(
            "Train the LLaMA SentencePiece BPE tokenizer, export it for Hugging Face, "
            "encode and decode with it."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_export, _add_encode, _add_decode):
        add(commands)
    return parser


def _add_train(commands) -> None:
    train = commands.add_parser(
        "train",
        help="sample the cleaned text and train the tokenizer",
        description=(
            "Read the cleaned Arrow files that <out_dir>/clean/manifest.json lists "
            "(run-<id>/<source>/part-*.arrow; local, gs:// or s3://), write a "
            "mixture-weighted sample to <tokenizer.model_prefix>.sample.txt, train SentencePiece "
            "BPE with LLaMA's settings and write <model_prefix>.model and .vocab, then "
            "<model_prefix>.manifest.json (the clean run and settings it was trained on). Prints "
            "the model path and the sample per source. A model already trained on the committed "
            "clean run with the same settings is kept: one line says so."
        ),
    )
    train.add_argument("--config", default=DEMO_CONFIG, help="YAML config (default: %(default)s)")
    add_override_argument(train, "tokenizer.vocab_size=500")
    train.add_argument("--force", action="store_true",
                       help="train even when the model is up to date with the clean output and settings")
    train.add_argument("--allow-mixed", action="store_true",
                       help="train on a clean output written under other settings than the config's, "
                            "with a warning (by default: an error naming its run)")
    train.set_defaults(func=_train)


def _add_export(commands) -> None:
    export = commands.add_parser(
        "export",
        help="write the tokenizer files Hugging Face transformers loads",
        description=(
            "Write tokenizer.model, tokenizer.json, tokenizer_config.json and "
            "special_tokens_map.json into DIR, for AutoTokenizer / LlamaTokenizer / "
            "LlamaTokenizerFast.from_pretrained(DIR). The model is --model, or "
            "<tokenizer.model_prefix>.model of --config (whose trainer.seq_len becomes "
            "model_max_length; 2048 with --model). It must be the tokenizer the model was "
            "trained with: its sha256 is checked against the one recorded by --checkpoint, "
            "and with --config by <shards.out>/manifest.json and the newest checkpoint under "
            "trainer.out; a mismatch is refused (exit status 1). `python -m trainer export "
            "--hf DIR` writes the model and its tokenizer together."
        ),
    )
    export.add_argument("--hf", required=True, metavar="DIR", help="the folder to write")
    which = export.add_mutually_exclusive_group()
    which.add_argument("--model", help="a trained .model file")
    which.add_argument("--config", help=f"YAML config (default without --model: {DEMO_CONFIG})")
    add_override_argument(export, "tokenizer.model_prefix=out/tok/m")
    export.add_argument("--checkpoint", metavar="PATH",
                        help="a trainer checkpoint whose recorded tokenizer this must be")
    export.set_defaults(func=_export)


def _add_encode(commands) -> None:
    encode = commands.add_parser(
        "encode",
        help="print the ids and pieces of a text",
        description=(
            'Encode TEXT (no BOS/EOS) and print one JSON line: {"ids": [...], "pieces": [...]}.'
        ),
    )
    encode.add_argument("--model", help="a trained .model file (default: the --config's)")
    encode.add_argument("--config", default=DEMO_CONFIG, help="YAML config (default: %(default)s)")
    add_override_argument(encode, "tokenizer.model_prefix=out/demo/tokenizer/llama-demo")
    encode.add_argument("text", help="the text to encode")
    encode.set_defaults(func=_encode)


def _add_decode(commands) -> None:
    decode = commands.add_parser(
        "decode",
        help="print the text of token ids",
        description="Decode token IDS with the model and print the text.",
    )
    decode.add_argument("--model", help="a trained .model file (default: the --config's)")
    decode.add_argument("--config", default=DEMO_CONFIG, help="YAML config (default: %(default)s)")
    add_override_argument(decode, "tokenizer.model_prefix=out/demo/tokenizer/llama-demo")
    decode.add_argument("ids", nargs="+", type=int,
                        help="token ids, as `encode` prints them (e.g. its \"ids\" list, "
                             "without the brackets and commas)")
    decode.set_defaults(func=_decode)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("tokenizer").setLevel(logging.INFO)  # ours, not Beam's import chatter
    try:
        return args.func(args)
    except (OSError, ValueError, PipelineError) as e:  # bad config, missing or unreadable input, an
        # unreachable bucket: no traceback
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
