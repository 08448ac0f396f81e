"""Flow matching (rectified flow): the straight path from data to noise, under any noise prior.

    x_t = (1 - t) x0 + t eps,   t in [0, 1],   v = dx_t/dt = eps - x0     (Liu et al. 2023;
                                                                          Lipman et al. 2023)

The network predicts the velocity v; the loss is ||v_hat - (eps - x0)||^2 with t drawn
logit-normal (SD3, Esser et al. 2024, eq. 19: t = sigmoid(u), u ~ N(m, s^2)) or uniform, then
shifted toward the noise by SD3's resolution shift t' = shift t / (1 + (shift - 1) t)
(eq. 23; shift = sqrt(m / n) for m pixels against a base resolution's n). The noise eps is a
draw of the run's noise prior, exactly as in DDPM: PYoCo's mixed / progressive and
VideoFusion's decomposed noise carry over unchanged.

Sampling integrates dx/dt = v from t = 1 (pure prior noise) to t = 0 with the samplers every
`vidiff.diffusion.process.NoisingProcess` shares (`vidiff.sampling.samplers`: ``euler``, ``heun``,
``dpmpp_2m``). An Euler step is DDIM's step (eta 0) in this parameterisation:
x_t + (t' - t) v = (1 - t') x0_hat + t' eps_hat. Networks see the time as 1000 t (SD3's
convention, `network_time`; diffusers' flow schedulers pass sigma * num_train_timesteps with
num_train_timesteps = 1000), so the U-Net's and DiT's sinusoidal embeddings keep their
range.

The sampling grid (`FLOW_GRIDS`, `FlowMatching.times`) is vidiff's own or one of diffusers':
with g the shift below and T = 1000,
  "uniform":  g(linspace(1, 0, N + 1))                   (vidiff's)
  "diffusers": g(linspace(g(1), g(1/T), N)), then 0      (FlowMatchEulerDiscreteScheduler
                                                          .set_timesteps(N), as WanPipeline)
  "ltx":      g(linspace(1, 1/N, N)), then 0             (LTXPipeline's sigmas)
  "unipc":    g(linspace(1, 1/T, N + 1)[:N]), then 0     (UniPCMultistepScheduler's flow
                                                          sigmas, final_sigmas_type "zero")
and with a terminal value z (diffusers' ``shift_terminal``) the N times before 0 are then
stretched so that the last is z: 1 - t -> (1 - t) (1 - z) / (1 - t_{N-1}).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from vidiff.diffusion.process import Grid, NoisingProcess

__all__ = ["FLOW_GRIDS", "FLOW_TIME_SAMPLING", "FlowMatching", "resolution_shift"]

FLOW_TIME_SAMPLING = ("logit_normal", "uniform")
FLOW_GRIDS = ("uniform", "diffusers", "ltx", "unipc")  # the sampling grids (module docstring)
NETWORK_TIME_SCALE = 1000.0  # the network's time input is 1000 t
TRAIN_STEPS = 1000  # diffusers' num_train_timesteps of a flow scheduler: T of the grids above


def resolution_shift(pixels: int, base_pixels: int = 256 * 256) -> float:
    """SD3's time shift for frames of `pixels` pixels against `base_pixels` (eq. 23's
    sqrt(m / n)): 1 at the base resolution, 2 at twice its side."""
    return math.sqrt(pixels / base_pixels)


@dataclass(frozen=True)
class FlowMatching(NoisingProcess):
    """The flow x_t = (1 - t) x0 + t eps with the velocity v = eps - x0 as the target: the
    `vidiff.diffusion.process.NoisingProcess` with a = 1 - t, s = t.

    `shift` bends the time toward the noise (training times and the sampling grid alike);
    `time_sampling` is how training draws t: "logit_normal" (with `logit_mean`, `logit_std`)
    or "uniform"; `time_grid` and `shift_terminal` shape the sampling grid only (module
    docstring).
    """

    shift: float = 1.0  # SD3's time shift (1: none); see `resolution_shift`
    time_sampling: str = "logit_normal"  # logit_normal | uniform
    logit_mean: float = 0.0  # logit-normal m (SD3: 0)
    logit_std: float = 1.0  # logit-normal s (SD3: 1)
    time_grid: str = "uniform"  # the sampling grid: uniform | diffusers | ltx | unipc
    shift_terminal: float | None = None  # diffusers' shift_terminal (None: no stretch)
    prediction: ClassVar[str] = "velocity"  # what the network predicts (the only choice)
    # euler is DDIM's step in this flow; DDPM's ancestral sampler needs DDPM's posterior
    samplers: ClassVar[tuple[str, ...]] = ("euler", "heun", "dpmpp_2m", "consistency")
    loss_weightings: ClassVar[tuple[str, ...]] = ("none",)  # min_snr is DDPM's
    title: ClassVar[str] = "a flow-matching model"
    deterministic_sampler: ClassVar[str] = "euler"
    nested_spacing: ClassVar[str | None] = None  # its grids nest as they are (no respacing)

    def __post_init__(self):
        if not self.shift > 0:
            raise ValueError(f"flow shift={self.shift} must be > 0")
        if self.time_sampling not in FLOW_TIME_SAMPLING:
            raise ValueError(f"flow time_sampling={self.time_sampling!r}: choose one of "
                             f"{', '.join(FLOW_TIME_SAMPLING)}")
        if not self.logit_std > 0:
            raise ValueError(f"flow logit_std={self.logit_std} must be > 0")
        if self.time_grid not in FLOW_GRIDS:
            raise ValueError(f"flow grid={self.time_grid!r}: choose one of "
                             f"{', '.join(FLOW_GRIDS)}")
        if self.shift_terminal is not None and not 0 < self.shift_terminal < 1:
            raise ValueError(f"flow shift_terminal={self.shift_terminal} must be in (0, 1)")

    # -- the path ---------------------------------------------------------------------------
    @staticmethod
    def _b(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, 1, ...) broadcastable against x, in x's dtype."""
        return t.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = (1 - t) x0 + t eps for float t (B,) in [0, 1]; `noise` from the prior."""
        tb = self._b(t, x0)
        return torch.lerp(x0, noise, tb)  # (1 - t) x0 + t eps

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | None = None):
        """The velocity v = eps - x0 (the regression target)."""
        return noise - x0

    def x0_eps(self, v: torch.Tensor, xt: torch.Tensor, a, s):
        """(x0_hat, eps_hat) from a velocity: x0 = x_t - t v, eps = x_t + (1 - t) v, with
        s = t and a = 1 - t."""
        return xt - s * v, xt + a * v

    def alpha_sigma(self, t: torch.Tensor, x: torch.Tensor):
        """The path's coefficients (a, s) = (1 - t, t), broadcastable against x."""
        tb = self._b(t, x)
        return 1 - tb, tb

    def shifted(self, t: torch.Tensor) -> torch.Tensor:
        """SD3's shift: t' = shift t / (1 + (shift - 1) t) (eq. 23); the identity at 1."""
        if self.shift == 1.0:
            return t
        return self.shift * t / (1 + (self.shift - 1) * t)

    # -- training times and the sampling grid -------------------------------------------------
    def sample_t(self, batch: int, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
        """Training times (B,) float32 in (0, 1): logit-normal or uniform, then shifted, on
        `device` (default: the generator's, else the CPU)."""
        if device is None:
            device = generator.device if generator is not None else "cpu"
        if self.time_sampling == "uniform":
            t = torch.rand(batch, generator=generator, device=device)
        else:  # SD3 eq. 19; u is a draw of the time, not of the noise (that is the prior's)
            u = torch.randn(batch, generator=generator, device=device)  # not diffusion noise
            t = torch.sigmoid(self.logit_mean + self.logit_std * u)
        return self.shifted(t)

    def times(self, steps: int) -> list[float]:
        """The sampling grid t_0 > t_1 > ... > t_steps = 0 of `time_grid` (module docstring),
        python floats: diffusers' ``sigmas`` after ``set_timesteps`` for its grids."""
        if steps < 1:
            raise ValueError(f"steps={steps} must be >= 1")
        problem = self.steps_problem(steps)
        if problem is not None:
            raise ValueError(f"steps {problem}")
        if self.time_grid == "uniform" and self.shift_terminal is None:  # vidiff's, as before
            return self.shifted(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)).tolist()
        t = self.shifted(torch.from_numpy(self._unshifted(steps)))  # (N,) float64
        if self.shift_terminal is not None:  # diffusers' stretch_shift_to_terminal
            one_minus = 1 - t
            t = 1 - one_minus * ((1 - self.shift_terminal) / one_minus[-1])
        return t.tolist() + [0.0]

    def _unshifted(self, steps: int) -> np.ndarray:
        """The grid's N times before the shift, float64 (numpy's linspace, as diffusers')."""
        if self.time_grid == "uniform":
            return np.linspace(1.0, 0.0, steps + 1)[:-1]
        if self.time_grid == "ltx":  # pipeline_ltx.py: sigmas = linspace(1, 1 / N, N)
            return np.linspace(1.0, 1 / steps, steps)
        if self.time_grid == "unipc":  # scheduling_unipc_multistep.py, use_flow_sigmas
            return np.linspace(1.0, 1 / TRAIN_STEPS, steps + 1)[:-1]
        # FlowMatchEulerDiscreteScheduler: __init__ shifts its sigmas (float32) and keeps the
        # ends; set_timesteps spaces linspace(sigma_max T, sigma_min T, N) / T between them
        ends = self.shifted(torch.tensor([TRAIN_STEPS, 1.0]) / TRAIN_STEPS).tolist()
        return np.linspace(ends[0] * TRAIN_STEPS, ends[1] * TRAIN_STEPS, steps) / TRAIN_STEPS

    def steps_problem(self, steps: int | None) -> str | None:
        """None when a grid of `steps` exists: any positive count, but 1 with a
        `shift_terminal` (the only time is 1, which cannot be stretched)."""
        if steps == 1 and self.shift_terminal is not None:
            return (f"= 1 leaves shift_terminal = {self.shift_terminal:g} nothing to stretch "
                    f"(the one time is t = 1); take 2 or more")
        return None

    def grid(self, steps: int | None, spacing: str | None = None,
             sampler: str | None = None) -> Grid:
        """`times(steps)` as a sampling grid: float32 times (what the velocity function is
        called with), a = 1 - t, s = t of those float32 values, ending at t = 0."""
        if spacing is not None:
            raise ValueError(f"spacing={spacing!r} respaces DDPM's timesteps; a flow's grid is "
                             f"its time_grid {self.time_grid!r}, shifted (FlowMatching.shift)")
        if steps is None:
            raise ValueError("a flow-matching grid needs a number of steps")
        t = torch.tensor(self.times(steps), dtype=torch.float32)  # (N + 1,), t_N = 0
        times = t.double().tolist()
        return Grid(t[:-1], tuple(1 - v for v in times), tuple(times))

    def level(self, t: torch.Tensor) -> torch.Tensor:
        """The flow time t itself (float64): 0 clean data, 1 pure noise."""
        return t.double()

    def at_level(self, level: torch.Tensor) -> torch.Tensor:
        """The flow time u itself (float32, the training times' dtype)."""
        return level.float()

    @staticmethod
    def network_time(t: torch.Tensor) -> torch.Tensor:
        """What a vidiff network is given as its timestep for flow time t: 1000 t (float)."""
        return t.float() * NETWORK_TIME_SCALE

    def velocity_fn(self, network):
        """The network as the samplers' velocity function v(xt, t, **cond) of float time t
        (the network itself sees `network_time`): `denoiser_of`."""
        return self.denoiser_of(network)
