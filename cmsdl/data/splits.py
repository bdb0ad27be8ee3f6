"""The dataloader hooks every cmsdl DataModule shares: train (shuffled), val, test, predict (= test), any split."""

from __future__ import annotations

from torch.utils.data import DataLoader


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
