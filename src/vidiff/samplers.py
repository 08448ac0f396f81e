"""Samplers: DDPM ancestral, DDIM and DPM-Solver++(2M), each one short function.

Every sampler has the signature `sampler(denoise, x, traj, noise, callback=None, **options)`:
  denoise(x, i) -> (x0_hat, eps_hat) at the i-th timestep of the trajectory;
  x             the starting noise x_T, drawn from the noise prior;
  traj          the timesteps where the model is evaluated, with their abar (`Trajectory`);
  noise()       a fresh draw from the noise prior, shaped like x (the only source of noise).
After the last timestep every sampler lands on clean data (abar = 1).

`sample` builds these pieces from a denoiser, a `Diffusion` and a noise prior.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .cond import Cond
from .diffusion import Diffusion
from .flow import FlowMatching
from .flow_samplers import FLOW_DEFAULT_STEPS, FLOW_SAMPLERS, sample_flow
from .predictions import eps_from_x0, split_prediction
from .priors import NoisePrior, noise_prior
from .registry import Registry
from .schedules import respace

SAMPLERS: Registry = Registry("sampler")

Denoise = Callable[[torch.Tensor, int], "tuple[torch.Tensor, torch.Tensor]"]
NoiseFn = Callable[[], torch.Tensor]
Callback = Callable[[dict], None]


@dataclass(frozen=True)
class Trajectory:
    """Decreasing training timesteps t_0 > t_1 > ... where a sampler evaluates the model."""

    t: torch.Tensor  # (N,) int64 training-scale timesteps
    abar: list  # abar at each t_i, python floats (float64)
    abar_next: list  # abar at t_{i+1}; 1.0 after the last step (clean data)

    def __len__(self) -> int:
        return len(self.abar)


def make_trajectory(diffusion: Diffusion, steps: int, spacing: str) -> Trajectory:
    """The respaced trajectory of `steps` timesteps (see `schedules.respace`)."""
    ts = respace(diffusion.timesteps, steps, spacing, diffusion.alphas_cumprod)
    abar = diffusion.alphas_cumprod[ts].tolist()
    return Trajectory(ts, abar, abar[1:] + [1.0])


# -- single steps (also what the diffusers parity tests compare) ------------------------------
def ddpm_step(x, x0, abar, abar_next, noise, variance="posterior"):
    """One ancestral step x_t -> x_{t'} of the (respaced) DDPM chain (DDPM eqs. 6-7).

    beta = 1 - abar/abar_next is the respaced chain's beta; the step's variance is btilde
    ("posterior", DDPM's sigma^2 = btilde) or beta ("beta", DDPM's sigma^2 = beta); `noise` is a
    prior draw or None (no noise, as at the last step).
    """
    beta = 1 - abar / abar_next
    c0 = math.sqrt(abar_next) * beta / (1 - abar)  # DDPM eq. 7, coefficient of x_0
    ct = math.sqrt(1 - beta) * (1 - abar_next) / (1 - abar)  # DDPM eq. 7, coefficient of x_t
    mean = c0 * x0 + ct * x
    if noise is None:
        return mean
    var = (1 - abar_next) / (1 - abar) * beta if variance == "posterior" else beta
    return mean + math.sqrt(var) * noise  # DDPM algorithm 2, line 4


def ddim_step(x0, eps, abar, abar_next, eta=0.0, noise=None):
    """One DDIM step (Song et al. 2021, eq. 12) with sigma from their eq. 16 times eta."""
    sigma = eta * math.sqrt((1 - abar_next) / (1 - abar) * (1 - abar / abar_next))
    direction = math.sqrt(max(1 - abar_next - sigma**2, 0.0)) * eps
    out = math.sqrt(abar_next) * x0 + direction
    return out if sigma == 0 or noise is None else out + sigma * noise


# -- samplers --------------------------------------------------------------------------------
@SAMPLERS.register("ddpm")
def sample_ddpm(denoise: Denoise, x, traj: Trajectory, noise: NoiseFn,
                callback: Callback | None = None, variance: str = "posterior"):
    """DDPM ancestral sampling (Ho et al. 2020, algorithm 2), respaced as in Nichol & Dhariwal.

    variance: "posterior" (sigma^2 = btilde_t) or "beta" (sigma^2 = beta_t).
    """
    if variance not in ("posterior", "beta"):
        raise ValueError(f"variance must be 'posterior' or 'beta', got {variance!r}")
    for i in range(len(traj)):
        x0, _ = denoise(x, i)
        last = i == len(traj) - 1
        x = ddpm_step(x, x0, traj.abar[i], traj.abar_next[i], None if last else noise(),
                      variance)
        if callback is not None:
            callback({"i": i, "t": int(traj.t[i]), "x": x, "x0": x0})
    return x


@SAMPLERS.register("ddim")
def sample_ddim(denoise: Denoise, x, traj: Trajectory, noise: NoiseFn,
                callback: Callback | None = None, eta: float = 0.0):
    """DDIM (Song et al. 2021): deterministic for eta = 0, DDPM-like for eta = 1."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    for i in range(len(traj)):
        x0, eps = denoise(x, i)
        last = i == len(traj) - 1
        step_noise = noise() if eta > 0 and not last else None
        x = ddim_step(x0, eps, traj.abar[i], traj.abar_next[i], eta, step_noise)
        if callback is not None:
            callback({"i": i, "t": int(traj.t[i]), "x": x, "x0": x0})
    return x


@SAMPLERS.register("dpmpp_2m")
def sample_dpmpp_2m(denoise: Denoise, x, traj: Trajectory, noise: NoiseFn,
                    callback: Callback | None = None):
    """DPM-Solver++(2M) (Lu et al. 2022, algorithm 2), first order at the last step.

    With alpha = sqrt(abar), sigma = sqrt(1 - abar), lambda = log(alpha / sigma):
    x' = (sigma'/sigma) x - alpha' (exp(-h) - 1) D, h = lambda' - lambda,
    D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1}, r = h_{i-1} / h.
    """
    x0_prev, h_prev = None, None
    for i in range(len(traj)):
        x0, _ = denoise(x, i)
        abar, abar_next = traj.abar[i], traj.abar_next[i]
        if abar_next >= 1.0:  # to clean data: exp(-h) = 0, the first-order update gives x0
            x = x0
        else:
            lam = 0.5 * math.log(abar / (1 - abar))
            h = 0.5 * math.log(abar_next / (1 - abar_next)) - lam
            d = x0
            if x0_prev is not None:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev  # Lu et al. alg. 2
            ratio = math.sqrt((1 - abar_next) / (1 - abar))
            x = ratio * x - math.sqrt(abar_next) * math.expm1(-h) * d
            x0_prev, h_prev = x0, h
        if callback is not None:
            callback({"i": i, "t": int(traj.t[i]), "x": x, "x0": x0})
    return x


DEFAULT_STEPS = {"ddpm": None, "ddim": 50, "dpmpp_2m": 20}  # None: all T steps


@dataclass
class SamplingConfig:
    """How a model is sampled unless told otherwise: a run's ``[sample]`` section, a model
    spec's ``sampling``, and the defaults of `vidiff.Pipeline` and the sampling commands."""

    # ddpm | ddim | dpmpp_2m. DDPM's ancestral steps: on a short run's model its samples keep
    # their balls far more often than DDIM's or DPM-Solver++'s (docs/RESULTS.md)
    sampler: str = "ddpm"
    steps: int | None = 100  # sampler steps (None: the sampler's DEFAULT_STEPS, T for DDPM)
    eta: float | None = None  # DDIM's stochasticity (None: 0, deterministic)
    # classifier-free guidance scale of conditional models, 1 + w in VDM's terms (1: none; an
    # unconditional model ignores it). 1.5 kept the most balls steady in the default run
    # (0.69-0.71 of frame pairs, against 0.61 at 2 and 0.47 at 3: docs/RESULTS.md)
    guidance_scale: float = 1.5

    def check(self) -> SamplingConfig:
        """`self`, or a `SamplingError` naming the first bad field (the one place these
        values are checked: run configs, the pipeline and the commands all call it)."""
        if self.sampler not in SAMPLERS and self.sampler not in FLOW_SAMPLERS:
            names = list(dict.fromkeys(SAMPLERS.names() + FLOW_SAMPLERS.names()))
            raise SamplingError("sampler", f"{self.sampler!r} is unknown; choose one of "
                                           f"{', '.join(names)} (euler, heun: flow models only)")
        if self.steps is not None and self.steps < 1:
            raise SamplingError("steps", f"= {self.steps} must be >= 1")
        if self.eta is not None and self.sampler != "ddim":
            raise SamplingError("eta", f"applies to the ddim sampler only, not {self.sampler!r}")
        if self.eta is not None and self.eta < 0:
            raise SamplingError("eta", f"= {self.eta} must be >= 0")
        if not self.guidance_scale >= 0:
            raise SamplingError("guidance_scale",
                                f"= {self.guidance_scale} must be >= 0 (1: none)")
        return self


class SamplingError(ValueError):
    """A bad sampling setting: `field` (a `SamplingConfig` field) and what is wrong with it."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem

    def named(self, name: str) -> str:
        """The message with the field called `name` (``sample.eta``, ``--eta``)."""
        return f"{name} {self.problem}"
DEFAULT_SPACING = {"ddpm": "linspace", "ddim": "linspace", "dpmpp_2m": "logsnr"}
SAMPLER_OPTIONS = {"ddpm": ("variance",), "ddim": ("eta",), "dpmpp_2m": ()}


def _make_denoise(denoiser, diffusion, traj, batch, device, clip_x0, cond) -> Denoise:
    ts = traj.t.to(device)
    roots = [(math.sqrt(a), math.sqrt(1 - a)) for a in traj.abar]

    def denoise(x, i):
        t = ts[i].expand(batch)  # (B,) int64, the training-scale timestep
        out = denoiser(x, t, **cond)
        a, s = roots[i]
        x0, eps = split_prediction(diffusion.prediction, out.to(x.dtype), x, a, s)
        if clip_x0:
            x0 = x0.clamp(-1, 1)
            eps = eps_from_x0(x, x0, a, s)
        return x0, eps

    return denoise


def _sampler_options(sampler: str, **given) -> dict:
    options = {k: v for k, v in given.items() if v is not None}
    for key in options:
        if key not in SAMPLER_OPTIONS[sampler]:
            raise ValueError(f"option {key!r} does not apply to sampler {sampler!r}")
    return options


def _progress_callback(callback, total):
    bar = tqdm(total=total, desc="sampling", unit="step", leave=False)

    def wrapped(info):
        bar.update(1)
        if info["i"] == total - 1:
            bar.close()
        if callback is not None:
            callback(info)

    return wrapped


@torch.no_grad()
def sample(
    denoiser: Callable[..., torch.Tensor],
    shape: Sequence[int],
    *,
    diffusion: Diffusion,
    prior: NoisePrior | None = None,
    sampler: str = "ddpm",
    steps: int | None = None,
    generator: torch.Generator | None = None,
    eta: float | None = None,
    variance: str | None = None,
    spacing: str | None = None,
    clip_x0: bool = True,
    num_images: int = 0,
    cond: Cond | dict | None = None,
    x_T: torch.Tensor | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw samples of `shape` (B, C, F, H, W) (or (B, C, H, W)) from a trained denoiser.

    With a `vidiff.FlowMatching` as `diffusion` the denoiser is a velocity function
    `v_fn(xt, t, **cond)` of float time t (B,) in [0, 1] and the sampler "euler" (default
    50 steps), "heun" (25) or "dpmpp_2m" (20): `vidiff.flow_samplers.sample_flow`.

    denoiser(xt, t, **cond) returns the diffusion's prediction; t is int64 (B,) on the training
    scale. sampler: "ddpm" (variance "posterior" | "beta"), "ddim" (eta, default 0) or
    "dpmpp_2m"; steps defaults to T, 50 and 20. Every noise (x_T and each step's) is drawn
    from `prior` (default independent) with `generator`, so a seed fixes the result.
    `callback` gets {"i", "t", "x", "x0"} after each step; `progress` shows a bar.

    clip_x0 (default True, the convention of DDPM's code and diffusers' ``clip_sample``):
    each step's estimate of x0 is clamped to [-1, 1] before it is used, which suits data
    scaled to [-1, 1] (every vidiff dataset and the video readers). Data outside that range
    (latents, standardized features, the Gaussian oracle) needs ``clip_x0=False``, or the
    samples are silently clipped.
    With num_images = K the last K frames are independent images (joint training), which get
    independent noise; K is also passed to the denoiser as `num_images`. `cond`: the
    conditions (`vidiff.Cond`, or a dict of its fields), passed as keywords.
    """
    flow = isinstance(diffusion, FlowMatching)
    if flow:
        _check_flow_sampler(sampler, eta=eta, variance=variance, spacing=spacing)
    else:
        sample_fn = SAMPLERS.get(sampler)
        options = _sampler_options(sampler, eta=eta, variance=variance)
    prior = prior if prior is not None else noise_prior("independent")
    if device is None:
        device = generator.device if generator is not None else "cpu"

    def noise() -> torch.Tensor:
        return prior.sample(shape, generator=generator, num_images=num_images, device=device,
                            dtype=dtype)

    x = noise() if x_T is None else x_T.to(device=device, dtype=dtype)
    cond = Cond.of(cond)
    cond = cond.replace(num_images=num_images) if num_images else cond
    if flow:
        steps = steps or FLOW_DEFAULT_STEPS[sampler]
        if progress:
            callback = _progress_callback(callback, steps)
        return sample_flow(denoiser, x, noise, flow=diffusion, sampler=sampler, steps=steps,
                           cond=cond.kwargs(), callback=callback)
    steps = steps or DEFAULT_STEPS[sampler] or diffusion.timesteps
    traj = make_trajectory(diffusion, steps, spacing or DEFAULT_SPACING[sampler])
    denoise = _make_denoise(denoiser, diffusion, traj, shape[0], device, clip_x0, cond.kwargs())
    if progress:
        callback = _progress_callback(callback, len(traj))
    return sample_fn(denoise, x, traj, noise, callback=callback, **options)


def _check_flow_sampler(sampler: str, **ddpm_only) -> None:
    if sampler not in FLOW_SAMPLERS:
        raise ValueError(f"sampler {sampler!r} is not a flow-matching sampler; choose one of "
                         f"{', '.join(FLOW_SAMPLERS.names())}")
    given = sorted(k for k, v in ddpm_only.items() if v is not None)
    if given:
        raise ValueError(f"options {given} do not apply to flow-matching samplers")
