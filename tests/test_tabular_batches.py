"""TabularDataModule's batches: row numbers drawn as one tensor per batch (no list of ints per batch), in the same
order as torch's RandomSampler / WeightedRandomSampler with the same generator, so that seeds keep their meaning."""

from __future__ import annotations

from functools import partial

import torch
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler, WeightedRandomSampler

from cmsdl.data.tabular import BatchTensors, IndexBatches, shuffled_rows


def as_lists(batches: IndexBatches) -> list[list[int]]:
    out = []
    for rows in batches:
        assert isinstance(rows, torch.Tensor)
        out.append(rows.tolist())
    return out


def test_shuffled_oversampled_and_sequential_batches_match_torchs_samplers() -> None:
    n, size = 103, 10
    shuffled = IndexBatches(n, size, partial(shuffled_rows, n, torch.Generator().manual_seed(7)))
    reference = BatchSampler(RandomSampler(range(n), generator=torch.Generator().manual_seed(7)), size, False)
    assert as_lists(shuffled) == list(reference) and len(shuffled) == len(reference) == 11
    assert as_lists(shuffled) == list(reference)  # the second epoch draws again from the same generator
    weights = torch.linspace(0.1, 1, n, dtype=torch.float64)
    drawn = IndexBatches(n, size, partial(torch.multinomial, weights, n, True, generator=torch.Generator().manual_seed(3)))
    reference = BatchSampler(WeightedRandomSampler(weights, n, True, generator=torch.Generator().manual_seed(3)), size,
                             False)
    assert as_lists(drawn) == list(reference)
    assert as_lists(IndexBatches(n, size)) == list(BatchSampler(SequentialSampler(range(n)), size, False))


def test_a_tensor_of_rows_gathers_the_batch() -> None:
    data = BatchTensors(torch.arange(20.0).reshape(10, 2), torch.arange(10))
    x, y = data[torch.tensor([3, 1])]
    assert y.tolist() == [3, 1] and x.tolist() == [[6.0, 7.0], [2.0, 3.0]]
