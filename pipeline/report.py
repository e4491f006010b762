"""The run report: what happened to the data, per source, from read to training.

Reads only the stages' own outputs (clean manifest, shard manifest, training
log, and `python -m trainer eval`'s report when there is one), so it can be rebuilt at any time: `python -m pipeline report`. Writes
`<out_dir>/report.md` and, beside it, PNG charts: `report-funnel-<source>.png`
(records read, removed by each stage and reason, kept) and `report-mixture.png`
(achieved vs target share per source). Charts are drawn with matplotlib's Agg
canvas, without metadata, so a rerun on the same outputs writes the same bytes.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
from pathlib import Path
from typing import Any

from pipeline.core import io as storage
from pipeline.core import lineage
from pipeline.core.config import SOURCES, Config

# Removal counters no step of the manifest claims (a reason newer than the run's steps)
OTHER = {"step": "other", "what": "reasons this report does not know yet", "counters": []}
CHART_DPI = 100
# No "Software" (matplotlib's version) in the PNG: the bytes depend only on the data.
PNG_METADATA = {"Software": None}


def _load_json(path: str) -> dict[str, Any] | None:
    return storage.read_json(path) if storage.exists(path) else None


def _log_records(log_path: str) -> list[dict[str, Any]]:
    if not storage.exists(log_path):
        return []
    return [json.loads(line) for line in storage.read_bytes(log_path).decode().splitlines() if line.strip()]


def steps_of(clean: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The steps of a clean output in pipeline order, as its manifest records them
    (`pipeline.clean.CLEAN_STEPS`: {"step", "what", "counters"}), then `OTHER`."""
    steps = (clean or {}).get("steps")
    if steps is None:
        # a manifest written before the clean job recorded its steps: today's steps
        from pipeline.clean import CLEAN_STEPS

        steps = CLEAN_STEPS
    return [*steps, OTHER]


def _removes(counter: str) -> bool:
    """Whether documents are removed under `counter`: a reader's skip, a filter's drop, a dead letter."""
    return counter.startswith(("skip.", "drop.", "dead_letter.")) or counter == "dead_letter"


def stage_of(counter: str, steps: list[dict[str, Any]] | None = None) -> str | None:
    """The step of a clean output that removed documents under a counter name
    (`skip.license` -> "read", `drop.c4_lorem_ipsum` -> "C4 rules",
    `dead_letter.language_id` -> "language ID"; "other" when no step claims it),
    None for non-removal counters. `steps`: `steps_of` the output's manifest
    (default: today's steps)."""
    if not _removes(counter):
        return None
    for step in steps or steps_of(None):
        if any(fnmatch.fnmatchcase(counter, pattern) for pattern in step["counters"]):
            return step["step"]
    return OTHER["step"]


def funnel(counters: dict[str, int], steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Summarise one source's clean-job counters, by the `steps` of its clean
    output (`steps_of` its manifest; default: today's steps).

    Returns {"records", "docs_read", "removed": {reason: n}, "by_stage":
    [(stage, {reason: n})] in pipeline order (stages that removed nothing left
    out), "lines_removed", "dead_letter", "kept"}: records = documents read +
    records skipped + dead letters of reading; removed merges reader skips
    (`skip.*`) and filter drops (`drop.*`); lines_removed counts lines cut from
    documents (CCNet line dedup, C4 rules); dead_letter counts every stage's.

    `dead_letter` counts the dead letters of every stage, `dead_letter.<stage>`
    those of a stage after reading (documents already read): the rest are
    reading's.
    """
    removed = {
        k.split(".", 1)[1]: v for k, v in counters.items() if k.startswith(("skip.", "drop."))
    }
    skipped = sum(v for k, v in counters.items() if k.startswith("skip."))
    dead = counters.get("dead_letter", 0)
    read_dead = dead - sum(v for k, v in counters.items() if k.startswith("dead_letter."))
    steps = steps or steps_of(None)
    by_stage: dict[str, dict[str, int]] = {}
    for key, n in sorted(counters.items()):
        stage = stage_of(key, steps)
        n = read_dead if key == "dead_letter" else n
        if stage and n:
            reason = "dead letter" if key.startswith("dead_letter") else key.split(".", 1)[1]
            by_stage.setdefault(stage, {})[reason] = n
    return {
        "records": counters.get("docs_read", 0) + skipped + read_dead,
        "docs_read": counters.get("docs_read", 0),
        "removed": dict(sorted(removed.items())),
        "by_stage": [(s, by_stage[s]) for s in dict.fromkeys([*(s["step"] for s in steps), OTHER["step"]])
                     if s in by_stage],
        "lines_removed": sum(
            v for k, v in counters.items() if k.startswith("c4.line.") or k == "line_dedup.lines_removed"
        ),
        "dead_letter": dead,
        "kept": counters.get("docs_kept", 0),
    }


def funnel_steps(f: dict[str, Any]) -> list[tuple[str, int, dict[str, int]]]:
    """The funnel as rows: ("records read", records, {}), then per stage that removed
    something (f"after {stage}", documents left, {reason: n}), then ("kept", kept, {})."""
    left = f["records"]
    rows = [("records read", left, {})]
    for stage, reasons in f["by_stage"]:
        left -= sum(reasons.values())
        rows.append((f"after {stage}", left, reasons))
    rows.append(("kept", f["kept"], {}))
    return rows


def _input_bytes(clean: dict[str, Any], source: str) -> int | None:
    """Bytes of a source's input files as stored: the manifest's `input_bytes` when
    the clean job recorded it, else the listed local files' sizes now (None when
    one is gone or remote)."""
    recorded = clean.get("input_bytes", {})
    if source in recorded:
        return recorded[source]
    total = 0
    for path in clean.get("inputs", {}).get(source, []):
        if os.path.isfile(path):
            total += os.path.getsize(path)
        elif os.path.isdir(path):  # a repository or a paper folder
            total += sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
        else:
            return None
    return total


def collect(cfg: Config) -> dict[str, Any]:
    """Everything the report shows, from the stages' outputs (pure reads).

    Returns {"name", "out_dir", "clean", "steps" (`steps_of` it), "shards", "train", "val", "sources", "eval"
    (`python -m trainer eval`'s report, `<trainer.out>/eval.json`, or None)}:
    `sources` holds one entry per source with clean counters or inputs, in Table 1
    order: {"source", "files", "bytes_read" (as stored; None unknown),
    "bytes_kept" (Arrow files), "funnel", "mixture" (the shard manifest's entry),
    "table1_share" (percent), "val_loss", "val_tokens"}.
    """
    clean = _load_json(storage.join(cfg.out_dir, "clean", storage.MANIFEST))
    shards = _load_json(storage.join(cfg.shards.out, storage.MANIFEST))
    records = _log_records(storage.join(cfg.trainer.out, "log.jsonl"))
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_loss" in r]
    counters = (clean or {}).get("counters", {})
    steps = steps_of(clean)
    inputs = (clean or {}).get("inputs", {})
    mix = (shards or {}).get("sources", {})
    last_val = val[-1] if val else {}
    kept_bytes: dict[str, int] = {}
    for f in (clean or {}).get("files", []):
        kept_bytes[f["source"]] = kept_bytes.get(f["source"], 0) + f["bytes"]
    sources = []
    listed = (clean or {}).get("input_files")  # files the clean job read, when it recorded them
    for source in SOURCES:
        if source not in counters and (source not in inputs or (listed is not None and source not in listed)):
            continue  # a source folder of the corpus that holds nothing
        sources.append({
            "source": source,
            "files": listed.get(source, 0) if listed is not None else len(inputs.get(source, [])),
            "bytes_read": _input_bytes(clean or {}, source),
            "bytes_kept": kept_bytes.get(source, 0),
            "funnel": funnel(counters.get(source, {}), steps),
            "mixture": mix.get(source, {}),
            "table1_share": cfg.sources[source].share if source in cfg.sources else 0.0,
            "val_loss": last_val.get("val_loss", {}).get(source),
            "val_tokens": last_val.get("val_tokens", {}).get(source),
        })
    runs = lineage.read_runs(cfg)
    return {"name": cfg.name, "out_dir": cfg.out_dir, "shards_dir": cfg.shards.out, "trainer_dir": cfg.trainer.out,
            "clean": clean, "steps": steps, "shards": shards, "train": train, "val": val, "sources": sources,
            # which run each output is, and where they disagree (`pipeline.core.lineage`)
            "runs": lineage.describe(cfg, runs), "mixed": lineage.problems(cfg, runs, "training"),
            "eval": _load_json(storage.join(cfg.trainer.out, "eval.json"))}


def no_val_loss_reason(data: dict[str, Any], source: str) -> str:
    """Why the report has no validation loss for `source` (`collect`'s data)."""
    shards = data["shards"] or {}
    held_out = sum(e.get("tokens_per_source", {}).get(source, 0)
                   for e in shards.get("shards", []) if e.get("split") == "val")
    if not data["val"]:
        if shards and not any(e.get("split") == "val" for e in shards.get("shards", [])):
            return "no validation split: shards.val_fraction is 0"
        return "no validation loss logged yet" if data["train"] else "not trained yet"
    if shards and held_out == 0:
        return "none of its documents were held out for validation"
    return f"its {held_out} held-out tokens make no full window of trainer.seq_len + 1"


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.2f} MB"


def funnel_chart_name(source: str) -> str:
    return f"report-funnel-{source}.png"


MIXTURE_CHART = "report-mixture.png"


def render_markdown(data: dict[str, Any]) -> str:
    """The report as Markdown text (links the charts `write_charts` draws): one
    section after the other, each from `collect`'s data."""
    lines = [
        f"# Run report: {data['name']}",
        "",
        ("What happened to the data of this run, source by source: what was read, what each "
         "cleaning stage removed and why, what was kept, how many tokens it became and how often "
         "training sees them, and how well the trained model predicts each source. Rebuilt from "
         f"the stages' outputs (`{data['out_dir']}/clean/manifest.json`, "
         f"`{data['shards_dir']}/manifest.json`, `{data['trainer_dir']}/log.jsonl`) by "
         "`python -m pipeline report`."),
        "",
        *runs_section(data),
        *cleaning_section(data),
        *mixture_section(data),
        *shards_section(data),
        *training_section(data),
    ]
    if data.get("eval"):
        lines += eval_section(data["eval"], storage.join(data["trainer_dir"], "eval.json"))
    return "\n".join(lines)


def cleaning_section(data: dict[str, Any]) -> list[str]:
    """Per source: files and bytes read, what each step removed and why, dead
    letters, what was kept; then the steps, the filters run after clean, and the
    funnel charts."""
    clean = data["clean"]
    lines = [
        "## Cleaning, per source",
        "",
        ("Each input record goes through the clean job's stages in this order; a stage removes a "
         "document for one reason, counted. Records = documents read + records the reader skipped "
         "+ records it could not parse; a record any stage fails on is a dead letter of that stage, "
         "named in the dead-letter files; kept = what reaches the tokenizer. Bytes read: the input "
         "files as stored (compressed); bytes kept: the cleaned Arrow files."),
        "",
        ("| source | input files | bytes read | records | removed, by stage (reason: n) | dead letters "
         "| kept docs | bytes kept |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in data["sources"]:
        f = s["funnel"]
        removed = "; ".join(
            f"{stage}: " + ", ".join(f"{r}: {n}" for r, n in reasons.items())
            for stage, reasons in f["by_stage"]
        ) or "-"
        if f["lines_removed"]:
            removed += f"; lines cut from documents: {f['lines_removed']}"
        lines.append(
            f"| {s['source']} | {s['files']} | {_mb(s['bytes_read'])} | {f['records']} | {removed} "
            f"| {f['dead_letter']} | {f['kept']} | {_mb(s['bytes_kept'])} |"
        )
    lines += unread_section(clean or {})
    if clean is None:
        return [*lines, "\n(no clean manifest: run `python -m pipeline clean`)", ""]
    steps = [s for s in data.get("steps") or steps_of(clean) if s["step"] != OTHER["step"]]
    lines += ["", "Stages: " + "; ".join(f"**{s['step']}**: {s['what']}" for s in steps) + ".", ""]
    lines += perplexity_section(clean, data["sources"])
    filters = (clean.get("quality_filter") or {}).get("filters", ["classifier"])
    if clean.get("quality_filter") and "classifier" in filters:  # it ran after the clean job, on its output
        qm = clean["quality_model"]
        lines += [(f"The reference-page classifier (`{qm['path']}`, sha256 {qm['sha256'][:16]}, threshold "
                   f"{qm['threshold']}) was applied to the cleaned documents of {', '.join(qm['sources'])} "
                   "afterwards, by `python -m pipeline quality-filter`; its drops count under **quality**."), ""]
    lines += ["Funnel per source (documents left after each stage that removed any):", ""]
    lines += [f"![{s['source']} funnel]({funnel_chart_name(s['source'])})" for s in data["sources"]]
    return [*lines, ""]


def mixture_section(data: dict[str, Any]) -> list[str]:
    """Per source: tokens available, epochs, training tokens, target and achieved
    share, tokens seen in training and the validation loss; where the mixture
    departs from the target; the mixture chart."""
    lines = [
        "## Mixture: tokens and epochs",
        "",
        ("The shard job tokenizes the kept documents and repeats each source to reach its share of "
         "the training tokens (LLaMA Table 1): epochs = share x total tokens / tokens available. "
         "Target share: Table 1's, renormalised over the sources present; achieved: the share of "
         "the tokens actually written. Seen in training: achieved share x the tokens the trainer "
         "consumed (last log record), what each source contributed to the model."),
        "",
        ("| source | tokens available | epochs planned (written) | training tokens | target share "
         "| achieved share | seen in training | val loss (nats/token) |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    trained = data["train"][-1].get("tokens") if data["train"] else None
    for s in data["sources"]:
        m = s["mixture"]
        avail = m.get("tokens_available", 0)
        written = m.get("epochs_written", m.get("tokens_written", 0) / avail if avail else 0.0)
        loss = (f"- ({no_val_loss_reason(data, s['source'])})" if s["val_loss"] is None
                else f"{s['val_loss']:.4f}")
        seen = "-" if trained is None or not m else f"{round(m.get('achieved_share', 0) * trained)}"
        lines.append(
            f"| {s['source']} | {avail} | {m.get('epochs', 0):.2f} ({written:.2f}) | {m.get('tokens_written', 0)} "
            f"| {100 * m.get('share', 0):.1f}% (Table 1: {s['table1_share']:.1f}%) "
            f"| {100 * m.get('achieved_share', 0):.1f}% | {seen} | {loss} |"
        )
    if data["clean"] is not None:  # departures from the target need the clean run the shards came from
        lines += mixture_notes(data["shards"] or {})
    if data["shards"] and any(s["mixture"] for s in data["sources"]):
        lines += ["", f"![achieved vs target share]({MIXTURE_CHART})"]
    return [*lines, ""]


def shards_section(data: dict[str, Any]) -> list[str]:
    """The token shards: how many per split, tokens written, the tokenizer (empty without a shard manifest)."""
    shards = data["shards"]
    if not shards:
        return []
    n_train = sum(1 for s in shards["shards"] if s["split"] == "train")
    n_val = len(shards["shards"]) - n_train
    return [
        "## Token shards",
        "",
        "The files training reads: each holds every source in its share, shuffled.",
        "",
        (f"- {n_train} train and {n_val} validation shards in `{data['shards_dir']}`,"
         f" {shards['tokens_written']} training tokens (target {shards['total_tokens_target']:.0f})"),
        (f"- tokenizer `{shards['tokenizer']['path']}` (vocab {shards['tokenizer']['vocab_size']},"
         f" sha256 {shards['tokenizer']['sha256'][:16]})"),
        "",
    ]


def training_section(data: dict[str, Any]) -> list[str]:
    """The training log: steps, first and last loss; the last validation loss per
    source (empty before training)."""
    lines = []
    if data["train"]:
        first, last = data["train"][0], data["train"][-1]
        log = storage.join(data["trainer_dir"], "log.jsonl")
        lines += [
            "## Training",
            "",
            "The training loss (nats per token) falls as the model learns; the curve is drawn from the log.",
            "",
            f"- steps logged: {len(data['train'])}, last step {last['step']}",
            (f"- loss: first {first['loss']:.4f} (step {first['step']}),"
             f" last {last['loss']:.4f} (step {last['step']}), ratio {last['loss'] / first['loss']:.3f}"),
            f"- log `{log}`, loss curve `{storage.join(data['trainer_dir'], 'loss.png')}`",
            "",
        ]
    if data["val"]:
        last = data["val"][-1]
        lines += [(f"Validation loss per source at step {last['step']}, on documents held out of training "
                   "(lower: the model predicts that source better):"), "",
                  "| source | val loss | val tokens |", "|---|---|---|"]
        for source, loss in sorted(last["val_loss"].items()):
            lines.append(f"| {source} | {loss:.4f} | {last.get('val_tokens', {}).get(source, '')} |")
        lines.append("")
    return lines


def _num(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def eval_section(report: dict[str, Any], path: str) -> list[str]:
    """Markdown lines of `python -m trainer eval`'s JSON report (trainer/evaluate.py)."""
    lines = ["## Evaluation", "",
             (f"`python -m trainer eval` on `{report['model']}` ({report['device']}, "
              f"{report['dtype']}, windows of {report['seq_len']} tokens); report `{path}`."), ""]
    if report.get("val"):
        lines += [("Per source of the validation shards: the loss, and bits per byte: the loss in "
                   "bits over the UTF-8 bytes of the text the tokens stand for, comparable across "
                   "tokenizers (as Paloma reports it)."), "",
                  "| source | loss (nats/token) | bits per byte | tokens | bytes |", "|---|---|---|---|---|"]
        for source, r in report["val"].items():
            lines.append(f"| {source} | {r['loss']:.4f} | {_num(r['bits_per_byte'])} | {r['tokens']} "
                         f"| {r['bytes'] if r['bytes'] is not None else '-'} |")
        lines.append("")
    if report.get("docs"):
        lines += ["Documents (JSONL files; every token after BOS scored, perplexity per token):", "",
                  "| set | documents | tokens | bytes | perplexity | bits per byte | skipped lines |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in report["docs"].items():
            lines.append(f"| {name} | {r['docs']} | {r['tokens']} | {r['bytes']} | "
                         f"{_num(r['perplexity'], 2)} | {_num(r['bits_per_byte'])} | "
                         f"{r['skipped'] or '-'} |")
        lines.append("")
    if report.get("tasks"):
        lines += [("Multiple choice, zero-shot, by log-likelihood as lm-eval-harness scores it: acc "
                   "(sum), acc_norm (per character of the choice), per token:"), "",
                  "| task | items | acc | acc_norm | acc per token | skipped lines |",
                  "|---|---|---|---|---|---|"]
        for name, r in report["tasks"].items():
            lines.append(f"| {name} | {r['items']} | {_num(r['acc'])} | {_num(r['acc_norm'])} | "
                         f"{_num(r['acc_per_token'])} | {r['skipped'] or '-'} |")
        lines.append("")
    if report.get("samples"):
        lines += [("Greedy samples from the trained model (the prompt, then what it wrote; a "
                   "demo model is tiny, the point is the path):"), ""]
        fence = "`" * 3
        for s in report["samples"]:  # a fence inside the text would end the block early
            text = (s["prompt"] + s["completion"]).rstrip().replace(fence, "'''")
            lines += [fence + "text", text, fence, ""]
    return lines


def runs_section(data: dict[str, Any]) -> list[str]:
    """Which run each stage output is (`pipeline.core.lineage.describe`), and where
    they disagree (a report written with --allow-mixed)."""
    lines = []
    if data.get("runs"):
        lines += ["Runs described:", "", *[f"- {line}" for line in data["runs"]], ""]
    if data.get("mixed"):
        lines += ["**Mixed runs** (report written with --allow-mixed): " + "; ".join(data["mixed"]) + ".", ""]
    return lines


def unread_section(clean: dict[str, Any]) -> list[str]:
    """The input files the clean job found but did not read (`unread_inputs`):
    how many per source, then each one listed with its reason."""
    unread = clean.get("unread_inputs")
    if not unread:
        return []
    counts = [(s, unread["files"][s]) for s in SOURCES if s in unread["files"]]
    total = sum(n for _, n in counts)
    lines = ["", (f"Input files found but not read: {total} ({', '.join(f'{s}: {n}' for s, n in counts)}); no "
                  "reader takes their format (`python -m pipeline clean --help` lists the formats):"), "",
             "| source | file | reason |", "|---|---|---|"]
    lines += [f"| {e['source']} | `{e['path']}` | {e['reason']} |" for e in unread.get("listed", [])]
    return lines


def perplexity_buckets(counters: dict[str, int]) -> dict[str, dict[str, int]] | None:
    """A source's documents per perplexity bucket, from its counters: {bucket:
    {"scored", "dropped"}} for head, middle and tail as the cut-offs split them,
    and "no bucket" (kept unscored: no model for its language, or no
    cut-offs); None when the perplexity filter never counted any."""
    rows = {b: {"scored": counters.get(f"perplexity.{b}", 0), "dropped": counters.get(f"drop.perplexity_{b}", 0)}
            for b in ("head", "middle", "tail")}
    rows["no bucket"] = {"scored": counters.get("perplexity.no_bucket", 0), "dropped": 0}
    if not any(n for r in rows.values() for n in r.values()):
        return None
    return rows


def perplexity_section(clean: dict[str, Any], sources: list[dict[str, Any]]) -> list[str]:
    """The perplexity filter's bucket funnel per source, with the cut-offs and the
    classifier's drops after it (empty when the filter did not run)."""
    ppl = clean.get("perplexity")
    if not ppl:
        return []
    cuts = "; ".join(f"{lang}: head below {c['cutoffs'][0]:.1f}, tail from {c['cutoffs'][1]:.1f} "
                     f"({c['sample_docs']} documents sampled)" if "cutoffs" in c else f"{lang}: no cut-offs (no sample)"
                     for lang, c in ppl["langs"].items())
    lines = [
        (f"The perplexity filter (CCNet: a KenLM n-gram model per language, trained on its Wikipedia: "
         f"`{ppl['model_dir']}`) scored the documents of {', '.join(ppl['sources'])} after clean, by `python -m "
         f"pipeline quality-filter`: buckets by the {ppl['percentiles'][0]:g}th and {ppl['percentiles'][1]:g}th "
         f"percentiles of a sample's perplexities ({cuts}); kept: {', '.join(ppl['keep'])}. Then the classifier "
         "judged what it kept."),
        "",
        ("| source | scored | head | middle | tail | no bucket (kept) | removed by perplexity "
         "| removed by the classifier | kept |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sources:
        counters = clean.get("counters", {}).get(s["source"], {})
        rows = perplexity_buckets(counters)
        if rows is None:
            continue
        scored = sum(r["scored"] for b, r in rows.items() if b != "no bucket")
        cells = " | ".join(f"{rows[b]['scored']}" + (f" ({rows[b]['dropped']} removed)" if rows[b]["dropped"] else "")
                           for b in ("head", "middle", "tail"))
        lines.append(f"| {s['source']} | {scored} | {cells} | {rows['no bucket']['scored']} "
                     f"| {sum(r['dropped'] for r in rows.values())} | {counters.get('drop.quality_classifier', 0)} "
                     f"| {counters.get('docs_kept', 0)} |")
    return [*lines, ""]


def mixture_notes(shards: dict[str, Any]) -> list[str]:
    """Lines explaining where the achieved mixture departs from the target.

    A source capped at `shards.max_epochs` has a planned share below its target
    share; an eligible source (`mixture_eligible` in the shard manifest) must land
    within the manifest's tolerance of its planned share; an exempt one (a few
    large documents, each written whole) within its own `share_error_bound`.
    Anything else is flagged OFF TARGET.
    """
    mix = shards.get("sources", {})
    tol = shards.get("mixture", {}).get("tolerance", 0.005)
    notes = []
    for src, m in mix.items():
        target, achieved = m.get("share", 0.0), m.get("achieved_share", 0.0)
        planned = m.get("planned_share", target)
        if m.get("capped"):
            notes.append(f"{src}: capped at shards.max_epochs ({m.get('epochs', 0):.2f} epochs), "
                         f"so planned {100 * planned:.2f}% instead of the target {100 * target:.2f}%")
        err = achieved - planned
        bound = m.get("share_error_bound")
        if abs(err) <= tol:
            continue
        if not m.get("mixture_eligible", True) and bound is not None and abs(err) <= bound:
            miss = (f"can miss by up to {100 * bound:.2f} points" if bound < 1
                    else "is not bounded: too few documents for its share")
            notes.append(f"{src}: {100 * achieved:.2f}% vs planned {100 * planned:.2f}%; a source "
                         f"of few large documents (its largest, {m.get('largest_doc_tokens', 0)} "
                         f"tokens, is written whole), so its share {miss}")
        else:
            notes.append(f"{src}: OFF TARGET, {100 * achieved:.2f}% vs planned {100 * planned:.2f}%")
    if not notes:
        return []
    return ["", f"Where the mixture departs from the target (tolerance {100 * tol:.1f} points):", "",
            *[f"- {n}" for n in notes]]


def build_report(cfg: Config) -> str:
    """The report as Markdown text."""
    return render_markdown(collect(cfg))


def _save_png(fig: Any, path: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=CHART_DPI, metadata=PNG_METADATA)
    storage.write_bytes(path, buf.getvalue())
    return path


def funnel_chart(source: str, f: dict[str, Any], bytes_read: int | None, bytes_kept: int,
                 path: str | Path) -> str:
    """Draw one source's funnel as a PNG (written atomically): a bar per row of
    `funnel_steps` (documents left), the part each stage removed in red with its
    reasons; below, bytes read (as stored) against bytes kept (Arrow files) when
    bytes read are known. Returns `path`."""
    import textwrap

    from matplotlib.figure import Figure  # slow import, needed only here

    rows = funnel_steps(f)
    has_bytes = bytes_read is not None
    fig = Figure(figsize=(10, 0.6 * len(rows) + (1.9 if has_bytes else 1.1)), layout="constrained")
    grid = fig.add_gridspec(2 if has_bytes else 1, 1, height_ratios=(len(rows), 2) if has_bytes else None)
    ax = fig.add_subplot(grid[0, 0])
    top = max(1, rows[0][1])
    y = list(range(len(rows)))[::-1]
    for yi, (label, left, reasons) in zip(y, rows):
        gone = sum(reasons.values())
        ax.barh(yi, left, color="tab:green" if label == "kept" else "tab:blue")
        ax.text(left + top * 0.01, yi, str(left), va="center", fontsize=8)
        if gone:  # what this stage removed, stacked after what it left
            ax.barh(yi, gone, left=left, color="tab:red", alpha=0.35)
            text = textwrap.fill(", ".join(f"-{n} {r}" for r, n in reasons.items()), 60)
            ax.text(left + gone + top * 0.08, yi, text, va="center", fontsize=7, color="tab:red")
    ax.set_yticks(y, [label for label, _, _ in rows])
    ax.set_xlim(0, top * 2.4)
    ax.set_xlabel("documents (records)")
    ax.set_title(f"{source}: {rows[0][1]} records read, {f['kept']} documents kept")
    ax.grid(axis="x", alpha=0.3)
    if has_bytes:
        bx = fig.add_subplot(grid[1, 0])
        values = [bytes_read / 1e6, bytes_kept / 1e6]
        bx.barh([1, 0], values, color=["tab:blue", "tab:green"])
        for yi, v in zip([1, 0], values):
            bx.text(v, yi, f" {v:.2f} MB", va="center", fontsize=8)
        bx.set_yticks([1, 0], ["bytes read (as stored)", "bytes kept (Arrow)"])
        bx.set_xlim(0, max(values + [1e-6]) * 1.25)
        bx.set_xlabel("MB")
    return _save_png(fig, str(path))


def mixture_chart(sources: list[dict[str, Any]], path: str | Path) -> str:
    """Grouped bars per source: Table 1 target share (renormalised over the present
    sources), planned share after any epoch cap (when the manifest has it) and
    achieved share, in percent of training tokens. Returns `path`."""
    from matplotlib.figure import Figure

    names = [s["source"] for s in sources if s["mixture"]]
    mix = [s["mixture"] for s in sources if s["mixture"]]
    series = [("target (Table 1)", [100 * m.get("share", 0) for m in mix], "tab:gray")]
    if all("planned_share" in m for m in mix):
        series.append(("planned (after caps)", [100 * m["planned_share"] for m in mix], "tab:blue"))
    series.append(("achieved", [100 * m.get("achieved_share", 0) for m in mix], "tab:orange"))
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    for i, (label, values, color) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(names))]
        bars = ax.bar(xs, values, width, label=label, color=color)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("share of training tokens (%)")
    ax.set_title("Mixture: achieved vs target share per source")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return _save_png(fig, str(path))


def write_charts(data: dict[str, Any], out_dir: str | Path) -> list[str]:
    """The report's PNGs into `out_dir`: a funnel per source (when there is a clean
    manifest) and the mixture chart (when there is a shard manifest)."""
    paths = []
    if data["clean"] is not None:
        for s in data["sources"]:
            paths.append(funnel_chart(s["source"], s["funnel"], s["bytes_read"], s["bytes_kept"],
                                      storage.join(out_dir, funnel_chart_name(s["source"]))))
    if data["shards"] is not None and any(s["mixture"] for s in data["sources"]):
        paths.append(mixture_chart(data["sources"], storage.join(out_dir, MIXTURE_CHART)))
    return paths


def write_report(cfg: Config, allow_mixed: bool = False) -> tuple[str, str]:
    """Write `<out_dir>/report.md` and its charts beside it, atomically; returns
    (path of report.md, its text).

    Raises:
        MixedRuns: the stage outputs come from different runs or settings
            (`pipeline.core.lineage.check`), unless `allow_mixed`: then the report
            says so.
    """
    lineage.check(cfg, "report", "training", allow_mixed)
    data = collect(cfg)
    write_charts(data, cfg.out_dir)
    text = render_markdown(data)
    path = storage.join(cfg.out_dir, "report.md")
    storage.write_bytes(path, text.encode("utf-8"))
    return path, text
