"""Job configuration: one YAML file for the whole stack, validated by pydantic.

`load_config(path, overrides)` reads `configs/*.yaml`, applies `key.sub=value`
overrides from the command line (torchtitan style) and returns a `Config`.
Unknown keys and wrong types raise `ConfigError` naming the key and where it came
from: the file, or the `--set` override.
What the clean job does to a source is one block, `sources.<name>` (SourceConfig;
what it leaves out: SOURCE_DEFAULTS); what a rule shares across sources is in `clean`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.core.errors import PipelineError  # noqa: F401 (re-exported: most modules import it from here)

# The seven sources of the LLaMA recipe (Table 1), in the paper's order.
SOURCES = ("commoncrawl", "c4", "github", "wikipedia", "books", "arxiv", "stackexchange")


class ConfigError(ValueError):
    """A configuration file that cannot be read or does not validate."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BeamConfig(_Strict):
    runner: str = "FnApiRunner"  # local; "DirectRunner" would first try Prism, which downloads a binary
    direct_num_workers: PositiveInt = 2
    direct_running_mode: Literal["in_memory", "multi_threading", "multi_processing"] = (
        "multi_processing"
    )
    # multi_processing workers: forked from a process that has imported the job's
    # modules (fork), or each a new Python process (spawn, Beam's own)
    local_workers: Literal["fork", "spawn"] = "fork"
    extra_args: list[str] = Field(default_factory=list)  # passed to PipelineOptions


class LangIdConfig(_Strict):
    model: str = ".cache/models/lid.176.ftz"
    batch_size: int = 256


class SourceConfig(_Strict):
    """One source's recipe: with its reader (pipeline/sources/<name>.py), all the
    clean job does to the source. A field left out takes the source's entry in
    SOURCE_DEFAULTS, else the default here."""

    share: NonNegativeFloat  # percent of training tokens (Table 1)
    inputs: list[str] = Field(default_factory=list)  # file patterns, any Beam filesystem
    langs: list[str] = Field(default_factory=list)  # languages kept (fastText); empty: annotate only
    min_lang_score: float = 0.0
    # fewer characters and a document is dropped ("too_short"); None: clean.min_chars
    # (released C4 is taken as it is: 0)
    min_chars: NonNegativeInt | None = None
    # a document whose text is longer (UTF-8 bytes) is dropped, counted as
    # `drop.too_large`: every stage's memory is a small multiple of one document
    max_doc_bytes: PositiveInt = 64 << 20
    line_dedup: bool = False  # CCNet's repeated-line removal (where: clean.line_dedup_scope)
    # the clean.near_dedup group whose MinHash LSH deduplicates it, each source on its own; None: none
    near_dedup: Literal["web", "books"] | None = None
    c4_rules: bool = False  # the C4 page heuristics (clean.c4)
    perplexity: bool = False  # CCNet's perplexity filter, by `quality-filter` (clean.perplexity)
    quality: bool = False  # the reference-page classifier (clean.quality)


class GithubSourceConfig(SourceConfig):
    """GitHub's block: the licences kept and RedPajama's file rules (rp_v1
    data_prep/github), a file dropped when it breaks one."""

    licenses: list[str] = Field(default_factory=lambda: ["mit", "bsd", "apache"])  # LLaMA
    max_line_length: PositiveInt = 1000  # its longest line is longer (minified, generated)
    max_mean_line_length: PositiveFloat = 100  # its mean line length is larger (data tables)
    min_alnum_fraction: NonNegativeFloat = 0.25  # fewer of its characters are alphanumeric (ASCII art)
    min_alpha_per_token: NonNegativeFloat = 1.5  # fewer letters per whitespace token (numeric arrays)


# Each source's recipe (LLaMA, Section 2.1), what a block leaves out: CommonCrawl
# goes through CCNet (line dedup, perplexity) and the reference-page classifier;
# web pages are near-deduplicated together with C4's, and C4 rebuilt from pages
# gets the C4 rules (released C4 is already filtered: `c4_rules: false`); books
# are deduplicated at book level (clean.near_dedup.books).
SOURCE_DEFAULTS: dict[str, dict[str, Any]] = {
    "commoncrawl": {"line_dedup": True, "near_dedup": "web", "perplexity": True, "quality": True},
    "c4": {"near_dedup": "web", "c4_rules": True},
    "github": {},
    "wikipedia": {},
    "books": {"near_dedup": "books"},
    "arxiv": {},
    "stackexchange": {},
}
SOURCE_MODELS: dict[str, type[SourceConfig]] = {"github": GithubSourceConfig}


def _source_blocks(raw: Any) -> Any:
    """{name: block} -> {name: its SourceConfig}, SOURCE_DEFAULTS filled in; every
    block's errors reported under `sources.<name>`."""
    if not isinstance(raw, dict):
        return raw
    blocks, errors = {}, []
    for name, block in raw.items():
        if not isinstance(block, dict):
            blocks[name] = block  # SourceConfig or a type error, reported by pydantic
            continue
        try:
            model = SOURCE_MODELS.get(name, SourceConfig)
            blocks[name] = model.model_validate({**SOURCE_DEFAULTS.get(name, {}), **block})
        except ValidationError as e:
            errors += [{**err, "loc": (name, *err["loc"])} for err in e.errors(include_url=False)]
    if errors:
        raise ValidationError.from_exception_data("sources", errors)
    return blocks


class NearDedupConfig(_Strict):
    """One near-duplicate group's MinHash LSH, compatible with datasketch 2.x
    (pipeline/dedup/near.py); its sources are those whose `near_dedup` names it."""

    num_perm: int = 128
    ngram: int = 5  # word shingles
    threshold: float = 0.8  # Jaccard similarity
    seed: int = 1
    components_rounds: int = 10  # star-contraction rounds bound


class NearDedupGroups(_Strict):
    web: NearDedupConfig = Field(default_factory=NearDedupConfig)
    # LLaMA: a book with more than 90% content overlap with another is removed;
    # the same MinHash machinery at Jaccard 0.9 over whole books
    books: NearDedupConfig = Field(default_factory=lambda: NearDedupConfig(threshold=0.9))


class C4RulesConfig(_Strict):
    """The C4 page heuristics (pipeline/filters/c4.py), on the sources with `c4_rules`."""

    variant: Literal["t5", "fineweb"] = "t5"  # fineweb: 3 words per line, 5 sentences
    # a JSON array or one entry per line (C4: the LDNOOBW English list, `en.json`)
    badwords: str | None = None
    # true: a missing list is a warning and the rule runs without it (the demo's
    # comes through `npm`, which a machine may lack); false: the job stops
    badwords_optional: bool = False


class QualityModelConfig(_Strict):
    """The reference-page classifier (pipeline/quality_model.py), on the sources with `quality`."""

    # set: `clean` applies this model itself; None: `quality-train` writes it to, and
    # `quality-filter` applies it from, <out_dir>/quality/model.bin
    model: str | None = None
    threshold: float = 0.25  # RedPajama's cut on P(reference)
    positive_sources: list[str] = Field(default_factory=lambda: ["wikipedia", "books"])
    negative_sources: list[str] = Field(default_factory=lambda: ["commoncrawl"])
    max_examples: int = 100_000  # per class
    epochs: int = 25
    lr: float = 0.5


class PerplexityConfig(_Strict):
    """CCNet's perplexity filter (pipeline/filters/perplexity.py): an n-gram LM per
    language, trained on its cleaned Wikipedia by `pipeline lm-train`
    (pipeline/lm_train.py), applied after clean by `pipeline quality-filter` to
    the sources with `perplexity`."""

    langs: list[str] = Field(default_factory=lambda: ["en"])  # a model each; other languages pass unscored
    model_dir: str | None = None  # <lang>.sp.model and <lang>.arpa; None: <out_dir>/lm
    order: int = Field(default=5, ge=2, le=6)  # kenlm: 2 to its KENLM_MAX_ORDER, 6
    vocab_size: PositiveInt = 65536  # SentencePiece unigram pieces, at most (CCNet)
    sp_sentences: PositiveInt = 1_000_000  # Wikipedia lines SentencePiece trains on: the first ones
    # Wikipedia documents the LM is counted on, about: a seeded sample of this share of
    # all Wikipedia documents (CCNet: 1M article openings per language)
    max_docs: PositiveInt = 1_000_000
    # head below the first percentile of a language's perplexities, tail from the second (CCNet)
    percentiles: tuple[float, float] = (30.0, 60.0)
    keep: list[Literal["head", "middle", "tail"]] = Field(default_factory=lambda: ["head", "middle"], min_length=1)
    sample_docs: PositiveInt = 10_000  # documents of the filtered sources the percentiles are taken on

    @model_validator(mode="after")
    def _percentiles(self) -> PerplexityConfig:
        head, tail = self.percentiles
        if not 0 < head < tail < 100:
            raise ValueError(f"percentiles {list(self.percentiles)}: need 0 < head < tail < 100")
        return self


class CleanConfig(_Strict):
    min_chars: int = 300  # CCNet
    # bytes of Documents per output file (UTF-8 of their strings; dead letters alike):
    # each source's parts are between half this and this, however large the source
    part_bytes: PositiveInt = 256 << 20
    near_dedup: NearDedupGroups = Field(default_factory=NearDedupGroups)  # the groups sources name
    # where a line counts as repeated: "run" (all documents of a source), "dump"
    # (per crawl, CCNet's shard groups within one dump), "file" (per input file)
    line_dedup_scope: Literal["run", "dump", "file"] = "run"
    # an input file larger than this is read as ranges by several workers, when its
    # format allows it (bz2 multistream with index, JSONL, WET, Parquet row groups)
    split_bytes: PositiveInt = 256 << 20
    c4: C4RulesConfig = Field(default_factory=C4RulesConfig)
    quality: QualityModelConfig = Field(default_factory=QualityModelConfig)
    perplexity: PerplexityConfig = Field(default_factory=PerplexityConfig)


class TokenizerConfig(_Strict):
    model_prefix: str | None = None  # None: <out_dir>/tokenizer/llama-<name>
    vocab_size: PositiveInt = 32000
    input_sentence_size: PositiveInt = 1_000_000
    sample_bytes: int = 100_000_000
    max_sentence_length: PositiveInt = 4192
    character_coverage: float = 0.99995
    num_threads: int = 2


class ShardsConfig(_Strict):
    out: str | None = None  # None: <out_dir>/shards
    total_tokens: PositiveFloat
    shard_tokens: PositiveInt = 1 << 27
    max_epochs: float | None = None  # cap on any source's repeat factor (None: Table 1 math)
    val_fraction: float = 0.0
    add_bos: bool = True
    add_eos: bool = True
    batch_size: PositiveInt = 64


class EvalConfig(_Strict):
    """What the trained model is measured on beyond the validation loss
    (trainer/evaluate.py): in the training loop, and by `python -m trainer eval`."""

    every: int = Field(default=0, ge=0)  # steps between in-loop runs of docs and tasks (0: at the end)
    # {name: JSONL of documents, a "text" field each (any filesystem; .gz fine)}:
    # loss, perplexity and bits per byte (Paloma's per-domain perplexity)
    docs: dict[str, str] = Field(default_factory=dict)
    # {name: JSONL of multiple-choice items {"context", "choices": [...], "gold": index}}:
    # zero-shot accuracy by log-likelihood (lm-eval-harness's acc and acc_norm)
    tasks: dict[str, str] = Field(default_factory=dict)
    max_docs: PositiveInt = 1000  # documents or items read per set
    prompts: list[str] = Field(default_factory=list)  # greedy samples in `trainer eval`'s report
    max_new_tokens: PositiveInt = 32  # per sample

    @model_validator(mode="after")
    def _names(self) -> EvalConfig:
        for kind, sets in (("docs", self.docs), ("tasks", self.tasks)):
            for name in sets:
                if not name or not all(c.isalnum() or c in "_.-" for c in name):
                    raise ValueError(f"eval {kind} name {name!r}: use letters, digits, _ . -")
        return self


class TrainerConfig(_Strict):
    out: str | None = None  # None: <out_dir>/train
    model: str = "demo"
    seq_len: PositiveInt = 2048
    batch_size: PositiveInt = 8
    grad_accum: PositiveInt = 1
    shuffle_block: int = 4096  # windows shuffled in seeded blocks of this many (0: stream order)
    steps: PositiveInt = 1000
    lr: PositiveFloat = 3.0e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 2000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    log_every: PositiveInt = 10
    ckpt_every: PositiveInt = 1000
    keep_checkpoints: PositiveInt = 2
    device: str = "cpu"
    num_threads: int = 0  # 0: leave torch's default
    compile: bool = False  # torch.compile the model
    activation_checkpointing: bool = False
    val_every: int = 0  # steps between validation-loss evaluations (0: only at the end)
    val_batches: PositiveInt = 8  # batches per source for validation loss
    # per device, for MFU: FLOP/s, "measure" (a matmul timed at start), or None: the
    # device's entry in trainer/devices.py (CUDA GPUs); none there (CPU): no MFU logged
    peak_flops: float | Literal["measure"] | None = None
    # start from these weights (a checkpoint, or a Hugging Face Llama folder), with a new
    # optimizer, schedule and data stream; once this run has a checkpoint, it resumes that
    init_from: str | None = None
    # TensorBoard event files of the log's records: true (<out>/tensorboard) or a local folder
    tensorboard: bool | str = False
    eval: EvalConfig = Field(default_factory=EvalConfig)  # eval sets and how often they run


class PlanConfig(_Strict):
    """What `python -m pipeline plan` (pipeline/plan.py) needs beyond the measured
    per-core throughputs: input sizes, the GPU fleet and the models to cost."""

    # bytes per source as stored (compressed as read); a source left out is measured
    # by listing its inputs (Beam FileSystems.match) when they are reachable
    input_bytes: dict[Literal[SOURCES], float] = Field(default_factory=dict)  # type: ignore[valid-type]
    # cleaned UTF-8 text bytes per source; left out: input_bytes * measured keep fraction
    clean_bytes: dict[Literal[SOURCES], float] = Field(default_factory=dict)  # type: ignore[valid-type]
    tokens_per_byte: float | None = Field(default=None, gt=0)  # None: the throughputs file's
    gpus: int = Field(default=2048, gt=0)
    # per GPU; None: the A100's bf16 dense peak from trainer/devices.py (pipeline/plan.py)
    gpu_peak_flops: float | None = Field(default=None, gt=0)
    # LLaMA Section 2.4: 380 tokens/s/GPU for the 65B on A100-80GB; mfu is used instead
    # when tokens_per_gpu_s is null
    tokens_per_gpu_s: float | None = Field(default=380.0, gt=0)  # measured on throughput_model
    mfu: float | None = Field(default=None, gt=0, le=1)
    throughput_model: str = "65B"  # the model tokens_per_gpu_s was measured on
    models: list[str] = Field(default_factory=lambda: ["7B", "13B", "33B", "65B"])
    model_tokens: dict[str, float] = Field(default_factory=dict)  # default: shards.total_tokens
    worker_cores: int = Field(default=8, gt=0)  # cores of one Beam worker machine
    checkpoint_bytes_per_param: float = Field(default=12.0, gt=0)  # fp32 weights + AdamW m, v


class Config(_Strict):
    name: str
    seed: int = 1234
    out_dir: str
    cache_dir: str = ".cache"
    # adds every file under <corpus_dir>/<source>/, searched recursively, as input
    corpus_dir: str | None = None
    corpus_only: bool = False  # true: only <corpus_dir> is read, each source's own inputs left out
    beam: BeamConfig = Field(default_factory=BeamConfig)
    langid: LangIdConfig = Field(default_factory=LangIdConfig)
    # each block validated by its source's model, defaults filled in (_source_blocks)
    sources: dict[Literal[SOURCES], SerializeAsAny[SourceConfig]]  # type: ignore[valid-type]
    clean: CleanConfig = Field(default_factory=CleanConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    shards: ShardsConfig
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    plan: PlanConfig = Field(default_factory=PlanConfig)

    _sources = field_validator("sources", mode="before")(_source_blocks)

    @model_validator(mode="after")
    def _outputs_under_out_dir(self) -> Config:
        """Every stage's output defaults under `out_dir`, so one `--set out_dir=...`
        moves a whole experiment."""
        if self.tokenizer.model_prefix is None:
            self.tokenizer.model_prefix = _join(self.out_dir, "tokenizer", f"llama-{self.name}")
        if self.shards.out is None:
            self.shards.out = _join(self.out_dir, "shards")
        if self.trainer.out is None:
            self.trainer.out = _join(self.out_dir, "train")
        if self.clean.perplexity.model_dir is None:
            self.clean.perplexity.model_dir = _join(self.out_dir, "lm")
        return self

    @model_validator(mode="after")
    def _corpus_only(self) -> Config:
        if self.corpus_only and not self.corpus_dir:
            raise ValueError("corpus_only needs corpus_dir (the folder of one's own data, e.g. "
                             "make demo CORPUS=DIR ONLY=1)")
        return self

    def sources_with(self, rule: str, value: Any = True) -> list[str]:
        """The configured sources whose block sets `rule` to `value`, in SOURCES order."""
        return [s for s in SOURCES if s in self.sources and getattr(self.sources[s], rule) == value]

    def near_dedup_groups(self) -> dict[str, tuple[NearDedupConfig, list[str]]]:
        """{group: (its clean.near_dedup settings, its sources)} of every group a source is in."""
        groups = {name: (getattr(self.clean.near_dedup, name), self.sources_with("near_dedup", name))
                  for name in NearDedupGroups.model_fields}
        return {name: group for name, group in groups.items() if group[1]}

    def min_chars(self, source: str) -> int:
        """The shortest document `source` keeps: its own `min_chars`, else `clean.min_chars`."""
        own = self.sources[source].min_chars if source in self.sources else None
        return self.clean.min_chars if own is None else own

    def digest(self) -> str:
        """SHA-256 (hex, 16 chars) of the validated config: recorded in manifests.
        The `plan` section is left out: it changes no output of any stage."""
        blob = json.dumps(self.model_dump(mode="json", exclude={"plan"}), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def clean_digest(self) -> str:
        """SHA-256 (hex, 16 chars) of the settings that decide the clean job's
        output (seed, inputs, language ID, each source's and the cleaning
        rules): recorded in the clean manifest, so that a later stage can tell
        its Documents came from other settings. Left out: a source's `share`
        (the mixture's), what changes only speed (langid.batch_size,
        clean.split_bytes), and what only the passes after clean use
        (clean.perplexity and the sources' `perplexity`, quality-train's settings)."""
        settings = self.model_dump(mode="json", include={"seed", "corpus_dir", "corpus_only", "sources",
                                                         "langid", "clean"})
        for src in settings["sources"].values():
            del src["share"], src["perplexity"]
        settings["langid"].pop("batch_size")
        for key in ("split_bytes", "perplexity"):
            settings["clean"].pop(key, None)
        for key in ("positive_sources", "negative_sources", "max_examples", "epochs", "lr"):
            settings["clean"]["quality"].pop(key, None)
        return _digest(settings)

    def shares(self) -> dict[str, float]:
        """{source: share} of the configured sources (Table 1's percent)."""
        return {s: src.share for s, src in self.sources.items()}

    def tokenizer_digest(self) -> str:
        """SHA-256 (hex, 16 chars) of the settings that decide the tokenizer
        trained on a clean output: seed, the shares (the sample's mixture) and
        the tokenizer section but its output path."""
        settings = self.tokenizer.model_dump(mode="json", exclude={"model_prefix"})
        return _digest({"seed": self.seed, "shares": self.shares(), "tokenizer": settings})

    def shards_digest(self) -> str:
        """SHA-256 (hex, 16 chars) of the settings that decide the shards made of
        a clean output with a tokenizer: seed, shares and the shards section but
        its output path and encode batch size (speed only)."""
        settings = self.shards.model_dump(mode="json", exclude={"out", "batch_size"})
        return _digest({"seed": self.seed, "shares": self.shares(), "shards": settings})


def _digest(settings: Any) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _join(base: str, *parts: str) -> str:
    """A path under `base`, local or a URL (gs://, s3://), without importing Beam."""
    return "/".join([base.rstrip("/"), *parts])


def config_paths(cfg: Config) -> list[str]:
    """Every input pattern, model and output path the config names (to check
    that their filesystems answer before a job starts)."""
    paths = [cfg.out_dir, cfg.langid.model, cfg.clean.c4.badwords, cfg.clean.quality.model, cfg.clean.perplexity.model_dir,
             cfg.tokenizer.model_prefix, cfg.shards.out, cfg.trainer.out, cfg.corpus_dir]
    paths += [p for src in cfg.sources.values() for p in src.inputs]
    return [p for p in paths if p]


# Keys of earlier configs -> where their setting is now (<name>: any source).
RENAMED = {
    "sources.<name>.keep_langs": "sources.<name>.langs",
    "clean.num_files_per_source": "part_bytes (clean.part_bytes, bytes per output file; the number "
                                  "of files follows from the data)",
    "clean.line_dedup_sources": "sources.<name>.line_dedup: true",
    "clean.minhash": "clean.near_dedup.web, its sources by sources.<name>.near_dedup: web",
    "clean.book_dedup": "clean.near_dedup.books, its sources by sources.<name>.near_dedup: books",
    "clean.c4.sources": "sources.<name>.c4_rules: true",
    "clean.perplexity.sources": "sources.<name>.perplexity: true",
    "clean.quality.sources": "sources.<name>.quality: true",
    "clean.github": "sources.github.licenses",
}


def _key_paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of a parsed YAML mapping, in file order (depth first)."""
    if not isinstance(node, dict):
        return []
    return [p for k, v in node.items() for p in [(*prefix, str(k)), *_key_paths(v, (*prefix, str(k)))]]


def _renamed_keys(raw: dict[str, Any]) -> list[str]:
    """A line for each key of an earlier config in `raw`, in file order, naming its new
    place; with the sources the old value listed where it listed them, else NAME."""
    paths = _key_paths(raw)
    found = []
    for old, new in RENAMED.items():
        for name in (raw["sources"] if "<name>" in old and isinstance(raw.get("sources"), dict) else [""]):
            key = tuple(old.replace("<name>", str(name)).split("."))
            if key not in paths:
                continue
            value: Any = raw
            for part in key:
                value = value[part]
            if isinstance(value, dict):  # clean.minhash, clean.book_dedup: {sources: [...], ...}
                value = value.get("sources")
            listed = [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
            at = new.find("sources.<name>")
            if not name and listed and at >= 0:
                new_key = new[:at] + " and ".join(new[at:].replace("<name>", s) for s in listed)
            else:
                new_key = new.replace("<name>", name or "NAME")
            found.append((paths.index(key), f"{'.'.join(key)} was replaced by {new_key}"))
    return [line for _, line in sorted(found)]


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model that validates the mapping at `loc` of a Config, or None."""
    model: type[BaseModel] = Config
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        if model is Config and part == "sources":
            if not parts:
                return None
            model = SOURCE_MODELS.get(str(parts.pop(0)), SourceConfig)
            continue
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


def _error_line(err: Any) -> str:
    """`  key: message`, an unknown key with the closest key its model has."""
    key = ".".join(str(p) for p in err["loc"])
    line = f"  {key}: {err['msg']}"
    model = _model_at(err["loc"][:-1]) if err["type"] == "extra_forbidden" and err["loc"] else None
    close = difflib.get_close_matches(str(err["loc"][-1]), list(model.model_fields), n=1) if model else []
    if close:
        line += f"; did you mean {'.'.join([*map(str, err['loc'][:-1]), close[0]])}?"
    return line


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.sub=value")
    key, value = item.split("=", 1)
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
    node[parts[-1]] = yaml.safe_load(value)


def add_override_argument(parser: Any, example: str = "trainer.steps=50") -> None:
    """The `--set KEY=VALUE` option every command shares (parsed into `overrides`)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value, e.g. --set {example} (repeatable; values are YAML)",
    )


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read and validate a YAML config.

    Args:
        path: the YAML file.
        overrides: `section.key=value` strings; values are parsed as YAML.
    Raises:
        ConfigError: the file is missing, is not YAML, holds keys of an earlier
            config (a line each naming it and its replacement, RENAMED), or does
            not validate (the message names every offending key, the closest
            valid one for an unknown key, and whether the file or a `--set`
            override holds it).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read config: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping")
    for item in overrides or []:
        _apply_override(raw, item)
    renamed = _renamed_keys(raw)
    if len(renamed) == 1:
        raise ConfigError(f"{path}: {renamed[0]}")
    if renamed:
        raise ConfigError(f"{path}: keys of an earlier config:\n" + "\n".join(f"  {r}" for r in renamed))
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_invalid(path, overrides or [], e.errors())) from None


def _invalid(path: Path, overrides: list[str], errors: list[Any]) -> str:
    """The message of a config that does not validate: each error blamed on the
    `--set` override whose key it is under (or that is under it), else on the file."""
    sets = [(tuple(item.split("=", 1)[0].split(".")), item) for item in overrides]
    blamed, lines = [], []
    for err in errors:
        loc = tuple(str(p) for p in err["loc"])
        item = next((item for key, item in reversed(sets)
                     if loc and (loc[:len(key)] == key or key[:len(loc)] == loc)), None)
        blamed.append(item)
        lines.append(_error_line(err))
    items = list(dict.fromkeys(f"--set {item}" for _, item in sets if item in blamed))
    if all(blamed):  # the file alone validates
        return f"{', '.join(items)}: invalid config:\n" + "\n".join(lines)
    lines = [line + (" (--set)" if item else "") for line, item in zip(lines, blamed)]
    where = f"{path} with {', '.join(items)}" if items else f"{path}"
    return f"{where}: invalid config:\n" + "\n".join(lines)
