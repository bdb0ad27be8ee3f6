"""`cmsdl eval ckpt=...`: rebuild data and model from a checkpoint, predict a split, write metrics and plots."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from cmsdl.checkpoint import load_checkpoint, restore
from cmsdl.config import hydra_app
from cmsdl.errors import ConfigError
from cmsdl.report import seed_table_cells, write_regression_report, write_report

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


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
    if "predictions" in batches[0]:
        predictions = torch.cat([b["predictions"] for b in batches]).float().numpy()
        targets = torch.cat([b["targets"] for b in batches]).float().numpy()
        metrics = write_regression_report(out_dir, predictions, targets, datamodule.class_names, ids)
        log.info("%s split: n=%d MAE=%.4g RMSE=%.4g R2=%.4f; report in %s",
                 cfg.split, metrics["n"], metrics["mae"], metrics["rmse"], metrics["r2"], out_dir)
        return metrics
    probs = torch.cat([b["probs"] for b in batches]).float().numpy()
    labels = torch.cat([b["labels"] for b in batches]).numpy()
    weights = torch.cat([b["weights"] for b in batches]).float().numpy() if "weights" in batches[0] else None
    run_dir = Path(cfg.ckpt) if Path(cfg.ckpt).is_dir() else Path(cfg.ckpt).parent.parent
    metrics = write_report(out_dir, probs, labels, datamodule.class_names, ids, weights=weights,
                           signal=cfg.get("signal"), title=f"run {run_dir.name}, {cfg.split} split",
                           training_log=run_dir / "csv" / "metrics.csv")
    log.info("%s split: n=%d accuracy=%.4f auroc=%.4f; report in %s",
             cfg.split, metrics["n"], metrics["accuracy"], metrics["auroc"], out_dir)
    print(f"{cfg.split}: accuracy and confusion matrix (rows true, columns predicted: "
          f"{', '.join(datamodule.class_names)}): {seed_table_cells(metrics)}")
    return metrics


@hydra_app("eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)
