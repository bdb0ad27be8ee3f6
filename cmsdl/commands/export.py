"""`cmsdl export`: checkpoint -> ONNX with the model contract in its metadata, after a parity check."""

from __future__ import annotations

from omegaconf import DictConfig

from cmsdl.config import hydra_app


@hydra_app("export")
def main(cfg: DictConfig) -> None:
    from cmsdl.export.exporter import export
    export(cfg)
