"""cmsdl: deep learning for CMS computing and physics (Hydra + Lightning + ONNX + Kubernetes)."""

__version__ = "0.1.0"
