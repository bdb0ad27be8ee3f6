"""What every cmsdl DataModule is: the protocol that train, eval, export and the checkpoint rely on, the split
names and their fraction check, and the dataloader hooks they share (train shuffled; val, test, predict = test).

Lightning's own hooks (setup, *_dataloader) come from pl.LightningDataModule; the protocol adds what cmsdl reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cmsdl.errors import ConfigError

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

SPLITS: tuple[str, str, str] = ("train", "val", "test")


def check_split_fractions(fractions: Sequence[float], key: str = "data.split") -> tuple[float, float, float]:
    """Three positive fractions summing to 1 (train, val, test), or one ConfigError naming `key`."""
    try:
        split = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected three positive fractions summing to 1, got {fractions!r}") from None
    if len(split) != 3 or min(split) <= 0 or abs(sum(split) - 1) > 1e-6:
        raise ConfigError(f"{key}: expected three positive fractions summing to 1, got {list(split)}")
    return split  # type: ignore[return-value]


class SplitLoaders:
    """Mixin for a LightningDataModule that implements `_loader(split_name, shuffle) -> DataLoader`."""

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def split_loader(self, name: str) -> DataLoader:
        """Batches of one split, in order."""
        return self._loader(name, shuffle=False)


class CmsdlDataModule(SplitLoaders):
    """The protocol of cmsdl's LightningDataModules, declared by each of them as its first base
    (`class TabularDataModule(CmsdlDataModule, pl.LightningDataModule)`); train, eval, export and the checkpoint
    read a DataModule through these members only.

    - `task`: "classification" or "regression", the one place train, eval and export learn it from;
    - `class_names`: class labels (classification) or target names (regression), in output order;
    - `net_inputs()`: keyword arguments the network needs from the data (e.g. n_features, in_channels, task);
    - `preprocessing()`: the torch-free recipe from raw input to model input, stored in checkpoints and in the
      ONNX metadata (`kind`, `source.kind`, scaling, ...; see cmsdl.inference.metadata);
    - `split_loader(name)` for name in SPLITS, and Lightning's train/val/test/predict_dataloader (SplitLoaders);
    - `state_dict()` / `load_state_dict(state)`: what was fitted on the training split, kept in the checkpoint.
    """

    task: str = "classification"

    @property
    def class_names(self) -> list[str]:
        raise NotImplementedError

    def net_inputs(self) -> dict[str, Any]:
        raise NotImplementedError

    def preprocessing(self) -> dict[str, Any]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError
