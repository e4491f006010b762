"""Command line:

    python -m trainer [train] --config configs/demo.yaml [--set trainer.steps=50 ...]   # train
    python -m trainer export --hf DIR [--checkpoint PATH | --config CONFIG]     # to HF Llama
    python -m trainer import --hf DIR --out CKPT                                # from HF Llama
    python -m trainer --set trainer.init_from=CKPT_OR_HF_DIR ...                # continue training
    python -m trainer generate --prompt TEXT [--checkpoint PATH | --hf DIR]      # sample, streamed
    python -m trainer generate --memory 13B                                     # inference memory
    python -m trainer eval [--docs PATH] [--tasks PATH] [--checkpoint | --hf]    # loss, bpb, acc

Training runs the same under `torchrun --nproc_per_node N -m trainer ...` (FSDP2).
Paths (shards.out, trainer.out, --checkpoint, import's --out) may be local, s3:// or
gs://; filesystem options (--s3_endpoint_url=URL, ...) come from the config's
beam.extra_args, as for the pipeline, or the clients' environment (AWS_*, ...).
"""

from __future__ import annotations

import argparse
import sys

from pipeline.core.config import ConfigError, add_override_argument, load_config
from trainer.storage import is_remote

DEMO_CONFIG = "configs/demo.yaml"
DESCRIPTION = """\
Train a LLaMA model on the token shards of a config.

Reads <shards.out>/manifest.json and the train-split shards it lists (written by the
pipeline's shard job, `python -m pipeline shards`; each shard is checked against its sha256). Writes under
<trainer.out>: log.jsonl (train records: step, loss, lr, grad_norm, tokens, tokens/s,
MFU per logged step; val records: step, val_loss per source, on the manifest's val
shards; eval records: loss and bits per byte per document set, accuracy per task,
of trainer.eval's sets every trainer.eval.every steps and at the end),
checkpoints/step-NNNNNN.pt (model, optimizer, step, RNG and data-stream
state; a sharded folder checkpoints/step-NNNNNN/ under torchrun) and loss.png.
A rerun resumes from the newest checkpoint, on exactly the same tokens. A run
with no checkpoint yet starts from trainer.init_from when set: the weights of a
checkpoint or of a Hugging Face Llama folder (`export`/`import` below), with a
new optimizer, schedule and data stream (its validation loss is logged at step 0).
trainer.device: cpu, cuda, cuda:N or mps (a CUDA build of torch for cuda: README,
"GPU setup"). MFU is logged against the GPU's bf16 datasheet peak
(trainer/devices.py), or trainer.peak_flops (a number, or "measure"); on a CPU
without one, it is not logged. trainer.tensorboard: true (<trainer.out>/tensorboard)
or a folder also gets the log's records as TensorBoard scalars.
shards.out and trainer.out may be on an object store (s3://, gs://; options in the
config's beam.extra_args): shards are downloaded once per machine and checked; the run
works in a local staging folder and uploads each checkpoint, log.jsonl and loss.png.

Other commands: `python -m trainer export --help`, `python -m trainer import --help`,
`python -m trainer generate --help`, `python -m trainer eval --help`.
"""


def _configure_storage(cfg, *paths: str) -> None:
    """Hand the config's filesystem options (beam.extra_args: --s3_endpoint_url=...) to
    `pipeline.core.io` when a path is on an object store (Beam is slow to import: only then)."""
    if any(is_remote(p) for p in paths if p):
        from pipeline.core import io as pio

        pio.configure(cfg.beam.extra_args)
        try:
            pio.check_reachable(paths)  # a wrong endpoint or key: one line now, not minutes of retries
        except pio.StorageError as e:
            sys.exit(f"error: {e}")


def _peak_flops(value: str) -> float | str:
    return value if value == "measure" else float(value)


def _add_train(commands) -> None:
    parser = commands.add_parser(
        "train", prog="python -m trainer [train]", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="train on the token shards of a config (the default command)")
    parser.add_argument("--config", default=DEMO_CONFIG, help="YAML job config (default: %(default)s)")
    add_override_argument(parser)
    parser.add_argument("--no-resume", action="store_true",
                        help="start afresh: delete this run's checkpoints and log")
    parser.add_argument("--peak-flops", type=_peak_flops, default=None, metavar="FLOPS|measure",
                        help="device peak FLOP/s for MFU, or 'measure' to time a matmul at start "
                             "(default: trainer.peak_flops, else the GPU's bf16 datasheet peak "
                             "in trainer/devices.py; none on CPU: no MFU)")
    parser.add_argument("--allow-mixed", action="store_true",
                        help="train on shards that do not follow the config or the clean output and "
                             "tokenizer now there, or resume a run of other shards, with a warning "
                             "(by default: an error naming the runs)")
    parser.set_defaults(func=_train, parser=parser)


def _train(args: argparse.Namespace) -> int:
    cfg = _config(args, args.config)
    _configure_storage(cfg, cfg.shards.out, cfg.trainer.out)
    from pipeline.core import lineage

    try:  # the shards agree with the clean output, tokenizer and config, and a run resumed with them
        runs = lineage.check_training(cfg, resume=not args.no_resume, allow_mixed=args.allow_mixed)
    except lineage.MixedRuns as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    from pipeline.core.contracts import CheckpointError, ShardError
    from trainer.devices import DeviceError
    from trainer.model import MODEL_SIZES
    from trainer.train import SetupError, train  # after --help: importing torch is slow

    name = cfg.trainer.model
    if name not in MODEL_SIZES:  # before any data is read
        close = [n for n in MODEL_SIZES if n.lower() == name.lower()]
        args.parser.error(f"trainer.model {name!r} is not a model size ({', '.join(MODEL_SIZES)})"
                          + (f": did you mean {close[0]!r}?" if close else ""))

    try:
        summary = train(cfg, resume=not args.no_resume, peak_flops=args.peak_flops)
    except (ShardError, DeviceError, SetupError) as e:  # no shards yet, a corrupt or missing one,
        # a device this torch lacks, unusable init_from or tensorboard: named, no traceback
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
    # what this run trained on, for the next one and the report (after setup, which may
    # refuse the run; a killed run's checkpoints record their shards themselves)
    lineage.record_training(cfg, runs)
    if summary["interrupted"]:
        print(f"interrupted after step {summary['steps']}; checkpoint: {summary['checkpoint']}; "
              "run the same command again to resume", file=sys.stderr)
        return 130
    _print_summary(summary, cfg.trainer.steps)
    return 0


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _print_summary(summary: dict, steps: int) -> None:
    """What a finished (or already complete) training run did, and where its files are."""
    if summary["steps"] == summary["start_step"]:  # nothing left to do: say so, not "trained"
        past = summary["steps"] > steps
        print(f"already complete: the latest checkpoint is at step {summary['steps']}"
              f"{', past' if past else ' ='} trainer.steps={steps}; nothing was trained "
              "(raise trainer.steps to continue, --no-resume starts afresh)")
    else:
        resumed = (f" (steps {summary['start_step'] + 1}-{summary['steps']}, resumed)"
                   if summary["start_step"] else "")
        print(f"trained {summary['steps'] - summary['start_step']} steps{resumed}, "
              f"{summary['tokens']:,} tokens; loss {_loss(summary['first_loss'])} -> {_loss(summary['last_loss'])}")
    if summary["val_loss"]:
        print("val loss: " + ", ".join(f"{s} {v:.4f}" for s, v in summary["val_loss"].items()))
    print(f"checkpoint: {summary['checkpoint']}")
    print(f"log:        {summary['log']}")
    print(f"plot:       {summary['plot']}")


def _config(args: argparse.Namespace, path: str):
    """The job config at `path` with the --set overrides; a bad one ends the command."""
    try:
        return load_config(path, args.overrides)
    except ConfigError as e:
        args.parser.error(str(e))


def _newest_checkpoint(args: argparse.Namespace, cfg, hint: str = "") -> str:
    """The newest checkpoint under the config's trainer.out; none ends the command."""
    from pipeline.core.contracts import CHECKPOINTS, latest_checkpoint
    from trainer.storage import join

    checkpoint = latest_checkpoint(join(cfg.trainer.out, CHECKPOINTS))
    if checkpoint is None:
        args.parser.error(f"no checkpoint under {cfg.trainer.out}/checkpoints{hint}")
    return checkpoint


def _manifest_tokenizer(cfg) -> dict | None:
    """The shard manifest's record of the tokenizer (None: no shards beside the config)."""
    from pipeline.core.contracts import ShardError, load_shard_manifest

    try:
        return load_shard_manifest(cfg.shards.out)["tokenizer"]
    except ShardError:
        return None


def _add_export(commands) -> None:
    parser = commands.add_parser(
        "export", prog="python -m trainer export",
        help="write a checkpoint and its tokenizer as a Hugging Face Llama folder",
        description="Write a checkpoint's model and the tokenizer that trained it as one "
                    "Hugging Face Llama folder: config.json + model.safetensors (--dtype) + "
                    "tokenizer.model, tokenizer.json, tokenizer_config.json and "
                    "special_tokens_map.json, so that AutoTokenizer.from_pretrained(DIR) and "
                    "LlamaForCausalLM.from_pretrained(DIR) load it and need no other file. The "
                    "tokenizer file is checked by sha256 against the one the checkpoint records "
                    "(else the config's shard manifest); a mismatch is refused.")
    parser.add_argument("--hf", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--checkpoint", metavar="PATH",
                        help="a checkpoint file or sharded folder (default: the newest "
                             "under the config's trainer.out)")
    parser.add_argument("--config", default=None,
                        help="job config: its newest checkpoint when --checkpoint is not "
                             "given, its tokenizer (tokenizer.model_prefix) and its shard "
                             "manifest's record of it (default: configs/demo.yaml without "
                             "--checkpoint)")
    add_override_argument(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--tokenizer", metavar="MODEL",
                       help="the SentencePiece .model to write (default: the config's, else "
                            "the path the checkpoint records)")
    which.add_argument("--no-tokenizer", action="store_true",
                       help="write the model alone (config.json, model.safetensors)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="dtype of the exported weights (default: %(default)s, the "
                             "checkpoint's own)")
    parser.set_defaults(func=_export, parser=parser)


def _export(args: argparse.Namespace) -> int:
    from trainer.checkpoint import load_model
    from trainer.hf import export_hf
    from trainer.model import ModelArgs

    checkpoint, cfg, manifest_record = args.checkpoint, None, None
    config = args.config or (None if checkpoint else DEMO_CONFIG)
    if config is not None:
        cfg = _config(args, config)
        _configure_storage(cfg, cfg.shards.out, cfg.trainer.out, checkpoint)
        checkpoint = checkpoint or _newest_checkpoint(args, cfg)
        manifest_record = _manifest_tokenizer(cfg)
    try:
        weights, state = load_model(checkpoint)
    except (FileNotFoundError, KeyError) as e:
        args.parser.error(f"{checkpoint}: {e}")
    model_args = ModelArgs(**state["model_args"])
    # what the model was trained with: the checkpoint's own record, else the shards'
    if (state.get("tokenizer") or {}).get("sha256"):
        where, record = f"checkpoint {checkpoint}", state["tokenizer"]
    elif (manifest_record or {}).get("sha256"):
        where, record = f"shard manifest in {cfg.shards.out}", manifest_record
    else:
        where, record = None, state.get("tokenizer") or manifest_record
    tokenizer = None
    if not args.no_tokenizer:
        tokenizer = _export_tokenizer(args, cfg, checkpoint, where, record, model_args)
        if tokenizer is None:
            return 1
    bos, eos = (record or {}).get("bos_id", 1), (record or {}).get("eos_id", 2)
    out = export_hf(weights, model_args, args.hf, bos_token_id=bos, eos_token_id=eos,
                    dtype=args.dtype)
    print(f"exported {checkpoint} -> {out} ({args.dtype})")
    if tokenizer is not None:
        from tokenizer.hf import export_hf as export_tokenizer

        export_tokenizer(tokenizer, out, model_max_length=model_args.max_seq_len)
        print(f"tokenizer: {tokenizer}" + (f", the one recorded by the {where}" if where else
                                           ", not checked: nothing records the model's tokenizer"))
    return 0


def _export_tokenizer(args: argparse.Namespace, cfg, checkpoint: str, where: str | None,
                      record: dict | None, model_args) -> str | None:
    """The tokenizer file to export with the model, checked against `record` (kept by
    `where`); None after printing why it cannot go with it."""
    tokenizer = args.tokenizer or (f"{cfg.tokenizer.model_prefix}.model" if cfg else None) or (
        record or {}).get("path")
    if tokenizer is None:
        args.parser.error(f"{checkpoint} records no tokenizer: give the one it was trained with "
                          "(--tokenizer MODEL), or export the model alone (--no-tokenizer)")
    try:
        error = _check_export_tokenizer(tokenizer, [(where, record)] if where else [], model_args)
    except (FileNotFoundError, ValueError) as e:
        error = str(e)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return None
    return tokenizer


def _check_export_tokenizer(path: str, records: list, args) -> str | None:
    """Why the tokenizer file `path` cannot go with a model of `args` (None: it can):
    another sha256 than recorded (`tokenizer.hf.check_recorded`), or another vocabulary."""
    from tokenizer import load
    from tokenizer.hf import check_recorded

    check_recorded(path, records)
    size = load(path).get_piece_size()
    if size != args.vocab_size:
        return (f"{path} has {size} pieces, the model's vocabulary is {args.vocab_size}: "
                "not the tokenizer it was trained with")
    return None


def _add_import(commands) -> None:
    parser = commands.add_parser(
        "import", prog="python -m trainer import",
        help="read a Hugging Face Llama folder into a checkpoint",
        description="Read a Hugging Face Llama folder (config.json + model.safetensors, or "
                    "sharded weights named by model.safetensors.index.json) into a checkpoint "
                    "file holding the model, its ModelArgs and, when the folder has a "
                    "tokenizer.model, that tokenizer's sha256 (no optimizer state), loadable "
                    "with weights_only. Train from it with --set trainer.init_from=CKPT (or "
                    "name the folder itself there).")
    parser.add_argument("--hf", required=True, metavar="DIR", help="input folder")
    parser.add_argument("--out", required=True, metavar="CKPT",
                        help="checkpoint file to write (local, s3:// or gs://)")
    parser.set_defaults(func=_import, parser=parser)


def _import(args: argparse.Namespace) -> int:
    import tempfile
    from dataclasses import asdict
    from pathlib import Path

    from trainer.checkpoint import save_checkpoint
    from trainer.hf import import_hf, tokenizer_record
    from trainer.storage import upload

    try:
        weights, model_args = import_hf(args.hf)
    except (FileNotFoundError, ValueError, KeyError) as e:
        args.parser.error(f"{args.hf}: {e}")
    state = {"step": 0, "model": weights, "model_args": asdict(model_args)}
    if (record := tokenizer_record(args.hf)) is not None:
        state["tokenizer"] = record
    if not is_remote(args.out):
        path = save_checkpoint(args.out, state)
    else:  # written here, then uploaded (the object appears only once complete)
        with tempfile.TemporaryDirectory() as tmp:
            upload(save_checkpoint(Path(tmp) / "checkpoint.pt", state), args.out)
        path = args.out
    print(f"imported {args.hf} -> {path}")
    return 0


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `generate` and `eval` share: which model, tokenizer and device."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--checkpoint", metavar="PATH",
                       help="a checkpoint file or sharded folder (default: the newest under "
                            "the config's trainer.out)")
    which.add_argument("--hf", metavar="DIR",
                       help="a Hugging Face Llama folder (`python -m trainer export --hf`)")
    parser.add_argument("--config", default=None,
                        help="job config: its newest checkpoint when neither --checkpoint nor "
                             "--hf is given, and its shard manifest's tokenizer (default: "
                             "configs/demo.yaml)")
    add_override_argument(parser)
    parser.add_argument("--tokenizer", metavar="MODEL",
                        help="the SentencePiece .model (default: the export folder's "
                             "tokenizer.model, else the one the checkpoint records, else the "
                             "shard manifest's); checked by sha256 against the model's record "
                             "of its tokenizer, when it has one: a mismatch is refused")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: cpu)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="weights and compute dtype (default: bfloat16 on a GPU, float32 "
                             "on CPU)")


def _load_for_inference(args: argparse.Namespace, need_config: bool):
    """(model, SentencePiece processor, config or None, model source) of the options
    `_add_model_arguments` adds; errors end the command with one line, and None comes
    back after printing why the tokenizer is not the model's (exit status 1)."""
    import torch

    from trainer.devices import DeviceError, resolve_device
    from trainer.generate import load_model

    source = args.checkpoint or args.hf
    cfg = None
    if need_config or args.config or source is None:
        cfg = _config(args, args.config or DEMO_CONFIG)
        _configure_storage(cfg, cfg.shards.out, cfg.trainer.out, source)
        source = source or _newest_checkpoint(args, cfg, ": train first, or give --checkpoint or --hf")
    try:
        device = resolve_device(args.device)
    except DeviceError as e:
        args.parser.error(str(e))
    dtype = getattr(torch, args.dtype or ("float32" if device.type == "cpu" else "bfloat16"))
    try:
        model, record = load_model(source, device, dtype)
    except (FileNotFoundError, KeyError, ValueError) as e:
        args.parser.error(f"{source}: {e}")
    path = args.tokenizer or (record or {}).get("path")
    if path is None and cfg is not None:
        path = (_manifest_tokenizer(cfg) or {}).get("path")
    if path is None:
        args.parser.error(f"{source} records no tokenizer: give the one it was trained with "
                          "(--tokenizer MODEL)")
    import tokenizer
    from tokenizer.hf import TokenizerMismatch, check_recorded

    try:
        sp = tokenizer.load(path)
    except (FileNotFoundError, ValueError) as e:
        args.parser.error(str(e))
    # another file at the recorded path (a retrained tokenizer) decodes to the wrong text
    where = f"{'Hugging Face folder' if args.hf else 'checkpoint'} {source}"
    local = path
    if is_remote(path):  # the copy `tokenizer.load` cached on this machine
        from pipeline.core.io import local_copy

        local = local_copy(path)
    try:
        check_recorded(local, [(where, record)], use="used together",  # a record without a sha256 passes
                       remedy="give the tokenizer it was trained with (--tokenizer), or train on this one")
    except TokenizerMismatch as e:
        print(f"error: {e}", file=sys.stderr)
        return None
    if sp.get_piece_size() != model.args.vocab_size:
        args.parser.error(f"{path} has {sp.get_piece_size()} pieces, the model's vocabulary is "
                          f"{model.args.vocab_size}: not the tokenizer it was trained with")
    return model, sp, cfg, str(source)


def _add_generate(commands) -> None:
    parser = commands.add_parser(
        "generate", prog="python -m trainer generate",
        help="continue prompts with a trained model, or print a size's inference memory",
        description="Continue prompts with a trained model, streaming each completion to "
                    "the terminal as it is generated (KV cache; CPU, or one GPU in bf16). "
                    "A prompt is encoded as a document's start ([BOS] + ids). Temperature 0 "
                    "is greedy decoding; else the logits are divided by the temperature, cut "
                    "to --top-k and to the --top-p nucleus, and sampled with --seed. "
                    "--memory SIZE instead prints what a model size needs to generate at "
                    "bf16 (weights and KV cache, counted on the meta device) and whether it "
                    "fits one 80 GB and one 40 GB GPU.")
    _add_model_arguments(parser)
    prompts = parser.add_mutually_exclusive_group()
    prompts.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                         help="a prompt (repeatable; default: the config's trainer.eval.prompts)")
    prompts.add_argument("--prompts-file", metavar="FILE", help="one prompt per line")
    prompts.add_argument("--memory", metavar="SIZE",
                         help="print the inference memory of a model size (e.g. 13B) and exit")
    parser.add_argument("--cache-tokens", type=int, default=2048,
                        help="KV cache length for --memory (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=64,
                        help="tokens to generate per prompt (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.6,
                        help="0: greedy (default: %(default)s, Meta's example)")
    parser.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens")
    parser.add_argument("--top-p", type=float, default=0.9,
                        help="keep the nucleus of this probability (default: %(default)s; 1: off)")
    parser.add_argument("--seed", type=int, default=1234, help="sampling seed (default: %(default)s)")
    parser.add_argument("--out", metavar="JSON",
                        help="also write the samples there: {settings, samples: [{prompt, "
                             "completion, tokens}]}")
    parser.set_defaults(func=_generate, parser=parser)


def _generate(args: argparse.Namespace) -> int:
    if args.memory:
        return _memory(args)
    import torch

    from trainer.generate import TextStream, completion_text, encode_prompt, generate

    loaded = _load_for_inference(args, need_config=False)
    if loaded is None:
        return 1
    model, sp, cfg, source = loaded
    texts = _prompts(args, cfg)
    device = model.output.weight.device
    generator = torch.Generator(device).manual_seed(args.seed)
    samples = []
    for text in texts:
        print(text, end="", flush=True)
        ids = encode_prompt(sp, text)
        stream = TextStream(sp, ids)
        try:
            tokens = generate(model, ids, args.max_new_tokens,
                              temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                              generator=generator, eos_id=sp.eos_id(), on_token=stream)
        except ValueError as e:
            print(file=sys.stderr)
            args.parser.error(str(e))
        stream.finish()
        samples.append({"prompt": text, "completion": completion_text(sp, ids, tokens),
                        "tokens": tokens})
    if args.out:
        from pipeline.core import io as pio

        settings = {"model": source, "max_new_tokens": args.max_new_tokens,
                    "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
                    "seed": args.seed, "device": str(device),
                    "dtype": str(model.output.weight.dtype).removeprefix("torch.")}
        pio.write_json(args.out, {"settings": settings, "samples": samples})
    return 0


def _memory(args: argparse.Namespace) -> int:
    """`generate --memory SIZE`: what the size needs to generate, and where it fits."""
    import torch

    from trainer.generate import inference_memory, memory_report
    from trainer.model import MODEL_SIZES

    if args.memory not in MODEL_SIZES:
        args.parser.error(f"--memory {args.memory!r}: not a model size ({', '.join(MODEL_SIZES)})")
    dtype = getattr(torch, args.dtype or "bfloat16")
    print(memory_report(inference_memory(args.memory, args.cache_tokens, dtype=dtype)))
    return 0


def _prompts(args: argparse.Namespace, cfg) -> list[str]:
    """--prompt's, --prompts-file's lines, else the config's trainer.eval.prompts."""
    if args.prompts_file:
        from pathlib import Path

        texts = [line for line in Path(args.prompts_file).read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    else:
        texts = args.prompt or (cfg.trainer.eval.prompts if cfg is not None else [])
    if not texts:
        args.parser.error("no prompt: give --prompt TEXT or --prompts-file FILE")
    return texts


def _named_paths(items: list[str]) -> dict[str, str]:
    """`[NAME=]PATH` options as {name: path}; the name defaults to the file's name
    without .jsonl / .json and a compression suffix."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or "/" in name:
            path = item
            name = path.rstrip("/").rsplit("/", 1)[-1]
            for suffix in (".gz", ".bz2", ".xz", ".jsonl", ".json"):
                name = name.removesuffix(suffix)
        out[name] = path
    return out


def _add_eval(commands) -> None:
    parser = commands.add_parser(
        "eval", prog="python -m trainer eval",
        help="measure a trained model: loss, bits per byte, accuracy, samples",
        description="Measure a trained model and write a JSON report (default "
                    "<trainer.out>/eval.json, which `python -m pipeline report` shows): per "
                    "source of the validation shards, loss (nats/token) and bits per byte; per "
                    "documents file (JSONL, a \"text\" field each: Paloma's files, C4's), "
                    "perplexity and bits per byte; per multiple-choice task (JSONL of "
                    "{\"context\", \"choices\", \"gold\"}), zero-shot accuracy by log-likelihood, "
                    "as lm-eval-harness scores it (acc, acc_norm per character, and per token); "
                    "and greedy samples of the config's trainer.eval.prompts. The sets are the "
                    "config's trainer.eval.docs and .tasks, plus --docs and --tasks.")
    _add_model_arguments(parser)
    parser.add_argument("--docs", action="append", default=[], metavar="[NAME=]PATH",
                        help="a JSONL file of documents (repeatable; any filesystem, .gz fine)")
    parser.add_argument("--tasks", action="append", default=[], metavar="[NAME=]PATH",
                        help="a JSONL file of multiple-choice items (repeatable)")
    parser.add_argument("--no-val", action="store_true", help="skip the validation shards")
    parser.add_argument("--val-windows", type=int, default=None,
                        help="windows per source (default: trainer.val_batches x batch_size, "
                             "the training run's validation windows)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="sequences per forward (default: trainer.batch_size)")
    parser.add_argument("--out", metavar="JSON", help="report path (default: <trainer.out>/eval.json)")
    parser.set_defaults(func=_eval, parser=parser)


def _eval(args: argparse.Namespace) -> int:
    from trainer.evaluate import format_report
    from trainer.storage import join

    loaded = _load_for_inference(args, need_config=True)
    if loaded is None:  # nothing written
        return 1
    model, sp, cfg, source = loaded
    seq_len = min(cfg.trainer.seq_len, model.args.max_seq_len)
    report = {"model": source, "device": str(model.output.weight.device),
              "dtype": str(model.output.weight.dtype).removeprefix("torch."), "seq_len": seq_len}
    try:
        report.update(_eval_scores(args, cfg, model, sp, seq_len))
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = args.out or str(join(cfg.trainer.out, "eval.json"))
    from pipeline.core import io as pio

    pio.write_json(out, report)
    print(format_report(report))
    print(f"report: {out}")
    return 0


def _eval_scores(args: argparse.Namespace, cfg, model, sp, seq_len: int) -> dict:
    """The report's "val" (unless --no-val or no val shards), "docs", "tasks" and
    "samples" (greedy, within the model's context)."""
    import contextlib

    from pipeline.core.contracts import ShardError
    from trainer.evaluate import (
        load_docs,
        load_task,
        score_docs,
        score_task,
        val_bits_per_byte,
    )
    from trainer.generate import completion_text, encode_prompt, generate

    t, ev = cfg.trainer, cfg.trainer.eval
    batch = args.batch_size or t.batch_size
    autocast = contextlib.nullcontext()
    report = {}
    if not args.no_val:
        try:
            report["val"] = val_bits_per_byte(model, cfg.shards.out, seq_len,
                                              args.val_windows or t.val_batches * t.batch_size,
                                              batch, sp, autocast)
        except ShardError as e:
            print(f"note: no validation shards: {e}", file=sys.stderr)
    report["docs"] = {
        name: {"path": path, **score_docs(model, load_docs(name, path, sp, ev.max_docs),
                                          seq_len, batch, autocast)}
        for name, path in {**ev.docs, **_named_paths(args.docs)}.items()}
    report["tasks"] = {
        name: {"path": path, **score_task(model, load_task(name, path, sp, ev.max_docs),
                                          batch, autocast)}
        for name, path in {**ev.tasks, **_named_paths(args.tasks)}.items()}
    report["samples"] = []
    for text in ev.prompts:
        ids = encode_prompt(sp, text)
        tokens = generate(model, ids, min(ev.max_new_tokens, model.args.max_seq_len - len(ids)),
                          eos_id=sp.eos_id())
        report["samples"].append({"prompt": text, "completion": completion_text(sp, ids, tokens),
                                  "tokens": tokens})
    return report


COMMANDS = ("train", "export", "import", "generate", "eval")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m trainer`: one subcommand each, `train` the default."""
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Train a LLaMA model, export and import it (Hugging Face Llama), "
                    "generate with it and evaluate it. Without a command: train "
                    "(`python -m trainer --help` describes it).")
    commands = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    for add in (_add_train, _add_export, _add_import, _add_generate, _add_eval):
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:  # training is the default command
        argv = ["train", *argv]
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # outside the training loop (importing torch takes seconds): no traceback
        print("interrupted: python -m trainer stopped; checkpoints are written whole or not at all: "
              "run the same command again", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
