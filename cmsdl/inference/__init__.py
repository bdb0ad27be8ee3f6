"""Torch-free inference for exported cmsdl models: onnxruntime + numpy (+ Pillow for images).

Never imports torch, lightning or hydra; production code and `cmsdl serve` use it.
"""

from cmsdl.inference.metadata import ModelContract, TensorSpec
from cmsdl.inference.predictor import InputError, Prediction, Predictor, load_npy

__all__ = ["InputError", "ModelContract", "Prediction", "Predictor", "TensorSpec", "load_npy"]
