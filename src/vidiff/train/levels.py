"""The training loss by noise level: the diffusion loss depends on the sampled time far more
than on progress, so each logged interval also records the loss in bins of the training time.

A sample at process time t falls in bin ``floor(u * bins)`` of u = `NoisingProcess.level(t)`
in [0, 1] (DDPM's t / T, a flow's t; u = 1 goes to the last bin). Each bin's record is the mean
loss of the interval's samples in it over every process, None when none fell there:

    {"step": 200, "loss": 0.081, ..., "loss_by_level": [0.41, 0.12, ..., 0.01],
     "samples_by_level": [16, 22, ..., 19]}
"""

from __future__ import annotations

import torch

from vidiff.train import distributed
from vidiff.train.distributed import DistInfo

__all__ = ["LevelBins", "bin_index"]


def bin_index(level: torch.Tensor, bins: int) -> torch.Tensor:
    """The bin (int64, like `level`) of each level in [0, 1]: floor(u * bins), 1 -> bins - 1."""
    return (level.double() * bins).floor().long().clamp(0, bins - 1)


class LevelBins:
    """Sums and counts of per-sample losses by level bin since the last `record`."""

    def __init__(self, bins: int, device: torch.device | str = "cpu"):
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        self.bins = bins
        self.sums = torch.zeros(bins, dtype=torch.float64, device=device)
        self.counts = torch.zeros(bins, dtype=torch.float64, device=device)

    def add(self, level: torch.Tensor, loss: torch.Tensor) -> None:
        """Per-sample levels (B,) in [0, 1] and losses (B,) of one micro-batch."""
        if level.shape != loss.shape or level.ndim != 1:
            raise ValueError(f"level and loss must both be (B,), got {tuple(level.shape)} and "
                             f"{tuple(loss.shape)}")
        index = bin_index(level.to(self.sums.device), self.bins)
        self.sums.index_add_(0, index, loss.detach().to(self.sums))
        self.counts.index_add_(0, index, torch.ones_like(self.sums[index]))

    def record(self, dist: DistInfo | None = None) -> dict[str, list]:
        """The interval's means and counts over every process (None: an empty bin); then
        starts a new interval."""
        both = torch.stack([self.sums, self.counts])  # (2, bins)
        if dist is not None:  # a sequence-parallel group's ranks hold the same samples
            both = distributed.all_sum(both, dist) / dist.sequence
        sums, counts = both.tolist()
        self.sums.zero_()
        self.counts.zero_()
        return {"loss_by_level": [s / c if c else None for s, c in zip(sums, counts, strict=True)],
                "samples_by_level": [int(c) for c in counts]}
