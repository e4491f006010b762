"""The run report: what happened to the data, per source, from read to training.

Reads only the stages' own outputs (clean manifest, shard manifest, training
log), so it can be rebuilt at any time: `python -m pipeline report`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.config import SOURCES, Config
from pipeline.io import atomic_write


def _load_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _log_records(log_path: Path) -> list[dict[str, Any]]:
    if not log_path.is_file():
        return []
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]


def funnel(counters: dict[str, int]) -> dict[str, Any]:
    """Summarise one source's clean-job counters.

    Returns {"records", "docs_read", "removed": {reason: n}, "lines_removed",
    "dead_letter", "kept"}: records = documents read + records skipped + dead
    letters; removed merges reader skips (`skip.*`) and filter drops (`drop.*`);
    lines_removed counts lines cut from kept documents (CCNet line dedup, C4 rules).
    """
    removed = {
        k.split(".", 1)[1]: v for k, v in counters.items() if k.startswith(("skip.", "drop."))
    }
    skipped = sum(v for k, v in counters.items() if k.startswith("skip."))
    dead = counters.get("dead_letter", 0)
    return {
        "records": counters.get("docs_read", 0) + skipped + dead,
        "docs_read": counters.get("docs_read", 0),
        "removed": dict(sorted(removed.items())),
        "lines_removed": sum(
            v for k, v in counters.items() if k.startswith("c4.line.") or k == "line_dedup.lines_removed"
        ),
        "dead_letter": dead,
        "kept": counters.get("docs_kept", 0),
    }


def build_report(cfg: Config) -> str:
    """The report as Markdown text."""
    clean = _load_json(Path(cfg.out_dir) / "clean" / "manifest.json")
    shards = _load_json(Path(cfg.shards.out) / "manifest.json")
    records = _log_records(Path(cfg.trainer.out) / "log.jsonl")
    log = [r for r in records if "loss" in r]  # training steps
    val = [r for r in records if "val_loss" in r]  # validation records
    lines = [f"# Run report: {cfg.name}", ""]
    lines += ["## Data, per source", ""]
    lines += [
        "| source | input files | records | removed (reason: n) | dead letters | kept docs "
        "| train tokens | epochs planned (written) | target share | achieved share |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    counters = (clean or {}).get("counters", {})
    inputs = (clean or {}).get("inputs", {})
    mix = (shards or {}).get("sources", {})
    for source in SOURCES:
        if source not in counters and source not in inputs:
            continue
        f = funnel(counters.get(source, {}))
        removed = ", ".join(f"{k}: {v}" for k, v in f["removed"].items()) or "-"
        if f["lines_removed"]:
            removed += f"; lines cut: {f['lines_removed']}"
        m = mix.get(source, {})
        written = m.get("tokens_written", 0) / m["tokens_available"] if m.get("tokens_available") else 0.0
        lines.append(
            f"| {source} | {len(inputs.get(source, []))} | {f['records']} | {removed} "
            f"| {f['dead_letter']} | {f['kept']} | {m.get('tokens_written', 0)} "
            f"| {m.get('epochs', 0):.2f} ({written:.2f}) | {100 * m.get('share', 0):.1f}% "
            f"(Table 1: {cfg.sources[source].share:.1f}%) | {100 * m.get('achieved_share', 0):.1f}% |"
        )
    if clean is None:
        lines.append("\n(no clean manifest: run `python -m pipeline clean`)")
    misses = [
        f"{s} {100 * m['achieved_share']:.1f}% vs {100 * m['share']:.1f}%"
        for s, m in mix.items()
        if abs(m.get("achieved_share", 0) - m.get("share", 0)) > 0.02
    ]
    if misses:
        lines.append(
            "\nMixture off target by more than 2 points (a source of few large documents is "
            "drawn whole, or too small for its share): " + "; ".join(misses)
        )
    lines.append("")
    if shards:
        n_train = sum(1 for s in shards["shards"] if s["split"] == "train")
        n_val = len(shards["shards"]) - n_train
        lines += [
            "## Token shards",
            "",
            f"- {n_train} train and {n_val} validation shards in `{cfg.shards.out}`,"
            f" {shards['tokens_written']} training tokens (target {shards['total_tokens_target']:.0f})",
            f"- tokenizer `{shards['tokenizer']['path']}` (vocab {shards['tokenizer']['vocab_size']},"
            f" sha256 {shards['tokenizer']['sha256'][:16]})",
            "",
        ]
    if log:
        first, last = log[0], log[-1]
        lines += [
            "## Training",
            "",
            f"- steps logged: {len(log)}, last step {last['step']}",
            f"- loss: first {first['loss']:.4f} (step {first['step']}),"
            f" last {last['loss']:.4f} (step {last['step']}), ratio {last['loss'] / first['loss']:.3f}",
            f"- log `{Path(cfg.trainer.out) / 'log.jsonl'}`, loss curve `{Path(cfg.trainer.out) / 'loss.png'}`",
            "",
        ]
    if val:
        last = val[-1]
        lines += [f"Validation loss per source at step {last['step']} (held-out documents):", "",
                  "| source | val loss | val tokens |", "|---|---|---|"]
        for source, loss in sorted(last["val_loss"].items()):
            lines.append(f"| {source} | {loss:.4f} | {last.get('val_tokens', {}).get(source, '')} |")
        lines.append("")
    return "\n".join(lines)


def write_report(cfg: Config) -> tuple[Path, str]:
    """Write `<out_dir>/report.md` atomically; returns (path, text)."""
    text = build_report(cfg)
    path = Path(cfg.out_dir) / "report.md"
    with atomic_write(path) as f:
        f.write(text.encode("utf-8"))
    return path, text
