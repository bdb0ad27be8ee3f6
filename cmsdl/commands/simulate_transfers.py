"""`cmsdl simulate-transfers`: synthetic FTS-like transfer logs (JSON records)."""

from __future__ import annotations

from omegaconf import DictConfig

from cmsdl.config import hydra_app


@hydra_app("simulate_transfers")
def main(cfg: DictConfig) -> None:
    from cmsdl.sim.transfers import write_simulated_transfers
    write_simulated_transfers(cfg)
