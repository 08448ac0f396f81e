"""Noise schedules over T steps, in float64, and respacing to fewer sampling steps.

A schedule is the vector of betas beta_1..beta_T (stored 0-indexed: index t holds the beta of
the training step t, t = 0..T-1). Everything derived from it (alphas, cumulative products)
lives in `Diffusion`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from vidiff.utils.registry import Registry

SCHEDULES: Registry = Registry("noise schedule")
MAX_BETA = 0.999  # the cap on beta of Nichol & Dhariwal 2021, section 3.2


def _check_steps(timesteps: int) -> None:
    if not isinstance(timesteps, int) or timesteps < 1:
        raise ValueError(f"timesteps must be a positive integer, got {timesteps!r}")


@SCHEDULES.register("linear")
def linear_betas(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear schedule (Ho et al. 2020, section 4), rescaled so any T keeps its shape.

    For T = 1000 the betas run from exactly 1e-4 to 0.02, the paper's setting. Like every
    schedule here, betas are clipped at MAX_BETA (which only matters for T < 50).
    """
    _check_steps(timesteps)
    scale = 1000.0 / timesteps
    betas = torch.linspace(scale * beta_start, scale * beta_end, timesteps, dtype=torch.float64)
    return betas.clamp(max=MAX_BETA)


@SCHEDULES.register("quadratic")
def quadratic_betas(
    timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """Betas evenly spaced in sqrt(beta) (the "scaled_linear" of latent diffusion)."""
    _check_steps(timesteps)
    scale = 1000.0 / timesteps
    lo, hi = math.sqrt(scale * beta_start), math.sqrt(scale * beta_end)
    return (torch.linspace(lo, hi, timesteps, dtype=torch.float64) ** 2).clamp(max=MAX_BETA)


@SCHEDULES.register("sigmoid")
def sigmoid_betas(
    timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """Betas following a sigmoid from beta_start to beta_end (as in GeoDiff and diffusers)."""
    _check_steps(timesteps)
    scale = 1000.0 / timesteps
    s = torch.sigmoid(torch.linspace(-6.0, 6.0, timesteps, dtype=torch.float64))
    return (scale * (s * (beta_end - beta_start) + beta_start)).clamp(max=MAX_BETA)


@SCHEDULES.register("cosine")
def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = MAX_BETA) -> torch.Tensor:
    """Nichol & Dhariwal 2021, eq. 17: abar(t) = cos^2(((t/T + s)/(1 + s)) pi/2) / f(0).

    beta_t = 1 - abar(t)/abar(t-1), clipped at max_beta (their section 3.2).
    """
    _check_steps(timesteps)
    t = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


def make_betas(name: str, timesteps: int, **kwargs: float) -> torch.Tensor:
    """The betas (T,) float64 of the schedule called `name`."""
    return SCHEDULES.get(name)(timesteps, **kwargs)


# -- adjustments of abar (the cumulative product of the alphas) -------------------------------
def shift_snr(alphas_cumprod: torch.Tensor, scale: float) -> torch.Tensor:
    """abar / (scale + (1 - scale) abar): every SNR abar / (1 - abar) divided by `scale`
    (CogVideoX's ``snr_shift_scale``, diffusers' `CogVideoXDDIMScheduler.__init__`)."""
    if not scale > 0:
        raise ValueError(f"snr_shift = {scale} must be > 0")
    return alphas_cumprod / (scale + (1 - scale) * alphas_cumprod)


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023, algorithm 1 (diffusers' `rescale_zero_terminal_snr`): sqrt(abar)
    shifted so that its last value is 0 (abar_T = 0, zero terminal SNR) and scaled so that its
    first keeps its value."""
    root = alphas_cumprod.sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    return root.square()


def betas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """beta_t = 1 - abar_t / abar_{t-1} with abar_{-1} = 1 (T,): the betas of a given abar."""
    prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    return 1 - alphas_cumprod / prev


SPACINGS = ("linspace", "leading", "trailing", "logsnr")


def respace(timesteps: int, steps: int, spacing: str = "leading",
            alphas_cumprod: torch.Tensor | None = None) -> torch.Tensor:
    """A decreasing subset of `steps` training timesteps out of 0..timesteps-1, int64.

    spacing follows diffusers' `timestep_spacing` (Lin et al. 2023, table 2):
      "leading":  t = k * (T // steps), k = steps-1..0 (DDIM's default; ends at t = 0)
      "trailing": t = round(T - k * T / steps) - 1, k = 0..steps-1 (starts at t = T-1)
      "linspace": t = round(linspace(0, T-1, steps)), decreasing
      "logsnr":   log-SNR evenly spaced from t = T-1 to t = 0 (DPM-Solver's "logSNR" skip
                  type, Lu et al. 2022, section 3.3); needs `alphas_cumprod`
    """
    if not isinstance(steps, int) or not 1 <= steps <= timesteps:
        raise ValueError(f"steps must be an integer in [1, {timesteps}], got {steps!r}")
    if spacing == "leading":
        ts = torch.arange(steps, dtype=torch.int64) * (timesteps // steps)
    elif spacing == "trailing":
        # diffusers' arange with a float step, cut to `steps`: rounding can make it one longer
        # (a last timestep of -1, e.g. for 61 of 1000). Half-to-even rounding keeps values that
        # are at least 1 apart distinct
        grid = np.arange(timesteps, 0, -timesteps / steps)[:steps]
        ts = torch.from_numpy(np.round(grid).astype(np.int64) - 1).flip(0)
    elif spacing == "logsnr":
        if alphas_cumprod is None:
            raise ValueError("spacing 'logsnr' needs the schedule's alphas_cumprod")
        ts = _logsnr_steps(alphas_cumprod, steps)
    elif spacing == "linspace":
        ts = torch.linspace(0, timesteps - 1, steps, dtype=torch.float64).round().to(torch.int64)
    else:
        raise ValueError(f"unknown spacing {spacing!r}; valid: {', '.join(SPACINGS)}")
    return ts.flip(0)


def _logsnr_steps(alphas_cumprod: torch.Tensor, steps: int) -> torch.Tensor:
    """Increasing timesteps whose log-SNR is as evenly spaced as integer steps allow. Under
    zero terminal SNR (abar_T = 0, log-SNR -inf) the targets end at the last finite log-SNR;
    the grid still starts at t = T-1."""
    logsnr = (alphas_cumprod / (1 - alphas_cumprod)).log()  # decreasing in t
    lowest = logsnr[torch.isfinite(logsnr)][-1].item()
    targets = torch.linspace(logsnr[0].item(), lowest, steps, dtype=torch.float64)
    ts = torch.searchsorted(-logsnr, -targets).clamp(max=len(logsnr) - 1)  # nearest from above
    ts[0], ts[-1] = 0, len(logsnr) - 1
    for i in range(1, steps):  # keep them strictly increasing when steps crowd at the ends
        ts[i] = max(ts[i].item(), ts[i - 1].item() + 1)
    ts[-1] = len(logsnr) - 1
    for i in range(steps - 2, -1, -1):
        ts[i] = min(ts[i].item(), ts[i + 1].item() - 1)
    return ts
