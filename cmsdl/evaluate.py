"""`cmsdl eval ckpt=...`: rebuild data and model from a checkpoint, predict a split, write metrics and plots.

For a classifier evaluated on val or test, the overtraining check compares, per true class c, the scores P(c) of
the training split with those of the evaluated split (two-sample Kolmogorov-Smirnov test, scipy.stats.ks_2samp,
unweighted): p-values in metrics.json under ``overtraining_ks``, a printed line, and overtraining.png.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from scipy.stats import ks_2samp

from cmsdl.checkpoint import load_checkpoint, restore
from cmsdl.data.base import SPLITS
from cmsdl.errors import ConfigError
from cmsdl.io import write_json
from cmsdl.loggers import attach_to_tracked_run
from cmsdl.report import pyplot, save_figure, seed_table_cells, write_regression_report, write_report

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Predict `cfg.split` of the checkpoint's data and write the report into the run directory."""
    if cfg.split not in SPLITS:
        raise ConfigError(f"split: got {cfg.split!r}, expected one of {', '.join(SPLITS)}")
    datamodule, model = restore(load_checkpoint(cfg.ckpt), cfg.get("data"))
    trainer = pl.Trainer(accelerator=cfg.accelerator, devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    batches = trainer.predict(model, dataloaders=datamodule.split_loader(cfg.split))
    out_dir = Path(cfg.paths.output_dir)
    ids = datamodule.split_ids(cfg.split)
    run_dir = Path(cfg.ckpt) if Path(cfg.ckpt).is_dir() else Path(cfg.ckpt).parent.parent
    if datamodule.task == "regression":
        predictions = torch.cat([b["predictions"] for b in batches]).float().numpy()
        targets = torch.cat([b["targets"] for b in batches]).float().numpy()
        metrics = write_regression_report(out_dir, predictions, targets, datamodule.class_names, ids)
        log.info("%s split: n=%d MAE=%.4g RMSE=%.4g R2=%.4f; report in %s",
                 cfg.split, metrics["n"], metrics["mae"], metrics["rmse"], metrics["r2"], out_dir)
        attach_to_tracked_run(run_dir, out_dir, f"eval/{out_dir.name}")
        return metrics
    probs = torch.cat([b["probs"] for b in batches]).float().numpy()
    labels = torch.cat([b["labels"] for b in batches]).numpy()
    weights = torch.cat([b["weights"] for b in batches]).float().numpy() if "weights" in batches[0] else None
    metrics = write_report(out_dir, probs, labels, datamodule.class_names, ids, weights=weights,
                           signal=cfg.get("signal"), title=f"run {run_dir.name}, {cfg.split} split",
                           training_log=run_dir / "csv" / "metrics.csv")
    log.info("%s split: n=%d accuracy=%.4f auroc=%.4f; report in %s",
             cfg.split, metrics["n"], metrics["accuracy"], metrics["auroc"], out_dir)
    print(f"{cfg.split}: accuracy and confusion matrix (rows true, columns predicted: "
          f"{', '.join(datamodule.class_names)}): {seed_table_cells(metrics)}")
    if cfg.split != "train":
        train = trainer.predict(model, dataloaders=datamodule.split_loader("train"))
        train_probs = torch.cat([b["probs"] for b in train]).float().numpy()
        train_labels = torch.cat([b["labels"] for b in train]).numpy()
        metrics["overtraining_ks"] = overtraining_ks(train_probs, train_labels, probs, labels, datamodule.class_names)
        plot_overtraining(out_dir / "overtraining.png", train_probs, train_labels, probs, labels,
                          datamodule.class_names, cfg.split)
        write_json(out_dir / "metrics.json", metrics)
        print(f"overtraining check (KS test of train vs {cfg.split} scores, per true class): " + ", ".join(
            f"{name} p={ks['p_value']:.3g}" for name, ks in metrics["overtraining_ks"].items()))
    attach_to_tracked_run(run_dir, out_dir, f"eval/{out_dir.name}")  # logger=mlflow: the plots join the run
    return metrics


def overtraining_ks(train_probs: np.ndarray, train_labels: np.ndarray, probs: np.ndarray, labels: np.ndarray,
                    class_names: list[str]) -> dict[str, dict[str, float]]:
    """Per true class c: KS statistic and p-value of P(c) on the training rows vs the evaluated rows of class c."""
    result = {}
    for c, name in enumerate(class_names):
        reference, evaluated = train_probs[train_labels == c, c], probs[labels == c, c]
        if len(reference) and len(evaluated):
            test = ks_2samp(reference, evaluated)
            result[name] = {"statistic": float(test.statistic), "p_value": float(test.pvalue),
                            "n_train": int(len(reference)), "n_evaluated": int(len(evaluated))}
    return result


def plot_overtraining(path: Path, train_probs: np.ndarray, train_labels: np.ndarray, probs: np.ndarray,
                      labels: np.ndarray, class_names: list[str], split: str) -> Path:
    """Normalised score histograms per true class: training split filled, evaluated split as points."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    score = len(class_names) - 1  # the last class's probability: the binary head's output
    bins = np.linspace(0, 1, 26)
    centres = (bins[1:] + bins[:-1]) / 2
    for c, name in enumerate(class_names):
        ax.hist(train_probs[train_labels == c, score], bins=bins, density=True, alpha=0.35, color=f"C{c}",
                label=f"{name} (train)")
        density, _ = np.histogram(probs[labels == c, score], bins=bins, density=True)
        ax.plot(centres, density, "o", ms=3, color=f"C{c}", label=f"{name} ({split})")
    ax.set(xlabel=f"P({class_names[score]})", ylabel="normalised entries", title=f"train vs {split} scores")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
