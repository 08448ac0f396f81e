"""Samplers: DDPM ancestral, DDIM, Euler, Heun, DPM-Solver++(2M) and multistep consistency
sampling, each one short function,
written once for every noising process (`vidiff.diffusion.process.NoisingProcess`: DDPM's diffusion
and rectified flow alike, x_t = a x0 + s eps).

Every sampler has the signature `sampler(denoise, x, grid, noise, callback=None, **options)`:
  denoise(x, i) -> (x0_hat, eps_hat) at the i-th time of the grid;
  x             the starting noise, drawn from the noise prior;
  grid          the times where the model is evaluated, with a and s there (`Grid`);
  noise()       a fresh draw from the noise prior, shaped like x (the only source of noise).
After the last time every sampler lands on clean data (a = 1, s = 0). A process names the
samplers that apply to it (`NoisingProcess.samplers`); asking for another is a ValueError.

`sample` builds these pieces from a denoiser, a process and a noise prior.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from vidiff.cond import Cond
from vidiff.diffusion.predictions import eps_from_x0
from vidiff.diffusion.priors import NoisePrior, noise_prior
from vidiff.diffusion.process import Grid, NoisingProcess
from vidiff.diffusion.schedules import SPACINGS
from vidiff.utils.registry import Registry

Denoise = Callable[[torch.Tensor, int], "tuple[torch.Tensor, torch.Tensor]"]
NoiseFn = Callable[[], torch.Tensor]
Callback = Callable[[dict], None]


@dataclass(frozen=True)
class Sampler:
    """A registered sampler: its function, default steps and options."""

    fn: Callable[..., torch.Tensor]
    steps: int | None  # default number of model evaluations (None: every DDPM step)
    options: tuple[str, ...] = ()  # the keyword options it takes


SAMPLERS: Registry[Sampler] = Registry("sampler")


def _register(name: str, steps: int | None, options: tuple[str, ...] = ()):
    def wrap(fn):
        SAMPLERS.register(name)(Sampler(fn, steps, options))
        return fn

    return wrap


def _report(callback: Callback | None, grid: Grid, i: int, x, x0) -> None:
    if callback is not None:
        callback({"i": i, "t": grid.t[i].item(), "x": x, "x0": x0})


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


def ddim_step(x0, eps, a, s, a_next, s_next, eta=0.0, noise=None):
    """One DDIM step (Song et al. 2021, eq. 12) from x_t = a x0 + s eps to a' x0 + s' eps, with
    sigma = eta times the posterior's standard deviation (their eq. 16): for any path
    sigma^2 = s'^2 (1 - SNR / SNR'), SNR = a^2 / s^2 (DDPM's btilde when a^2 + s^2 = 1)."""
    ratio = (a * s_next) / (a_next * s) if s_next > 0 else 0.0  # sqrt(SNR / SNR')
    sigma = eta * s_next * math.sqrt(max(1 - ratio**2, 0.0))
    direction = math.sqrt(max(s_next**2 - sigma**2, 0.0)) * eps
    out = a_next * x0 + direction
    return out if sigma == 0 or noise is None else out + sigma * noise


# -- samplers --------------------------------------------------------------------------------
@_register("ddpm", None, ("variance",))
def sample_ddpm(denoise: Denoise, x, grid: Grid, noise: NoiseFn,
                callback: Callback | None = None, variance: str = "posterior"):
    """DDPM ancestral sampling (Ho et al. 2020, algorithm 2), respaced as in Nichol & Dhariwal
    (abar = a^2). variance: "posterior" (sigma^2 = btilde_t) or "beta" (sigma^2 = beta_t)."""
    if variance not in ("posterior", "beta"):
        raise ValueError(f"variance must be 'posterior' or 'beta', got {variance!r}")
    for i in range(len(grid)):
        x0, _ = denoise(x, i)
        last = i == len(grid) - 1
        x = ddpm_step(x, x0, grid.a[i] ** 2, grid.a[i + 1] ** 2, None if last else noise(),
                      variance)
        _report(callback, grid, i, x, x0)
    return x


@_register("ddim", 50, ("eta",))
def sample_ddim(denoise: Denoise, x, grid: Grid, noise: NoiseFn,
                callback: Callback | None = None, eta: float = 0.0):
    """DDIM (Song et al. 2021): deterministic for eta = 0, DDPM-like for eta = 1."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    for i in range(len(grid)):
        x0, eps = denoise(x, i)
        last = i == len(grid) - 1
        step_noise = noise() if eta > 0 and not last else None
        x = ddim_step(x0, eps, *grid.step(i), eta, step_noise)
        _report(callback, grid, i, x, x0)
    return x


@_register("euler", 50)
def sample_euler(denoise: Denoise, x, grid: Grid, noise: NoiseFn,
                 callback: Callback | None = None):
    """Euler on the probability-flow ODE, x' = a' x0 + s' eps: DDIM with eta 0, and in the
    flow x + (t' - t) v (dx/dt = a'(t) x0 + s'(t) eps for any path)."""
    return sample_ddim(denoise, x, grid, noise, callback)


@_register("heun", 25)
def sample_heun(denoise: Denoise, x, grid: Grid, noise: NoiseFn,
                callback: Callback | None = None):
    """Heun's second-order method (Karras et al. 2022, algorithm 1 without churn) on
    dx = x0 da + eps ds: an Euler step, then the trapezoid of both ends' (x0, eps); the last
    step (to clean data) stays Euler, so N steps cost 2N - 1 calls. In the flow (da = -dt,
    ds = dt) this is x' = x + (t' - t) (v + v') / 2."""
    for i in range(len(grid)):
        a, s, a_next, s_next = grid.step(i)
        x0, eps = denoise(x, i)
        euler = a_next * x0 + s_next * eps
        if s_next > 0:
            x0_next, eps_next = denoise(euler, i + 1)
            x = x + 0.5 * ((a_next - a) * (x0 + x0_next) + (s_next - s) * (eps + eps_next))
        else:
            x = euler
        _report(callback, grid, i, x, x0)
    return x


@_register("consistency", 4)
def sample_consistency(denoise: Denoise, x, grid: Grid, noise: NoiseFn,
                       callback: Callback | None = None):
    """Multistep consistency sampling (Song et al. 2023, algorithm 1) for a consistency-
    distilled student, whose x0 estimate is the end of the teacher's trajectory: at each time
    x0 = f(x, t_i), then fresh prior noise to the next time, x = a' x0 + s' eps'. One step
    is one call: x0 = f(x_T, T)."""
    for i in range(len(grid)):
        x0, _ = denoise(x, i)
        a_next, s_next = grid.a[i + 1], grid.s[i + 1]
        x = a_next * x0 + s_next * noise() if s_next > 0 else x0
        _report(callback, grid, i, x, x0)
    return x


def _log_snr(a: float, s: float) -> float:
    """lambda = log(a / s): -inf at pure noise (a = 0), +inf at clean data (s = 0)."""
    if a == 0 or s == 0:
        return -math.inf if a == 0 else math.inf
    return math.log(a / s)


@_register("dpmpp_2m", 20)
def sample_dpmpp_2m(denoise: Denoise, x, grid: Grid, noise: NoiseFn,
                    callback: Callback | None = None):
    """DPM-Solver++(2M) (Lu et al. 2022, algorithm 2), with lambda = log(a / s):
    x' = (s'/s) x - a' (exp(-h) - 1) D, h = lambda' - lambda,
    D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1}, r = h_{i-1} / h.
    A step with an infinite h (from pure noise, a flow's t = 1, or to clean data) is first
    order: Euler's, a' x0 + s' eps, and the next step does not extrapolate across it."""
    x0_prev, h_prev = None, math.inf
    for i in range(len(grid)):
        a, s, a_next, s_next = grid.step(i)
        x0, eps = denoise(x, i)
        h = _log_snr(a_next, s_next) - _log_snr(a, s)
        if math.isfinite(h):
            d = x0
            if x0_prev is not None and math.isfinite(h_prev):
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev  # Lu et al. alg. 2
            x = (s_next / s) * x - a_next * math.expm1(-h) * d
        else:
            x = a_next * x0 + s_next * eps
        x0_prev, h_prev = x0, h
        _report(callback, grid, i, x, x0)
    return x


def _make_denoise(denoiser, process: NoisingProcess, grid: Grid, batch: int, device,
                  clip_x0: bool, cond: dict) -> Denoise:
    ts = grid.t.to(device)

    def denoise(x, i):
        t = ts[i].expand(batch)  # (B,) the process time (DDPM: int64 steps; flow: float)
        a, s = grid.a[i], grid.s[i]
        x0, eps = process.x0_eps(denoiser(x, t, **cond).to(x.dtype), x, a, s)
        if clip_x0:
            x0 = x0.clamp(-1, 1)
            eps = eps_from_x0(x, x0, a, s)
        return x0, eps

    return denoise


def sampler_for(process: NoisingProcess, sampler: str) -> Sampler:
    """The registered `sampler`; a ValueError when it is unknown or does not apply to
    `process` (one line, naming the samplers that do)."""
    entry = SAMPLERS.get(sampler)
    problem = process.sampler_problem(sampler)
    if problem is not None:
        raise ValueError(f"sampler {sampler!r}: {problem}")
    return entry


def sampler_steps(process: NoisingProcess, sampler: str, steps: int | None = None) -> int:
    """How many steps (callbacks) `sampler` takes on `process` for `steps` (None: its
    default)."""
    return len(process.grid(steps or sampler_for(process, sampler).steps, sampler=sampler))


def _sampler_options(sampler: str, entry: Sampler, **given) -> dict:
    options = {k: v for k, v in given.items() if v is not None}
    for key in options:
        if key not in entry.options:
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
    diffusion: NoisingProcess,
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

    `diffusion` is the noising process: a `vidiff.Diffusion` or a `vidiff.FlowMatching`.
    denoiser(xt, t, **cond) returns the process's prediction at the process's time t (B,):
    DDPM's int64 training steps, or a flow's float time in [0, 1] (its velocity function;
    `process.denoiser_of(network)` makes one from a vidiff network). sampler: DDPM's "ddpm"
    (variance "posterior" | "beta"), "ddim" (eta, default 0) and "dpmpp_2m", the flow's
    "euler", "heun" and "dpmpp_2m"; steps defaults to T (ddpm), 50 (ddim, euler), 25 (heun)
    and 20 (dpmpp_2m); `spacing` respaces DDPM's timesteps (`schedules.respace`). Every noise
    (x_T and each step's) is drawn from `prior` (default independent) with `generator`, so a
    seed fixes the result. `callback` gets {"i", "t", "x", "x0"} after each step; `progress`
    shows a bar.

    clip_x0 (default True, the convention of DDPM's code and diffusers' ``clip_sample``):
    each step's estimate of x0 is clamped to [-1, 1] before it is used, and so is the
    result, which suits data scaled to [-1, 1] (every vidiff dataset and the video readers).
    Data outside that range (latents, standardized features, the Gaussian oracle) needs
    ``clip_x0=False``, or the samples are silently clipped.
    With num_images = K the last K frames are independent images (joint training), which get
    independent noise; K is also passed to the denoiser as `num_images`. `cond`: the
    conditions (`vidiff.Cond`, or a dict of its fields), passed as keywords.
    """
    entry = sampler_for(diffusion, sampler)
    options = _sampler_options(sampler, entry, eta=eta, variance=variance)
    grid = diffusion.grid(steps or entry.steps, spacing, sampler)
    prior = prior if prior is not None else noise_prior("independent")
    if device is None:
        device = generator.device if generator is not None else "cpu"

    def noise() -> torch.Tensor:
        return prior.sample(shape, generator=generator, num_images=num_images, device=device,
                            dtype=dtype)

    x = noise() if x_T is None else x_T.to(device=device, dtype=dtype)
    cond = Cond.of(cond)
    cond = cond.replace(num_images=num_images) if num_images else cond
    denoise = _make_denoise(denoiser, diffusion, grid, shape[0], device, clip_x0, cond.kwargs())
    if progress:
        callback = _progress_callback(callback, len(grid))
    x = entry.fn(denoise, x, grid, noise, callback=callback, **options)
    return x.clamp(-1, 1) if clip_x0 else x  # the last step lands on a clamped x0 already


@dataclass
class SamplingConfig:
    """How a model is sampled unless told otherwise: a run's ``[sample]`` section, a model
    spec's ``sampling``, and the defaults of `vidiff.Pipeline` and the sampling commands."""

    # ddpm | ddim | dpmpp_2m (flow: euler | heun | dpmpp_2m). DDPM's ancestral steps: on a
    # short run's model its samples keep their balls far more often than DDIM's or
    # DPM-Solver++'s (docs/RESULTS.md)
    sampler: str = "ddpm"
    steps: int | None = 100  # sampler steps (None: the sampler's default, T for DDPM)
    eta: float | None = None  # DDIM's stochasticity (None: 0, deterministic)
    # classifier-free guidance scale of conditional models, 1 + w in VDM's terms (1: none; an
    # unconditional model ignores it). 1.5 kept the most balls steady in the default run
    # (0.69-0.71 of frame pairs, against 0.61 at 2 and 0.47 at 3: docs/RESULTS.md)
    guidance_scale: float = 1.5
    # DDPM's timestep respacing (vidiff.diffusion.schedules.SPACINGS: linspace | leading |
    # trailing | logsnr; None: the sampler's default). CogVideoX samples "trailing"
    spacing: str | None = None

    def check(self) -> SamplingConfig:
        """`self`, or a `SamplingError` naming the first bad field (the one place these
        values are checked: run configs, the pipeline and the commands all call it)."""
        if self.sampler not in SAMPLERS:
            raise SamplingError("sampler", f"{self.sampler!r} is unknown; choose one of "
                                           f"{', '.join(SAMPLERS.names())} (ddpm, ddim: DDPM "
                                           f"models only; euler, heun: flow models only)")
        if self.steps is not None and self.steps < 1:
            raise SamplingError("steps", f"= {self.steps} must be >= 1")
        if self.eta is not None and self.sampler != "ddim":
            raise SamplingError("eta", f"applies to the ddim sampler only, not {self.sampler!r}")
        if self.eta is not None and self.eta < 0:
            raise SamplingError("eta", f"= {self.eta} must be >= 0")
        if self.spacing is not None and self.spacing not in SPACINGS:
            raise SamplingError("spacing", f"{self.spacing!r} is unknown; choose one of "
                                           f"{', '.join(SPACINGS)}")
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
