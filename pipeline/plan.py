"""The run planner: `python -m pipeline plan --config FILE`.

From the per-core throughput of each stage (measured by `make bench`, stored in a
throughputs file) and the input size of each source (given in the config's `plan`
section, or measured by listing the inputs), works out the whole run: tokens per
source, epochs (LLaMA Table 1 math, `pipeline.mixture.compute_epochs`), number and
size of shards, disk, Beam core- and worker-hours per stage, and GPU-hours and days
per model size.

Every number is a `Figure` that carries the formula it came from, written with the
numbers themselves (`1.4e+12 / (380 * 2048) / 86400`), or where a given or measured
number came from. `build_plan` is pure (no printing, no writing); `format_plan`
renders it; the command line prints it and can write it as JSON.

Check against the paper (Section 2.4): at 380 tokens/s/GPU on 2048 GPUs the 65B on
1.4T tokens takes 1.4e12 / 380 / 3600 = 1.023e6 GPU-hours, 20.8 days; Table 15
reports 1,022,362 GPU-hours.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.core.config import SOURCES, Config, PipelineError
from pipeline.mixture import compute_epochs

# a fresh `make bench` measurement first, then the committed one (beside the package,
# so `plan` works from any working directory)
DEFAULT_THROUGHPUTS = ("out/bench/throughputs.json", "configs/throughputs.json",
                       str(Path(__file__).resolve().parents[1] / "configs" / "throughputs.json"))
STAGES = ("clean", "tokenizer_train", "shards")

# LLaMA (Touvron et al. 2023) Table 1: epochs per source, for comparison only.
TABLE1_EPOCHS = {"commoncrawl": 1.10, "c4": 1.06, "github": 0.64, "wikipedia": 2.45,
                 "books": 2.23, "arxiv": 1.06, "stackexchange": 1.03}
# LLaMA Table 15: GPU-hours of each model's training run (7B and 13B on 1.0T tokens,
# 33B and 65B on 1.4T), for comparison only.
PAPER_GPU_HOURS = {"7B": 82_432, "13B": 135_168, "33B": 530_432, "65B": 1_022_362}


class PlanError(PipelineError):
    """The plan cannot be made: a missing or malformed throughputs file, inputs that
    cannot be listed and whose size is not given, no GPU rate, an unknown model size."""


class StageThroughput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    bytes_per_core_s: float = Field(gt=0)
    basis: str


class Throughputs(BaseModel):
    """The throughputs file (written by tests/bench/bench_scaling.py)."""

    model_config = ConfigDict(extra="ignore")
    measured_by: str
    cores: int = Field(gt=0)
    stages: dict[str, StageThroughput]
    tokens_per_byte: float = Field(gt=0)  # tokens per UTF-8 byte of cleaned text
    clean_keep_fraction: dict[str, float] = Field(default_factory=dict)  # cleaned / input bytes


def load_throughputs(path: str | Path) -> Throughputs:
    """Read and validate a throughputs file.

    Raises:
        PlanError: the file is missing, not JSON, or lacks a field or one of the
            stages clean, tokenizer_train, shards (the message names the file).
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        t = Throughputs.model_validate(raw)
    except (OSError, json.JSONDecodeError) as e:
        raise PlanError(f"{path}: cannot read throughputs: {e}") from None
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise PlanError(f"{path}: invalid throughputs file: {errs}") from None
    missing = [s for s in STAGES if s not in t.stages]
    if missing:
        raise PlanError(f"{path}: invalid throughputs file: stages lack {', '.join(missing)}")
    return t


def default_throughputs_path() -> str:
    """`out/bench/throughputs.json` when `make bench` wrote one, else the committed
    `configs/throughputs.json` (paths relative to the repository root)."""
    return next((p for p in DEFAULT_THROUGHPUTS if Path(p).is_file()), DEFAULT_THROUGHPUTS[-1])


@dataclass
class Figure:
    """One number of the plan.

    `kind`: "given" (from the config or the command line), "measured" (from the
    throughputs file, a listing of the inputs, or the model counted on the meta
    device) or "derived". A derived figure's `formula` is `= <expression>  (<what
    it is>)`, the expression arithmetic over numbers (and `ceil`, `min`, `max`) that
    evaluates to `value` (within the 1e-6 the numbers are rounded to); the others'
    say where the number came from ("given: plan.gpus").
    """

    section: str
    name: str
    value: float
    unit: str
    formula: str
    kind: str = "derived"
    reference: str = ""  # the paper's number, where it reports one


@dataclass
class Plan:
    """The figures of a plan, in reading order, with notes; see `build_plan`."""

    config: str
    throughputs: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, section: str, name: str, value: float, unit: str, formula: str,
            kind: str = "derived", reference: str = "") -> float:
        self.figures.append(Figure(section, name, float(value), unit, formula, kind, reference))
        return float(value)

    def get(self, name: str) -> Figure:
        """The figure called `name`; KeyError if there is none."""
        for f in self.figures:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "throughputs": self.throughputs,
                "figures": [asdict(f) for f in self.figures], "notes": list(self.notes)}


def num(x: float) -> str:
    """`x` for a formula: the fewest significant digits (up to 7) that keep it
    within 1e-6, positional below a million (`380`, `0.2908`, `1.4e+12`)."""
    x = float(x)
    if x.is_integer() and abs(x) < 1e6:
        return str(int(x))
    for digits in range(1, 8):
        s = f"{x:.{digits}g}"
        if abs(float(s) - x) <= 1e-6 * abs(x):
            break
    if "e" in s and 1e-4 <= abs(x) < 1e6:
        s = repr(float(s)).removesuffix(".0")
    return s


def measure_inputs(cfg: Config) -> dict[str, tuple[int, int]]:
    """{source: (files, bytes as stored)} of every source whose inputs match files,
    listed by the clean job's own rule (`pipeline.inputs.list_inputs`: files on
    any Beam filesystem, local folders walked).

    Raises:
        PlanError: a filesystem cannot be listed (e.g. s3:// without its options
            or Beam's aws extra); the message says to give `plan.input_bytes` instead.
    """
    from pipeline.inputs import list_inputs

    try:
        listed = list_inputs(cfg)
    except (OSError, ValueError, PipelineError) as e:  # no filesystem for a scheme: ValueError
        raise PlanError(f"cannot list the inputs ({type(e).__name__}: {e}); "
                        "give their sizes as plan.input_bytes.<source> instead") from None
    return {s: (len(found), sum(n for _, n in found)) for s, found in listed.items() if found}


@functools.cache
def model_shape(name: str, vocab_size: int, seq_len: int) -> dict[str, float]:
    """{params, params_no_embedding, n_layers, dim, flops_per_token} of a model size of
    `trainer/model.py`, counted on the meta device (no memory is allocated).

    flops_per_token is `Transformer.flops_per_token`: 6N + 12 * L * d * T (PaLM,
    Appendix B), N without the input embedding.
    Raises:
        PlanError: unknown size name.
    """
    import torch

    from trainer.model import ModelArgs, Transformer

    try:
        args = ModelArgs.from_name(name, vocab_size=vocab_size, max_seq_len=seq_len)
    except KeyError as e:
        raise PlanError(str(e.args[0])) from None
    with torch.device("meta"):
        model = Transformer(args)
    return {"params": model.num_params(), "params_no_embedding": model.num_params(exclude_embedding=True),
            "n_layers": args.n_layers, "dim": args.dim, "flops_per_token": model.flops_per_token(seq_len)}


def build_plan(
    cfg: Config,
    throughputs: Throughputs,
    throughputs_path: str = "",
    config_path: str = "",
    measured_inputs: dict[str, tuple[int, int]] | None = None,
) -> Plan:
    """The plan of the run `cfg` describes (pure: no printing, no writing).

    Args:
        cfg: the job config; its `plan` section gives input sizes, GPUs, MFU or
            tokens/s/GPU, and the models to cost.
        throughputs: per-core rates of the stages (`load_throughputs`).
        measured_inputs: {source: (files, bytes)} for the sources whose size is not
            in `plan.input_bytes` (from `measure_inputs`); None: none measured.
    Returns:
        A `Plan`: figures in sections "inputs", "mixture", "shards", "disk", "beam",
        "gpu"; names like `tokens_available.c4`, `epochs.c4`, `train_shards`,
        `disk.shards`, `beam.clean.core_hours`, `gpu.65B.gpu_hours`, `gpu.65B.days`.
        Units: bytes, tokens, hours, days; rates per second.
    Raises:
        PlanError: no source has a size, neither tokens/s/GPU nor MFU is given,
            or a model size is unknown.
    """
    plan = Plan(config=config_path, throughputs=throughputs_path)
    input_bytes, clean_bytes, tokens = _inputs(plan, cfg, throughputs, throughputs_path or "throughputs",
                                               measured_inputs or {})
    _mixture(plan, cfg, tokens)
    _shards(plan, cfg, tokens)
    models = list(dict.fromkeys([*cfg.plan.models, cfg.trainer.model]))
    shapes = {m: model_shape(m, cfg.tokenizer.vocab_size, cfg.trainer.seq_len)
              for m in dict.fromkeys([*models, cfg.plan.throughput_model])}
    _disk(plan, cfg, clean_bytes, shapes, models)
    _beam(plan, cfg, throughputs, input_bytes, clean_bytes)
    _gpu(plan, cfg, shapes, models)
    return plan


def _inputs(plan: Plan, cfg: Config, throughputs: Throughputs, tp_name: str,
            measured: dict[str, tuple[int, int]]) -> tuple[dict[str, float], ...]:
    """Bytes as stored -> cleaned text bytes -> tokens, per source with a size."""
    pc = cfg.plan
    if pc.tokens_per_byte is not None:
        tpb = plan.add("inputs", "tokens_per_byte", pc.tokens_per_byte, "tokens/B",
                       "given: plan.tokens_per_byte", "given")
    else:
        tpb = plan.add("inputs", "tokens_per_byte", throughputs.tokens_per_byte, "tokens/B",
                       f"measured: {tp_name} tokens_per_byte", "measured")
    input_bytes: dict[str, float] = {}
    clean_bytes: dict[str, float] = {}
    tokens: dict[str, float] = {}
    for source in (s for s in SOURCES if s in cfg.sources):
        if source in pc.input_bytes:
            input_bytes[source] = plan.add("inputs", f"input_bytes.{source}", pc.input_bytes[source], "B",
                                           f"given: plan.input_bytes.{source}", "given")
        elif source in measured:
            n, size = measured[source]
            input_bytes[source] = plan.add("inputs", f"input_bytes.{source}", size, "B",
                                           f"measured: {n} file{'s' * (n != 1)} listed (sources.{source}.inputs)", "measured")
        elif source not in pc.clean_bytes:
            continue  # no input: left out, the shares renormalised (as the shard job does)
        if source in pc.clean_bytes:
            c = plan.add("inputs", f"clean_bytes.{source}", pc.clean_bytes[source], "B",
                         f"given: plan.clean_bytes.{source}", "given")
        else:
            b = input_bytes[source]
            keep = throughputs.clean_keep_fraction.get(source)
            if keep is None:  # not measured (no demo input of this source): assume bytes in = bytes out
                keep = 1.0
                plan.notes.append(f"{tp_name} has no clean_keep_fraction for {source}: assumed 1 (cleaned "
                                  f"bytes = input bytes); give plan.clean_bytes.{source} for a better plan")
            c = plan.add("inputs", f"clean_bytes.{source}", b * keep, "B",
                         f"= {num(b)} * {num(keep)}  (input bytes * keep fraction, {tp_name})")
        clean_bytes[source] = c
        tokens[source] = plan.add("inputs", f"tokens_available.{source}", c * tpb, "tokens",
                                  f"= {num(c)} * {num(tpb)}  (clean bytes * tokens per byte)")
    if not tokens:
        raise PlanError("no source has a size: give plan.input_bytes or plan.clean_bytes, "
                        "or inputs that can be listed")
    return input_bytes, clean_bytes, tokens


def _mixture(plan: Plan, cfg: Config, tokens: dict[str, float]) -> None:
    """LLaMA Table 1 math, through the shard job's own `compute_epochs`."""
    sc = cfg.shards
    vf = sc.val_fraction
    shares = {s: cfg.sources[s].share for s in tokens}
    mix = compute_epochs(shares, {s: t * (1 - vf) for s, t in tokens.items()}, sc.total_tokens, sc.max_epochs)
    norm = sum(p for s, p in shares.items() if s in mix)
    parts = []
    for source in (s for s in SOURCES if s in mix):
        m = mix[source]
        share = plan.add("mixture", f"share.{source}", m["share"], "fraction",
                         f"= {num(shares[source])} / {num(norm)}  (Table 1 share, renormalised over present sources)")
        raw = f"{num(share)} * {num(sc.total_tokens)} / ({num(tokens[source])} * (1 - {num(vf)}))"
        formula = f"= min({raw}, {num(sc.max_epochs)})" if m["capped"] else f"= {raw}"
        epochs = plan.add("mixture", f"epochs.{source}", m["epochs"], "epochs",
                          formula + "  (share * total / training tokens available)",
                          reference=f"Table 1: {TABLE1_EPOCHS[source]:.2f}")
        parts.append(plan.add("mixture", f"training_tokens.{source}", epochs * m["tokens_available"], "tokens",
                              f"= {num(epochs)} * {num(m['tokens_available'])}  (epochs * training tokens available)"))
    plan.add("mixture", "training_tokens", sum(parts), "tokens", "= " + " + ".join(num(p) for p in parts))


def _shards(plan: Plan, cfg: Config, tokens: dict[str, float]) -> None:
    """Shard count and size, as pipeline/shards.py cuts them."""
    sc, vf = cfg.shards, cfg.shards.val_fraction
    bpt = 2 if cfg.tokenizer.vocab_size <= 1 << 16 else 4
    plan.add("shards", "bytes_per_token", bpt, "B", f"given: uint{8 * bpt} ids (vocab {cfg.tokenizer.vocab_size})",
             "given")
    plan.add("shards", "train_shards", max(1, math.ceil(sc.total_tokens / sc.shard_tokens)), "shards",
             f"= ceil({num(sc.total_tokens)} / {sc.shard_tokens})  (total tokens / shard tokens)")
    plan.add("shards", "shard_bytes", sc.shard_tokens * bpt, "B",
             f"= {sc.shard_tokens} * {bpt}  (shard tokens * bytes per token; Arrow adds offsets)")
    all_tokens = sum(tokens.values())
    val_tokens = plan.add("shards", "val_tokens", all_tokens * vf, "tokens",
                          f"= {num(all_tokens)} * {num(vf)}  (tokens available * val_fraction)")
    plan.add("shards", "val_shards", max(1, math.ceil(val_tokens / sc.shard_tokens)), "shards",
             f"= max(1, ceil({num(val_tokens)} / {sc.shard_tokens}))")


def _disk(plan: Plan, cfg: Config, clean_bytes: dict[str, float], shapes: dict[str, dict[str, float]],
          models: list[str]) -> None:
    """Cleaned documents, shards, and checkpoints (fp32 weights + AdamW moments)."""
    pc, sc = cfg.plan, cfg.shards
    bpt = plan.get("bytes_per_token").value
    n_train, val_tokens = plan.get("train_shards").value, plan.get("val_tokens").value
    d_clean = plan.add("disk", "disk.clean", sum(clean_bytes.values()), "B",
                       "= " + " + ".join(num(v) for v in clean_bytes.values()) + "  (cleaned text; Arrow adds ids, metadata)")
    d_shards = plan.add("disk", "disk.shards", (n_train * sc.shard_tokens + val_tokens) * bpt, "B",
                        f"= ({num(n_train)} * {sc.shard_tokens} + {num(val_tokens)}) * {num(bpt)}"
                        "  (train + val tokens * bytes per token)")
    keep = cfg.trainer.keep_checkpoints
    for m in models:
        n = shapes[m]["params"]
        plan.add("disk", f"disk.checkpoints.{m}", n * pc.checkpoint_bytes_per_param * keep, "B",
                 f"= {num(n)} * {num(pc.checkpoint_bytes_per_param)} * {keep}  (params * bytes per param"
                 " * trainer.keep_checkpoints)")
    d_ckpt = plan.get(f"disk.checkpoints.{cfg.trainer.model}").value
    plan.add("disk", "disk.total", d_clean + d_shards + d_ckpt, "B",
             f"= {num(d_clean)} + {num(d_shards)} + {num(d_ckpt)}  (clean + shards + checkpoints of {cfg.trainer.model})")


def _beam(plan: Plan, cfg: Config, throughputs: Throughputs, input_bytes: dict[str, float],
          clean_bytes: dict[str, float]) -> None:
    """Core-hours per stage = bytes / (bytes per core-second) / 3600."""
    pc, tk = cfg.plan, cfg.tokenizer
    rates = {s: throughputs.stages[s].bytes_per_core_s for s in STAGES}
    unsized = [s for s in clean_bytes if s not in input_bytes]
    if unsized:
        plan.notes.append(f"no input size for {', '.join(unsized)}: the clean stage's core-hours leave "
                          "them out (give plan.input_bytes)")
    if input_bytes:
        total_input = sum(input_bytes.values())
        ch = plan.add("beam", "beam.clean.core_hours", total_input / rates["clean"] / 3600, "core-h",
                      f"= {num(total_input)} / {num(rates['clean'])} / 3600  (input bytes / bytes per core-s)")
        plan.add("beam", "beam.clean.worker_hours", ch / pc.worker_cores, "worker-h",
                 f"= {num(ch)} / {pc.worker_cores}  (core-hours / plan.worker_cores)")
    total_clean = sum(clean_bytes.values())
    th = plan.add("beam", "beam.tokenizer_train.core_hours",
                  min(tk.sample_bytes, total_clean) / rates["tokenizer_train"] / 3600, "core-h",
                  f"= min({num(tk.sample_bytes)}, {num(total_clean)}) / {num(rates['tokenizer_train'])} / 3600"
                  "  (sample bytes / bytes per core-s)")
    plan.add("beam", "beam.tokenizer_train.hours", th / tk.num_threads, "h",
             f"= {num(th)} / {tk.num_threads}  (one machine, tokenizer.num_threads)")
    sh = plan.add("beam", "beam.shards.core_hours", total_clean / rates["shards"] / 3600, "core-h",
                  f"= {num(total_clean)} / {num(rates['shards'])} / 3600  (cleaned bytes / bytes per core-s)")
    plan.add("beam", "beam.shards.worker_hours", sh / pc.worker_cores, "worker-h",
             f"= {num(sh)} / {pc.worker_cores}  (core-hours / plan.worker_cores)")


def gpu_peak(cfg: Config) -> float:
    """plan.gpu_peak_flops, or the A100's bf16 dense peak (LLaMA's GPU)."""
    from trainer.devices import bf16_peak

    return cfg.plan.gpu_peak_flops or bf16_peak("A100")


def _gpu(plan: Plan, cfg: Config, shapes: dict[str, dict[str, float]], models: list[str]) -> None:
    """Tokens/s/GPU per model (measured rate scaled by FLOPs per token, or MFU),
    then GPU-hours and days on plan.gpus GPUs."""
    pc = cfg.plan
    peak, gpus, ref = gpu_peak(cfg), pc.gpus, pc.throughput_model
    if pc.tokens_per_gpu_s is None and pc.mfu is None:
        raise PlanError("give plan.tokens_per_gpu_s or plan.mfu (or --tokens-per-gpu-s / --mfu)")
    f_ref = shapes[ref]["flops_per_token"]
    for m in models:
        s = shapes[m]
        f = plan.add("gpu", f"gpu.{m}.flops_per_token", s["flops_per_token"], "FLOP",
                     f"= 6 * {num(s['params_no_embedding'])} + 12 * {s['n_layers']} * {s['dim']} * {cfg.trainer.seq_len}"
                     f"  (6N + 12 L d T; N: {s['params']:,} params counted on the meta device, less the embedding)")
        if pc.tokens_per_gpu_s is None:
            tps = plan.add("gpu", f"gpu.{m}.tokens_per_gpu_s", pc.mfu * peak / f, "tokens/s",
                           f"= {num(pc.mfu)} * {num(peak)} / {num(f)}  (MFU * GPU peak / FLOPs per token)")
        elif m == ref:
            tps = plan.add("gpu", f"gpu.{m}.tokens_per_gpu_s", pc.tokens_per_gpu_s, "tokens/s",
                           f"given: plan.tokens_per_gpu_s (measured on {ref})", "given")
            plan.add("gpu", f"gpu.{m}.mfu", tps * f / peak, "fraction",
                     f"= {num(tps)} * {num(f)} / {num(peak)}  (tokens/s * FLOPs per token / GPU peak;"
                     " every size is planned at this MFU)")
        else:
            tps = plan.add("gpu", f"gpu.{m}.tokens_per_gpu_s", pc.tokens_per_gpu_s * f_ref / f, "tokens/s",
                           f"= {num(pc.tokens_per_gpu_s)} * {num(f_ref)} / {num(f)}  (the {ref} rate "
                           "scaled by FLOPs per token: equal MFU)")
        n_tokens = pc.model_tokens.get(m, cfg.shards.total_tokens)
        plan.add("gpu", f"gpu.{m}.tokens", n_tokens, "tokens",
                 f"given: plan.model_tokens.{m}" if m in pc.model_tokens else "given: shards.total_tokens", "given")
        plan.add("gpu", f"gpu.{m}.gpu_hours", n_tokens / tps / 3600, "GPU-h",
                 f"= {num(n_tokens)} / {num(tps)} / 3600  (tokens / tokens per GPU-second)",
                 reference=f"Table 15: {PAPER_GPU_HOURS[m]:,} GPU-h" if m in PAPER_GPU_HOURS else "")
        plan.add("gpu", f"gpu.{m}.days", n_tokens / (tps * gpus) / 86400, "days",
                 f"= {num(n_tokens)} / ({num(tps)} * {gpus}) / 86400  (on plan.gpus GPUs)")
    if pc.tokens_per_gpu_s is not None and any(m != ref for m in models):
        plan.notes.append(f"tokens/s/GPU of the other sizes: the {ref} rate scaled by FLOPs per token, "
                          "i.e. the same MFU; small models usually reach a lower one.")


SECTIONS = {
    "inputs": "Inputs: bytes as stored -> cleaned text bytes -> tokens, per source",
    "mixture": "Mixture (LLaMA Table 1): epochs = share * total tokens / tokens available",
    "shards": "Token shards (pipeline/shards.py)",
    "disk": "Disk",
    "beam": "Beam: core-hours per stage (per-core rates from the throughputs file)",
    "gpu": "Training: GPU-hours and days per model size",
}
UNIT_SCALE = {"B": ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB"))}


def _show(value: float, unit: str) -> str:
    for scale, name in UNIT_SCALE.get(unit, ()):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {name}"
    if unit == "fraction":
        return f"{value:.4f}"
    if abs(value) >= 1e5:
        return f"{value:.4g} {unit}"
    return f"{value:,.4g} {unit}" if value != int(value) else f"{int(value):,} {unit}"


def format_plan(plan: Plan) -> str:
    """The plan as text: one line per figure, `name  value  formula  [paper]`."""
    lines = [f"Plan for {plan.config or 'the config'} (throughputs: {plan.throughputs})"]
    width = max(len(f.name) for f in plan.figures)
    section = None
    for f in plan.figures:
        if f.section != section:
            section = f.section
            lines += ["", f"== {SECTIONS.get(section, section)}"]
        ref = f"   [{f.reference}]" if f.reference else ""
        lines.append(f"  {f.name:<{width}}  {_show(f.value, f.unit):>16}  {f.formula}{ref}")
    lines += [""] + [f"note: {n}" for n in plan.notes]
    return "\n".join(lines).rstrip() + "\n"


def write_plan_json(plan: Plan, path: str | Path) -> Path:
    """Write `plan.to_dict()` as JSON, atomically; returns the path."""
    from pipeline.core.io import atomic_write

    path = Path(path)
    with atomic_write(path) as f:
        f.write(json.dumps(plan.to_dict(), indent=2).encode("utf-8"))
    return path


def run_plan(cfg: Config, config_path: str = "", throughputs_path: str | None = None) -> Plan:
    """Load the throughputs, list the inputs whose size the config does not give,
    and build the plan. Raises PlanError (see `build_plan`, `load_throughputs`)."""
    tp_path = throughputs_path or default_throughputs_path()
    throughputs = load_throughputs(tp_path)
    need = [s for s, src in cfg.sources.items() if s not in cfg.plan.input_bytes and (src.inputs or cfg.corpus_dir)]
    measured = {}
    if need:
        todo = cfg.model_copy(update={"sources": {s: cfg.sources[s] for s in need}})
        measured = measure_inputs(todo)
    return build_plan(cfg, throughputs, str(tp_path), config_path, measured)


def add_plan_arguments(parser: Any) -> None:
    """The `plan` command's own options (each also settable as --set plan.KEY=VALUE)."""
    parser.add_argument("--throughputs", default=None, metavar="FILE",
                        help="per-core stage throughputs (default: out/bench/throughputs.json "
                             "if `make bench` wrote it, else configs/throughputs.json)")
    parser.add_argument("--gpus", type=int, default=None, help="GPUs of the training run (plan.gpus)")
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument("--mfu", type=float, default=None,
                      help="model FLOPs utilisation, 0-1 (plan.mfu); replaces tokens/s/GPU")
    rate.add_argument("--tokens-per-gpu-s", type=float, default=None,
                      help="measured training tokens/s per GPU on plan.throughput_model (plan.tokens_per_gpu_s)")
    parser.add_argument("--gpu-peak-flops", type=float, default=None,
                        help="peak FLOP/s of one GPU (plan.gpu_peak_flops; A100 bf16: 312e12)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the plan as JSON")


def cli_overrides(args: Any) -> list[str]:
    """`--set`-style overrides for the `plan` options given on the command line."""
    out = []
    if args.gpus is not None:
        out.append(f"plan.gpus={args.gpus}")
    if args.gpu_peak_flops is not None:
        out.append(f"plan.gpu_peak_flops={args.gpu_peak_flops!r}")
    if args.mfu is not None:
        out += [f"plan.mfu={args.mfu!r}", "plan.tokens_per_gpu_s=null"]
    if args.tokens_per_gpu_s is not None:
        out.append(f"plan.tokens_per_gpu_s={args.tokens_per_gpu_s!r}")
    return out
