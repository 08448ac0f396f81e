"""Per-frame FID and Inception Score of videos, with pytorch-fid's InceptionV3.

Every frame of every clip is treated as an image: frames are rounded to 8 bits (as the
references read saved PNGs; ``FIDConfig.quantize``), mapped to [0, 1], and fed to
`FIDInceptionV3`, which resizes to 299x299 and normalizes exactly as pytorch-fid.

- **FID** (Heusel et al., 2017): the Fréchet distance between Gaussians fitted to the 2048-d
  pool3 features of real and generated frames, ``||mu_r - mu_g||^2 + tr(S_r + S_g -
  2 (S_r S_g)^(1/2))``, with unbiased covariances as pytorch-fid (``numpy.cov``). Features are
  streamed into float64 accumulators (`FeatureStats`), so memory stays bounded.
- **IS** (Salimans et al., 2016): ``exp(E_x KL(p(y|x) || p(y)))`` averaged over ``splits``
  consecutive chunks, with ``p(y|x)`` the softmax over all 1008 outputs of the bias-free logits
  (the original TF code and torch-fidelity's ``logits_unbiased``; see `vidiff.metrics.inception`).
  The class probabilities of all frames are kept (1008 floats each) because the splits need
  them.

>>> net = load_fid_inception("pt_inception-2015-12-05-6726825d.pth")
>>> fid_per_frame(real_videos, fake_videos, net)     # (B, C, F, H, W) in [-1, 1]
>>> frame_inception_score(fake_videos, net)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vidiff.metrics.frechet import FeatureStats
from vidiff.metrics.fvd import _device_of, _iter_batches, _to_255, stats_distance
from vidiff.metrics.inception import FIDInceptionV3, load_fid_inception

__all__ = [
    "FIDConfig",
    "video_frames",
    "inception_frame_features",
    "inception_frame_stats",
    "fid_per_frame",
    "inception_score",
    "frame_inception_score",
    "InceptionScoreAccumulator",
]

VideoSource = Tensor | FeatureStats | Iterable[Any]


@dataclass
class FIDConfig:
    """How video frames become Inception features (defaults: pytorch-fid's conventions)."""

    batch_size: int = 50  # frames per forward pass (pytorch-fid's default)
    quantize: bool = True  # round to 8-bit levels first, as the references read saved images
    frame_stride: int = 1  # use every k-th frame of each clip
    unbiased: bool = True  # covariance / (N - 1), as numpy.cov in pytorch-fid

    def __post_init__(self):
        if self.batch_size < 1 or self.frame_stride < 1:
            raise ValueError("batch_size and frame_stride must be >= 1")


def _as_inception(inception: FIDInceptionV3 | str | os.PathLike) -> FIDInceptionV3:
    if isinstance(inception, (str, os.PathLike)):
        return load_fid_inception(inception)
    return inception


def video_frames(videos: Tensor, frame_stride: int = 1) -> Tensor:
    """Videos ``(B, C, F, H, W)`` -> frames ``(B * F', C, H, W)`` (every ``frame_stride``-th)."""
    if videos.ndim != 5:
        raise ValueError(f"expected videos (B, C, F, H, W), got shape {tuple(videos.shape)}")
    v = videos[:, :, ::frame_stride]
    b, c, f, h, w = v.shape
    return v.transpose(1, 2).reshape(b * f, c, h, w)  # (B*F', C, H, W)


def _frame_batches(videos: Tensor | Iterable[Any], config: FIDConfig) -> Iterator[Tensor]:
    """Frames in [0, 1] (float32, 3 channels), ``config.batch_size`` at a time."""
    pending: list[Tensor] = []
    count = 0
    for clip_batch in _iter_batches(videos, config.batch_size, ndim=5):
        frames = _to_255(video_frames(clip_batch, config.frame_stride), config.quantize) / 255.0
        pending.append(frames)
        count += frames.shape[0]
        while count >= config.batch_size:
            flat = torch.cat(pending)
            yield flat[:config.batch_size]
            pending, count = [flat[config.batch_size:]], flat.shape[0] - config.batch_size
    if count:
        yield torch.cat(pending)


@torch.no_grad()
def inception_frame_features(
    videos: Tensor | Iterable[Any],
    inception: FIDInceptionV3 | str | os.PathLike,
    config: FIDConfig | None = None,
) -> tuple[Tensor, Tensor]:
    """``(pool3 (N, 2048), IS logits (N, 1008))`` of all frames, float32 on the CPU."""
    config = config or FIDConfig()
    net = _as_inception(inception)
    device = _device_of(net)
    pools, logits = [], []
    for frames in _frame_batches(videos, config):
        pool, logit = net.features_and_logits(frames.to(device))
        pools.append(pool.float().cpu())
        logits.append(logit.float().cpu())
    if not pools:
        raise ValueError("no videos given")
    return torch.cat(pools), torch.cat(logits)


@torch.no_grad()
def inception_frame_stats(
    videos: Tensor | Iterable[Any],
    inception: FIDInceptionV3 | str | os.PathLike,
    config: FIDConfig | None = None,
) -> FeatureStats:
    """Streaming float64 mean/covariance of the pool3 features of all frames.

    ``videos``: a tensor ``(B, C, F, H, W)`` in [-1, 1] (or uint8), or an iterable of such
    batches (or single clips).
    """
    config = config or FIDConfig()
    net = _as_inception(inception)
    device = _device_of(net)
    stats = FeatureStats()
    for frames in _frame_batches(videos, config):
        stats.update(net(frames.to(device)).float().cpu())
    if stats.count == 0:
        raise ValueError("no videos given")
    return stats


def fid_per_frame(
    real: VideoSource,
    fake: VideoSource,
    inception: FIDInceptionV3 | str | os.PathLike,
    config: FIDConfig | None = None,
) -> float:
    """FID between the frames of two sets of videos (lower is better).

    ``real`` / ``fake``: tensors ``(B, C, F, H, W)``, iterables of batches, or `FeatureStats`
    from `inception_frame_stats`. ``inception``: `load_fid_inception`'s network or its path.
    """
    config = config or FIDConfig()
    net = None if isinstance(real, FeatureStats) and isinstance(fake, FeatureStats) else (
        _as_inception(inception)
    )
    stats = [
        s if isinstance(s, FeatureStats) else inception_frame_stats(s, net, config)
        for s in (real, fake)
    ]
    return stats_distance(stats[0], stats[1], unbiased=config.unbiased)


def inception_score(
    probs: Tensor | np.ndarray,
    splits: int = 10,
    return_std: bool = False,
    generator: torch.Generator | None = None,
) -> float | tuple[float, float]:
    """Inception Score of class probabilities ``(N, K)`` (rows sum to 1).

    The reference definition (Salimans et al.; openai/improved-gan): split the ``N`` rows into
    ``splits`` consecutive chunks ``[i N // splits, (i + 1) N // splits)``; in each, the score is
    ``exp(mean_x KL(p(y|x) || p(y)))`` with ``p(y)`` the chunk's mean prediction; return the
    mean over chunks (and their standard deviation with ``return_std``). Computed in float64
    with ``0 log 0 = 0``. Uniform predictions give 1; confident predictions spread evenly over
    ``K`` classes within every chunk give ``K``. With a ``generator`` the rows are shuffled
    first (torch-fidelity shuffles, the original code does not).
    """
    p = torch.as_tensor(probs).detach().to("cpu", torch.float64)
    if p.ndim != 2:
        raise ValueError(f"expected probabilities (N, K), got shape {tuple(p.shape)}")
    n = p.shape[0]
    if not 1 <= splits <= n:
        raise ValueError(f"splits must be in [1, N={n}], got {splits}")
    if (p < 0).any() or not torch.allclose(p.sum(1), torch.ones(n, dtype=p.dtype), atol=1e-3):
        raise ValueError("probabilities must be non-negative with rows summing to 1")
    if generator is not None:
        p = p[torch.randperm(n, generator=generator)]
    scores = []
    for i in range(splits):
        part = p[i * n // splits:(i + 1) * n // splits]
        marginal = part.mean(0, keepdim=True)  # p(y) of the chunk
        kl = (torch.xlogy(part, part) - torch.xlogy(part, marginal)).sum(1)  # KL per row
        scores.append(float(torch.exp(kl.mean())))
    mean, std = float(np.mean(scores)), float(np.std(scores))
    return (mean, std) if return_std else mean


class InceptionScoreAccumulator:
    """The Inception Score of ``total`` rows of class probabilities, streamed in order.

    The same number as `inception_score` (consecutive splits ``[i N // splits, (i + 1) N //
    splits)``, no shuffling) in ``O(splits K)`` memory: per split only the sum of
    ``sum_y p log p`` and the sum of ``p`` are kept, since

        mean_x KL(p(y|x) || p(y)) = mean_x sum_y p log p - sum_y p(y) log p(y)

    with ``p(y)`` the split's mean prediction (Salimans et al. 2016, the score is
    ``exp`` of that). ``total`` must be known up front (the split boundaries depend on it).
    """

    def __init__(self, total: int, splits: int = 10):
        if not 1 <= splits <= total:
            raise ValueError(f"splits must be in [1, total={total}], got {splits}")
        self.total, self.splits, self.seen = int(total), int(splits), 0
        self.bounds = [i * self.total // splits for i in range(splits + 1)]
        self.plogp = np.zeros(splits)  # sum over rows of sum_y p log p, per split
        self.psum: np.ndarray | None = None  # (splits, K) sum over rows of p

    def update(self, probs: Tensor | np.ndarray) -> None:
        """Add the next rows ``(n, K)`` (rows sum to 1)."""
        p = torch.as_tensor(probs).detach().to("cpu", torch.float64)
        if p.ndim != 2:
            raise ValueError(f"expected probabilities (n, K), got shape {tuple(p.shape)}")
        if self.seen + p.shape[0] > self.total:
            raise ValueError(f"more than total={self.total} rows given")
        if self.psum is None:
            self.psum = np.zeros((self.splits, p.shape[1]))
        start = self.seen
        for i in range(self.splits):
            lo, hi = max(self.bounds[i], start), min(self.bounds[i + 1], start + p.shape[0])
            if lo < hi:
                part = p[lo - start:hi - start]
                self.plogp[i] += float(torch.xlogy(part, part).sum())
                self.psum[i] += part.sum(0).numpy()
        self.seen += p.shape[0]

    def compute(self, return_std: bool = False) -> float | tuple[float, float]:
        """The mean score over the splits (and their standard deviation)."""
        if self.seen != self.total or self.psum is None:
            raise ValueError(f"got {self.seen} of the announced {self.total} rows")
        scores = []
        for i in range(self.splits):
            n = self.bounds[i + 1] - self.bounds[i]
            marginal = torch.from_numpy(self.psum[i] / n)  # p(y) of the split
            kl = self.plogp[i] / n - float(torch.xlogy(marginal, marginal).sum())
            scores.append(float(np.exp(kl)))
        mean, std = float(np.mean(scores)), float(np.std(scores))
        return (mean, std) if return_std else mean


def frame_inception_score(
    videos: Tensor | Iterable[Any],
    inception: FIDInceptionV3 | str | os.PathLike,
    splits: int = 10,
    config: FIDConfig | None = None,
    return_std: bool = False,
    generator: torch.Generator | None = None,
) -> float | tuple[float, float]:
    """Inception Score of all frames of ``videos`` (see `inception_score`; higher is better).

    Frames keep their order (clip by clip) and the splits are consecutive chunks, as the
    reference, unless a ``generator`` shuffles them first.
    """
    _, logits = inception_frame_features(videos, inception, config)
    probs = torch.softmax(logits.double(), dim=1)  # over all 1008 outputs, as the reference
    return inception_score(probs, splits=splits, return_std=return_std, generator=generator)
