"""`cmsdl cache-sim`: site cache simulation, hit-rate curves of LRU, OPT, PPC, PPC100, SDC."""

from __future__ import annotations

from omegaconf import DictConfig

from cmsdl.config import hydra_app


@hydra_app("cache_sim")
def main(cfg: DictConfig) -> None:
    from cmsdl.tools.cache_sim import cache_sim
    cache_sim(cfg)
