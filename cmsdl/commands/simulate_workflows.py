"""`cmsdl simulate-workflows`: synthetic CMS workflows with errors and actions (JSON)."""

from __future__ import annotations

from omegaconf import DictConfig

from cmsdl.config import hydra_app


@hydra_app("simulate_workflows")
def main(cfg: DictConfig) -> None:
    from cmsdl.sim.workflows import write_simulated_workflows
    write_simulated_workflows(cfg)
