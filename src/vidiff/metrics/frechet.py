"""The Fréchet distance between Gaussians, and streaming feature statistics (mean, covariance).

`frechet_distance` follows the definition of pytorch-fid's ``calculate_frechet_distance``,

    d^2 = ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)),

but computes the trace of the matrix square root without ``scipy.linalg.sqrtm``: with
``A = S1^(1/2)`` (symmetric, from an eigendecomposition), ``S1 S2 = A^-1 (A S2 A) A`` is similar
to the symmetric PSD matrix ``A S2 A``, so ``tr (S1 S2)^(1/2) = sum_i sqrt(lambda_i(A S2 A))``.
That is exact, needs no regularizing offset for singular covariances, and never produces
complex parts. When one covariance is positive definite its Cholesky factor ``L`` serves
instead of ``A`` (``L^T S2 L`` is similar to ``S1 S2`` as well), which skips the costly full
eigendecomposition: for 2048-d Inception features one symmetric eigenvalue solve remains.
The linear algebra runs in float64 through torch, so it uses torch's thread setting
(``torch.set_num_threads``) rather than oversubscribing a busy machine with BLAS threads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["frechet_distance", "FeatureStats"]


def _as_float64(x) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric PSD matrix (negative eigenvalues -> 0)."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0.0).sqrt()) @ vectors.T


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr (S1 S2)^(1/2)`` of symmetric PSD matrices (see the module docstring)."""
    s1, s2 = torch.from_numpy(sigma1), torch.from_numpy(sigma2)
    for a, b in ((s1, s2), (s2, s1)):  # tr sqrt(S1 S2) = tr sqrt(S2 S1)
        chol, info = torch.linalg.cholesky_ex(a)
        if int(info) == 0:  # a = L L^T: L^T b L is similar to a b
            middle = chol.T @ b @ chol
            break
    else:  # both singular: the symmetric square root of S1
        root = _sqrt_psd(s1)
        middle = root @ s2 @ root
    eigen = torch.linalg.eigvalsh((middle + middle.T) / 2)
    return float(eigen.clamp(min=0.0).sqrt().sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))`` in float64
    (see the module docstring for the square root). Takes numpy arrays or tensors: means
    ``(D,)``, covariances ``(D, D)`` (symmetrized; tiny negative eigenvalues from rounding
    are clipped). The result is clipped at 0 (it is a squared distance; rounding can leave
    values like -1e-15 for identical inputs).
    """
    mu1, mu2 = np.atleast_1d(_as_float64(mu1)), np.atleast_1d(_as_float64(mu2))
    sigma1, sigma2 = np.atleast_2d(_as_float64(sigma1)), np.atleast_2d(_as_float64(sigma2))
    d = mu1.shape[0]
    if (
        mu1.shape != (d,)
        or mu2.shape != (d,)
        or sigma1.shape != (d, d)
        or (sigma2.shape != (d, d))
    ):
        raise ValueError(
            f"expected means (D,) and covariances (D, D) of one D, got {mu1.shape}, "
            f"{sigma1.shape}, {mu2.shape}, {sigma2.shape}"
        )
    if not (
        np.isfinite(mu1).all()
        and np.isfinite(mu2).all()
        and np.isfinite(sigma1).all()
        and np.isfinite(sigma2).all()
    ):
        raise ValueError("the means and covariances must be finite")
    sigma1, sigma2 = (sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2
    tr_covmean = _trace_sqrt_product(sigma1, sigma2)
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    return max(value, 0.0)


class FeatureStats:
    """Running mean and covariance of feature vectors, in float64, in bounded memory.

    ``update(features)`` adds a batch ``(B, D)``; batches are merged with the pairwise update
    of Chan et al. (mean and centered co-moment, no sums of squares that lose precision), so
    any number of clips costs ``O(D^2)`` memory and the result does not depend on how the
    data was batched (up to rounding). ``cov`` is the unbiased (``n - 1``) covariance, as
    ``numpy.cov`` and pytorch-fid use. ``names`` optionally labels the D features.
    """

    def __init__(self, dim: int | None = None, names: Sequence[str] | None = None):
        self.names = list(names) if names is not None else None
        if dim is None and names is not None:
            dim = len(names)
        self.dim = dim
        self.count = 0
        self._mean = np.zeros(dim or 0)
        self._m2 = np.zeros((dim or 0, dim or 0))

    def update(self, features) -> FeatureStats:
        """Add a batch of feature vectors ``(B, D)``; returns self."""
        x = _as_float64(features)
        if x.ndim != 2:
            raise ValueError(f"expected features (B, D), got shape {x.shape}")
        if self.dim is None:
            self.dim = x.shape[1]
            self._mean, self._m2 = np.zeros(self.dim), np.zeros((self.dim, self.dim))
        if x.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim} features, got {x.shape[1]}")
        if not np.isfinite(x).all():
            raise ValueError("features must be finite (got NaN or inf)")
        n = x.shape[0]
        if n == 0:
            return self
        mean = x.mean(0)
        centered = x - mean
        self._merge(n, mean, centered.T @ centered)
        return self

    def _merge(self, n: int, mean: np.ndarray, m2: np.ndarray) -> None:
        total = self.count + n
        delta = mean - self._mean
        self._m2 = self._m2 + m2 + np.outer(delta, delta) * (self.count * n / total)
        self._mean = self._mean + delta * (n / total)
        self.count = total

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Add the statistics of another accumulator (e.g. from another process); returns self."""
        if other.count == 0:
            return self
        if self.dim is None:
            self.dim, self.names = other.dim, other.names
            self._mean, self._m2 = np.zeros(self.dim), np.zeros((self.dim, self.dim))
        if other.dim != self.dim:
            raise ValueError(f"cannot merge {other.dim} features into {self.dim}")
        self._merge(other.count, other._mean, other._m2)
        return self

    @property
    def mean(self) -> np.ndarray:
        """The mean feature vector ``(D,)``."""
        if self.count == 0:
            raise ValueError("no features added yet")
        return self._mean.copy()

    @property
    def cov(self) -> np.ndarray:
        """The unbiased covariance ``(D, D)`` (needs at least 2 vectors)."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.count}")
        return self._m2 / (self.count - 1)

    def state_dict(self) -> dict:
        """Plain arrays (for `numpy.savez` or `torch.save`)."""
        return {
            "count": np.int64(self.count),
            "mean": self._mean.copy(),
            "m2": self._m2.copy(),
            "names": np.array(self.names if self.names is not None else [], dtype=str),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> FeatureStats:
        """The inverse of `state_dict`."""
        names = [str(n) for n in state["names"]] or None
        mean = np.asarray(state["mean"], dtype=np.float64)
        stats = cls(mean.shape[0], names)
        stats.count = int(state["count"])
        stats._mean = mean.copy()
        stats._m2 = np.asarray(state["m2"], dtype=np.float64).copy()
        return stats

    def save(self, path: str | os.PathLike) -> None:
        """Save to an ``.npz`` file (reference statistics computed once, reused by runs)."""
        np.savez(path, **self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStats:
        """Load statistics saved by `save`."""
        with np.load(path, allow_pickle=False) as data:
            return cls.from_state_dict(dict(data))

    def __repr__(self) -> str:
        return f"FeatureStats(count={self.count}, dim={self.dim})"
