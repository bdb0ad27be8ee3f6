"""`cmsdl train`: build data, model and trainer from the config, fit, test, and write the run's artefacts.

Run directory: config.yaml (resolved), .hydra/ (as composed), checkpoints/{epoch_NNN,last}.ckpt,
csv/metrics.csv, metrics.json. The same command with resume=true continues from checkpoints/last.ckpt.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

import hydra_plugins.cmsdl_k8s_launcher  # noqa: F401  registers hydra/launcher=k8s (also under editable installs)
from cmsdl.callbacks import CheckpointOnSigterm, RunContext
from cmsdl.checkpoint import safe_types, verified
from cmsdl.config import check_values, in_sweep, instantiate_group, instantiate_logged, to_plain
from cmsdl.io import write_config, write_json
from cmsdl.loggers import log_config, log_run_outputs
from cmsdl.models.classifier import output_size
from cmsdl.runs import LAST_CKPT, checkpoint_to_resume, finished_sweep_point

log = logging.getLogger(__name__)
SIGTERM_EXIT = 143  # 128 + SIGTERM, as a shell reports a process ended by SIGTERM


def complete_model_config(cfg: DictConfig, datamodule: Any) -> None:
    """Fill in what only the data knows and the network asks for (input size, set layout, ...), the number of
    outputs and the class names."""
    binary_head = datamodule.task == "classification" and cfg.model.get("binary_head", True)
    with open_dict(cfg):
        cfg.model.class_names = datamodule.class_names
        for key, value in datamodule.net_inputs().items():
            if key in cfg.model.net.keys():  # `in` on the node is False for ??? values
                cfg.model.net[key] = value
        cfg.model.net.out_features = output_size(datamodule.class_names, binary_head)


@rank_zero_only
def save_config(cfg: DictConfig, output_dir: Path) -> None:
    write_config(output_dir / "config.yaml", cfg)


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(metrics.items()) if getattr(v, "numel", lambda: 1)() == 1}


def previous_metrics(output_dir: Path) -> dict[str, float]:
    """Metrics of an earlier attempt of this run, kept when a resumed run has nothing left to train."""
    try:
        return json.loads((output_dir / "metrics.json").read_text())["metrics"]
    except (OSError, ValueError, KeyError):
        return {}


def build(cfg: DictConfig) -> tuple[Any, pl.LightningModule, pl.Trainer]:
    """Datamodule, model and trainer of a run, as the config describes them (also used by benchmarks)."""
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate_logged(cfg.data, "data")
    datamodule.setup("fit")
    complete_model_config(cfg, datamodule)
    model = instantiate_logged(cfg.model, "model")
    log.info("network:\n%s", model.net)
    callbacks = instantiate_group(cfg.get("callbacks"), "callbacks")
    callbacks.append(RunContext(to_plain(cfg), datamodule.preprocessing(), datamodule.task))
    callbacks.append(CheckpointOnSigterm(Path(cfg.paths.output_dir) / LAST_CKPT,
                                         cfg.get("sigterm_check_every_n_batches") or 10))
    loggers = instantiate_group(cfg.get("logger"), "logger")
    log_config(loggers, to_plain(cfg))
    trainer = instantiate_logged(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)
    return datamodule, model, trainer


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit (and test) the configured model; returns the summary written to metrics.json."""
    check_values(cfg)
    output_dir = Path(cfg.paths.output_dir)
    finished = finished_sweep_point(cfg.resume, output_dir)
    if finished is not None:
        log.info("%s: finished earlier (metrics.json); skipped", output_dir)
        return finished
    resume_from = checkpoint_to_resume(cfg.resume, output_dir)
    datamodule, model, trainer = build(cfg)
    save_config(cfg, output_dir)
    try:
        with safe_types():
            trainer.fit(model, datamodule=datamodule, ckpt_path=verified(resume_from), weights_only=True)
    except SIGTERMException:
        raise SystemExit(SIGTERM_EXIT) from None  # non-zero: a preempted pod is retried, not counted as done
    metrics = previous_metrics(output_dir) | scalar_metrics(trainer.callback_metrics)
    best = trainer.checkpoint_callback.best_model_path if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else ""
    if cfg.get("test") and not trainer.interrupted:
        with safe_types():
            trainer.test(model, datamodule=datamodule, ckpt_path=verified(best or None), weights_only=True)
        metrics.update(scalar_metrics(trainer.callback_metrics))
    last = output_dir / LAST_CKPT
    summary = {
        "run_dir": str(output_dir),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "best_checkpoint": best or None,
        "last_checkpoint": str(last) if last.is_file() else None,
        "metrics": metrics,
    }
    if trainer.is_global_zero:
        write_json(output_dir / "metrics.json", summary)
        log.info("metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        log_run_outputs(trainer.loggers, output_dir)
    return summary


def experiment_choice() -> str | None:
    """The `experiment=` option this run was composed with, where Hydra knows it."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return HydraConfig.get().runtime.choices.get("experiment")
    except ValueError:
        return None


@rank_zero_only
def print_next_steps(run_dir: Path, cfg: DictConfig) -> None:
    """End a training with where it wrote and the commands that use it (a sweep point: its summary.csv does)."""
    if in_sweep():
        return
    try:
        shown = run_dir.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = run_dir
    name = experiment_choice() or "model"
    print(f"run directory: {shown}\n"
          f"next: cmsdl eval ckpt={shown}\n"
          f"      cmsdl export ckpt={shown} out=models/{name}.onnx")
