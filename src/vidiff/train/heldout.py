"""The held-out validation loss: a smooth curve that compares runs (docs/TRAINING.md).

The training loss of an interval mixes whatever noise levels its samples drew; this loss
holds everything fixed but the weights. It is the diffusion loss (unweighted, the run's
prediction) of the EMA weights, what the samples use, on

- the first ``train.val_clips`` held-out clips (``data.val_fraction`` of the data, the same
  clips for every run on it, `vidiff.data.split`; or ``data.val_data``), conditions kept;
- ``train.val_levels`` noise levels u_k = (k + 1/2) / L, the midpoints of L equal bins of
  the level (DDPM t / T, a flow's t: `NoisingProcess.at_level`);
- one noise draw per clip and level from the run's prior, its generator seeded by (clip,
  level) alone: the same draws at every evaluation, after a resume, and in every run with the
  same prior and data, whatever its seed, batch or number of processes.

Every process evaluates the whole set (the EMA's forward is a collective under FSDP and
sequence parallelism), so every rank returns the same record:

    {"val_loss": 0.052, "val_loss_by_level": [0.21, 0.06, 0.03, 0.01, 0.004]}
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from vidiff.diffusion.losses import LossConfig, diffusion_loss
from vidiff.diffusion.priors import NoisePrior
from vidiff.diffusion.process import NoisingProcess
from vidiff.train.conditions import batch_conditions
from vidiff.train.config import RunConfig
from vidiff.train.data import collate
from vidiff.train.step import autocast_for
from vidiff.utils.seeding import seeded_generator

__all__ = ["VAL_SEED", "HeldOutLoss", "validation_levels"]

VAL_SEED = 0x5EED_0A1  # the noise draws' seed, mixed with (clip, level): fixed for every run


def validation_levels(count: int) -> torch.Tensor:
    """The `count` fixed noise levels (count,) float64: the midpoints (k + 1/2) / count."""
    if count < 1:
        raise ValueError(f"train.val_levels must be >= 1, got {count}")
    return (torch.arange(count, dtype=torch.float64) + 0.5) / count


class HeldOutLoss:
    """The validation loss of a run (module doc): call it with the EMA model. `backbone`
    (None: unconditional) and `text_encoder` give the clips' conditions, as in training
    (`batch_conditions`) but of videos alone, none dropped."""

    def __init__(self, data: Dataset, config: RunConfig, process: NoisingProcess,
                 prior: NoisePrior, backbone, text_encoder, device: torch.device):
        t = config.train
        self.data, self.process, self.prior = data, process, prior
        self.device = device
        self.config = replace(config, data=replace(config.data, num_images=0))  # no images
        self.backbone, self.text_encoder = backbone, text_encoder
        self.clips = min(t.val_clips, len(data))
        self.batch = config.data.batch_size
        self.levels = validation_levels(t.val_levels)
        self.times = process.at_level(self.levels)  # (L,) the process times
        self.precision = t.precision

    def _batch(self, start: int, stop: int) -> dict[str, Any]:
        """Clips start..stop-1 in `collate`'s form, one condition slot each (no images)."""
        items = [self.data[i] for i in range(start, stop)]
        return collate([{"video": it["video"], "labels": [int(it.get("label", -1))],
                         "captions": [str(it.get("caption", ""))]} for it in items])

    def _noise(self, start: int, stop: int, shape: tuple[int, ...], k: int) -> torch.Tensor:
        """The fixed prior draws (stop - start, *shape) of clips start..stop-1 at level k."""
        return torch.cat([self.prior.sample((1, *shape), seeded_generator(VAL_SEED, i, k),
                                            device="cpu") for i in range(start, stop)])

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, Any]:
        """{"val_loss": the mean over levels, "val_loss_by_level": one mean per level}."""
        was_training = model.training
        model.eval()
        sums = torch.zeros(len(self.levels), dtype=torch.float64)
        for start in range(0, self.clips, self.batch):
            stop = min(start + self.batch, self.clips)
            batch = self._batch(start, stop)
            x0 = batch["video"].to(self.device)  # (n, C, F, H, W)
            keep = torch.ones(stop - start, 1, device=self.device)  # uniforms: none dropped
            cond = batch_conditions(batch, keep, self.config, self.backbone, self.text_encoder,
                                    self.device)
            for k, t in enumerate(self.times.tolist()):
                noise = self._noise(start, stop, tuple(x0.shape[1:]), k).to(self.device)
                times = torch.full((stop - start,), t, dtype=self.times.dtype,
                                   device=self.device)
                with autocast_for(self.precision, self.device):
                    loss = diffusion_loss(model, self.process, x0, times, noise,
                                          LossConfig(), cond)  # (n,)
                sums[k] += loss.double().sum().cpu()
        model.train(was_training)
        per_level = (sums / self.clips).tolist()
        return {"val_loss": sum(per_level) / len(per_level), "val_loss_by_level": per_level}

