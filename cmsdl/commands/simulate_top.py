"""`cmsdl simulate-top`: toy NanoAOD, all-hadronic ttbar signal and QCD multijet background."""

from __future__ import annotations

from omegaconf import DictConfig

from cmsdl.config import hydra_app


@hydra_app("simulate_top")
def main(cfg: DictConfig) -> None:
    from cmsdl.sim.nanoaod import run
    run(cfg)
