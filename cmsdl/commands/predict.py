"""`cmsdl predict`: batch prediction with an exported model, files -> CSV/JSON or scores into ROOT."""

from __future__ import annotations

from omegaconf import DictConfig

from cmsdl.config import hydra_app


@hydra_app("predict")
def main(cfg: DictConfig) -> None:
    from cmsdl.predict import predict
    predict(cfg)
