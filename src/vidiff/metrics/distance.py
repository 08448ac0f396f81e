"""FVD-lite: a Fréchet video distance on the hand-crafted features of `video_features`.

The real and generated clips are mapped to feature vectors, each set is summarized by its mean
and covariance (streamed in float64, `FeatureStats`), and the distance is the Fréchet distance
between the two Gaussians (`frechet_distance`, the FID/FVD formula). Before that, every feature
is divided by its spread in the *reference* (real) set, ``sqrt(var_real + floor^2)``, with the
feature's ``floor`` (`vidiff.metrics.FEATURES`) keeping features that barely vary in real data
from amplifying negligible differences. The distance is therefore in units of "real-data
standard deviations squared", summed over the features, and runs are comparable as long as
they share the reference set (use `reference_stats` once, save it, reuse it).

Real against real is not exactly 0 with finite samples: the estimator's bias is roughly
``c * D / N`` for ``N`` clips per side (see ``benchmarks/metric_validation.py`` for the
numbers), so compare runs at equal ``N``.

>>> metric = VideoDistance()
>>> metric.update(real_batch, real=True)       # any number of batches, (B, 3, F, H, W)
>>> metric.update(fake_batch, real=False)
>>> metric.compute()                            # float
>>> metric.compute(groups=True)                 # {"total", "appearance", "sharpness", "motion"}
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from vidiff.metrics.features import FEATURE_GROUPS, FEATURE_NAMES, FEATURES, video_features
from vidiff.metrics.frechet import FeatureStats, frechet_distance

__all__ = ["VideoDistance", "video_distance", "reference_stats", "standardized_distance"]

_FLOORS = np.array([f.floor for f in FEATURES])

VideoSource = torch.Tensor | FeatureStats | Iterable[Any]


def _batches(source: Any) -> Iterable[torch.Tensor]:
    """Video batches from a tensor, an iterable of tensors / dicts with "video", or a dataset."""
    if torch.is_tensor(source):
        yield source
        return
    for batch in source:
        if isinstance(batch, dict):
            batch = batch["video"]
        batch = torch.as_tensor(batch)
        yield batch if batch.dim() == 5 else batch.unsqueeze(0)  # one video: a batch of 1


def _stats(source: VideoSource, batch_size: int) -> FeatureStats:
    if isinstance(source, FeatureStats):
        return source
    stats = FeatureStats(names=FEATURE_NAMES)
    pending: list[torch.Tensor] = []
    count = 0
    for batch in _batches(source):  # regroup single videos into batches of batch_size
        pending.append(batch)
        count += batch.shape[0]
        if count >= batch_size:
            stats.update(video_features(torch.cat(pending)))
            pending, count = [], 0
    if pending:
        stats.update(video_features(torch.cat(pending)))
    return stats


def reference_stats(source: VideoSource, batch_size: int = 256) -> FeatureStats:
    """Feature statistics of real clips: a tensor ``(B, 3, F, H, W)``, an iterable of batches
    (e.g. a DataLoader over a `vidiff.data` dataset) or of item dicts (a dataset itself).

    Compute them once per dataset, resolution and length, save them (`FeatureStats.save`)
    and compare every run against the same file.
    """
    return _stats(source, batch_size)


def standardized_distance(
    real: FeatureStats, fake: FeatureStats, columns: list[int] | None = None
) -> float:
    """The Fréchet distance after dividing each feature by its real spread (with its floor)."""
    if real.count < 2 or fake.count < 2:
        raise ValueError(
            f"need at least 2 clips on each side, got {real.count} real and {fake.count} fake"
        )
    idx = np.arange(real.dim) if columns is None else np.asarray(columns)
    mu_r, mu_f = real.mean[idx], fake.mean[idx]
    cov_r, cov_f = real.cov[np.ix_(idx, idx)], fake.cov[np.ix_(idx, idx)]
    floors = _FLOORS[idx] if real.dim == len(FEATURES) else 0.0
    scale = np.sqrt(np.diag(cov_r) + floors**2)
    scale = np.where(scale > 0, scale, 1.0)
    outer = np.outer(scale, scale)
    return frechet_distance(mu_r / scale, cov_r / outer, mu_f / scale, cov_f / outer)


class VideoDistance:
    """Streaming FVD-lite between real and generated clips (see the module docstring).

    ``reference`` optionally gives precomputed real statistics (`reference_stats`, or a
    path to a file saved with `FeatureStats.save`). ``standardize=False`` gives the plain
    Fréchet distance of the raw features (dominated by the features of largest spread).
    """

    def __init__(
        self,
        reference: FeatureStats | str | os.PathLike | None = None,
        standardize: bool = True,
    ):
        if isinstance(reference, (str, os.PathLike)):
            reference = FeatureStats.load(reference)
        self.real = reference if reference is not None else FeatureStats(names=FEATURE_NAMES)
        self.fake = FeatureStats(names=FEATURE_NAMES)
        self.standardize = standardize

    def update(self, videos: torch.Tensor, real: bool) -> None:
        """Add a batch ``(B, 3, F, H, W)`` in [-1, 1] to the real or the generated side."""
        stats = self.real if real else self.fake
        stats.update(video_features(videos))

    def reset(self, real: bool = False) -> None:
        """Forget the generated clips (and the real ones with ``real=True``)."""
        self.fake = FeatureStats(names=FEATURE_NAMES)
        if real:
            self.real = FeatureStats(names=FEATURE_NAMES)

    def compute(self, groups: bool = False) -> float | dict[str, float]:
        """The distance; with ``groups`` a dict with the total and the distance restricted to
        each feature group ("appearance", "sharpness", "motion"), which tells what differs."""
        if self.standardize:
            total = standardized_distance(self.real, self.fake)
        else:
            total = frechet_distance(self.real.mean, self.real.cov, self.fake.mean, self.fake.cov)
        if not groups:
            return total
        out = {"total": total}
        for name, cols in FEATURE_GROUPS.items():
            if self.standardize:
                out[name] = standardized_distance(self.real, self.fake, cols)
            else:
                ix = np.ix_(cols, cols)
                out[name] = frechet_distance(
                    self.real.mean[cols],
                    self.real.cov[ix],
                    self.fake.mean[cols],
                    self.fake.cov[ix],
                )
        return out


def video_distance(
    real: VideoSource,
    fake: VideoSource,
    standardize: bool = True,
    groups: bool = False,
    batch_size: int = 256,
) -> float | dict[str, float]:
    """FVD-lite between real and generated clips (lower is better; about 0 for equal sets).

    ``real`` and ``fake``: tensors ``(B, 3, F, H, W)`` in [-1, 1], iterables of such batches
    (or of dicts with a "video" entry: a DataLoader or a dataset), or `FeatureStats` computed
    earlier. The real side sets the feature scales, so the distance is not symmetric. See
    `VideoDistance` for ``standardize`` and ``groups``. Iterables are featurized in groups of
    ``batch_size`` clips.
    """
    metric = VideoDistance(standardize=standardize)
    metric.real, metric.fake = _stats(real, batch_size), _stats(fake, batch_size)
    return metric.compute(groups=groups)
