"""A distillation run: a student that takes in one step what its teacher takes in two.

A run with ``distill.teacher`` is an ordinary run (resumable, interruptible, locked, logged,
exportable) with three differences, each made here:

- its network starts from the teacher's EMA weights (`init_from_teacher`, at step 0);
- its objective is `ProgressiveObjective`: at the student's step j (uniform over its k
  steps) x_t is drawn at teacher time 2j, noise from the run's prior, and the target is
  `vidiff.diffusion.distill.progressive_target` (two teacher steps, with the teacher's
  guidance) in the process's prediction;
- its spec samples with the student's k steps (`student_sampling`): DDIM on DDPM's
  "trailing" timesteps (every other teacher time), Euler on a flow's grid, so
  `vidiff sample OUT` and `Pipeline.from_pretrained(OUT)` use it without flags.

`vidiff distill` chains such runs into rounds (8 -> 4 -> 2 -> 1 steps, each round's teacher the
previous student); `vidiff.commands.distill`.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from vidiff.cond import Cond
from vidiff.diffusion.distill import coefficients, halve, progressive_loss
from vidiff.diffusion.process import Grid, NoisingProcess, build_process
from vidiff.modelio.checkpoint import CheckpointError, load_checkpoint, load_weights
from vidiff.modelio.pipeline import Pipeline
from vidiff.sampling.guidance import ClassifierFreeGuidance
from vidiff.train.config import RunConfig
from vidiff.utils.config_io import ConfigError

__all__ = ["ProgressiveObjective", "init_from_teacher", "student_sampling", "teacher_grid"]


def teacher_grid(process: NoisingProcess, steps: int) -> Grid:
    """The teacher's grid of `steps` steps: DDPM's "trailing" timesteps (whose halves are the
    student's own trailing grid), a flow's grid."""
    return process.grid(steps, process.nested_spacing)


def student_sampling(config: RunConfig) -> RunConfig:
    """`config` with its [sample] section the student's: half the teacher's steps, DDIM on
    trailing timesteps (DDPM) or Euler (flow), the teacher's guidance scale."""
    process = build_process(config.diffusion)
    sample = replace(config.sample, sampler=process.deterministic_sampler, eta=None,
                     steps=config.distill.teacher_steps // 2, spacing=process.nested_spacing)
    return replace(config, sample=sample)


def _teacher_pipeline(config: RunConfig, device) -> Pipeline:
    try:
        return Pipeline.from_pretrained(config.distill.teacher, device=device)
    except (CheckpointError, OSError, ValueError) as err:
        raise ConfigError(f"distill.teacher {config.distill.teacher!r}: {err}") from None


def init_from_teacher(config: RunConfig, raw: nn.Module, average: nn.Module) -> str:
    """Load the teacher's EMA weights into the student and its EMA (a new run, before the
    network is wrapped); the line that says so."""
    source = config.distill.teacher
    try:
        ckpt = load_checkpoint(source)
        weights = ckpt.weights("ema")
        load_weights(average, weights, str(ckpt.path))
        load_weights(raw, weights, str(ckpt.path))
    except CheckpointError as err:
        raise ConfigError(f"distill.teacher {source!r}: {err}") from None
    return (f"distilling {source} (step {ckpt.step}, its {config.distill.teacher_steps} steps)"
            f" into {config.distill.teacher_steps // 2} steps")


class ProgressiveObjective:
    """Progressive distillation's loss for the trainer's steps (module doc): `sample_t`
    draws the student's step of each sample, `__call__` gives each sample's loss."""

    def __init__(self, config: RunConfig, process: NoisingProcess, device,
                 clip_x0: bool):
        pipe = _teacher_pipeline(config, device)
        teacher = pipe.model.eval().requires_grad_(False)
        self.process, self.clip_x0 = process, clip_x0
        self.grid = teacher_grid(process, config.distill.teacher_steps)
        self.student = halve(self.grid)
        self.denoise = ClassifierFreeGuidance(process.denoiser_of(teacher),
                                              config.distill.guidance_scale)

    def sample_t(self, batch: int, generator: torch.Generator | None = None,
                 device=None) -> torch.Tensor:
        """The student's steps j (B,) int64, uniform over its k steps."""
        return torch.randint(0, len(self.student), (batch,), generator=generator,
                             device=device)

    def teacher_x0(self, cond: dict):
        """x0_of(x, i): the teacher's x0 at its grid times i (B,) under the conditions
        `cond`, clipped as its sampler clips it."""
        def x0_of(x: torch.Tensor, i) -> torch.Tensor:
            t = self.grid.t.to(x.device)[i]
            a, s = coefficients(self.grid, i, x)
            x0 = self.process.x0_eps(self.denoise(x, t, **cond).to(x.dtype), x, a, s)[0]
            return x0.clamp(-1, 1) if self.clip_x0 else x0

        return x0_of

    def __call__(self, net, x0: torch.Tensor, j: torch.Tensor, noise: torch.Tensor,
                 cond: Cond) -> torch.Tensor:
        """Per-sample loss (B,) of the student `net` (`progressive_loss`); the teacher sees
        the student's conditions (dropped ones included)."""
        kwargs = cond.kwargs()
        return progressive_loss(net, self.process, self.teacher_x0(kwargs), self.grid, x0, j,
                                noise, kwargs)
