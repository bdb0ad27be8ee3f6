"""`cmsdl popularity`: rolling-window popularity prediction, DNN and baselines."""

from __future__ import annotations

from omegaconf import DictConfig

from cmsdl.config import hydra_app
from cmsdl.tools.popularity import rolling_popularity


@hydra_app("popularity")
def main(cfg: DictConfig) -> None:
    rolling_popularity(cfg)
