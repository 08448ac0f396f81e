"""The exact denoiser for Gaussian data: the yardstick of the samplers and the likelihood.

For data x0 ~ N(0, C) and x_t = a x0 + s eps with eps ~ N(0, S) (a = sqrt(abar_t),
s = sqrt(1 - abar_t), S the prior's covariance), x_t ~ N(0, a^2 C + s^2 S) and

    E[eps | x_t] = s S (a^2 C + s^2 S)^-1 x_t.

With S = L L^T and L^-1 C L^-T = U diag(lam) U^T this is s L U diag(1 / (a^2 lam + s^2)) U^T
L^-1 x_t: one eigendecomposition, then two matrix products per call, for any t.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from vidiff.diffusion.ddpm import Diffusion
from vidiff.diffusion.priors import NoisePrior


def noise_covariance(prior: NoisePrior, shape: Sequence[int], num_images: int = 0):
    """The full (D, D) float64 covariance of the prior's noise for one (C, F, H, W) sample."""
    c, f, h, w = shape
    frames = prior.frame_covariance(f, num_images)
    eye_c = torch.eye(c, dtype=torch.float64)
    eye_p = torch.eye(h * w, dtype=torch.float64)
    return torch.kron(torch.kron(eye_c, frames), eye_p)  # index order (c, f, h, w)


class GaussianOracle:
    """The Bayes-optimal denoiser for x0 ~ N(0, C) under a noise prior; a `denoiser`.

    data_cov: (D, D) covariance of the flattened (C, F, H, W) data. Calling the oracle with
    (xt, t) returns the diffusion's prediction type (eps, x0 or v) exactly.
    """

    def __init__(self, data_cov: torch.Tensor, shape: Sequence[int], diffusion: Diffusion,
                 prior: NoisePrior, num_images: int = 0):
        self.shape = tuple(shape)
        self.diffusion = diffusion
        d = math.prod(self.shape)
        if data_cov.shape != (d, d):
            raise ValueError(f"data_cov must be ({d}, {d}) for shape {self.shape}")
        chol = torch.linalg.cholesky(noise_covariance(prior, self.shape, num_images))
        whitened = torch.linalg.solve_triangular(chol, data_cov.double(), upper=False)
        whitened = torch.linalg.solve_triangular(chol, whitened.T, upper=False)  # L^-1 C L^-T
        lam, u = torch.linalg.eigh((whitened + whitened.T) / 2)
        self.lam = lam.clamp(min=0)  # (D,)
        self.left = chol @ u  # L U, (D, D)
        self.right = torch.linalg.solve_triangular(chol.T, u, upper=True)  # L^-T U = (U^T L^-1)^T
        self._cast: dict = {}

    def _mats(self, device, dtype):
        key = (device, dtype)
        if key not in self._cast:
            self._cast[key] = tuple(m.to(device=device, dtype=dtype)
                                    for m in (self.left, self.right, self.lam))
        return self._cast[key]

    def eps(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """E[eps | x_t] for xt (B, C, F, H, W) and t int64 (B,)."""
        return self._posterior_mean(xt, t, noise=True)

    def x0(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """E[x0 | x_t] = a C K^-1 x_t = L U diag(a lam / (a^2 lam + s^2)) U^T L^-1 x_t: no
        division by a, so finite at abar_t = 0 (zero terminal SNR, where it is 0)."""
        return self._posterior_mean(xt, t, noise=False)

    def _posterior_mean(self, xt: torch.Tensor, t: torch.Tensor, noise: bool) -> torch.Tensor:
        left, right, lam = self._mats(xt.device, xt.dtype)
        abar = self.diffusion.gather("alphas_cumprod", t, xt).view(-1, 1)  # (B, 1)
        a2, s = abar, (1 - abar).sqrt()
        y = xt.reshape(xt.shape[0], -1) @ right  # (B, D): U^T L^-1 x
        scale = s if noise else abar.sqrt() * lam  # eps: s S K^-1 x; x0: a C K^-1 x
        y = y * (scale / (a2 * lam + 1 - abar))  # diag(. / (a^2 lam + s^2))
        return (y @ left.T).view(xt.shape)  # L U y

    def velocity(self, xt: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        """The exact flow-matching velocity E[eps - x0 | x_t] for x_t = (1 - t) x0 + t eps,
        float t (B,) in [0, 1] (`vidiff.diffusion.flow`): with a = 1 - t, s = t,
        E[x0 | x_t] = a C K^-1 x_t and E[eps | x_t] = s S K^-1 x_t, K = a^2 C + s^2 S, so
        v = L U diag((s - a lam) / (a^2 lam + s^2)) U^T L^-1 x_t: linear in x_t, and finite
        at both ends (t = 1: v = x_t; t = 0: v = -x_t on the data's support)."""
        left, right, lam = self._mats(xt.device, torch.float64)
        b = xt.shape[0]
        s = t.to(torch.float64).view(b, 1)
        a = 1 - s
        flat = xt.reshape(b, -1).to(torch.float64)  # (B, D)
        z = flat @ right  # (B, D): U^T L^-1 x_t, per sample
        z = z * (s - a * lam) / (a * a * lam + s * s).clamp(min=1e-30)
        return (z @ left.T).reshape(xt.shape).to(xt.dtype)

    def __call__(self, xt: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        eps = self.eps(xt, t)
        return self.diffusion.target(self.x0(xt, t), eps, t)


def gaussian_nll_bits_per_dim(data_cov: torch.Tensor, bin_width: float = 2 / 255) -> float:
    """Expected NLL in bits/dim of N(0, C) data discretized to bins of `bin_width`.

    -log P(bin) = -log p(x) - D log(bin_width) up to O(bin_width^2 / var); its mean is the
    differential entropy 0.5 (D log(2 pi e) + log det C) minus D log(bin_width).
    """
    d = data_cov.shape[0]
    logdet = torch.linalg.slogdet(data_cov.double())[1].item()
    nats = 0.5 * (d * math.log(2 * math.pi * math.e) + logdet) - d * math.log(bin_width)
    return nats / (d * math.log(2))


def gaussian_data(cov_cholesky: torch.Tensor, n: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """`n` draws of *data* x0 ~ N(0, L L^T), float64 (n, D), from the Cholesky factor L
    (D, D): the Gaussian data the oracle is exact for. Not diffusion noise, which always comes
    from a `vidiff.diffusion.priors.NoisePrior`."""
    shape = (n, cov_cholesky.shape[0])  # x0 = L z: Gaussian data
    z = torch.randn(shape, generator=generator, dtype=torch.float64)  # not diffusion noise
    return z @ cov_cholesky.T  # (n, D)
