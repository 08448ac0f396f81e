"""The Gaussian diffusion process of DDPM (Ho et al. 2020), under any noise prior.

With noise covariance S (the prior's frame covariance kron I), every covariance in the chain is
a multiple of S, so DDPM's algebra holds unchanged: q(x_t | x_0) = N(sqrt(abar_t) x_0,
(1 - abar_t) S) and q(x_{t-1} | x_t, x_0) = N(mu_t, btilde_t S). Only the noise draws change,
and those come from the prior, outside this module.

Timesteps are 0-indexed: training step t = 0..T-1 is the paper's step t + 1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch

from vidiff.diffusion.predictions import (
    check_prediction,
    eps_from_x0,
    prediction_of,
    split_prediction,
    x0_from_eps,
)
from vidiff.diffusion.process import Grid, NoisingProcess
from vidiff.diffusion.schedules import (
    betas_from_alphas_cumprod,
    make_betas,
    rescale_zero_terminal_snr,
    respace,
    shift_snr,
)


@dataclass
class DiffusionConfig:
    """Every default of the diffusion process lives here."""

    schedule: str = "linear"  # beta schedule: linear | quadratic | sigmoid | cosine
    timesteps: int = 1000  # T, the number of training steps (DDPM: 1000)
    prediction: str = "eps"  # what the network predicts: eps | x0 | v
    schedule_kwargs: dict = field(default_factory=dict)  # e.g. beta_start, beta_end, s
    # ddpm: the Gaussian diffusion above; flow: rectified flow (vidiff.diffusion.flow:
    # x_t = (1 - t) x0 + t eps, the network predicts the velocity eps - x0; schedule,
    # timesteps and prediction are then unused)
    process: str = "ddpm"
    flow_shift: float = 1.0  # flow: SD3's time shift (vidiff.diffusion.flow.resolution_shift)
    flow_time: str = "logit_normal"  # flow: training times, logit_normal | uniform
    # ddpm: every SNR abar_t / (1 - abar_t) divided by this (CogVideoX's snr_shift_scale;
    # 1: none), applied to abar before zero_terminal_snr
    snr_shift: float = 1.0
    # ddpm: abar rescaled to abar_T = 0 (Lin et al. 2023, algorithm 1; diffusers'
    # rescale_betas_zero_snr); needs prediction v or x0 (x0 from eps is undefined at t = T)
    zero_terminal_snr: bool = False
    # flow: the sampling grid (vidiff.diffusion.flow.FLOW_GRIDS): uniform (evenly spaced, then
    # shifted) | diffusers (FlowMatchEulerDiscreteScheduler.set_timesteps(N), as WanPipeline
    # calls it) | ltx (LTXPipeline's sigmas linspace(1, 1/N, N)) | unipc (UniPCMultistep-
    # Scheduler's flow sigmas)
    flow_grid: str = "uniform"
    # flow: diffusers' shift_terminal: the grid's last time before 0 stretched to this value
    # (LTX-Video: 0.1; None: no stretch); the sampling grid only, not the training times
    flow_shift_terminal: float | None = None
    # flow: a shift that depends on the clip's latent token count f h w (diffusers'
    # use_dynamic_shifting, LTX-Video's): the scheduler's base_image_seq_len,
    # max_image_seq_len, base_shift, max_shift and time_shift_type; flow_shift is then the
    # resolved value for the spec's clip (vidiff.models.diffusers_schedule.shift_for_tokens).
    # Empty: flow_shift is fixed
    flow_dynamic_shift: dict = field(default_factory=dict)


# the DiffusionConfig fields a process does not read (each process's fields are the others')
UNREAD_FIELDS = {
    "flow": ("schedule", "timesteps", "prediction", "schedule_kwargs", "snr_shift",
             "zero_terminal_snr"),
    "ddpm": ("flow_shift", "flow_time", "flow_grid", "flow_shift_terminal",
             "flow_dynamic_shift"),
}


# the respacing of a sampler's timesteps unless told (`schedules.respace`): DPM-Solver++ steps
# evenly in log-SNR (Lu et al. 2022, section 3.3), the others evenly in t
DEFAULT_SPACING = {"dpmpp_2m": "logsnr", "consistency": "trailing"}  # consistency: from T - 1


class Diffusion(NoisingProcess):
    """Schedule-derived quantities and the closed forms of the forward process: the
    `vidiff.diffusion.process.NoisingProcess` with a = sqrt(abar_t), s = sqrt(1 - abar_t).

    abar comes from the betas of `schedule`, then (as diffusers' CogVideoX schedulers build
    it) `snr_shift` divides every SNR and `zero_terminal_snr` rescales it to abar_T = 0; the
    betas are then re-derived from that abar (beta_T = 1 under zero terminal SNR).

    >>> diffusion = Diffusion(schedule="linear", timesteps=1000, prediction="eps")
    >>> xt = diffusion.q_sample(x0, t, noise=prior.sample(x0.shape, generator=g))
    """

    def __init__(self, schedule: str = DiffusionConfig.schedule,
                 timesteps: int = DiffusionConfig.timesteps,
                 prediction: str = DiffusionConfig.prediction, *,
                 snr_shift: float = DiffusionConfig.snr_shift,
                 zero_terminal_snr: bool = DiffusionConfig.zero_terminal_snr,
                 **schedule_kwargs: float):
        check_prediction(prediction)
        if zero_terminal_snr and prediction == "eps":
            raise ValueError("zero_terminal_snr needs prediction 'v' or 'x0': at abar_T = 0 "
                             "x0 = (x_T - sqrt(1 - abar_T) eps) / sqrt(abar_T) is undefined, "
                             "so an eps model cannot denoise pure noise (Lin et al. 2023, 3.2)")
        self.config = DiffusionConfig(schedule, timesteps, prediction, dict(schedule_kwargs),
                                      snr_shift=snr_shift, zero_terminal_snr=zero_terminal_snr)
        self.prediction = prediction
        self.timesteps = timesteps
        betas = make_betas(schedule, timesteps, **schedule_kwargs)  # (T,) float64
        if not (betas > 0).all() or not (betas < 1).all():
            raise ValueError(f"schedule {schedule!r} gives betas outside (0, 1)")
        abar = torch.cumprod(1 - betas, 0)  # abar_t
        if snr_shift != 1.0 or zero_terminal_snr:  # diffusers' order: the SNR shift, then ZTSNR
            abar = shift_snr(abar, snr_shift)
            abar = rescale_zero_terminal_snr(abar) if zero_terminal_snr else abar
            betas = betas_from_alphas_cumprod(abar)  # float64
            # in (0, 1), but for beta_T = 1 exactly under zero terminal SNR (abar_T = 0)
            last = betas[-1] == 1 if zero_terminal_snr else 0 < betas[-1] < 1
            if not ((betas[:-1] > 0).all() and (betas[:-1] < 1).all() and last):
                raise ValueError(f"schedule {schedule!r} with snr_shift={snr_shift}, "
                                 f"zero_terminal_snr={zero_terminal_snr} gives betas outside "
                                 f"(0, 1)")
        self.betas = betas
        self.alphas = 1 - betas
        self.alphas_cumprod = abar  # abar_t (0 at t = T-1 under zero terminal SNR)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64),
                                              self.alphas_cumprod[:-1]])  # abar_{t-1}, abar_0 = 1
        abar, abar_prev = self.alphas_cumprod, self.alphas_cumprod_prev
        # DDPM eq. 7: btilde_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t
        self.posterior_variance = (1 - abar_prev) / (1 - abar) * betas
        # improved-diffusion's clipping: btilde at the first step is 0, use the second's log
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]]))
        # DDPM eq. 7: mu_t = c0 x_0 + ct x_t
        self.posterior_mean_coef_x0 = betas * abar_prev.sqrt() / (1 - abar)
        self.posterior_mean_coef_xt = (1 - abar_prev) * self.alphas.sqrt() / (1 - abar)
        self._device_cache: dict = {}

    # DDPM's ancestral sampler needs the discrete posterior; euler and heun are the flow's
    samplers: ClassVar[tuple[str, ...]] = ("ddpm", "ddim", "dpmpp_2m", "consistency")
    loss_weightings: ClassVar[tuple[str, ...]] = ("none", "min_snr")
    title: ClassVar[str] = "a DDPM model"
    deterministic_sampler: ClassVar[str] = "ddim"
    nested_spacing: ClassVar[str | None] = "trailing"  # t = T - i T / N - 1 nests

    def sampler_problem(self, sampler: str) -> str | None:
        """None for a DDPM sampler, else why not."""
        if sampler in self.samplers:
            return None
        return ("euler and heun sample flow-matching models; this one is DDPM's "
                "(ddpm, ddim or dpmpp_2m; DDIM's step is Euler's)")

    def steps_problem(self, steps: int | None) -> str | None:
        """None when `steps` respaced timesteps exist: at most the T the model was trained
        with (`schedules.respace`)."""
        if steps is not None and steps > self.timesteps:
            return f"= {steps} exceeds the model's {self.timesteps} timesteps (T)"
        return None

    def grid(self, steps: int | None, spacing: str | None = None,
             sampler: str | None = None) -> Grid:
        """`steps` respaced timesteps (None: all T) by `spacing` (default: the sampler's,
        `DEFAULT_SPACING`, else "linspace"; see `schedules.respace`)."""
        spacing = spacing or DEFAULT_SPACING.get(sampler, "linspace")
        ts = respace(self.timesteps, steps or self.timesteps, spacing, self.alphas_cumprod)
        abar = self.alphas_cumprod[ts].tolist() + [1.0]  # abar = 1 after the last: clean data
        return Grid(ts, tuple(math.sqrt(v) for v in abar), tuple(math.sqrt(1 - v) for v in abar))

    def level(self, t: torch.Tensor) -> torch.Tensor:
        """t / T (float64): step 0 at 0, the last step T - 1 just under 1."""
        return t.double() / self.timesteps

    def at_level(self, level: torch.Tensor) -> torch.Tensor:
        """The step floor(u T) (int64), the last step T - 1 at u = 1."""
        return (level.double() * self.timesteps).floor().long().clamp(0, self.timesteps - 1)

    @staticmethod
    def network_time(t: torch.Tensor) -> torch.Tensor:
        """What the network is given as its timestep: the training step t itself."""
        return t

    @classmethod
    def from_config(cls, config: DiffusionConfig) -> Diffusion:
        """Build from a `DiffusionConfig`."""
        return cls(config.schedule, config.timesteps, config.prediction,
                   snr_shift=config.snr_shift, zero_terminal_snr=config.zero_terminal_snr,
                   **config.schedule_kwargs)

    def to_dict(self) -> dict:
        """The config as a plain dict (for checkpoints)."""
        return asdict(self.config)

    # -- helpers -------------------------------------------------------------------------
    def _table(self, name: str, device: torch.device) -> torch.Tensor:
        key = (name, device)
        if key not in self._device_cache:
            table = getattr(self, name)
            dtype = torch.float32 if device.type == "mps" else torch.float64
            self._device_cache[key] = table.to(device=device, dtype=dtype)
        return self._device_cache[key]

    def gather(self, name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Table `name` at timesteps t (B,), shaped (B, 1, ...) to broadcast against x."""
        values = self._table(name, t.device)[t].to(x.dtype)  # (B,)
        return values.view(-1, *([1] * (x.dim() - 1)))

    def _check_t(self, t: torch.Tensor, x: torch.Tensor) -> None:
        if t.dtype != torch.int64 or t.dim() != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"t must be an int64 tensor of shape ({x.shape[0]},), "
                             f"got {t.dtype} {tuple(t.shape)}")

    def sample_t(self, batch: int, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
        """Training timesteps drawn uniformly from 0..T-1, int64 (B,)."""
        if device is None:
            device = generator.device if generator is not None else "cpu"
        return torch.randint(0, self.timesteps, (batch,), generator=generator, device=device)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio abar_t / (1 - abar_t) at t (B,), float64."""
        abar = self._table("alphas_cumprod", t.device)[t]
        return abar / (1 - abar)

    # -- forward process -----------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (DDPM eq. 4); eps from the prior."""
        self._check_t(t, x0)
        abar = self.gather("alphas_cumprod", t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor):
        """Mean (like x0) and variance (B, 1, ...) of q(x_t | x_0); the covariance is var * S."""
        abar = self.gather("alphas_cumprod", t, x0)
        return abar.sqrt() * x0, 1 - abar

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0) (DDPM eqs. 6-7).

        The covariance is variance * S, S the prior's covariance.
        """
        self._check_t(t, xt)
        mean = (self.gather("posterior_mean_coef_x0", t, xt) * x0
                + self.gather("posterior_mean_coef_xt", t, xt) * xt)  # DDPM eq. 7
        var = self.gather("posterior_variance", t, xt)
        logvar = self.gather("posterior_log_variance_clipped", t, xt)
        return mean, var, logvar

    # -- parameterizations ---------------------------------------------------------------
    def alpha_sigma(self, t: torch.Tensor, x: torch.Tensor):
        """(sqrt(abar_t), sqrt(1 - abar_t)) at t (B,), shaped (B, 1, ...) like x."""
        abar = self.gather("alphas_cumprod", t, x)
        return abar.sqrt(), (1 - abar).sqrt()

    def x0_eps(self, out: torch.Tensor, xt: torch.Tensor, a, s):
        """(x0, eps) from a network output of this diffusion's prediction type."""
        return split_prediction(self.prediction, out, xt, a, s)

    def predict_x0(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) (DDPM eq. 15); undefined at
        abar_t = 0 (zero terminal SNR, which is why an eps model is refused there)."""
        return x0_from_eps(xt, eps, *self.alpha_sigma(t, xt))

    def predict_eps(self, xt: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """eps = (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t)."""
        return eps_from_x0(xt, x0, *self.alpha_sigma(t, xt))

    def v_target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022)."""
        return prediction_of("v", x0, eps, *self.alpha_sigma(t, x0))

    def target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The regression target of this diffusion's prediction type."""
        return prediction_of(self.prediction, x0, eps, *self.alpha_sigma(t, x0))

    def __repr__(self) -> str:
        c = self.config
        extra = (f", snr_shift={c.snr_shift:g}" if c.snr_shift != 1.0 else "") + (
            ", zero_terminal_snr=True" if c.zero_terminal_snr else "")
        return (f"Diffusion(schedule={c.schedule!r}, timesteps={c.timesteps}, "
                f"prediction={c.prediction!r}{extra})")
