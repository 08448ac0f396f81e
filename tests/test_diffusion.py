"""Schedules, the forward process, the posterior, parameterizations and the loss."""

import math

import pytest
import torch

import vidiff
from vidiff.diffusion.losses import LossConfig, diffusion_loss, snr_weight
from vidiff.diffusion.schedules import SCHEDULES, make_betas, respace


def test_linear_schedule_is_ddpm():
    betas = make_betas("linear", 1000)
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    assert betas[0].item() == pytest.approx(1e-4, abs=1e-15)
    assert betas[-1].item() == pytest.approx(0.02, abs=1e-15)
    assert (betas.diff() > 0).all()


def test_cosine_schedule_matches_its_formula():
    t, s = 500, 0.008
    betas = make_betas("cosine", 1000)
    abar = torch.cumprod(1 - betas, 0)
    f = lambda u: math.cos((u / 1000 + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    assert abar[t - 1].item() == pytest.approx(f(t) / f(0), rel=1e-12)
    assert betas.max().item() <= 0.999


@pytest.mark.parametrize("name", SCHEDULES.names())
@pytest.mark.parametrize("steps", [10, 1000, 4000])
def test_schedules_valid_for_any_t(name, steps):
    betas = make_betas(name, steps)
    assert betas.shape == (steps,) and (betas > 0).all() and (betas < 1).all()
    abar = torch.cumprod(1 - betas, 0)
    assert abar[-1] < 0.05  # the prior term stays small at any T


def test_unknown_schedule_lists_valid():
    with pytest.raises(ValueError, match="cosine"):
        vidiff.Diffusion(schedule="exp")
    with pytest.raises(ValueError, match="prediction"):
        vidiff.Diffusion(prediction="score")


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace", "logsnr"])
@pytest.mark.parametrize("steps", [1, 7, 50, 1000])
def test_respace(spacing, steps):
    abar = vidiff.Diffusion().alphas_cumprod
    ts = respace(1000, steps, spacing, abar)
    assert ts.dtype == torch.int64 and ts.shape == (steps,)
    assert (ts.diff() < 0).all() and ts.min() >= 0 and ts.max() <= 999
    if steps == 1000:
        assert torch.equal(ts, torch.arange(999, -1, -1))


@pytest.mark.parametrize("timesteps", [10, 37, 999, 1000, 1001])
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace", "logsnr"])
def test_respace_every_step_count(spacing, timesteps):
    """Every `steps` in 1..T gives exactly `steps` distinct timesteps in [0, T-1], descending
    (trailing once gave steps + 1 of them ending in -1, e.g. for 61 of 1000)."""
    abar = vidiff.Diffusion(timesteps=timesteps).alphas_cumprod
    counts = range(1, timesteps + 1)
    if spacing == "logsnr" and timesteps > 100:  # a search per count: every 7th and the ends
        counts = sorted({*range(1, timesteps + 1, 7), 2, timesteps - 1, timesteps})
    for steps in counts:
        ts = respace(timesteps, steps, spacing, abar)
        assert ts.shape == (steps,), (steps, ts.shape)
        assert ts.min() >= 0 and ts.max() <= timesteps - 1, steps
        assert (ts.diff() < 0).all(), steps


def test_respace_trailing_matches_diffusers_everywhere():
    """diffusers' DDIMScheduler trailing spacing, for every step count where it is valid."""
    diffusers = pytest.importorskip("diffusers")
    for steps in range(1, 1001):
        sched = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
        sched.set_timesteps(steps)
        ref = sched.timesteps
        if len(ref) != steps or ref.min() < 0:  # diffusers' own overshoot (e.g. 61 steps)
            continue
        assert respace(1000, steps, "trailing").tolist() == ref.tolist(), steps


def test_respace_matches_diffusers_leading_and_trailing():
    assert respace(1000, 10, "leading").tolist() == list(range(900, -1, -100))
    assert respace(1000, 10, "trailing").tolist() == list(range(999, 0, -100))
    with pytest.raises(ValueError, match="steps"):
        respace(1000, 0)
    with pytest.raises(ValueError, match="spacing"):
        respace(1000, 10, "random")


def test_logsnr_spacing_is_even_in_logsnr():
    diffusion = vidiff.Diffusion()
    abar = diffusion.alphas_cumprod
    ts = respace(1000, 20, "logsnr", abar)
    logsnr = (abar[ts] / (1 - abar[ts])).log()
    gaps = logsnr.diff()
    assert gaps.max() / gaps.min() < 1.5  # rounding to integer steps only
    assert gaps[:-5].max() / gaps[:-5].min() < 1.05  # evenly spaced away from t = 0


def test_q_sample_moments(gen):
    """x_t | x_0 ~ N(sqrt(abar) x_0, 1 - abar) elementwise: check mean and variance."""
    diffusion = vidiff.Diffusion()
    x0 = torch.full((20000, 1, 2, 2, 2), 0.5, dtype=torch.float64)
    t = torch.full((20000,), 300, dtype=torch.int64)
    noise = vidiff.noise_prior("progressive").sample(x0.shape, generator=gen, dtype=torch.float64)
    xt = diffusion.q_sample(x0, t, noise)
    abar = diffusion.alphas_cumprod[300].item()
    n = xt.numel()
    assert abs(xt.mean().item() - 0.5 * math.sqrt(abar)) < 5 * math.sqrt((1 - abar) / 20000)
    assert abs(xt.var().item() - (1 - abar)) < 5 * (1 - abar) * math.sqrt(2 * 8 / n)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_parameterization_round_trips(prediction, gen):
    diffusion = vidiff.Diffusion(schedule="cosine", prediction=prediction)
    x0 = torch.rand((8, 3, 4, 5, 5), generator=gen, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    t = torch.randint(0, 1000, (8,), generator=gen)
    xt = diffusion.q_sample(x0, t, eps)
    target = diffusion.target(x0, eps, t)
    x0_hat, eps_hat = diffusion.split(target, xt, t)
    # float64 (eps 2.2e-16): a few roundings, amplified by 1 / sqrt(abar_t) <= 1 / sqrt(abar_T)
    # where x0 is recovered from the noise (cosine schedule: abar_T = 2.4e-9, an amplification
    # of 2e4): 1e-9 allows 200 such roundings and is far below any real error
    bound = {"rtol": 0, "atol": 1e-9}
    torch.testing.assert_close(x0_hat, x0, **bound)
    torch.testing.assert_close(eps_hat, eps, **bound)
    torch.testing.assert_close(diffusion.predict_x0(xt, t, eps), x0, **bound)
    torch.testing.assert_close(diffusion.predict_eps(xt, t, x0), eps, **bound)


def test_posterior_is_the_gaussian_conditional():
    """q(x_{t-1} | x_t, x_0) from conditioning the joint Gaussian of (x_{t-1}, x_t) | x_0."""
    diffusion = vidiff.Diffusion(timesteps=100)
    for step in [1, 50, 99]:
        abar_t = diffusion.alphas_cumprod[step].item()
        abar_p = diffusion.alphas_cumprod[step - 1].item()
        alpha = diffusion.alphas[step].item()
        # x_{t-1} = sqrt(abar_p) x0 + sqrt(1-abar_p) e1
        # x_t = sqrt(alpha) x_{t-1} + sqrt(1-alpha) e2
        var_p, cov = 1 - abar_p, math.sqrt(alpha) * (1 - abar_p)
        var_t = 1 - abar_t
        x0 = torch.tensor([[0.3]], dtype=torch.float64)
        xt = torch.tensor([[-0.7]], dtype=torch.float64)
        mean_expected = math.sqrt(abar_p) * 0.3 + cov / var_t * (-0.7 - math.sqrt(abar_t) * 0.3)
        var_expected = var_p - cov**2 / var_t
        t = torch.tensor([step])
        mean, var, logvar = diffusion.q_posterior(x0, xt, t)
        assert mean.item() == pytest.approx(mean_expected, rel=1e-10)
        assert var.item() == pytest.approx(var_expected, rel=1e-10)
        assert logvar.exp().item() == pytest.approx(var_expected, rel=1e-10)


def test_t_must_be_int64_batch():
    diffusion = vidiff.Diffusion()
    x = torch.zeros(2, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="int64"):
        diffusion.q_sample(x, torch.tensor([1.0, 2.0]), x)
    with pytest.raises(ValueError, match="shape"):
        diffusion.q_sample(x, torch.tensor([1]), x)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_loss_zero_for_perfect_denoiser(prediction, gen):
    diffusion = vidiff.Diffusion(prediction=prediction)
    x0 = torch.rand((4, 1, 3, 4, 4), generator=gen, dtype=torch.float64) * 2 - 1
    noise = vidiff.noise_prior("mixed").sample(x0.shape, generator=gen, dtype=torch.float64)
    t = diffusion.sample_t(4, gen)

    def perfect(xt, t_):
        return diffusion.target(x0, noise, t_)

    loss = diffusion_loss(perfect, diffusion, x0, t, noise)
    assert loss.shape == (4,) and loss.abs().max() < 1e-20

    def zero(xt, t_):
        return torch.zeros_like(xt)

    eps_loss = diffusion_loss(zero, diffusion, x0, t, noise)
    expected = diffusion.target(x0, noise, t).square().flatten(1).mean(1)
    torch.testing.assert_close(eps_loss, expected.float())


def test_min_snr_weights():
    t = torch.tensor([0, 500, 999])
    for prediction in ["eps", "x0", "v"]:
        diffusion = vidiff.Diffusion(prediction=prediction)
        snr = diffusion.snr(t)
        w = snr_weight(diffusion, t, LossConfig(weighting="min_snr", min_snr_gamma=5.0))
        # every parameterization weights the x0 error by min(snr, 5)
        x0_scale = {"eps": snr, "x0": torch.ones(3), "v": snr + 1}[prediction]
        torch.testing.assert_close(w.double() * x0_scale.double(), snr.clamp(max=5.0).double(),
                                   rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="min_snr"):
        snr_weight(diffusion, t, LossConfig(weighting="p2"))
