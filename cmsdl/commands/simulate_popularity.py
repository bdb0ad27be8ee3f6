"""`cmsdl simulate-popularity`: synthetic weekly dataset-access records per site (CSV)."""

from __future__ import annotations

from omegaconf import DictConfig

from cmsdl.config import hydra_app


@hydra_app("simulate_popularity")
def main(cfg: DictConfig) -> None:
    from cmsdl.sim.popularity import write_simulated_popularity
    write_simulated_popularity(cfg)
