"""`cmsdl k8s <action>`: render, submit, status, logs, delete a training on Kubernetes."""

from __future__ import annotations

from omegaconf import DictConfig

from cmsdl.config import hydra_app
from cmsdl.k8s.app import prepare_argv, run


@hydra_app("k8s", prepare_argv=prepare_argv)
def main(cfg: DictConfig) -> None:
    run(cfg)
