"""`cmsdl hits2png`: render ROOT hits into PNG event images and a manifest."""

from __future__ import annotations

from omegaconf import DictConfig

from cmsdl.config import hydra_app


@hydra_app("hits2png")
def main(cfg: DictConfig) -> None:
    from cmsdl.features.images.convert import run
    run(cfg)
