"""What a trained model does, measured: loss and bits per byte per source on the
validation shards, perplexity on documents, zero-shot multiple choice
(`python -m trainer eval`, and in the training loop: `trainer.eval` in the config).

**Bits per byte** (Paloma; The Pile) is the loss in bits over the UTF-8 bytes of the
text the scored tokens stand for: sum of -log2 p(token) / bytes. Unlike the loss per
token it does not depend on the tokenizer. For a JSONL document the bytes are those of
its `text`. The shards hold token ids only, so a validation window's bytes are counted
from the tokens (`token_bytes`): our SentencePiece model normalises nothing
(`normalization_rule_name: identity`, whitespace kept) and falls back to bytes, so
`decode(ids) == text` byte for byte and each piece stands for its own bytes, "▁" for a
space, a byte piece for one byte, BOS/EOS for none; the dummy-prefix "▁" that
SentencePiece puts before a document's first piece is not in the text, so a piece
right after BOS (or EOS) counts one byte less. Every target of a window is scored, as
for the validation loss, EOS included (its bytes: none).

**Documents** (`{"text": ...}` per line; Paloma's files, C4's): each is encoded as the
shards encode one, `[BOS] + ids`, and every token after BOS is scored, in
non-overlapping windows of `seq_len` tokens (a long document's context restarts at
each window, as Paloma does at the model's context length). Perplexity is per token:
exp(loss).

**Multiple choice** (`{"context": str, "choices": [str, ...], "gold": int}` per line):
each choice's continuation is `" " + choice` (lm-eval-harness's target delimiter);
context and continuation are encoded as lm-eval-harness's `_encode_pair` does for a
causal model with a BOS token (trailing spaces of the context move to the
continuation; the continuation's tokens are those of `encode(context +
continuation)` past `encode(context)`), and its log-likelihood is the sum of the log
probabilities of those tokens. `acc` picks the choice of highest log-likelihood
(lm-eval's `acc`), `acc_per_token` the highest per continuation token, `acc_norm`
the highest per character of the choice (lm-eval's `acc_norm`).

A line that is not JSON, or not a document or item, is skipped and counted by reason
in the report (`skipped`).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from trainer.data import source_windows
from trainer.model import Transformer
from trainer.parallelize import Dist

LN2 = math.log(2)
SPACE = "\u2581"  # SentencePiece's whitespace marker
TARGET_DELIMITER = " "  # lm-eval-harness's default between context and choice


def val_loss(model: torch.nn.Module, windows: dict[str, torch.Tensor], batch_size: int,
             autocast=None, world: Dist | None = None) -> dict[str, tuple[float, int]]:
    """Mean token loss per source over fixed windows (validation loss).

    Args:
        windows: {source: int64 [n, seq_len + 1]} (`source_windows`), the same on
            every rank; rank r evaluates windows r, r + R, ... of the first
            R * floor(n / R), so every rank runs the same number of forwards (FSDP2's
            collectives) and no window counts twice. Sources with n < R are skipped.
        batch_size: windows per forward.
    Returns: {source: (nats per target token over all ranks' windows, target tokens)}.
    """
    autocast = autocast or contextlib.nullcontext()
    world = world or Dist()
    device = next(model.parameters()).device
    out = {}
    for source, w in windows.items():
        n = len(w) // world.world_size * world.world_size
        if n == 0:
            continue
        mine = w[world.rank:n:world.world_size]
        total = torch.zeros(2, dtype=torch.float64, device=device)
        for i in range(0, len(mine), batch_size):
            batch = mine[i:i + batch_size].to(device)
            with autocast:
                _, loss = model(batch[:, :-1], batch[:, 1:], reduction="sum")
            total[0] += loss.double()
            total[1] += batch[:, 1:].numel()
        if world.enabled:
            dist.all_reduce(total)
        out[source] = ((total[0] / total[1]).item(), int(total[1].item()))
    return out


# --- bytes of the text a token stands for ------------------------------------------


def token_bytes(sp) -> np.ndarray:
    """int64 [vocab_size]: UTF-8 bytes each id stands for in decoded text (control
    and unknown pieces: 0; a byte-fallback piece: 1; "▁" counts as a space)."""
    out = np.zeros(sp.get_piece_size(), dtype=np.int64)
    for i in range(len(out)):
        if sp.is_control(i) or sp.is_unknown(i):
            continue
        out[i] = 1 if sp.is_byte(i) else len(sp.id_to_piece(i).replace(SPACE, " ").encode("utf-8"))
    return out


def starts_with_space(sp) -> np.ndarray:
    """bool [vocab_size]: the piece begins with "▁" (a document's first such piece
    carries the dummy prefix, which is not in the text)."""
    return np.array([sp.id_to_piece(i).startswith(SPACE) and not sp.is_byte(i)
                     for i in range(sp.get_piece_size())])


def target_bytes(windows: torch.Tensor, sizes: np.ndarray, spaced: np.ndarray,
                 boundaries: tuple[int, ...]) -> int:
    """UTF-8 bytes of the text the targets of `windows` [n, seq_len + 1] stand for:
    `token_bytes` of windows[:, 1:], less the dummy-prefix byte of each target that
    follows a document boundary (`boundaries`: BOS and EOS ids)."""
    w = windows.numpy()
    x, y = w[:, :-1], w[:, 1:]
    after_boundary = np.isin(x, boundaries) & spaced[y]
    return int(sizes[y].sum() - after_boundary.sum())


# --- reading eval sets ---------------------------------------------------------------


def read_jsonl(path: str, check, limit: int | None = None) -> tuple[list, dict[str, int]]:
    """The first `limit` rows of a JSONL file (any filesystem; gzip, bzip2 or xz by
    magic bytes) that `check` accepts: `check(row)` returns (what to keep, None) or
    (None, the reason to skip it). Returns (kept, {reason: skipped lines})."""
    from pipeline.core import io as pio

    with pio.open_input(path) as f:
        data = f.read()
    rows, skipped = [], Counter()
    for line in data.decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        if limit is not None and len(rows) >= limit:
            break
        try:
            row = json.loads(line)
        except ValueError:
            skipped["not_json"] += 1
            continue
        kept, reason = check(row) if isinstance(row, dict) else (None, "not_an_object")
        if reason is None:
            rows.append(kept)
        else:
            skipped[reason] += 1
    return rows, dict(sorted(skipped.items()))


def _document(row: dict) -> tuple[str | None, str | None]:
    text = row.get("text")
    if not isinstance(text, str):
        return None, "no_text"
    return (text, None) if text else (None, "empty_text")


def _item(row: dict) -> tuple[tuple | None, str | None]:
    context, choices, gold = row.get("context"), row.get("choices"), row.get("gold")
    if not isinstance(context, str) or not context:
        return None, "no_context"
    if (not isinstance(choices, list) or len(choices) < 2
            or not all(isinstance(c, str) and c for c in choices)):
        return None, "bad_choices"
    if isinstance(gold, bool) or not isinstance(gold, int) or not 0 <= gold < len(choices):
        return None, "bad_gold"
    return (context, choices, gold), None


@dataclass
class DocSet:
    """Documents to score: each `[BOS] + ids`, and the UTF-8 bytes of all their texts."""

    name: str
    path: str
    docs: list[list[int]]
    bytes: int
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass
class Task:
    """Multiple-choice items, encoded: per item, (context ids, continuation ids) per
    choice, the choices' lengths in characters, and the gold index."""

    name: str
    path: str
    requests: list[list[tuple[list[int], list[int]]]]
    chars: list[list[int]]
    gold: list[int]
    skipped: dict[str, int] = field(default_factory=dict)


def load_docs(name: str, path: str, sp, limit: int | None = None) -> DocSet:
    """A JSONL file of documents (`text`), encoded with `sp` (`[BOS] + ids` each)."""
    import tokenizer

    texts, skipped = read_jsonl(path, _document, limit)
    bos = sp.bos_id()
    docs = [[bos, *ids] for ids in tokenizer.encode_batch(sp, texts, num_threads=1)] if texts else []
    return DocSet(name, path, docs, sum(len(t.encode("utf-8")) for t in texts), skipped)


def encode_pair(encode, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval-harness's `_encode_pair` for a causal model: trailing whitespace of the
    context moves to the continuation, and the continuation's ids are those of
    `encode(context + continuation)` past the context's."""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole, ctx = encode(context + continuation), encode(context)
    return ctx, whole[len(ctx):]


def load_task(name: str, path: str, sp, limit: int | None = None) -> Task:
    """A JSONL file of multiple-choice items, encoded with `sp` as lm-eval does."""
    items, skipped = read_jsonl(path, _item, limit)
    bos = sp.bos_id()

    def encode(text: str) -> list[int]:
        return [bos, *sp.encode(text, out_type=int)]

    requests = [[encode_pair(encode, ctx, TARGET_DELIMITER + c) for c in choices]
                for ctx, choices, _ in items]
    return Task(name, path, requests, [[len(c) for c in choices] for _, choices, _ in items],
                [gold for _, _, gold in items], skipped)


# --- scoring -------------------------------------------------------------------------


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def score_docs(model: Transformer, docs: DocSet, seq_len: int, batch_size: int = 8,
               autocast=None) -> dict:
    """Loss of every token after BOS of every document, in windows of `seq_len`.

    Returns {"docs", "tokens", "bytes", "loss" (nats/token), "perplexity",
    "bits_per_byte", "skipped"} (loss and its derivatives None without tokens).
    """
    autocast = autocast or contextlib.nullcontext()
    windows = [d[k:k + seq_len + 1] for d in docs.docs for k in range(0, len(d) - 1, seq_len)]
    device, total = _device(model), torch.zeros((), dtype=torch.float64)
    for i in range(0, len(windows), batch_size):
        batch = windows[i:i + batch_size]
        T = max(len(w) for w in batch) - 1
        x = torch.zeros(len(batch), T, dtype=torch.long)
        y = torch.full((len(batch), T), -100, dtype=torch.long)
        for j, w in enumerate(batch):
            x[j, :len(w) - 1] = torch.tensor(w[:-1])
            y[j, :len(w) - 1] = torch.tensor(w[1:])
        with autocast:
            _, loss = model(x.to(device), y.to(device), reduction="sum")
        total += loss.double().cpu()
    tokens = sum(len(d) - 1 for d in docs.docs)
    nats = total.item()
    loss = nats / tokens if tokens else None
    return {"docs": len(docs.docs), "tokens": tokens, "bytes": docs.bytes, "loss": loss,
            "perplexity": math.exp(loss) if loss is not None else None,
            "bits_per_byte": nats / LN2 / docs.bytes if docs.bytes else None,
            "skipped": docs.skipped}


@torch.no_grad()
def loglikelihoods(model: Transformer, requests: list[tuple[list[int], list[int]]],
                   batch_size: int = 8, autocast=None) -> list[float]:
    """Sum of log p(continuation tokens | context) per (context ids, continuation ids),
    float32 log-softmax of the logits; a pair longer than the model's context keeps
    its last max_seq_len + 1 tokens (lm-eval's left truncation)."""
    autocast = autocast or contextlib.nullcontext()
    device, L = _device(model), model.args.max_seq_len
    out = []
    for i in range(0, len(requests), batch_size):
        batch = [((ctx + cont)[-(L + 1):][:-1], cont) for ctx, cont in requests[i:i + batch_size]]
        T = max(len(inp) for inp, _ in batch)
        x = torch.zeros(len(batch), T, dtype=torch.long)
        for j, (inp, _) in enumerate(batch):
            x[j, :len(inp)] = torch.tensor(inp)
        with autocast:
            logits, _ = model(x.to(device))
        for j, (inp, cont) in enumerate(batch):
            rows = logits[j, len(inp) - len(cont):len(inp)].float().log_softmax(-1)
            target = torch.tensor(cont, device=rows.device)[:, None]
            out.append(rows.gather(-1, target).sum().item())
    return out


def task_loglikelihoods(model: Transformer, task: Task, batch_size: int = 8,
                        autocast=None) -> list[list[float]]:
    """`loglikelihoods` of every choice of every item of `task`, per item."""
    flat = loglikelihoods(model, [r for item in task.requests for r in item], batch_size, autocast)
    out, k = [], 0
    for item in task.requests:
        out.append(flat[k:k + len(item)])
        k += len(item)
    return out


def task_accuracy(task: Task, lls: list[list[float]]) -> dict:
    """{"items", "acc", "acc_per_token", "acc_norm", "skipped"} from the choices'
    log-likelihoods (argmax of ll, ll / continuation tokens, ll / choice characters;
    the first of equal scores wins, as numpy's argmax in lm-eval)."""
    def acc(scores: list[np.ndarray]) -> float | None:
        hits = [int(np.argmax(s)) == g for s, g in zip(scores, task.gold)]
        return sum(hits) / len(hits) if hits else None

    ll = [np.array(x) for x in lls]
    tokens = [np.array([len(cont) for _, cont in item]) for item in task.requests]
    chars = [np.array(c) for c in task.chars]
    return {"items": len(lls), "acc": acc(ll),
            "acc_per_token": acc([x / n for x, n in zip(ll, tokens)]),
            "acc_norm": acc([x / n for x, n in zip(ll, chars)]), "skipped": task.skipped}


def score_task(model: Transformer, task: Task, batch_size: int = 8, autocast=None) -> dict:
    """`task_accuracy` of the model on `task`."""
    return task_accuracy(task, task_loglikelihoods(model, task, batch_size, autocast))


def val_bits_per_byte(model: Transformer, shard_dir: str, seq_len: int, max_windows: int,
                      batch_size: int = 8, sp=None, autocast=None) -> dict[str, dict]:
    """Per source of the manifest's "val" shards, on its first `max_windows` windows
    (`source_windows`, the training run's validation windows): {"loss" (nats/token),
    "tokens", "bytes", "bits_per_byte"} (bytes and bits per byte None without `sp`,
    the tokenizer the shards were written with)."""
    windows = source_windows(shard_dir, seq_len, max_windows)
    losses = val_loss(model, windows, batch_size, autocast)
    if sp is not None:
        sizes, spaced = token_bytes(sp), starts_with_space(sp)
        boundaries = tuple(i for i in (sp.bos_id(), sp.eos_id()) if i >= 0)
    out = {}
    for source, (loss, tokens) in losses.items():
        n = target_bytes(windows[source], sizes, spaced, boundaries) if sp is not None else None
        out[source] = {"loss": loss, "tokens": tokens, "bytes": n,
                       "bits_per_byte": loss * tokens / LN2 / n if n else None}
    return out


def load_eval_sets(docs: dict[str, str], tasks: dict[str, str], tokenizer_path: str,
                   limit: int | None = None) -> tuple[list[DocSet], list[Task]]:
    """The named document sets and tasks (`trainer.eval.docs`, `.tasks`), read and
    encoded once with the SentencePiece model at `tokenizer_path`.

    Raises:
        FileNotFoundError, ValueError: the tokenizer cannot be loaded.
        OSError: a set's file cannot be read.
    """
    import tokenizer

    sp = tokenizer.load(tokenizer_path)
    return ([load_docs(name, path, sp, limit) for name, path in docs.items()],
            [load_task(name, path, sp, limit) for name, path in tasks.items()])


def eval_record(model: Transformer, docs: list[DocSet], tasks: list[Task], seq_len: int,
                batch_size: int = 8, autocast=None) -> dict:
    """The training log's eval record (without its step): {"eval_loss" and "eval_bpb":
    {document set: nats/token, bits per byte}, "eval_acc", "eval_acc_norm",
    "eval_acc_per_token": {task: accuracy}}, the kinds without sets left out."""
    record: dict = {}
    for d in docs:
        r = score_docs(model, d, seq_len, batch_size, autocast)
        record.setdefault("eval_loss", {})[d.name] = r["loss"]
        record.setdefault("eval_bpb", {})[d.name] = r["bits_per_byte"]
    for task in tasks:
        r = score_task(model, task, batch_size, autocast)
        for key in ("acc", "acc_norm", "acc_per_token"):
            record.setdefault(f"eval_{key}", {})[task.name] = r[key]
    return record


def format_report(report: dict) -> str:
    """The JSON report of `python -m trainer eval` as lines for the terminal."""
    lines = []
    if report.get("val"):
        lines += ["validation shards (per source): loss (nats/token), bits per byte, tokens"]
        for source, r in report["val"].items():
            bpb = "-" if r["bits_per_byte"] is None else f"{r['bits_per_byte']:.4f}"
            lines.append(f"  {source:<14} loss {r['loss']:.4f}  bpb {bpb}  tokens {r['tokens']}")
    def describe(kind: str, label: str, empty: str, key: str, line) -> None:
        for name, r in report.get(kind, {}).items():
            skipped = f", skipped {r['skipped']}" if r["skipped"] else ""
            lines.append(f"{label} {name}: " + (f"no {empty}{skipped}" if r[key] is None else line(r, skipped)))

    describe("docs", "documents", "document", "loss", lambda r, skipped: (
        f"perplexity {r['perplexity']:.2f} (loss {r['loss']:.4f}), bits per byte {r['bits_per_byte']:.4f}; "
        f"{r['docs']} documents, {r['tokens']} tokens, {r['bytes']} bytes{skipped}"))
    describe("tasks", "task", "item", "acc", lambda r, skipped: (
        f"acc {r['acc']:.4f}, acc_per_token {r['acc_per_token']:.4f}, acc_norm {r['acc_norm']:.4f} "
        f"({r['items']} items{skipped})"))
    for s in report.get("samples", []):
        lines.append(f"sample: {s['prompt']!r} -> {s['completion']!r}")
    return "\n".join(lines)
