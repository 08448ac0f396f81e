"""The variational bound of DDPM (Ho et al. 2020, eq. 5) in bits/dim, under any noise prior.

L = L_T + sum_{t>1} L_{t-1} + L_0 with
  L_T     = KL(q(x_T | x_0) || N(0, S))                         (the prior term)
  L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))        (Gaussian KLs)
  L_0     = -log p(x_0 | x_1)                                    (discretized Gaussian decoder)
Every Gaussian here has covariance (scalar) * S with S = (F x F frame covariance) kron I, so
each KL needs only ||L^-1 (mu_q - mu_p)||^2 with L the Cholesky factor of the F x F matrix.

The decoder under a correlated S is autoregressive over frames: writing S = U D U^T (U unit
lower-triangular), frame i given the earlier frames is Gaussian with mean m_i = x_i - w_i,
w = U^-1 (x - mu), and standard deviation sigma sqrt(D_ii); each conditional is discretized
into 256 bins as in DDPM section 3.3. The product is a proper distribution over the discrete
data, so L stays a bound; for independent noise it is exactly DDPM's decoder.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from vidiff.cond import Cond
from vidiff.diffusion.ddpm import Diffusion
from vidiff.diffusion.priors import NoisePrior, apply_frames, noise_prior

BIN = 1 / 255  # half the width of one of the 256 data bins in [-1, 1]


def quantize_256(videos: torch.Tensor) -> torch.Tensor:
    """Round videos in [-1, 1] to the 256 levels the discretized decoder scores (DDPM 3.3)."""
    return ((videos.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def _log_diff_exp(la: torch.Tensor, lb: torch.Tensor) -> torch.Tensor:
    """log(exp(la) - exp(lb)) for la >= lb, stably."""
    return la + torch.log1p(-torch.exp((lb - la).clamp(max=-1e-12)))


def discretized_gaussian_log_likelihood(x, mean, std) -> torch.Tensor:
    """Elementwise log P(bin of x) under N(mean, std^2) discretized into 256 bins on [-1, 1].

    The edge bins take the tails (DDPM section 3.3). Computed with log-CDFs in float64.
    """
    x, mean, std = x.double(), mean.double(), std.double()
    upper = (x - mean + BIN) / std  # standardized upper bin edge
    lower = (x - mean - BIN) / std
    log_cdf_upper = torch.special.log_ndtr(upper)
    log_sf_lower = torch.special.log_ndtr(-lower)  # log(1 - Phi(lower))
    # mass of the bin: Phi(upper) - Phi(lower), from whichever tail is more accurate
    mid_left = _log_diff_exp(log_cdf_upper, torch.special.log_ndtr(lower))
    mid_right = _log_diff_exp(log_sf_lower, torch.special.log_ndtr(-upper))
    mid = torch.where(lower > 0, mid_right, mid_left)
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_sf_lower, mid))


def _whiten(prior: NoisePrior, x: torch.Tensor, num_images: int) -> torch.Tensor:
    """L^-1 x along the frame axis, L the Cholesky factor of the frame covariance."""
    if x.dim() == 4:
        return x
    chol = prior.frame_cholesky(x.shape[2], num_images)
    return apply_frames(torch.linalg.inv(chol), x)


def decoder_nll(prior: NoisePrior, x0: torch.Tensor, mean: torch.Tensor, var: float,
                num_images: int = 0) -> torch.Tensor:
    """-log p(x_0 | x_1) in nats per sample (B,), p = N(mean, var S) discretized (see above)."""
    std = math.sqrt(var)
    if x0.dim() == 4:
        std_t = torch.tensor(std, dtype=torch.float64)
        logp = discretized_gaussian_log_likelihood(x0, mean, std_t)
        return -logp.flatten(1).sum(1)
    chol = prior.frame_cholesky(x0.shape[2], num_images)  # S_F = L L^T
    diag = chol.diagonal()  # S_F = U D U^T with U = L diag(1/diag), D = diag^2
    unit = chol / diag[None, :]
    w = apply_frames(torch.linalg.inv(unit), (x0 - mean).double())  # w = U^-1 (x - mu)
    eye = torch.eye(len(diag), dtype=torch.float64)
    cond_mean = mean.double() + apply_frames(unit - eye, w)  # m_i = mu_i + sum_{j<i} U_ij w_j
    cond_std = (std * diag).view(1, 1, -1, 1, 1).to(x0.device)  # (1, 1, F, 1, 1)
    logp = discretized_gaussian_log_likelihood(x0, cond_mean, cond_std)
    return -logp.flatten(1).sum(1)


def gaussian_kl(whitened_diff_sq: torch.Tensor, var_q, var_p, dims: int) -> torch.Tensor:
    """KL(N(mu_q, var_q S) || N(mu_p, var_p S)) in nats, given ||L^-1 (mu_q - mu_p)||^2 (B,)."""
    ratio = var_q / var_p
    return 0.5 * (dims * (ratio - 1 - math.log(ratio)) + whitened_diff_sq / var_p)


def prior_kl(diffusion: Diffusion, prior: NoisePrior, x0: torch.Tensor,
             num_images: int = 0) -> torch.Tensor:
    """L_T = KL(q(x_T | x_0) || N(0, S)) in nats per sample (B,)."""
    abar = diffusion.alphas_cumprod[-1].item()
    sq = _whiten(prior, x0.double(), num_images).square().flatten(1).sum(1)
    return gaussian_kl(abar * sq, 1 - abar, 1.0, x0[0].numel())


@torch.no_grad()
def vlb_terms(
    denoiser: Callable[..., torch.Tensor],
    diffusion: Diffusion,
    x0: torch.Tensor,
    *,
    prior: NoisePrior | None = None,
    generator: torch.Generator | None = None,
    variance: str = "posterior",
    num_images: int = 0,
    cond: Cond | dict | None = None,
) -> dict:
    """Every term of the bound for data x0 in [-1, 1] (on the 256-level grid), in bits/dim.

    Returns {"prior": (B,), "decoder": (B,), "kl": (B, T) with the decoder's slot t = 0 at 0,
    "total": (B,)}. variance: the reverse process's "posterior" (btilde_t) or "beta" (beta_t);
    the decoder uses the clipped btilde of improved-diffusion either way. One noise draw from
    the prior per timestep; T network evaluations.
    """
    if variance not in ("posterior", "beta"):
        raise ValueError(f"variance must be 'posterior' or 'beta', got {variance!r}")
    prior = prior if prior is not None else noise_prior("independent")
    cond = Cond.of(cond)
    cond = (cond.replace(num_images=num_images) if num_images else cond).kwargs()
    dims, batch = x0[0].numel(), x0.shape[0]
    to_bits = 1 / (dims * math.log(2))
    kl = torch.zeros(batch, diffusion.timesteps, dtype=torch.float64, device=x0.device)
    decoder = None
    for step in reversed(range(diffusion.timesteps)):
        t = torch.full((batch,), step, dtype=torch.int64, device=x0.device)
        noise = prior.sample(x0.shape, generator=generator, num_images=num_images,
                             device=x0.device, dtype=x0.dtype)
        xt = diffusion.q_sample(x0, t, noise)
        x0_hat, _ = diffusion.split(denoiser(xt, t, **cond), xt, t)
        mean_p, _, logvar = diffusion.q_posterior(x0_hat, xt, t)
        if step == 0:  # L_0: the decoder, mean_p = x0_hat at the first step
            decoder = decoder_nll(prior, x0, mean_p, logvar.flatten()[0].exp().item(), num_images)
            continue
        mean_q, _, _ = diffusion.q_posterior(x0, xt, t)
        var_q = diffusion.posterior_variance[step].item()
        var_p = var_q if variance == "posterior" else diffusion.betas[step].item()
        sq = _whiten(prior, (mean_q - mean_p).double(), num_images).square().flatten(1).sum(1)
        kl[:, step] = gaussian_kl(sq, var_q, var_p, dims)
    prior_term = prior_kl(diffusion, prior, x0, num_images)
    total = prior_term + kl.sum(1) + decoder
    return {"prior": prior_term * to_bits, "decoder": decoder * to_bits, "kl": kl * to_bits,
            "total": total * to_bits}


def nll_bits_per_dim(denoiser, diffusion: Diffusion, x0: torch.Tensor, **kwargs) -> torch.Tensor:
    """The variational bound on the NLL of x0 in bits/dim, per sample (B,) (see vlb_terms)."""
    return vlb_terms(denoiser, diffusion, x0, **kwargs)["total"]
