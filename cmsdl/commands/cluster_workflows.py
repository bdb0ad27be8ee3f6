"""`cmsdl cluster-workflows`: k-means clusters of workflows with similar errors."""

from __future__ import annotations

from omegaconf import DictConfig

from cmsdl.config import hydra_app


@hydra_app("cluster_workflows")
def main(cfg: DictConfig) -> None:
    from cmsdl.tools.cluster import cluster_workflows
    cluster_workflows(cfg)
