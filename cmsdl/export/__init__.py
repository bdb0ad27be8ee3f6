"""ONNX export of trained checkpoints, with the model's contract embedded as metadata and a parity check."""
