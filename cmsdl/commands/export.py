"""`cmsdl export`: checkpoint -> ONNX with the model contract in its metadata, after a parity check."""

from __future__ import annotations

from omegaconf import DictConfig

from cmsdl.config import hydra_app
from cmsdl.export.exporter import export


@hydra_app("export")
def main(cfg: DictConfig) -> None:
    export(cfg)
