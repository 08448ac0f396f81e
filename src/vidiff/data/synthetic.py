"""Synthetic video datasets generated in code: the embedded default data of vidiff.

Each dataset is a map-style `torch.utils.data.Dataset` whose item ``i`` is a pure function of
``(config.seed, i)``: it is rendered on the fly from a private `torch.Generator` seeded from
that pair (never from global random state), so any worker, process or machine produces the same
clip. `SyntheticVideoDataset.sample` draws a fresh clip from a caller's generator instead.

Items are dicts with at least:

- ``"video"``: float32 ``(3, F, H, W)`` in [-1, 1];
- ``"label"``: int64 class index (``dataset.class_names[label]`` names it);
- ``"caption"``: an English description of the clip;
- ``"positions"``: float32 ``(N, F, 2)`` ground-truth object centers ``(x, y)`` in pixels
  (pixel centers on integers, x = column, y = row), rows past ``"num_objects"`` are NaN;
- ``"num_objects"``: int64 number of objects in the clip.

`make_synthetic` builds one by name: ``make_synthetic("bouncing_balls", size=64)``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset

from vidiff.utils.registry import Registry
from vidiff.utils.seeding import seeded_generator

__all__ = ["SYNTHETIC", "SyntheticVideoDataset", "item_generator", "make_synthetic"]

#: Registry of the synthetic datasets: ``SYNTHETIC.get("bouncing_balls")``.
SYNTHETIC: Registry[type[SyntheticVideoDataset]] = Registry("synthetic dataset")


def item_generator(seed: int, index: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, index)``, well mixed (numpy's SeedSequence).

    Nearby pairs such as ``(0, 1)`` and ``(1, 0)`` give unrelated streams.
    """
    return seeded_generator(seed, index)


def make_synthetic(name: str, config: Any = None, **overrides: Any) -> SyntheticVideoDataset:
    """The synthetic dataset registered as ``name``, configured by ``config`` and/or fields.

    >>> ds = make_synthetic("bouncing_balls", size=64, frames=16)
    """
    return SYNTHETIC.get(name)(config, **overrides)


class SyntheticVideoDataset(Dataset, ABC):
    """Base class: config handling, per-item seeding, indexing. Subclasses implement `sample`.

    ``config`` is an instance of the subclass's ``config_class`` (default: its defaults);
    keyword ``overrides`` replace single fields: ``BouncingBalls(size=64, seed=1)``.
    """

    config_class: ClassVar[type]

    def __init__(self, config: Any = None, **overrides: Any):
        config = self.config_class() if config is None else config
        if not isinstance(config, self.config_class):
            name = self.config_class.__name__
            raise TypeError(f"expected a {name}, got {type(config).__name__}")
        fields = {f.name for f in dataclasses.fields(config)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(
                f"unknown {self.config_class.__name__} fields {unknown}; valid fields: "
                f"{', '.join(sorted(fields))}"
            )
        self.config = dataclasses.replace(config, **overrides)  # also re-runs validation

    @property
    @abstractmethod
    def class_names(self) -> list[str]:
        """The class names; ``class_names[label]`` describes items with that label."""

    @property
    def num_classes(self) -> int:
        """The number of classes (labels are ``0 .. num_classes - 1``)."""
        return len(self.class_names)

    @abstractmethod
    def sample(self, generator: torch.Generator) -> dict[str, Any]:
        """A random clip drawn from ``generator`` (an item dict, see the module docstring)."""

    def __len__(self) -> int:
        return self.config.num_videos

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} videos")
        return self.sample(item_generator(self.config.seed, index % n))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


def uniform(generator: torch.Generator, low: float, high: float, n: int = 1) -> torch.Tensor:
    """``n`` floats uniform in ``[low, high)`` from ``generator``."""
    return low + (high - low) * torch.rand(n, generator=generator)


def randint(generator: torch.Generator, low: int, high: int) -> int:
    """An int uniform in ``[low, high]`` (inclusive) from ``generator``."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def check_range(name: str, pair: tuple[float, float], low: float = 0.0) -> None:
    """ValueError unless ``low <= pair[0] <= pair[1]``."""
    if len(pair) != 2 or not low <= pair[0] <= pair[1]:
        raise ValueError(f"{name} must be a pair (lo, hi) with {low} <= lo <= hi, got {pair}")
