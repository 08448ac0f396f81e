"""Every sampler, under every noise prior, driven by the exact denoiser of Gaussian data.

For x0 ~ N(0, C) the oracle E[eps | x_t] is closed-form (vidiff.diffusion.oracle), and with it
every sampler is a linear map of its Gaussian inputs, so the covariance Sigma it produces can be
computed exactly (no sampling). The tests check two things separately:

1. discretization bias: Sigma, whitened by C, is within BIAS[sampler] of the identity. This is
   the sampler's own error (DDIM's first-order steps shrink variance; DPM-Solver++ with 20
   steps overshoots slightly; DDPM's btilde reverse variance is a little too small), not
   sampling noise. The bounds are about 1.5x the errors measured on this data.
2. implementation: N samples drawn by `vidiff.sample` (all noise from the prior) have a sample
   covariance S_hat with |S_hat_ij - Sigma_ij| <= z SE_ij, SE_ij = sqrt((Sigma_ii Sigma_jj +
   Sigma_ij^2) / N), the exact standard error of a Gaussian sample covariance, and
   z = Phi^-1(1 - 0.001 / (2 m)) for the m = D(D+1)/2 entries (Bonferroni: the test fails by
   chance with probability < 0.001). The means obey |mean_i| <= z sqrt(Sigma_ii / N).
Together: |S_hat - C| <= z SE + bias, entrywise, a bound set by the sample size N.
"""

import math
from statistics import NormalDist

import pytest
import torch
from oracle_utils import moving_pattern_covariance

import vidiff
from vidiff.diffusion.oracle import noise_covariance
from vidiff.sampling.samplers import ddpm_step

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (2, 4, 2, 2)  # (C, F, H, W), D = 32
D = math.prod(SHAPE)
C = moving_pattern_covariance(SHAPE)
PRIORS = ["independent", "mixed", "progressive", "decomposed"]
# sampler, steps, options, bias bound (max |whitened Sigma - I|)
SAMPLERS = [
    # DDPM respaced to 250 of its 1000 steps (Nichol & Dhariwal), measured 0.063-0.084: the
    # full chain's 0.018-0.025 cost 4x the time for the same check of the implementation
    ("ddpm", 250, {}, 0.12),
    ("ddim", 100, {"eta": 0.0}, 0.12),
    ("dpmpp_2m", 20, {}, 0.05),
]


def exact_covariance(oracle, diffusion, prior, sampler, steps, options):
    """The covariance of the sampler's output, propagated exactly through its linear steps."""
    s = noise_covariance(prior, SHAPE)
    if sampler != "ddpm":  # deterministic: x_0 = M x_T, Sigma = M S M^T
        basis = torch.linalg.cholesky(s).T.reshape(D, *SHAPE)  # row i = column i of L_S
        out = vidiff.sample(oracle, (D, *SHAPE), diffusion=diffusion, sampler=sampler,
                            steps=steps, x_T=basis, clip_x0=False, dtype=torch.float64,
                            **options)
        y = out.reshape(D, D)  # row i = M l_i
        return y.T @ y
    grid = diffusion.grid(steps, "linspace")
    sigma = s.clone()
    eye = torch.eye(D, dtype=torch.float64).reshape(D, *SHAPE)  # row i = basis vector e_i
    for i in range(len(grid)):
        t = torch.full((D,), int(grid.t[i]), dtype=torch.int64)
        x0, _ = diffusion.split(oracle(eye, t), eye, t)
        abar, nxt = grid.a[i] ** 2, grid.a[i + 1] ** 2
        a = ddpm_step(eye, x0, abar, nxt, None).reshape(D, D).T
        var = 0.0 if i == len(grid) - 1 else (1 - nxt) / (1 - abar) * (1 - abar / nxt)
        sigma = a @ sigma @ a.T + var * s  # DDPM step: x' = A x + sqrt(var) eps, eps ~ N(0, S)
    return sigma


def whitened(sigma):
    chol = torch.linalg.cholesky(C)
    w = torch.linalg.solve_triangular(chol, sigma, upper=False)
    return torch.linalg.solve_triangular(chol, w.T, upper=False)


@pytest.mark.parametrize("prior_name", PRIORS)
@pytest.mark.parametrize("sampler,steps,options,bias", SAMPLERS, ids=[s[0] for s in SAMPLERS])
def test_sampler_reproduces_data_covariance(prior_name, sampler, steps, options, bias):
    diffusion = vidiff.Diffusion(schedule="linear", timesteps=1000, prediction="eps")
    prior = vidiff.noise_prior(prior_name)
    oracle = vidiff.GaussianOracle(C, SHAPE, diffusion, prior)
    sigma = exact_covariance(oracle, diffusion, prior, sampler, steps, options)
    err = (whitened(sigma) - torch.eye(D, dtype=torch.float64)).abs().max().item()
    assert err < bias, f"discretization bias {err:.4f} exceeds {bias}"

    n = 5000 if sampler == "ddpm" else 20000  # DDPM: 250 steps a sample; the bound follows n
    g = torch.Generator().manual_seed(0)
    x = vidiff.sample(oracle, (n, *SHAPE), diffusion=diffusion, prior=prior, sampler=sampler,
                      steps=steps, generator=g, clip_x0=False, dtype=torch.float64, **options)
    x = x.reshape(n, D)
    cov_hat = x.T @ x / n  # the mean is 0 by construction
    m = D * (D + 1) // 2
    z = NormalDist().inv_cdf(1 - 0.001 / (2 * m))
    var = sigma.diagonal()
    se = ((var[:, None] * var[None, :] + sigma**2) / n).sqrt()
    worst = ((cov_hat - sigma).abs() / se).max().item()
    assert worst < z, f"sample covariance off by {worst:.2f} standard errors (bound {z:.2f})"
    assert (x.mean(0).abs() / (var / n).sqrt()).max() < z
    # the combined, stated bound: |cov_hat - C| <= z SE + bias in whitened units
    total = (whitened(cov_hat) - torch.eye(D, dtype=torch.float64)).abs().max().item()
    assert total < bias + z * math.sqrt(2 / n) * 3


class CountingPrior(vidiff.NoisePrior):
    """Wraps a prior and counts its draws."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def sample(self, *args, **kwargs):
        self.calls += 1
        return self.inner.sample(*args, **kwargs)

    def _sample_video(self, *args):
        return self.inner._sample_video(*args)

    def _video_covariance(self, frames):
        return self.inner._video_covariance(frames)


@pytest.mark.parametrize("sampler,steps,draws", [("ddpm", 10, 10), ("ddim", 10, 1),
                                                  ("dpmpp_2m", 10, 1)])
def test_every_noise_comes_from_the_prior(sampler, steps, draws):
    diffusion = vidiff.Diffusion()
    prior = CountingPrior(vidiff.noise_prior("mixed"))
    vidiff.sample(lambda x, t: torch.zeros_like(x), (1, 1, 3, 2, 2), diffusion=diffusion,
                  prior=prior, sampler=sampler, steps=steps, generator=torch.Generator())
    assert prior.calls == draws  # x_T, plus one per stochastic step (none at the last)
    if sampler == "ddim":
        prior.calls = 0
        vidiff.sample(lambda x, t: torch.zeros_like(x), (1, 1, 3, 2, 2), diffusion=diffusion,
                      prior=prior, sampler="ddim", steps=steps, eta=1.0)
        assert prior.calls == steps


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp_2m"])
def test_deterministic_for_a_generator(sampler):
    diffusion = vidiff.Diffusion(timesteps=100)
    opts = {"eta": 0.5} if sampler == "ddim" else {}

    def run(seed):
        return vidiff.sample(lambda x, t: 0.1 * x, (2, 1, 3, 4, 4), diffusion=diffusion,
                             prior=vidiff.noise_prior("progressive"), sampler=sampler,
                             steps=10, generator=torch.Generator().manual_seed(seed), **opts)

    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))


def test_denoiser_sees_training_scale_t_and_callback_runs():
    diffusion = vidiff.Diffusion()
    seen, steps_seen = [], []

    def denoiser(x, t):
        assert t.dtype == torch.int64 and t.shape == (3,)
        seen.append(int(t[0]))
        return torch.zeros_like(x)

    vidiff.sample(denoiser, (3, 1, 2, 2, 2), diffusion=diffusion, sampler="ddim", steps=5,
                  callback=lambda info: steps_seen.append(info["i"]), progress=True)
    assert seen == sorted(seen, reverse=True) and seen[0] == 999 and seen[-1] == 0
    assert steps_seen == list(range(5))


def test_bad_sampler_arguments():
    diffusion = vidiff.Diffusion()
    den = lambda x, t: torch.zeros_like(x)  # noqa: E731
    with pytest.raises(ValueError, match="ddim"):
        vidiff.sample(den, (1, 1, 2, 2, 2), diffusion=diffusion, sampler="euler")
    with pytest.raises(ValueError, match="eta"):
        vidiff.sample(den, (1, 1, 2, 2, 2), diffusion=diffusion, sampler="ddpm", eta=0.5)
    with pytest.raises(ValueError, match="steps"):
        vidiff.sample(den, (1, 1, 2, 2, 2), diffusion=diffusion, sampler="ddim", steps=5000)


def test_images_and_joint_batches_sample():
    diffusion = vidiff.Diffusion(timesteps=50)
    seen = {}

    def den(x, t, num_images=0):
        seen["k"] = num_images
        return torch.zeros_like(x)

    out = vidiff.sample(den, (2, 3, 6, 4, 4), diffusion=diffusion, sampler="ddim", steps=3,
                        prior=vidiff.noise_prior("mixed"), num_images=2)
    assert out.shape == (2, 3, 6, 4, 4) and seen["k"] == 2
    img = vidiff.sample(lambda x, t: torch.zeros_like(x), (2, 3, 4, 4), diffusion=diffusion,
                        sampler="dpmpp_2m", steps=3)
    assert img.shape == (2, 3, 4, 4)


def test_clip_x0_is_on_by_default_and_can_be_turned_off():
    """A denoiser whose x0 estimate is 3 everywhere: DDIM (eta 0) ends at the clipped estimate
    1 by default (data in [-1, 1]) and at 3 with clip_x0=False (data outside that range)."""
    import inspect

    assert inspect.signature(vidiff.sample).parameters["clip_x0"].default is True
    assert "clip_x0=False" in vidiff.sample.__doc__
    diffusion = vidiff.Diffusion(prediction="x0")
    denoiser = lambda x, t: torch.full_like(x, 3.0)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    clipped = vidiff.sample(denoiser, (2, 3, 4, 8, 8), diffusion=diffusion, sampler="ddim",
                            steps=10, generator=g)
    free = vidiff.sample(denoiser, (2, 3, 4, 8, 8), diffusion=diffusion, sampler="ddim",
                         steps=10, generator=g, clip_x0=False)
    torch.testing.assert_close(clipped, torch.ones_like(clipped), atol=1e-3, rtol=0)
    torch.testing.assert_close(free, torch.full_like(free, 3.0), atol=3e-3, rtol=0)
