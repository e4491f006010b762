"""Which runs each stage's output came from, and whether they agree.

Each stage's manifest records the digest of the settings that decide its output
(`Config.clean_digest`, `tokenizer_digest`, `shards_digest`) and what it was
made from:

    clean      <out_dir>/clean/manifest.json     run, clean_config_digest
    tokenizer  <model_prefix>.manifest.json      sha256, tokenizer_digest, clean_run, clean_contents
    shards     <shards.out>/manifest.json        run, shards_digest, clean_run, clean_contents,
                                                 tokenizer.sha256
    training   <trainer.out>/lineage.json        shards_run, shards_contents, tokenizer_sha256

An output is known by its `contents` (the names and sha256 of the files its
manifest lists), so a rerun that writes the same bytes under a new run id (a
repeated quality-filter) is still the output a later stage was made from; its
run id names it in messages.

A command that reads an earlier stage's output checks that chain (`check`): an
output written under other settings than the config's, or made from another
run than the one now there (shards of an earlier clean run, a checkpoint
trained on other shards), stops it with `MixedRuns`, which names both runs
and what to rerun, unless the user passes --allow-mixed (then it is a
warning). What a manifest does not record (an output written before these
fields, a tokenizer model from elsewhere) is not checked. `describe` says
which runs an output describes (the report).

Beam-free for local paths (the trainer's machines may lack it): `pipeline.core.io`
is imported only for an object store's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from typing import Any, NamedTuple

from pipeline.core.config import Config, PipelineError, _join

TOKENIZER_FORMAT = "llama-tokenizer/1"
LINEAGE = "lineage.json"  # in trainer.out
STAGES = ("clean", "tokenizer", "shards", "training")
ALLOW_HINT = "--allow-mixed uses them as they are"
log = logging.getLogger("pipeline.core.lineage")


class MixedRuns(PipelineError):
    """Stage outputs that come from different runs or settings."""


class Runs(NamedTuple):
    """The manifests of a config's stage outputs (None: absent)."""

    clean: dict[str, Any] | None
    tokenizer: dict[str, Any] | None
    shards: dict[str, Any] | None
    training: dict[str, Any] | None
    model_sha256: str | None  # of <model_prefix>.model as it is now


def tokenizer_manifest_path(cfg: Config) -> str:
    """`<tokenizer.model_prefix>.manifest.json`, written last by `tokenizer train`."""
    return f"{cfg.tokenizer.model_prefix}.manifest.json"


def training_lineage_path(cfg: Config) -> str:
    return _join(cfg.trainer.out, LINEAGE)


def _remote(path: str) -> bool:
    return "://" in str(path)


def _load(path: str) -> dict[str, Any] | None:
    """A JSON object at `path` on any filesystem; None when absent or not one."""
    try:
        if _remote(path):
            from pipeline.core import io

            found = io.read_json(path) if io.exists(path) else None
        else:
            with open(path, "rb") as f:
                found = json.load(f)
    except (OSError, ValueError, PipelineError):  # absent or unreadable (pipeline.core.io's StorageError)
        return None
    return found if isinstance(found, dict) else None


def _sha256(path: str) -> str | None:
    """The sha256 of a file on any filesystem, None when absent."""
    if _remote(path):
        from pipeline.core import io

        return io.sha256_file(path) if io.exists(path) else None
    if not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def read_runs(cfg: Config) -> Runs:
    """The manifests the chain is checked on (`Runs`)."""
    return Runs(
        clean=_load(_join(cfg.out_dir, "clean", "manifest.json")),
        tokenizer=_load(tokenizer_manifest_path(cfg)),
        shards=_load(_join(cfg.shards.out, "manifest.json")),
        training=_load(training_lineage_path(cfg)),
        model_sha256=_sha256(f"{cfg.tokenizer.model_prefix}.model"),
    )


def _short(sha: str | None) -> str:
    return (sha or "?")[:16]


def contents(manifest: dict[str, Any] | None) -> str | None:
    """SHA-256 (hex, 16 chars) of the files a clean or shard manifest lists
    (their names inside the run folder and sha256), or None without files."""
    if not manifest:
        return None
    entries = manifest.get("files", manifest.get("shards"))
    if not entries:
        return None
    listed = sorted((str(e.get("file", "")).split("/", 1)[-1], e.get("sha256", "")) for e in entries)
    return hashlib.sha256(json.dumps(listed).encode()).hexdigest()[:16]


def made_from(record: dict[str, Any], prefix: str, manifest: dict[str, Any] | None) -> bool | None:
    """Whether `record` (a manifest that names `<prefix>_contents` and
    `<prefix>_run`) was made from the output `manifest` describes: by contents,
    else by run id; None when either does not say."""
    if not manifest:
        return None
    recorded = record.get(f"{prefix}_contents")
    if recorded and (now := contents(manifest)):
        return recorded == now
    if record.get(f"{prefix}_run") and manifest.get("run"):
        return record[f"{prefix}_run"] == manifest["run"]
    return None


def problems(cfg: Config, runs: Runs, reads: str, since: str = "clean") -> list[str]:
    """What disagrees among the outputs from stage `since` to stage `reads`
    (both in STAGES: the first and the last stage a command reads), each as a
    sentence naming both runs and what to rerun; [] when they agree. A check
    between two outputs applies only when the command reads both: the trainer
    reads the shards, not the clean output they were once made from."""
    lo, hi = STAGES.index(since), STAGES.index(reads)

    def reading(*stages: str) -> bool:
        return all(lo <= STAGES.index(s) <= hi for s in stages)

    clean, tok, shards, training = runs.clean, runs.tokenizer, runs.shards, runs.training
    clean_run = (clean or {}).get("run")
    tok_is = f"the tokenizer (sha256 {_short((tok or {}).get('sha256'))})"
    shards_are = f"the shards (run {(shards or {}).get('run', '?')})"
    out = []

    def other_settings(what: str, record: dict | None, key: str, now: str, kind: str, rerun: str) -> None:
        if record and record.get(key) not in (None, now):
            out.append(f"{what} under other {kind}settings (digest {record[key]}, this config's {now}): rerun "
                       f"`{rerun}`")

    def other_run(what: str, record: dict | None, prefix: str, manifest: dict | None, now: str) -> None:
        if record and made_from(record, prefix, manifest) is False:
            out.append(f"{what} {record[f'{prefix}_run']}, but {now}")

    if reading("clean"):
        other_settings(f"the clean output (run {clean_run}) was written", clean, "clean_config_digest",
                       cfg.clean_digest(), "cleaning ", "python -m pipeline clean")
    if reading("tokenizer"):
        other_settings(f"{tok_is} was trained", tok, "tokenizer_digest", cfg.tokenizer_digest(), "",
                       "python -m tokenizer train")
        if reading("clean"):
            other_run(f"{tok_is} was trained on clean run", tok, "clean", clean,
                      f"the clean output is now run {clean_run}: rerun `python -m tokenizer train`")
    if reading("shards"):
        other_settings(f"{shards_are} were written", shards, "shards_digest", cfg.shards_digest(), "shard ",
                       "python -m pipeline shards")
        if reading("clean"):
            other_run(f"{shards_are} were made from clean run", shards, "clean", clean,
                      f"the clean output is now run {clean_run}: rerun `python -m pipeline shards`")
        used = ((shards or {}).get("tokenizer") or {}).get("sha256")
        if reading("tokenizer") and used and runs.model_sha256 and used != runs.model_sha256:
            out.append(f"{shards_are} were encoded with the tokenizer of sha256 {_short(used)}, but "
                       f"{cfg.tokenizer.model_prefix}.model is now {_short(runs.model_sha256)}: rerun "
                       "`python -m pipeline shards`")
    if reading("training", "shards"):
        other_run(f"the training in {cfg.trainer.out} ran on shards run", training, "shards", shards,
                  f"the shards are now run {(shards or {}).get('run')}: train afresh "
                  "(`python -m trainer --no-resume`)")
    return out


def check(cfg: Config, command: str, reads: str, allow_mixed: bool = False, runs: Runs | None = None,
          since: str = "clean") -> Runs:
    """Stop `command` when the outputs it reads, from stage `since` to stage
    `reads`, disagree (`problems`); with `allow_mixed`, log each as a warning
    instead. Returns the `Runs` read.

    Raises:
        MixedRuns: naming every disagreement, what to rerun, and the override.
    """
    runs = runs or read_runs(cfg)
    found = problems(cfg, runs, reads, since)
    if found and not allow_mixed:
        raise MixedRuns(f"{command}: the outputs it reads are not of one run of this config: " + "; ".join(found)
                        + f" (`make demo` reruns the stages out of date, FORCE=1 all; {ALLOW_HINT})")
    for problem in found:
        log.warning("%s reads mixed runs (--allow-mixed): %s", command, problem)
    return runs


def training_lineage(runs: Runs) -> dict[str, Any]:
    """What a training run is made from, for `<trainer.out>/lineage.json`."""
    shards = runs.shards or {}
    return {"shards_run": shards.get("run"), "shards_contents": contents(shards),
            "shards_digest": shards.get("shards_digest"), "clean_run": shards.get("clean_run"),
            "tokenizer_sha256": (shards.get("tokenizer") or {}).get("sha256")}


def check_training(cfg: Config, resume: bool, allow_mixed: bool = False) -> Runs:
    """Before training: the shards follow this config's shard settings
    (`check`), and a run to resume in trainer.out trained on these shards; then records the
    shards it trains on in `<trainer.out>/lineage.json` (the caller's rank 0).

    Raises:
        MixedRuns: see `check`; resuming a training of other shards.
    """
    runs = read_runs(cfg)
    if not resume:  # its checkpoints go: what they trained on does not matter
        runs = runs._replace(training=None)
    return check(cfg, "trainer", "training", allow_mixed, runs, since="shards")


def record_training(cfg: Config, runs: Runs) -> None:
    """Write `<trainer.out>/lineage.json` for the shards in `runs` (atomically)."""
    if runs.shards is None:
        return
    path, data = training_lineage_path(cfg), json.dumps(training_lineage(runs), indent=2, sort_keys=True)
    if _remote(path):
        from pipeline.core import io

        io.write_bytes(path, data.encode())
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{LINEAGE}.", suffix=".tmp", dir=os.path.dirname(path) or ".")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def describe(cfg: Config, runs: Runs) -> list[str]:
    """One line per stage output: which run it is and what it was made from."""
    clean, tok, shards, training = runs.clean, runs.tokenizer, runs.shards, runs.training
    lines = []
    if clean:
        lines.append(f"clean: run {clean.get('run')} (settings digest {clean.get('clean_config_digest', '?')})")
    if tok or runs.model_sha256:
        made = f", trained on clean run {tok['clean_run']}" if tok and tok.get("clean_run") else ""
        lines.append(f"tokenizer: {cfg.tokenizer.model_prefix}.model, sha256 "
                     f"{_short((tok or {}).get('sha256') or runs.model_sha256)}{made}")
    if shards:
        made = f" from clean run {shards['clean_run']}" if shards.get("clean_run") else ""
        lines.append(f"shards: run {shards.get('run', '?')}{made}, tokenizer sha256 "
                     f"{_short((shards.get('tokenizer') or {}).get('sha256'))}")
    if training:
        lines.append(f"training: {cfg.trainer.out}, on shards run {training.get('shards_run')}")
    return lines
