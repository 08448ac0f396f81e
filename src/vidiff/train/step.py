"""One optimizer step: the samples' draws, the loss over the micro-batches, the update.

`Stepper` holds what a step touches (the network, optimizer, scaler, EMA, diffusion and
prior) and nothing about the run around it: the step number, the data position and the
learning rate come in as arguments, so a step is a function of its inputs (the trainer owns
the counters, the loop the schedule and the time budget).

Every training sample's randomness (its timestep t, its noise and its condition dropout)
comes from a `torch.Generator` seeded from ``(train.seed, g)``, g the sample's global position
in the stream of training samples: the same sample gets the same draws whatever the number
of processes, and a resumed run continues the draws of an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vidiff.cond import Cond
from vidiff.diffusion.losses import diffusion_loss
from vidiff.diffusion.priors import NoisePrior
from vidiff.diffusion.process import NoisingProcess
from vidiff.train import distributed
from vidiff.train.config import RunConfig
from vidiff.train.ema import EMA
from vidiff.train.levels import LevelBins
from vidiff.train.result import NonFiniteLossError
from vidiff.train.sharding import sync_gradients
from vidiff.utils.loaded import is_dtensor
from vidiff.utils.seeding import mixed_seed

__all__ = ["Stepper", "autocast_for", "sample_generator"]


def autocast_for(precision: str, device: torch.device):
    """The forward's context for train.precision: bf16 / fp16 autocast, or none (fp32)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()


def sample_generator(seed: int, position: int, device: torch.device) -> torch.Generator:
    """The generator of the training sample at global `position` (see the module doc)."""
    state = mixed_seed(seed, 0x7EED, position) & (2**63 - 1)  # CUDA generators: 63 bits
    return torch.Generator(device=device).manual_seed(state)


@dataclass
class Stepper:
    """The parts of one optimizer step (see the module docstring)."""

    config: RunConfig
    dist: distributed.DistInfo
    raw: nn.Module  # the model whose parameters the optimizer updates
    ddp: nn.Module  # raw (FSDP: sharded), or its DDP wrapper: what syncs the gradients
    net: nn.Module  # what the loss calls: ddp, or ddp compiled
    ema: EMA
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    diffusion: NoisingProcess
    prior: NoisePrior
    conditions: Callable[[dict[str, Any], torch.Tensor], Cond]  # (batch, dropout uniforms)
    # another loss than the diffusion loss (a distillation run's, `vidiff.train.student`):
    # objective(net, x0, t, noise, cond) -> (B,) with its own sample_t and level
    objective: Callable[..., torch.Tensor] | None = None

    @property
    def device(self) -> torch.device:
        return self.dist.device

    def __post_init__(self):
        bins = self.config.train.loss_bins
        # the per-sample losses by noise level since the last log record (`LevelBins`)
        on = self.device if self.device.type != "mps" else torch.device("cpu")  # float64
        self.levels = LevelBins(bins, on) if bins else None

    def level(self, t: torch.Tensor) -> torch.Tensor:
        """The noise level in [0, 1] (B,) of each sample's draw `t`."""
        return (self.objective or self.diffusion).level(t.to(self.levels.sums.device))

    @property
    def micro_batch(self) -> int:
        """Videos per micro-step over all processes."""
        return self.config.data.batch_size * self.dist.data_world

    @property
    def batch(self) -> int:
        """Videos per optimizer step over all processes."""
        return self.micro_batch * self.config.train.grad_accum

    def draws(self, position: int, shape: tuple[int, ...]):
        """t (B,), noise (B, C, F + K, H, W) and the condition-dropout uniforms (B, 1 + K)
        (the clip's, then each image's) of this rank's samples of the global micro-batch
        that starts at `position`, each sample from its own generator."""
        d, device = self.config.data, self.device
        first = position + self.dist.data_rank * d.batch_size  # a sequence group's shared
        ts, noises, drops = [], [], []
        for i in range(d.batch_size):
            g = sample_generator(self.config.train.seed, first + i, device)
            ts.append((self.objective or self.diffusion).sample_t(1, generator=g,
                                                                  device=device))
            noises.append(self.prior.sample((1, *shape[1:]), generator=g,
                                            num_images=d.num_images, device=device))
            drops.append(torch.rand(1 + d.num_images, generator=g, device=device))
        return torch.cat(ts), torch.cat(noises), torch.stack(drops)

    def micro_step(self, batch: dict[str, Any], position: int, sync: bool) -> torch.Tensor:
        """Forward and backward of one micro-batch (gradients add up); its mean loss."""
        x0 = batch["video"].to(self.device, non_blocking=True)  # (B, C, F + K, H, W)
        t, noise, drops = self.draws(position, tuple(x0.shape))
        cond = self.conditions(batch, drops)
        with sync_gradients(self.ddp, sync):
            with autocast_for(self.config.train.precision, self.device):
                if self.objective is not None:
                    per_sample = self.objective(self.net, x0, t, noise, cond)
                else:
                    per_sample = diffusion_loss(self.net, self.diffusion, x0, t, noise,
                                                self.config.loss, cond)  # (B,)
            if self.levels is not None:
                self.levels.add(self.level(t), per_sample.detach())
            loss = per_sample.mean()
            # x sequence_parallel: the ranks' gradients are averaged, a group's are its
            # tokens' shares of one sample's gradient, whose sum is that gradient
            scale = self.dist.sequence / self.config.train.grad_accum
            self.scaler.scale(loss * scale).backward()
        return loss.detach()

    def __call__(self, batches: Iterator[dict[str, Any]], *, step: int, position: int,
                 lr_factor: float, last_checkpoint=None) -> tuple[float, float]:
        """Optimizer step `step` + 1 over ``grad_accum`` micro-batches starting at data
        `position`, at the groups' peak LR times `lr_factor`; (mean loss, grad norm). A
        non-finite loss raises `NonFiniteLossError` before any update."""
        t = self.config.train
        total = torch.zeros((), device=self.device)
        for m in range(t.grad_accum):
            total += self.micro_step(next(batches), position + m * self.micro_batch,
                                     sync=m == t.grad_accum - 1)
        loss = distributed.all_mean(total / t.grad_accum, self.dist).item()
        if not math.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(step + 1, loss, last_checkpoint)
        self.scaler.unscale_(self.optimizer)
        params = [p for group in self.optimizer.param_groups for p in group["params"]
                  if p.grad is not None]  # the trained ones (no walk of the module tree)
        # the global norm (FSDP: over every rank's shards); grad_clip = 0 measures only
        norm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip or math.inf)
        if is_dtensor(norm):  # a sharded norm: its value on every rank
            norm = norm.full_tensor()
        set_lr(self.optimizer, lr_factor)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.raw, step + 1)
        return loss, float(norm)


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Each group's LR: its peak LR times `factor` (the schedule's at this step)."""
    for group in optimizer.param_groups:
        group["lr"] = group["peak_lr"] * factor
