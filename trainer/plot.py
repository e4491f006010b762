"""The loss curves of a run, drawn from its JSONL log records."""

from __future__ import annotations

from pathlib import Path


def plot_loss(records: list[dict], path: str | Path, title: str = "") -> Path:
    """Save `loss_figure(records, title)` as a PNG at `path`; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    loss_figure(records, title).savefig(path, dpi=120)
    return path


def loss_figure(records: list[dict], title: str = ""):
    """A matplotlib Figure of the training loss (solid line), the validation loss of
    each source (a line with a marker at each evaluation, when the log has val
    records) and the learning rate (right axis, dotted) against the step.

    `records` are the log's records of both kinds (`trainer.train`): train records
    carry "loss" and "lr", val records "val_loss" {source: nats/token}, eval records
    "eval_loss" {document set: nats/token} and "eval_acc" {task: accuracy}. The x axis
    spans the logged steps, the loss axis the plotted losses; the legend names every
    line, and a source evaluated once says at which step. Uses matplotlib's object
    API with the Agg canvas: no display, no global backend switch.
    """
    from matplotlib.figure import Figure  # imported here: slow, needed only at the end

    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_loss" in r]
    steps = [r["step"] for r in train]
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    lines = []
    if train:
        lines += ax.plot(steps, [r["loss"] for r in train], color="C0", linewidth=1.2,
                         label="train loss (batch mean)")
    for i, source in enumerate(sorted({s for r in val for s in r["val_loss"]})):
        points = [(r["step"], r["val_loss"][source]) for r in val if source in r["val_loss"]]
        label = f"val loss: {source}"
        if len(points) == 1:
            label += f" (step {points[0][0]} only)"
        lines += ax.plot(*zip(*points), color=f"C{(i + 2) % 10}", marker="o", markersize=4,
                         linewidth=1.2, label=label)
    # in-loop evaluation (`trainer.eval`): each document set's loss (dashed, squares);
    # each task's last accuracy as a legend entry (another scale than the loss axis)
    evals = [r for r in records if "eval_loss" in r or "eval_acc" in r]
    for i, name in enumerate(sorted({s for r in evals for s in r.get("eval_loss", {})})):
        points = [(r["step"], r["eval_loss"][name]) for r in evals if name in r.get("eval_loss", {})]
        lines += ax.plot(*zip(*points), color=f"C{(i + 6) % 10}", marker="s", markersize=4,
                         linestyle="--", linewidth=1.2, label=f"eval loss: {name}")
    for name in sorted({s for r in evals for s in r.get("eval_acc", {})}):
        step, acc = [(r["step"], r["eval_acc"][name]) for r in evals if name in r.get("eval_acc", {})][-1]
        lines += ax.plot([], [], " ", label=f"task {name}: acc {acc:.3f} at step {step}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    if train:
        lr_ax = ax.twinx()
        lines += lr_ax.plot(steps, [r["lr"] for r in train], color="C1", linestyle=":",
                            linewidth=1.2, label="learning rate (right axis)")
        lr_ax.set_ylim(0, max(r["lr"] for r in train) * 1.05)
        lr_ax.set_ylabel("learning rate")
    every = [r["step"] for r in records]
    if every:  # after the last plot on the shared x axis, which would rescale it
        lo, hi = min(every), max(every)
        pad = (hi - lo) * 0.02 or 0.5  # one step alone: half a step either side
        ax.set_xlim(lo - pad, hi + pad)
    if lines:
        ax.legend(handles=lines, fontsize="small", loc="upper right")
    ax.set_title(title)
    return fig
