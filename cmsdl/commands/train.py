"""`cmsdl train`: train a model from a composed config; returns the monitored metric for sweepers."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from cmsdl.config import check_values, hydra_app


@hydra_app("train")
def main(cfg: DictConfig) -> float | None:
    check_values(cfg)  # a wrong value is refused before torch and Lightning load
    from cmsdl.train import print_next_steps, train

    summary = train(cfg)
    print_next_steps(Path(summary["run_dir"]), cfg)
    monitor = cfg.get("optimized_metric")
    return summary["metrics"].get(monitor) if monitor else None
