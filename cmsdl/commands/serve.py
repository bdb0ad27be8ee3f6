"""`cmsdl serve`: the REST and Open Inference Protocol (KServe V2) service for a directory of ONNX models and Triton
repository folders (docs/serving.md)."""

from __future__ import annotations

from omegaconf import DictConfig

from cmsdl.config import hydra_app


@hydra_app("serve")
def main(cfg: DictConfig) -> None:
    from cmsdl.serve.server import serve
    serve(cfg)
