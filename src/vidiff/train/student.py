"""A distillation run: a student trained on its teacher's predictions (docs/DISTILL.md).

A run with ``distill.teacher`` is an ordinary run (resumable, interruptible, locked, logged,
exportable) with three differences, each made here:

- its network starts from the teacher's EMA weights (`init_from_teacher`, at step 0); a
  guided student's guidance embedding, which the teacher lacks, starts at zero;
- its objective is the method's (`OBJECTIVES`), whose noise is the run's prior:
  - progressive: at the student's step j x_t is drawn at teacher time 2j, the target two
    teacher steps (`vidiff.diffusion.distill.progressive_target`);
  - guided: at the run's usual training times, the target the teacher's classifier-free
    guided prediction at a scale w drawn per sample, which the student gets as its input;
  - consistency: at the teacher's grid times, the target the student's own consistency
    function one teacher step later (`consistency_target`);
  a teacher that takes the guidance scale as its input (a guided student) passes it on:
  each sample's w goes to the teacher and the student alike;
- its spec samples as the student was made to (`student_sampling`), so `vidiff sample OUT`
  and `Pipeline.from_pretrained(OUT)` use it without flags.

`vidiff distill` chains such runs (`vidiff.train.rounds`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace

import torch
from torch import nn

from vidiff.cond import Cond
from vidiff.diffusion.distill import coefficients, consistency_loss, progressive_loss
from vidiff.diffusion.losses import snr_weight
from vidiff.diffusion.process import Grid, NoisingProcess, build_process
from vidiff.modelio.checkpoint import CheckpointError, load_checkpoint, load_weights
from vidiff.modelio.pipeline import Pipeline
from vidiff.sampling.guidance import ClassifierFreeGuidance
from vidiff.train.config import RunConfig
from vidiff.utils.config_io import ConfigError
from vidiff.utils.registry import Registry

__all__ = ["OBJECTIVES", "build_objective", "init_from_teacher", "student_sampling",
           "teacher_grid"]


def teacher_grid(process: NoisingProcess, steps: int) -> Grid:
    """The teacher's grid of `steps` steps: DDPM's "trailing" timesteps (whose halves are the
    student's own trailing grid), a flow's grid."""
    return process.grid(steps, process.nested_spacing)


def student_sampling(config: RunConfig) -> RunConfig:
    """`config` with its [sample] section the student's: progressive, half the teacher's
    steps with DDIM on trailing timesteps (DDPM) or Euler (flow); consistency, multistep
    consistency sampling with distill.student_steps; guided, the teacher's own (the scale is
    now an input). The teacher's guidance scale stays."""
    d, process = config.distill, build_process(config.diffusion)
    if d.method == "guided":
        return config
    sampler, steps = ((process.deterministic_sampler, d.teacher_steps // 2)
                      if d.method == "progressive" else ("consistency", d.student_steps))
    sample = replace(config.sample, sampler=sampler, eta=None, steps=steps,
                     spacing=process.nested_spacing)
    return replace(config, sample=sample)


def _teacher_pipeline(config: RunConfig, device) -> Pipeline:
    try:
        return Pipeline.from_pretrained(config.distill.teacher, device=device)
    except (CheckpointError, OSError, ValueError) as err:
        raise ConfigError(f"distill.teacher {config.distill.teacher!r}: {err}") from None


def init_from_teacher(config: RunConfig, raw: nn.Module, average: nn.Module) -> str:
    """Load the teacher's EMA weights into the student and its EMA (a new run, before the
    network is wrapped); what the teacher lacks of a guided student (its guidance embedding)
    keeps the student's own start. The line that says so."""
    source = config.distill.teacher
    try:
        ckpt = load_checkpoint(source)
        weights = ckpt.weights("ema")
        own = {k: v for k, v in raw.state_dict().items()
               if "guidance_embed." in k and k not in weights}
        weights = {**weights, **own}
        load_weights(average, weights, str(ckpt.path))
        load_weights(raw, weights, str(ckpt.path))
    except CheckpointError as err:
        raise ConfigError(f"distill.teacher {source!r}: {err}") from None
    d = config.distill
    into = {"progressive": f"{d.teacher_steps // 2} steps",
            "consistency": f"a consistency model ({d.student_steps} steps)",
            "guided": f"one call per step at guidance {d.guidance_min:g}..{d.guidance_max:g}"}
    return (f"distilling {source} (step {ckpt.step}, {d.method}, the teacher's "
            f"{d.teacher_steps} steps)" if d.method != "guided" else
            f"distilling {source} (step {ckpt.step}, guided)") + f" into {into[d.method]}"


class StudentObjective(ABC):
    """What every method shares: the frozen teacher as an x0 function of its grid, the
    guidance scale of each sample, and the draw of each sample (`sample_t`): a (1, 2)
    float64 row [the method's time index or time, the sample's guidance scale], which the
    Stepper stacks to (B, 2) and hands back to `__call__`. `target`: the student's EMA,
    for a method with a target network (consistency)."""

    def __init__(self, config: RunConfig, process: NoisingProcess, device,
                 target: nn.Module | None = None):
        pipe = _teacher_pipeline(config, device)
        self.teacher = process.denoiser_of(pipe.model.eval().requires_grad_(False))
        d = config.distill
        self.process, self.distill = process, d
        self.teacher_guided = pipe.spec.takes_guidance  # its input is the scale
        # the student takes the scale as its input: a guided run, or a guided teacher's student
        self.student_guided = d.method == "guided" or self.teacher_guided
        self.grid = teacher_grid(process, d.teacher_steps)
        self.target = target

    @abstractmethod
    def draw_time(self, generator: torch.Generator | None, device) -> torch.Tensor:
        """The method's time of one sample (1,)."""

    def process_time(self, time: torch.Tensor) -> torch.Tensor:
        """The process time (B,) of the draws' method times `time` (B,) float64: the teacher
        grid's time at a grid index, or the time itself."""
        return time.to(self.grid.t.dtype)

    def level(self, draw: torch.Tensor) -> torch.Tensor:
        """The noise level (B,) of each draw (B, 2) (the loss by level, `vidiff.train.levels`)."""
        return self.process.level(self.process_time(draw[:, 0]).to(draw.device))

    def sample_t(self, batch: int, generator: torch.Generator | None = None,
                 device=None) -> torch.Tensor:
        """`batch` draws (batch, 2) float64: [time, guidance scale] (class doc)."""
        rows = []
        for _ in range(batch):
            time = self.draw_time(generator, device).double()
            u = torch.rand(1, generator=generator, device=device, dtype=torch.float64)
            scale = self.distill.guidance_min + (self.distill.guidance_max
                                                 - self.distill.guidance_min) * u
            rows.append(torch.stack([time, scale], dim=1))
        return torch.cat(rows)

    def teacher_denoiser(self, scales: torch.Tensor):
        """The teacher's prediction function of the student's conditions: with the scale as
        its input, or in classifier-free guidance at each sample's scale (guided) or at
        distill.guidance_scale, the student's scale input left out."""
        if self.teacher_guided:
            return self.teacher  # the conditions carry the scales
        scale = scales if self.distill.method == "guided" else self.distill.guidance_scale
        guided = ClassifierFreeGuidance(self.teacher, scale)

        def denoise(xt: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
            return guided(xt, t, **{k: v for k, v in kwargs.items() if k != "guidance"})

        return denoise

    def conditions(self, cond: Cond, scales: torch.Tensor) -> dict:
        """The student's (and the teacher's) condition keywords: with the scales when the
        student takes them."""
        if self.student_guided:
            cond = cond.replace(guidance=scales.float())
        return cond.kwargs()

    def x0_function(self, denoise, kwargs: dict):
        """x0_of(x, i): the teacher's x0 at its grid times i (B,), unclipped (measured: a
        clipped target makes a flow student worse; docs/DISTILL.md)."""
        def x0_of(x: torch.Tensor, i) -> torch.Tensor:
            t = self.grid.t.to(x.device)[i]
            a, s = coefficients(self.grid, i, x)
            return self.process.x0_eps(denoise(x, t, **kwargs).to(x.dtype), x, a, s)[0]

        return x0_of

    def __call__(self, net, x0: torch.Tensor, draw: torch.Tensor, noise: torch.Tensor,
                 cond: Cond) -> torch.Tensor:
        """Per-sample loss (B,) of the student `net`; the teacher sees the student's
        conditions (dropped ones included)."""
        scales = draw[:, 1].to(x0.device)
        kwargs = self.conditions(cond, scales)
        teacher = self.teacher_denoiser(scales)
        return self.loss(net, x0, draw[:, 0].to(x0.device), noise, kwargs, teacher)

    @abstractmethod
    def loss(self, net, x0, time, noise, kwargs, teacher) -> torch.Tensor:
        """Per-sample loss (B,) of `net` at the draws' method times `time` (B,), the
        student's condition keywords `kwargs`, the teacher's prediction function."""


OBJECTIVES: Registry[type[StudentObjective]] = Registry("distill.method")


@OBJECTIVES.register("progressive")
class ProgressiveObjective(StudentObjective):
    """Progressive distillation (Salimans & Ho 2022, algorithm 2): the student's step j is
    uniform over its k = teacher_steps / 2 steps."""

    def draw_time(self, generator, device):
        return torch.randint(0, len(self.grid) // 2, (1,), generator=generator, device=device)

    def process_time(self, time):
        return self.grid.t[2 * time.long().cpu()]  # x_t is drawn at teacher time 2j

    def loss(self, net, x0, time, noise, kwargs, teacher):
        x0_of = self.x0_function(teacher, kwargs)
        return progressive_loss(net, self.process, x0_of, self.grid, x0, time.long(), noise,
                                kwargs)


@OBJECTIVES.register("consistency")
class ConsistencyObjective(StudentObjective):
    """Consistency distillation (Song et al. 2023, algorithm 2): the teacher's grid time i
    is uniform over its teacher_steps steps; one teacher DDIM / Euler step per sample; the
    target network theta^- is the run's EMA (decay train.ema_decay, eq. 8's mu). Measured
    on the built-in data: with the student itself as target (Song & Dhariwal's choice for
    consistency *training*) the 1-step student drifted away from the teacher's trajectory
    ends (MSE 0.14 after 1000 steps) where the EMA target gets 0.03 in 200 (docs/DISTILL.md)."""

    def draw_time(self, generator, device):
        return torch.randint(0, len(self.grid), (1,), generator=generator, device=device)

    def process_time(self, time):
        return self.grid.t[time.long().cpu()]

    def loss(self, net, x0, time, noise, kwargs, teacher):
        x0_of = self.x0_function(teacher, kwargs)
        return consistency_loss(net, self.process, x0_of, self.grid, x0, time.long(), noise,
                                kwargs, self.target)


@OBJECTIVES.register("guided")
class GuidedObjective(StudentObjective):
    """Guidance distillation, stage one (Meng et al. 2023, eq. 5): at the run's training
    times and weighting, the student given w regresses the teacher's guided prediction
    x^w = x_u + w (x_c - x_u) (vidiff's scale w: 1 is the conditional model), in the
    process's prediction (every prediction is affine in x0 at fixed x_t, so mixing in it is
    mixing in x0)."""

    def __init__(self, config: RunConfig, process: NoisingProcess, device,
                 target: nn.Module | None = None):
        super().__init__(config, process, device, target)
        self.loss_config = config.loss

    def draw_time(self, generator, device):
        return self.process.sample_t(1, generator=generator, device=device)

    def loss(self, net, x0, time, noise, kwargs, teacher):
        t = self.process_time(time)  # DDPM's int64 steps, a flow's float times
        xt = self.process.q_sample(x0, t, noise)
        with torch.no_grad():
            target = teacher(xt, t, **kwargs)
        out = net(xt, self.process.network_time(t), **kwargs)
        per_sample = (out.float() - target.float()).square().flatten(1).mean(1)
        return per_sample * snr_weight(self.process, t, self.loss_config)


def build_objective(config: RunConfig, process: NoisingProcess, device,
                    target: nn.Module | None = None) -> StudentObjective:
    """The objective of distill.method for a run with a teacher; `target`, the student's EMA
    (consistency's target network)."""
    return OBJECTIVES.get(config.distill.method)(config, process, device, target)
