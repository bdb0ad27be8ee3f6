"""DeepSets: a permutation-invariant network over one collection (e.g. the jets of an event) plus event features.

It reads the same flat feature rows as the MLP (so export, predict and serving need nothing new): `set_layout`,
filled in from the data (RootTableDataModule.net_inputs), says where the collection's slots are. Each present
element (slot index < multiplicity) goes through phi; the sum and the mean over elements, with the event-level
features, go through rho. Padded slots are masked out, so the output does not depend on the order of the elements
or on the padding (Zaheer et al., "Deep Sets", 2017).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from cmsdl.models.mlp import MLP


class DeepSets(nn.Module):
    """phi per element → masked sum and mean → concatenated with the other features → rho → outputs."""

    def __init__(self, in_features: int, out_features: int, set_layout: Mapping[str, float],
                 phi: Sequence[int] = (64, 64, 64), rho: Sequence[int] = (128, 64), dropout: float = 0.0,
                 activation: str = "relu") -> None:
        super().__init__()
        start, length, fields = (int(set_layout[k]) for k in ("start", "length", "fields"))
        if start + length * fields > in_features:
            raise ValueError(f"model.net.set_layout: slots {start}..{start + length * fields} exceed the "
                             f"{in_features} input features")
        self.start, self.length, self.fields = start, length, fields
        self.count_index = int(set_layout["count_index"])
        self.register_buffer("count_scale", torch.tensor([set_layout["count_mean"], set_layout["count_std"]]))
        other = [i for i in range(in_features) if not start <= i < start + length * fields]
        self.register_buffer("other_index", torch.tensor(other, dtype=torch.long))
        self.phi = MLP(fields, phi[-1], hidden=phi[:-1], dropout=0.0, activation=activation)
        self.rho = MLP(2 * phi[-1] + len(other), out_features, hidden=rho, dropout=dropout, activation=activation)
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        elements = x[:, self.start:self.start + self.length * self.fields].reshape(-1, self.length, self.fields)
        count = x[:, self.count_index] * self.count_scale[1] + self.count_scale[0]
        slots = torch.arange(self.length, device=x.device, dtype=x.dtype)
        mask = (slots[None, :] < count[:, None] - 0.5).to(x.dtype).unsqueeze(-1)
        encoded = self.phi(elements) * mask
        total = encoded.sum(dim=1)
        mean = total / mask.sum(dim=1).clamp_min(1.0)
        return self.rho(torch.cat([total / self.length, mean, x.index_select(1, self.other_index)], dim=1))
