"""`cmsdl eval ckpt=...`: rebuild data and model from a checkpoint, predict a split, write metrics and plots."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from cmsdl.callbacks import CHECKPOINT_KEY
from cmsdl.config import hydra_app, instantiate_logged
from cmsdl.errors import CmsdlError, ConfigError
from cmsdl.report import seed_table_cells, write_regression_report, write_report

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A cmsdl checkpoint as a dict; a missing or foreign file raises one clear error."""
    path = Path(path)
    if not path.is_file():
        raise CmsdlError(f"ckpt: {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CmsdlError(f"ckpt: {path} is not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        raise CmsdlError(f"ckpt: {path} was not written by `cmsdl train` (no '{CHECKPOINT_KEY}' entry)")
    return checkpoint


@contextmanager
def working_directory(path: str | None) -> Iterator[None]:
    """Run a block in `path` (if it exists): relative data paths of a run are relative to where it ran."""
    previous = os.getcwd()
    if path and Path(path).is_dir():
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def restore(checkpoint: dict[str, Any], data_overrides: DictConfig | None = None) -> tuple[Any, pl.LightningModule]:
    """The datamodule (with its fitted preprocessing) and the trained model stored in a checkpoint."""
    context = checkpoint[CHECKPOINT_KEY]
    run_cfg = OmegaConf.create(context["config"])
    data_cfg = OmegaConf.merge(run_cfg.data, data_overrides or {})
    datamodule = instantiate_logged(data_cfg, "data")
    datamodule.load_state_dict(context["preprocessing"])
    with working_directory(run_cfg.get("paths", {}).get("root_dir")):
        datamodule.setup()
    model = instantiate_logged(run_cfg.model, "model")
    model.load_state_dict(checkpoint["state_dict"])
    return datamodule, model.eval()


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
    metrics = write_report(out_dir, probs, labels, datamodule.class_names, ids)
    log.info("%s split: n=%d accuracy=%.4f auroc=%.4f; report in %s",
             cfg.split, metrics["n"], metrics["accuracy"], metrics["auroc"], out_dir)
    print(f"{cfg.split}: accuracy and confusion matrix (rows true, columns predicted: "
          f"{', '.join(datamodule.class_names)}): {seed_table_cells(metrics)}")
    return metrics


@hydra_app("eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)
