"""Torch-free input adapters, one package per kind of input: workflows, transfers, popularity (records → feature
rows), root_table (feature spec + streaming ROOT reader) and images (hits → images, PNG codec, hits2png).

Each turns raw records, files, hits or PNGs into a model input from the `preprocessing` a model carries, so
DataModules (cmsdl.data), the predictor (cmsdl.inference) and converters share one implementation.
Nothing here imports torch or lightning (tests/test_architecture.py checks it)."""
