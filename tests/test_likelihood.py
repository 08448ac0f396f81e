"""The variational bound in bits/dim: its pieces in closed form, and the whole with the oracle."""

import math

import pytest
import torch
from oracle_utils import moving_pattern_covariance

import vidiff
from vidiff.diffusion.likelihood import (
    decoder_nll,
    discretized_gaussian_log_likelihood,
    gaussian_kl,
    prior_kl,
)
from vidiff.diffusion.oracle import gaussian_nll_bits_per_dim, noise_covariance

PRIORS = ["independent", "mixed", "progressive", "decomposed"]


pytestmark = pytest.mark.usefixtures("one_thread")

def test_discretized_gaussian_matches_cdf_differences():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.3, 1.0], dtype=torch.float64)
    mean = torch.tensor([-0.9, -0.45, 0.2, 0.3, 0.7], dtype=torch.float64)
    std = torch.tensor(0.05, dtype=torch.float64)
    normal = torch.distributions.Normal(mean, std)
    upper, lower = normal.cdf(x + 1 / 255), normal.cdf(x - 1 / 255)
    expected = torch.where(x < -0.999, upper, torch.where(x > 0.999, 1 - lower, upper - lower))
    got = discretized_gaussian_log_likelihood(x, mean, std)
    torch.testing.assert_close(got.exp(), expected, rtol=1e-9, atol=1e-15)
    far = discretized_gaussian_log_likelihood(torch.tensor(0.9), torch.tensor(-0.9),
                                              torch.tensor(0.01))
    assert torch.isfinite(far) and far < -1000  # the tail stays finite


def test_gaussian_kl_matches_full_covariance_kl():
    prior = vidiff.noise_prior("progressive", alpha=1.3)
    shape = (1, 3, 2, 1)
    s = noise_covariance(prior, shape)
    g = torch.Generator().manual_seed(0)
    mu_q, mu_p = torch.randn(2, 1, *shape, generator=g, dtype=torch.float64)
    var_q, var_p = 0.02, 0.03
    q = torch.distributions.MultivariateNormal(mu_q.flatten(), var_q * s)
    p = torch.distributions.MultivariateNormal(mu_p.flatten(), var_p * s)
    chol = prior.frame_cholesky(3)
    diff = vidiff.diffusion.priors.apply_frames(torch.linalg.inv(chol), mu_q - mu_p)
    ours = gaussian_kl(diff.square().sum().view(1), var_q, var_p, 6)
    assert ours.item() == pytest.approx(torch.distributions.kl_divergence(q, p).item(), rel=1e-10)


def test_prior_term_matches_full_covariance_kl():
    prior = vidiff.noise_prior("mixed", alpha=2.0)
    diffusion = vidiff.Diffusion(timesteps=50)
    x0 = torch.rand(1, 1, 4, 1, 2, dtype=torch.float64) * 2 - 1
    s = noise_covariance(prior, (1, 4, 1, 2))
    abar = diffusion.alphas_cumprod[-1].item()
    q = torch.distributions.MultivariateNormal(math.sqrt(abar) * x0.flatten(), (1 - abar) * s)
    p = torch.distributions.MultivariateNormal(torch.zeros(8, dtype=torch.float64), s)
    expected = torch.distributions.kl_divergence(q, p).item()
    assert prior_kl(diffusion, prior, x0).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("name", ["independent", "mixed", "progressive"])
def test_correlated_decoder_is_a_distribution(name):
    """Summed over all 256^2 values of a 2-frame pixel, the decoder's probabilities give 1."""
    prior = vidiff.noise_prior(name, **({} if name == "independent" else {"alpha": 1.5}))
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    grid = torch.stack(torch.meshgrid(levels, levels, indexing="ij"), -1).reshape(-1, 2)
    x0 = grid.view(-1, 1, 2, 1, 1)  # (65536, C=1, F=2, H=1, W=1)
    mean = torch.tensor([0.1, -0.2], dtype=torch.float64).view(1, 1, 2, 1, 1).expand_as(x0)
    nll = decoder_nll(prior, x0, mean, var=0.1**2)
    assert nll.neg().exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_independent_decoder_is_ddpm_decoder():
    x0 = torch.tensor([-1.0, 0.0, 0.5, 1.0], dtype=torch.float64).view(1, 1, 4, 1, 1)
    mean = torch.tensor([-0.8, 0.01, 0.49, 0.95], dtype=torch.float64).view(1, 1, 4, 1, 1)
    ours = decoder_nll(vidiff.noise_prior("independent"), x0, mean, var=0.02**2)
    std = torch.tensor(0.02, dtype=torch.float64)
    ref = -discretized_gaussian_log_likelihood(x0, mean, std).sum()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)


def _discrete_gaussian_data(cov, shape, n, g):
    chol = torch.linalg.cholesky(cov)
    x = torch.randn(n, cov.shape[0], generator=g, dtype=torch.float64) @ chol.T
    x = ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1  # the 256-level grid
    return x.view(n, *shape)


@pytest.mark.parametrize("prior_name", PRIORS)
def test_bound_with_oracle_is_close_to_true_nll(prior_name):
    """The bound with the exact (continuous-data) denoiser vs the data's true NLL.

    Data: N(0, C), C drifting-pattern (std 0.3, eigenvalues >= 0.027) on the 256-level grid;
    true NLL = differential entropy - log(bin width), per dim (vidiff.diffusion.oracle, exact to
    O(bin^2 / var) and P(|x| > 1) < 1e-3). Measured here at T = 1000, 500 samples (standard
    error about 0.02-0.03 bits/dim): the bound exceeds the truth by 0.04-0.13 bits/dim with the
    reverse variance beta_t and by 0.66-0.71 with btilde_t. Why not 0: the oracle is optimal
    for continuous data, but at the first steps the noise (std 0.01-0.03) is on the scale of a
    bin (0.008), where the true posterior of x_0 snaps to the grid; and the reverse variances
    are fixed, not learned (DDPM section 4.2 reports the same ordering: fixed beta_t gives the
    better bound). The terms at t = 1..4 carry most of the gap; the prior term is < 1e-5.
    We assert: bound >= truth - 3 SE (it is a bound) and bound - truth < 0.2 (beta) or
    < 0.8 (btilde), under every prior.
    """
    shape = (1, 4, 2, 2)
    cov = moving_pattern_covariance(shape, var=0.09)
    true_bpd = gaussian_nll_bits_per_dim(cov)
    g = torch.Generator().manual_seed(0)
    x0 = _discrete_gaussian_data(cov, shape, 500, g)
    diffusion = vidiff.Diffusion(timesteps=1000)
    prior = vidiff.noise_prior(prior_name)
    oracle = vidiff.GaussianOracle(cov, shape, diffusion, prior)
    for variance, max_gap in [("beta", 0.2), ("posterior", 0.8)]:
        terms = vidiff.vlb_terms(oracle, diffusion, x0, prior=prior, generator=g,
                                 variance=variance)
        bound = terms["total"].mean().item()
        se = terms["total"].std().item() / math.sqrt(500)
        assert bound > true_bpd - 3 * se, (variance, bound, true_bpd)
        assert bound - true_bpd < max_gap, (variance, bound, true_bpd)
        assert terms["prior"].max() < 1e-4
    # a wrong denoiser (the oracle of data twice as wide) gives a clearly worse bound
    wrong = vidiff.GaussianOracle(cov * 4, shape, diffusion, prior)
    worse = vidiff.nll_bits_per_dim(wrong, diffusion, x0, prior=prior, generator=g,
                                    variance="beta").mean().item()
    assert worse > bound + 0.1 or worse > true_bpd + 0.3


def test_bound_on_images_and_bad_variance():
    diffusion = vidiff.Diffusion(timesteps=20)
    x0 = torch.zeros(2, 1, 2, 2)
    bpd = vidiff.nll_bits_per_dim(lambda x, t: torch.zeros_like(x), diffusion, x0,
                                  generator=torch.Generator().manual_seed(0))
    assert bpd.shape == (2,) and torch.isfinite(bpd).all()
    with pytest.raises(ValueError, match="variance"):
        vidiff.vlb_terms(lambda x, t: x, diffusion, x0, variance="learned")


