"""The loss curve of a run, drawn from its JSONL log records."""

from __future__ import annotations

from pathlib import Path


def plot_loss(records: list[dict], path: str | Path, title: str = "") -> Path:
    """Save a PNG of training loss (nats/token, solid), validation loss per source
    (nats/token, dashed, when the log has val records) and learning rate against step.

    `records` are the log's records of both kinds (`trainer.train`): train records
    carry "loss" and "lr", val records "val_loss" {source: nats/token}. Uses
    matplotlib's object API with the Agg canvas: no display, no global backend
    switch. Returns `path`.
    """
    from matplotlib.figure import Figure  # imported here: slow, needed only at the end

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_loss" in r]
    steps = [r["step"] for r in train]
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(steps, [r["loss"] for r in train], color="C0", label="train loss")
    for i, source in enumerate(sorted({s for r in val for s in r["val_loss"]})):
        points = [(r["step"], r["val_loss"][source]) for r in val if source in r["val_loss"]]
        ax.plot(*zip(*points), color=f"C{i + 2}", linestyle="--", marker=".",
                label=f"val {source}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)", color="C0")
    ax.grid(alpha=0.3)
    if val:
        ax.legend(fontsize="small")
    lr_ax = ax.twinx()
    lr_ax.plot(steps, [r["lr"] for r in train], color="C1", alpha=0.6)
    lr_ax.set_ylabel("learning rate", color="C1")
    ax.set_title(title)
    fig.savefig(path, dpi=120)
    return path
