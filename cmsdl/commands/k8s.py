"""`cmsdl k8s <action>`: render, submit, status, logs, delete a training (or a hits2png / predict fan-out) on
Kubernetes."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from cmsdl.config import hydra_app


def main() -> None:
    """The pods' command and its overrides are split off the command line first and handed to the Hydra app by
    closure."""
    from cmsdl.k8s.app import parse_arguments, run

    hydra_args, workload = parse_arguments(sys.argv[1:])

    @hydra_app("k8s", prepare_argv=lambda _args: hydra_args)
    def k8s(cfg: DictConfig) -> None:
        run(cfg, workload)

    k8s()
