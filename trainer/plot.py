"""The loss curve of a run, drawn from its JSONL log records."""

from __future__ import annotations

from pathlib import Path


def plot_loss(records: list[dict], path: str | Path, title: str = "") -> Path:
    """Save a PNG of training loss (nats/token) and learning rate against step.

    Uses matplotlib's object API with the Agg canvas: no display, no global
    backend switch. Returns `path`.
    """
    from matplotlib.figure import Figure  # imported here: slow, needed only at the end

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    steps = [r["step"] for r in records]
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(steps, [r["loss"] for r in records], color="C0", label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)", color="C0")
    ax.grid(alpha=0.3)
    lr_ax = ax.twinx()
    lr_ax.plot(steps, [r["lr"] for r in records], color="C1", alpha=0.6)
    lr_ax.set_ylabel("learning rate", color="C1")
    ax.set_title(title)
    fig.savefig(path, dpi=120)
    return path
