"""A held-out split of a dataset: the clips a run never trains on, for its validation loss.

The split depends on nothing but the dataset's length and the fraction: the held-out clips
are the first ``round(fraction * n)`` of a permutation of ``0..n-1`` drawn with a fixed seed,
so two runs on the same data hold out the same clips whatever their training seeds, and a
resumed run holds out what it held out before.

>>> from vidiff.data import make_synthetic
>>> from vidiff.data.split import held_out_split
>>> train, val = held_out_split(make_synthetic("bouncing_balls", num_videos=100), 0.1)
>>> len(train), len(val)
(90, 10)
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = ["SPLIT_SEED", "DatasetView", "held_out_split", "split_indices"]

SPLIT_SEED = 0x5EED_5A1  # the permutation's seed: the same split for every run


def split_indices(n: int, fraction: float) -> tuple[list[int], list[int]]:
    """(training indices, held-out indices) of a dataset of `n` clips, both ascending; a
    ValueError unless 0 < fraction < 1 leaves at least one clip on each side."""
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    count = round(fraction * n)
    if not 0 < count < n:
        raise ValueError(f"a held-out fraction of {fraction} of {n} clips leaves "
                         f"{count} held out and {n - count} to train on: each needs one")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    held = sorted(perm[:count].tolist())
    kept = sorted(perm[count:].tolist())
    return kept, held


class DatasetView(Dataset):
    """The items `indices` of `dataset`, in that order; what the dataset says of itself
    (class names, frame rate, captions, ``set_epoch``) passes through."""

    def __init__(self, dataset: Dataset, indices: list[int], role: str):
        self.dataset, self.indices, self.role = dataset, list(indices), role

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.dataset[self.indices[index]]

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("dataset", "indices", "role"):
            raise AttributeError(name)
        return getattr(self.dataset, name)  # class_names, clip_fps, set_epoch, ...

    def __repr__(self) -> str:
        return f"{self.role} {len(self)} of {type(self.dataset).__name__}"


def held_out_split(dataset: Dataset, fraction: float) -> tuple[DatasetView, DatasetView]:
    """(the training view, the held-out view) of `dataset` (`split_indices`). The held-out
    view reads a shallow copy of the dataset, so the training epochs (`set_epoch`: a
    folder's crops and clip offsets) never change its clips."""
    kept, held = split_indices(len(dataset), fraction)
    return (DatasetView(dataset, kept, "training"),
            DatasetView(copy.copy(dataset), held, "held-out"))
