"""Torch-free inference for exported cmsdl models: onnxruntime + numpy (+ Pillow for images).

Never imports torch, lightning or hydra; production code and `cmsdl serve` use it.
"""

from cmsdl.inference.arrays import InputError, load_npy
from cmsdl.inference.metadata import ContractError, ModelContract, TensorSpec
from cmsdl.inference.predictor import Prediction, Predictor

__all__ = ["ContractError", "InputError", "ModelContract", "Prediction", "Predictor", "TensorSpec", "load_npy"]
