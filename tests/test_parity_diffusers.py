"""Parity with diffusers' DDPMScheduler and DDIMScheduler for independent noise (to 1e-5)."""

import pytest
import torch

import vidiff
from vidiff.sampling.samplers import ddim_step, ddpm_step

diffusers = pytest.importorskip("diffusers")

SHAPE = (2, 3, 4, 8, 8)


def linear_denoiser(x, t):
    """A deterministic stand-in for a network: depends on x and t."""
    return 0.3 * x + 0.001 * t.view(-1, 1, 1, 1, 1).float() * x.flip(-1)


def _scheduler(cls, schedule, exact=True, **kwargs):
    """A diffusers scheduler; exact=True gives it vidiff's float64 abar (diffusers keeps float32,
    whose cumulative product drifts by ~1e-5 relative, enough to move a step by 2e-4), so the
    comparison tests the step formulas themselves."""
    names = {"linear": "linear", "quadratic": "scaled_linear", "cosine": "squaredcos_cap_v2"}
    sched = cls(num_train_timesteps=1000, beta_schedule=names[schedule], clip_sample=False,
                **kwargs)
    if exact:
        sched.alphas_cumprod = vidiff.Diffusion(schedule=schedule).alphas_cumprod
    return sched


@pytest.mark.parametrize("schedule", ["linear", "quadratic", "cosine"])
def test_betas_match(schedule):
    ours = vidiff.Diffusion(schedule=schedule).betas
    theirs = _scheduler(diffusers.DDPMScheduler, schedule, exact=False).betas.double()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("variance,name", [("posterior", "fixed_small"), ("beta", "fixed_large")])
@pytest.mark.parametrize("steps", [1000, 50])
def test_ddpm_step_matches(variance, name, steps):
    diffusion = vidiff.Diffusion()
    sched = _scheduler(diffusers.DDPMScheduler, "linear", variance_type=name)
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, generator=g)
    for t in sched.timesteps[[0, len(sched.timesteps) // 2, -2]].tolist():
        out = linear_denoiser(x, torch.full((2,), t))
        theirs = sched.step(out, t, x, generator=torch.Generator().manual_seed(1)).prev_sample
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
        prev = t - 1000 // steps
        abar = diffusion.alphas_cumprod[t].item()
        abar_next = diffusion.alphas_cumprod[prev].item() if prev >= 0 else 1.0
        x0 = (x - (1 - abar) ** 0.5 * out) / abar**0.5
        ours = ddpm_step(x, x0, abar, abar_next, noise, variance)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_step_matches(eta):
    diffusion = vidiff.Diffusion()
    sched = _scheduler(diffusers.DDIMScheduler, "linear")
    sched.set_timesteps(25)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, generator=g)
    for i in [0, 10, 24]:
        t = int(sched.timesteps[i])
        out = linear_denoiser(x, torch.full((2,), t))
        theirs = sched.step(out, t, x, eta=eta, generator=torch.Generator().manual_seed(3))
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
        abar = diffusion.alphas_cumprod[t].item()
        prev = t - 1000 // 25
        abar_next = diffusion.alphas_cumprod[prev].item() if prev >= 0 else 1.0
        x0 = (x - (1 - abar) ** 0.5 * out) / abar**0.5
        ours = ddim_step(x0, out, abar**0.5, (1 - abar) ** 0.5, abar_next**0.5,
                         (1 - abar_next) ** 0.5, eta, noise)
        torch.testing.assert_close(ours, theirs.prev_sample, rtol=1e-5, atol=1e-5)


def _diffusers_loop(sched, steps, seed, **step_kwargs):
    g = torch.Generator().manual_seed(seed)
    sched.set_timesteps(steps)
    x = torch.randn(SHAPE, generator=g)
    for t in sched.timesteps:
        out = linear_denoiser(x, torch.full((SHAPE[0],), int(t)))
        x = sched.step(out, t, x, generator=g, **step_kwargs).prev_sample
    return x


@pytest.mark.parametrize("sampler,steps,cls,kwargs", [
    ("ddpm", 50, "DDPMScheduler", {}),
    ("ddim", 20, "DDIMScheduler", {"eta": 0.0}),
    ("ddim", 20, "DDIMScheduler", {"eta": 0.5}),
])
def test_whole_trajectory_matches(sampler, steps, cls, kwargs):
    """The same generator gives the same x_T and step noise, so whole samples agree."""
    sched = _scheduler(getattr(diffusers, cls), "linear")
    theirs = _diffusers_loop(sched, steps, 5, **kwargs)
    ours = vidiff.sample(linear_denoiser, SHAPE, diffusion=vidiff.Diffusion(), sampler=sampler,
                         steps=steps, spacing="leading", clip_x0=False,
                         generator=torch.Generator().manual_seed(5), **kwargs)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
