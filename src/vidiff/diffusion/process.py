"""The noising process: one interface for DDPM's Gaussian diffusion and rectified flow.

Both are x_t = a(t) x0 + s(t) eps with eps a draw of the noise prior: DDPM's a = sqrt(abar_t),
s = sqrt(1 - abar_t) on the integer steps 0..T-1 (`vidiff.Diffusion`), the flow's a = 1 - t,
s = t on float t in [0, 1] (`vidiff.FlowMatching`). A `NoisingProcess` offers what training
and sampling need, so that the samplers, guidance, the loss and the window commands are
written once:

- ``grid(steps)``: the times where a sampler evaluates the model, with a and s there (`Grid`);
- ``alpha_sigma(t, x)``: a(t) and s(t), broadcastable against x;
- ``x0_eps(out, xt, a, s)``: x0 and eps from the network's output (eps, x0, v or the
  velocity) at coefficients a, s; ``split(out, xt, t)`` the same at times t;
- ``q_sample``, ``target``: x_t and the regression target; ``sample_t``: the training times;
- ``network_time(t)``: what the network is given as its timestep; ``denoiser_of(network)``
  the network as a denoiser of the process's own time;
- ``samplers``: the sampler names that apply (DDPM's ancestral sampler needs its discrete
  posterior; Euler is DDIM's step under the flow's name).

`build_process(config)` turns a `DiffusionConfig` into one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

if TYPE_CHECKING:
    from vidiff.diffusion.ddpm import DiffusionConfig

__all__ = ["PROCESSES", "Grid", "NoisingProcess", "build_process"]

PROCESSES = ("ddpm", "flow")


@dataclass(frozen=True)
class Grid:
    """Where a sampler evaluates the model: process times t_0, ..., t_{N-1} (noisiest first)
    with a(t_i) and s(t_i); entry N of `a` and `s` is clean data (a = 1, s = 0)."""

    t: torch.Tensor  # (N,) the times a denoiser is called with (int64 steps or float times)
    a: tuple[float, ...]  # (N + 1,) a(t_i), then 1
    s: tuple[float, ...]  # (N + 1,) s(t_i), then 0

    def __len__(self) -> int:
        return len(self.t)

    def step(self, i: int) -> tuple[float, float, float, float]:
        """(a, s, a', s') of step i, from t_i to t_{i+1}."""
        return self.a[i], self.s[i], self.a[i + 1], self.s[i + 1]


def _listed(names: Sequence[str]) -> str:
    """'a, b or c'."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


class NoisingProcess(ABC):
    """x_t = a(t) x0 + s(t) eps (module docstring). `Diffusion` and `FlowMatching` implement it;
    the samplers, guidance and the loss use nothing else."""

    prediction: str  # what the network predicts: eps | x0 | v (DDPM) or velocity (flow)
    samplers: ClassVar[tuple[str, ...]]  # the `vidiff.sampling.samplers.SAMPLERS` names that apply
    loss_weightings: ClassVar[tuple[str, ...]]  # the `LossConfig.weighting` values that apply
    title: ClassVar[str]  # "a DDPM model": how messages name a model of this process
    # the deterministic sampler (x' = a' x0 + (s'/s)(x - a x0)) and the spacing whose grid of
    # 2k steps holds the grid of k at its even points: what a distilled student samples with
    deterministic_sampler: ClassVar[str]
    nested_spacing: ClassVar[str | None]

    @abstractmethod
    def grid(self, steps: int | None, spacing: str | None = None,
             sampler: str | None = None) -> Grid:
        """The sampling grid of `steps` model calls (`sampler`: whose default spacing)."""

    @abstractmethod
    def alpha_sigma(self, t: torch.Tensor, x: torch.Tensor):
        """(a(t), s(t)) at times t (B,), shaped (B, 1, ...) like x."""

    @abstractmethod
    def x0_eps(self, out: torch.Tensor, xt: torch.Tensor, a, s):
        """(x0, eps) from a network output `out` at x_t = a x0 + s eps (a, s: floats or
        tensors broadcastable against xt)."""

    def split(self, out: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
        """(x0, eps) from a network output `out` at x_t, times t (B,)."""
        return self.x0_eps(out, xt, *self.alpha_sigma(t, xt))

    @abstractmethod
    def target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What a perfect network outputs for (x0, eps) at t: the regression target."""

    @abstractmethod
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = a(t) x0 + s(t) eps, `noise` a draw of the prior."""

    @abstractmethod
    def sample_t(self, batch: int, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
        """Training times (B,) drawn with `generator`."""

    @abstractmethod
    def level(self, t: torch.Tensor) -> torch.Tensor:
        """The noise level of process times t (B,) as float64 in [0, 1], 0 the clean end
        (the bins of the logged loss by level, `vidiff.train.levels`)."""

    @abstractmethod
    def at_level(self, level: torch.Tensor) -> torch.Tensor:
        """The process times (B,) of noise levels in [0, 1] (B,), `level`'s inverse on its
        bins: DDPM's step floor(u T) (at most T - 1), a flow's time u."""

    @staticmethod
    @abstractmethod
    def network_time(t: torch.Tensor) -> torch.Tensor:
        """What a vidiff network is given as its timestep for process time t."""

    def denoiser_of(self, network: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """`network` as the samplers' denoiser ``(xt, t, **cond)`` of process time t (the
        network itself sees `network_time`)."""
        def denoiser(xt: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
            return network(xt, self.network_time(t), **cond)

        return denoiser

    def sampler_problem(self, sampler: str) -> str | None:
        """None when `sampler` applies to this process, else why not (one line)."""
        if sampler in self.samplers:
            return None
        return f"{self.title} samples with {_listed(self.samplers)}"

    def steps_problem(self, steps: int | None) -> str | None:
        """None when a grid of `steps` model calls exists (None: the sampler's default), else
        why not (one line). Any positive count has a flow grid; DDPM's override says T."""
        return None


def build_process(config: DiffusionConfig) -> NoisingProcess:
    """The process of `config`: a `Diffusion` (``process = "ddpm"``) or a `FlowMatching`
    (``"flow"``); a ValueError names a bad field."""
    from vidiff.diffusion.ddpm import Diffusion
    from vidiff.diffusion.flow import FlowMatching

    if config.process == "flow":
        return FlowMatching(shift=config.flow_shift, time_sampling=config.flow_time,
                            time_grid=config.flow_grid,
                            shift_terminal=config.flow_shift_terminal)
    if config.process != "ddpm":
        raise ValueError(f"diffusion.process={config.process!r}: choose one of "
                         f"{', '.join(PROCESSES)}")
    return Diffusion.from_config(config)
