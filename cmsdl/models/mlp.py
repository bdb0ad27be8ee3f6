"""A plain multi-layer perceptron for tabular features (the seed's workflow-action network is MLP(75 x 5))."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


class MLP(nn.Sequential):
    """in_features → [Linear → activation → Dropout] per hidden layer → Linear(out_features)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (75, 75, 75, 75, 75),
        dropout: float = 0.002,
        activation: str = "relu",
        batch_norm: bool = False,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"model.net.activation: got {activation!r}, expected one of {', '.join(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        width = in_features
        for units in hidden:
            layers.append(nn.Linear(width, units))
            if batch_norm:
                layers.append(nn.BatchNorm1d(units))
            layers += [ACTIVATIONS[activation](), nn.Dropout(dropout)]
            width = units
        layers.append(nn.Linear(width, out_features))
        super().__init__(*layers)
        self.in_features, self.out_features = in_features, out_features
