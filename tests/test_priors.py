"""Noise priors: closed-form frame covariances, sample moments, determinism, bad parameters."""

import math

import pytest
import torch

import vidiff
from vidiff.diffusion.priors import PRIORS

F = 6


def closed_form(name, params, frames):
    """docs/MATH.md section 2, written independently of vidiff.diffusion.priors."""
    i = torch.arange(frames, dtype=torch.float64)
    if name == "independent":
        return torch.eye(frames, dtype=torch.float64)
    if name == "mixed":
        a2 = params.get("alpha", 1.0) ** 2
        cov = torch.full((frames, frames), a2 / (1 + a2), dtype=torch.float64)
        return cov.fill_diagonal_(1.0)
    if name == "progressive":
        a = params.get("alpha", 2.0)
        return (a / math.sqrt(1 + a * a)) ** (i[:, None] - i[None, :]).abs()
    lam = torch.full((frames,), params.get("lam", 0.5), dtype=torch.float64)
    lam[frames // 2] = 1.0
    cov = (lam[:, None] * lam[None, :]).sqrt()
    return cov.fill_diagonal_(1.0)


CASES = [
    ("independent", {}),
    ("mixed", {}),
    ("mixed", {"alpha": 0.5}),
    ("progressive", {}),
    ("progressive", {"alpha": 0.7}),
    ("decomposed", {}),
    ("decomposed", {"lam": 0.2}),
]


@pytest.mark.parametrize("name,params", CASES)
def test_frame_covariance_closed_form(name, params):
    prior = vidiff.noise_prior(name, **params)
    cov = prior.frame_covariance(F)
    assert cov.dtype == torch.float64 and cov.shape == (F, F)
    torch.testing.assert_close(cov, closed_form(name, params, F), rtol=0, atol=1e-15)
    chol = prior.frame_cholesky(F)
    torch.testing.assert_close(chol @ chol.T, cov, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name,params", CASES)
def test_sample_moments_match_covariance(name, params, gen):
    """10^5+ draws per frame pair: variance 1, correlation = frame_covariance.

    With n = 2^17 independent draws, a sample correlation has standard error
    (1 - rho^2) / sqrt(n) <= 1/362 = 0.0028 and a sample variance sqrt(2/n) = 0.0039;
    we allow 5 standard errors (0.014 and 0.02), a false alarm rate below 1e-5 per entry.
    """
    prior = vidiff.noise_prior(name, **params)
    # every pixel and channel is an independent draw of the F-frame vector
    eps = prior.sample((64, 2, F, 32, 32), generator=gen, dtype=torch.float64)
    frames = eps.permute(2, 0, 1, 3, 4).reshape(F, -1)  # (F, 131072)
    n = frames.shape[1]
    assert n >= 10**5
    se_var = math.sqrt(2 / n)
    assert (frames.var(1) - 1).abs().max() < 5 * se_var
    assert frames.mean(1).abs().max() < 5 / math.sqrt(n)
    corr = torch.corrcoef(frames)
    assert (corr - prior.frame_covariance(F)).abs().max() < 5 / math.sqrt(n)


def test_pixels_and_channels_uncorrelated(gen):
    eps = vidiff.noise_prior("mixed", alpha=3.0).sample((4096, 2, 3, 2, 1), generator=gen)
    chan = torch.corrcoef(torch.stack([eps[:, 0, 1, 0, 0], eps[:, 1, 1, 0, 0]]))[0, 1]
    pix = torch.corrcoef(torch.stack([eps[:, 0, 1, 0, 0], eps[:, 0, 1, 1, 0]]))[0, 1]
    assert abs(chan) < 5 / 64 and abs(pix) < 5 / 64
    same_pix = torch.corrcoef(torch.stack([eps[:, 0, 0, 0, 0], eps[:, 0, 1, 0, 0]]))[0, 1]
    assert abs(same_pix - 0.9) < 5 / 64


def test_decomposed_key_frame_is_base_noise(gen):
    prior = vidiff.noise_prior("decomposed", lam=0.3)
    eps = prior.sample((1, 1, 5, 64, 64), generator=gen, dtype=torch.float64)
    # frame i = sqrt(lam) b + sqrt(1 - lam) r_i with b = frame k = 2
    lam = prior.lambdas(5)
    assert lam[2] == 1.0 and lam[0] == 0.3
    resid = (eps[:, :, 0] - math.sqrt(0.3) * eps[:, :, 2]) / math.sqrt(0.7)
    assert abs(resid.var().item() - 1) < 0.05
    assert abs(torch.corrcoef(torch.stack([resid.flatten(), eps[:, :, 2].flatten()]))[0, 1]) < 0.04


def test_decomposed_per_frame_lambda():
    prior = vidiff.noise_prior("decomposed", lam=[0.1, 0.2, 0.0, 0.4], key_frame=1)
    cov = prior.frame_covariance(4)
    lam = torch.tensor([0.1, 1.0, 0.0, 0.4], dtype=torch.float64)
    expected = (lam[:, None] * lam[None, :]).sqrt().fill_diagonal_(1.0)
    torch.testing.assert_close(cov, expected)
    with pytest.raises(ValueError, match="per-frame"):
        prior.frame_covariance(5)


@pytest.mark.parametrize("name", PRIORS.names())
def test_same_seed_same_noise(name):
    prior = vidiff.noise_prior(name)
    a = prior.sample((2, 3, 4, 5, 5), generator=torch.Generator().manual_seed(7))
    b = prior.sample((2, 3, 4, 5, 5), generator=torch.Generator().manual_seed(7))
    c = prior.sample((2, 3, 4, 5, 5), generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name", ["mixed", "progressive", "decomposed"])
def test_joint_images_get_independent_noise(name, gen):
    prior = vidiff.noise_prior(name)
    eps = prior.sample((4096, 1, 6, 2, 2), generator=gen, num_images=2, dtype=torch.float64)
    frames = eps.permute(2, 0, 1, 3, 4).reshape(6, -1)
    corr = torch.corrcoef(frames)
    expected = prior.frame_covariance(6, num_images=2)
    assert expected[:4, 4:].abs().max() == 0 and expected[4, 5] == 0
    torch.testing.assert_close(expected[:4, :4], prior.frame_covariance(4))
    assert (corr - expected).abs().max() < 5 / math.sqrt(frames.shape[1])


def test_image_shapes_get_iid_noise(gen):
    eps = vidiff.noise_prior("mixed").sample((3, 2, 4, 4), generator=gen)
    assert eps.shape == (3, 2, 4, 4)


@pytest.mark.parametrize(
    "name,params,word",
    [
        ("mixed", {"alpha": 0.0}, "alpha"),
        ("mixed", {"alpha": -1.0}, "alpha"),
        ("progressive", {"alpha": 0}, "alpha"),
        ("progressive", {"alpha": float("nan")}, "alpha"),
        ("decomposed", {"lam": 1.5}, "lam"),
        ("decomposed", {"lam": -0.1}, "lam"),
        ("decomposed", {"lam": [0.5, 2.0]}, "lam"),
        ("mixed", {"beta": 1.0}, "beta"),
    ],
)
def test_bad_parameters_name_the_parameter(name, params, word):
    with pytest.raises(ValueError, match=word):
        vidiff.noise_prior(name, **params)


def test_bad_frames_and_key_frame():
    with pytest.raises(ValueError, match="F "):
        vidiff.noise_prior("mixed").frame_covariance(0)
    with pytest.raises(ValueError, match="key_frame"):
        vidiff.noise_prior("decomposed", key_frame=5).frame_covariance(4)
    with pytest.raises(ValueError, match="key_frame"):
        vidiff.noise_prior("decomposed", key_frame=-1)
    with pytest.raises(ValueError, match="valid names"):
        vidiff.noise_prior("pink")
    with pytest.raises(ValueError, match="num_images"):
        vidiff.noise_prior("mixed").sample((1, 1, 3, 2, 2), num_images=4)


def test_singular_covariance_has_clear_error():
    prior = vidiff.noise_prior("decomposed", lam=1.0)
    with pytest.raises(ValueError, match="singular"):
        prior.frame_cholesky(3)


def test_lambda_keyword_alias():
    prior = vidiff.noise_prior("decomposed", **{"lambda": 0.25})
    assert prior.lam == 0.25
