"""The loss plot: a title naming the run and model, training and validation curves,
the x axis fitted to the steps, every line in the legend; and the report's reason
for a source without validation loss."""

from __future__ import annotations

import pytest

from pipeline.report import no_val_loss_reason
from tests.conftest import read_log
from tests.conftest import trainer_config as config
from trainer.plot import loss_figure
from trainer.train import train


def _lines(fig) -> dict[str, object]:
    return {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}


def test_a_run_plots_train_and_validation_curves(two_source_shards, tmp_path):
    summary = train(config(two_source_shards, tmp_path, steps=9, log_every=3, val_every=3,
                           val_batches=1))
    records = read_log(tmp_path)
    fig = loss_figure(records, title="run demo, model demo (0.8M parameters)")
    ax = fig.axes[0]
    assert ax.get_title() == "run demo, model demo (0.8M parameters)"
    lines = _lines(fig)
    assert sorted(lines) == ["learning rate (right axis)", "train loss (batch mean)",
                             "val loss: books", "val loss: poetry"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "train loss (batch mean)", "val loss: books", "val loss: poetry", "learning rate (right axis)"]
    train_line, val_line = lines["train loss (batch mean)"], lines["val loss: books"]
    assert list(train_line.get_xdata()) == [1, 3, 6, 9]
    assert list(val_line.get_xdata()) == [3, 6, 9] and val_line.get_marker() == "o"
    assert list(val_line.get_ydata()) == [r["val_loss"]["books"] for r in records if "val_loss" in r]
    assert val_line.get_linestyle() == "-"  # a curve, not scattered dots
    lo, hi = ax.get_xlim()
    assert (lo, hi) == pytest.approx((1 - 0.16, 9 + 0.16))  # the steps, 2% either side
    assert summary["plot"] == str(tmp_path / "loss.png")


def test_one_evaluation_says_so_in_the_legend():
    records = [{"step": 1, "loss": 5.0, "lr": 1e-3}, {"step": 2, "loss": 4.0, "lr": 2e-3},
               {"step": 2, "val_loss": {"books": 4.5}, "val_tokens": {"books": 64}}]
    lines = _lines(loss_figure(records))
    assert "val loss: books (step 2 only)" in lines
    assert lines["val loss: books (step 2 only)"].get_marker() == "o"


def test_report_says_why_a_source_has_no_validation_loss():
    val = {"shards": [{"split": "train", "tokens_per_source": {"books": 900, "commoncrawl": 90}},
                      {"split": "val", "tokens_per_source": {"books": 100, "github": 20}}]}
    data = {"shards": val, "train": [{"step": 1}], "val": [{"step": 1, "val_loss": {"books": 4.0}}]}
    assert no_val_loss_reason(data, "commoncrawl") == (
        "none of its documents were held out for validation")
    assert no_val_loss_reason(data, "github") == (
        "its 20 held-out tokens make no full window of trainer.seq_len + 1")
    no_split = {"shards": {"shards": val["shards"][:1]}, "train": [{"step": 1}], "val": []}
    assert no_val_loss_reason(no_split, "books") == "no validation split: shards.val_fraction is 0"
    assert no_val_loss_reason({**data, "val": []}, "books") == "no validation loss logged yet"
    assert no_val_loss_reason({"shards": None, "train": [], "val": []}, "books") == "not trained yet"
