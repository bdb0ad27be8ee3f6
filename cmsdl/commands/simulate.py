"""`cmsdl simulate`: toy CMS tracker events (jpsi/qcd/higgs) into ROOT files of hits."""

from __future__ import annotations

from omegaconf import DictConfig

from cmsdl.config import hydra_app


@hydra_app("simulate")
def main(cfg: DictConfig) -> None:
    from cmsdl.sim.tracker import run
    run(cfg)
