"""`cmsdl popularity`: rolling-window popularity prediction, DNN and baselines."""

from __future__ import annotations

from omegaconf import DictConfig

from cmsdl.config import hydra_app


@hydra_app("popularity")
def main(cfg: DictConfig) -> None:
    from cmsdl.tools.popularity import rolling_popularity
    rolling_popularity(cfg)
