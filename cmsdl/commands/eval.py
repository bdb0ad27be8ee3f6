"""`cmsdl eval`: evaluate a checkpoint on a split, write metrics and plots."""

from __future__ import annotations

from omegaconf import DictConfig

from cmsdl.config import hydra_app


@hydra_app("eval")
def main(cfg: DictConfig) -> None:
    from cmsdl.evaluate import evaluate
    evaluate(cfg)
