"""HEP evaluation output: ROC as signal efficiency vs background rejection for a named, weighted signal; titles that
name run, split and event count; row-normalised confusion matrices with counts; training curves from metrics.csv;
the popularity windows plot with integer weeks and spelled-out rates."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import cmsdl.report as report
from cmsdl.errors import ConfigError
from cmsdl.tools import popularity

CLASSES = ["ttbar", "qcd"]


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The matplotlib figures the report draws, kept open for inspection (and still written to disk)."""
    kept: list[Any] = []

    def keep(fig: Any, path: Path) -> Path:
        fig.savefig(path, format="png")
        kept.append(fig)
        return path

    monkeypatch.setattr(report, "save_figure", keep)
    return kept


def sample(n: int = 400, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-class probabilities where the weights change the answer: heavy background events score high."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    p_ttbar = np.clip(np.where(labels == 0, 0.65, 0.35) + rng.normal(0, 0.2, n), 0, 1)
    weights = np.where((labels == 1) & (p_ttbar > 0.5), 5.0, 1.0)
    return np.column_stack([p_ttbar, 1 - p_ttbar]), labels, weights


def test_signal_metrics_are_for_the_named_class_with_event_weights() -> None:
    probs, labels, weights = sample()
    metrics = report.classification_metrics(probs, labels, CLASSES, weights, signal="ttbar")
    expected = roc_auc_score(labels == 0, probs[:, 0], sample_weight=weights)
    assert metrics["signal"] == "ttbar" and metrics["weighted"] is True
    assert metrics["auroc_signal"] == pytest.approx(expected)
    assert abs(expected - roc_auc_score(labels == 0, probs[:, 0])) > 0.01
    assert metrics["weighted_accuracy"] == pytest.approx(np.average(probs.argmax(1) == labels, weights=weights))
    rejection = metrics["background_rejection"]["0.5"]
    cut = np.sort(probs[labels == 0, 0])[::-1][int(np.ceil(0.5 * (labels == 0).sum())) - 1]
    background = labels == 1
    assert rejection == pytest.approx(weights[background].sum() / weights[background & (probs[:, 0] >= cut)].sum())


def test_unknown_signal_is_one_error_line_before_any_output(tmp_path: Path) -> None:
    probs, labels, _ = sample()
    with pytest.raises(ConfigError, match=r"signal: 'ttbr' is not a class of this model \(did you mean 'ttbar'\?\)"):
        report.write_report(tmp_path / "out", probs, labels, CLASSES, signal="ttbr")
    assert not (tmp_path / "out").exists()


def test_roc_plots_signal_efficiency_against_background_rejection(tmp_path: Path, figures: list[Any]) -> None:
    probs, labels, weights = sample()
    report.plot_roc(probs, labels, CLASSES, tmp_path / "roc.png", signal="ttbar", weights=weights,
                    title="run top_sb, test split, 400 events")
    ax = figures[0].axes[0]
    assert ax.get_xlabel() == "signal efficiency" and ax.get_yscale() == "log"
    assert ax.get_ylabel() == "background rejection (1 / efficiency, events weighted)"
    assert ax.get_title() == "ROC: run top_sb, test split, 400 events"
    labels_drawn = [line.get_label() for line in ax.get_lines()]
    auc = roc_auc_score(labels == 0, probs[:, 0], sample_weight=weights)
    assert labels_drawn == [f"ttbar vs qcd (AUC {auc:.3f})", "random"]
    x, y = ax.get_lines()[0].get_data()
    assert (np.diff(x) >= 0).all() and (np.diff(y) <= 1e-9).all() and y.min() >= 1.0


def test_without_a_signal_every_class_is_drawn_against_the_rest(tmp_path: Path, figures: list[Any]) -> None:
    probs, labels, _ = sample()
    report.plot_roc(probs, labels, CLASSES, tmp_path / "roc.png")
    assert [line.get_label().split(" (")[0] for line in figures[0].axes[0].get_lines()] == [
        "ttbar vs qcd", "qcd vs ttbar", "random"]


def test_confusion_matrix_is_row_normalised_with_counts(tmp_path: Path, figures: list[Any]) -> None:
    report.plot_confusion([[1346, 4], [9, 1341]], ["jpsi", "qcd"], tmp_path / "c.png", "run x, test split, 2700 events")
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.texts] == ["99.7%\n(1346)", "0.3%\n(4)", "0.7%\n(9)", "99.3%\n(1341)"]
    assert ax.get_title() == "confusion matrix, rows normalised\nrun x, test split, 2700 events"


def write_lightning_log(path: Path) -> None:
    """metrics.csv as Lightning's CSVLogger writes it: step rows (train loss) and epoch rows (validation)."""
    path.parent.mkdir(parents=True)
    rows = [{"epoch": 0, "step": 9, "train/loss": 0.9}, {"epoch": 0, "step": 19, "train/loss": 0.7},
            {"epoch": 0, "step": 19, "val/loss": 0.8, "val/acc": 0.6},
            {"epoch": 1, "step": 29, "train/loss": 0.5}, {"epoch": 1, "step": 39, "val/loss": 0.6, "val/acc": 0.75},
            {"epoch": 2, "step": 40, "test/acc": 0.7}]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["epoch", "step", "test/acc", "train/loss", "val/acc", "val/loss"])
        writer.writeheader()
        writer.writerows(rows)


def test_report_writes_titled_plots_and_training_curves(tmp_path: Path, figures: list[Any]) -> None:
    log = tmp_path / "run" / "csv" / "metrics.csv"
    write_lightning_log(log)
    assert report.read_training_log(log) == {"train/loss": {0: pytest.approx(0.8), 1: 0.5},
                                             "val/acc": {0: 0.6, 1: 0.75}, "val/loss": {0: 0.8, 1: 0.6}}
    probs, labels, weights = sample()
    metrics = report.write_report(tmp_path / "eval", probs, labels, CLASSES, weights=weights, signal="ttbar",
                                  title="run run, test split", training_log=log)
    assert {p.name for p in (tmp_path / "eval").iterdir()} == {
        "roc.png", "confusion.png", "training_curves.png", "predictions.csv", "metrics.json"}
    roc, confusion, curves = figures
    assert roc.axes[0].get_title() == "ROC: run run, test split, 400 events"
    assert confusion.axes[0].get_title().endswith("run run, test split, 400 events")
    loss_ax, metric_ax = curves.axes
    assert [line.get_label() for line in loss_ax.get_lines()] == ["train/loss", "val/loss"]
    assert [line.get_label() for line in metric_ax.get_lines()] == ["val/acc"]
    assert metrics["signal"] == "ttbar" and metrics["n"] == 400


def test_popularity_windows_plot_has_integer_weeks_and_spelled_out_rates(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.pyplot as plt

    kept: list[Any] = []
    monkeypatch.setattr(plt, "close", kept.append)
    rows = [{"model": m, "week": w, "auc": 0.7, "fpr": 0.2, "fnr": 0.3} for m in ("dnn", "naive") for w in (20, 21, 22)]
    popularity.plot_windows(tmp_path / "windows.png", rows)
    axes = kept[0].axes
    assert [ax.get_ylabel() for ax in axes[1:]] == ["false positive rate", "false negative rate"]
    kept[0].canvas.draw()
    ticks = [t for ax in axes for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert (tmp_path / "windows.png").is_file()


@pytest.mark.slow
def test_eval_of_a_weighted_signal_vs_background_run(tmp_path: Path) -> None:
    """`cmsdl eval signal=ttbar` on a genWeight-weighted ROOT-table run: the signal's weighted ROC and training curves."""
    from cmsdl.sim.nanoaod import simulate_events, write_root
    from conftest import run_cmsdl

    for i, process in enumerate(("ttbar", "qcd")):
        write_root(tmp_path / "data" / "top" / f"{process}_000.root", simulate_events(process, 400, seed=i))
    run_cmsdl("train", "experiment=top_sb", f"paths.data_dir={tmp_path / 'data'}", f"paths.log_dir={tmp_path / 'logs'}",
              "run_name=sb", "trainer=cpu", "trainer.max_epochs=2", "callbacks.progress_bar.refresh_rate=0", cwd=tmp_path)
    bad = run_cmsdl("eval", f"ckpt={tmp_path / 'logs/train/runs/sb'}", "signal=tt", f"paths.log_dir={tmp_path / 'logs'}",
                    "run_name=bad", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "signal: 'tt' is not a class of this model" in bad.stderr
    run_cmsdl("eval", f"ckpt={tmp_path / 'logs/train/runs/sb'}", "signal=ttbar", f"paths.log_dir={tmp_path / 'logs'}",
              "run_name=sb", cwd=tmp_path)
    out = tmp_path / "logs" / "eval" / "runs" / "sb"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["signal"] == "ttbar" and metrics["weighted"] is True and 0.5 < metrics["auroc_signal"] <= 1
    assert set(metrics["background_rejection"]) == {"0.3", "0.5", "0.7"}
    assert {"roc.png", "confusion.png", "training_curves.png"} <= {p.name for p in out.iterdir()}
