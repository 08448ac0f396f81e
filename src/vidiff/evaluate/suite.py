"""Every metric of one set of clips, accumulated batch by batch, and the comparison of two sets.

`SetStats` streams a set through the metrics in bounded memory: float64 mean/covariance
accumulators (`FeatureStats`) for FVD-lite, I3D (FVD) and Inception pool3 (FID) features,
running sums for the Inception Score splits and the temporal statistics, and at most
``EvalConfig.tracking_clips`` clips kept for ball tracking. `compare` turns a reference set and
a generated set into the metrics. A reference set is saved once (`save_reference`, an ``.npz``)
and reused (`load_reference`) so that later runs only process the generated clips.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from vidiff.metrics.distance import standardized_distance
from vidiff.metrics.features import FEATURE_GROUPS, FEATURE_NAMES, video_features
from vidiff.metrics.fid import FIDConfig, InceptionScoreAccumulator, inception_frame_features
from vidiff.metrics.frechet import FeatureStats
from vidiff.metrics.fvd import FVDConfig, i3d_features, stats_distance
from vidiff.metrics.temporal import TemporalStats
from vidiff.metrics.tracking import ball_tracking_score, ball_tracking_stats

__all__ = ["EvalConfig", "SetStats", "compare", "save_reference", "load_reference"]

_STATS = ("fvd_lite", "i3d", "inception")  # the FeatureStats of a set, by name


@dataclass
class EvalConfig:
    """How clips are evaluated (defaults: the reference protocols)."""

    batch_size: int = 16  # clips per batch through every metric (memory: one batch)
    fvd: FVDConfig = field(default_factory=FVDConfig)  # I3D preprocessing, FVD protocol
    fid: FIDConfig = field(default_factory=FIDConfig)  # Inception preprocessing, batching
    is_splits: int = 10  # Inception Score splits (the reference uses 10)
    tracking: bool = False  # ball tracking (bouncing-balls data)
    tracking_clips: int = 256  # clips of each set kept in memory for ball tracking

    def settings(self) -> dict:
        """The settings that decide the numbers (for reports and saved references)."""
        return {"fvd": asdict(self.fvd), "fid": asdict(self.fid), "is_splits": self.is_splits,
                "tracking": self.tracking}


class SetStats:
    """The statistics of one set of ``count`` clips under every metric, streamed.

    ``i3d`` / ``inception``: the detectors (`vidiff.metrics.load_i3d`,
    `vidiff.metrics.load_fid_inception`) or None to skip FVD / FID and IS. ``update(batch)``
    adds clips ``(B, 3, F, H, W)`` in [-1, 1]; ``count`` must be the number of clips that
    will be added (the Inception Score splits depend on it).
    """

    def __init__(self, count: int, config: EvalConfig, i3d: nn.Module | None = None,
                 inception: nn.Module | None = None):
        self.count, self.config = count, config
        self.i3d_net, self.inception_net = i3d, inception
        self.stats = {"fvd_lite": FeatureStats(names=FEATURE_NAMES)}
        if i3d is not None:
            self.stats["i3d"] = FeatureStats()
        if inception is not None:
            self.stats["inception"] = FeatureStats()
        self.temporal = TemporalStats()
        self.inception_score: InceptionScoreAccumulator | None = None
        self.clips: list[torch.Tensor] = []  # kept for ball tracking
        self.kept = 0
        self.shape: tuple | None = None  # (C, F, H, W)
        self.tracking: dict | None = None  # ball_tracking_stats (a loaded reference)

    def update(self, batch: torch.Tensor) -> None:
        """Add a batch of clips ``(B, 3, F, H, W)`` in [-1, 1]."""
        if self.shape is None:
            self.shape = tuple(batch.shape[1:])
        elif tuple(batch.shape[1:]) != self.shape:
            raise ValueError(f"clips of shape {tuple(batch.shape[1:])} after clips of shape "
                             f"{self.shape}")
        self.stats["fvd_lite"].update(video_features(batch))
        self.temporal.update(batch)
        if self.i3d_net is not None:
            self.stats["i3d"].update(i3d_features(batch, self.i3d_net, self.config.fvd))
        if self.inception_net is not None:
            self._update_inception(batch)
        if self.config.tracking and self.kept < self.config.tracking_clips:
            keep = batch[: self.config.tracking_clips - self.kept].cpu()
            self.clips.append(keep)
            self.kept += keep.shape[0]

    def _update_inception(self, batch: torch.Tensor) -> None:
        pool, logits = inception_frame_features(batch, self.inception_net, self.config.fid)
        self.stats["inception"].update(pool)
        if self.inception_score is None:
            frames = pool.shape[0] // batch.shape[0]  # per clip, after the frame stride
            total = self.count * frames
            splits = min(self.config.is_splits, total)
            self.inception_score = InceptionScoreAccumulator(total, splits)
        self.inception_score.update(torch.softmax(logits.double(), dim=1))  # all 1008 outputs

    def tracking_stats(self) -> dict:
        """`ball_tracking_stats` of the kept clips (without the per-clip details)."""
        if self.tracking is None:
            stats = ball_tracking_stats(torch.cat(self.clips))
            self.tracking = {k: v for k, v in stats.items() if k != "per_clip"}
        return self.tracking

    def summary(self) -> dict:
        """The set's own numbers: clip count, temporal statistics, Inception Score."""
        out = {"clips": self.count, "temporal": self.temporal.compute()}
        if self.inception_score is not None:
            score, std = self.inception_score.compute(return_std=True)
            out["inception_score"], out["inception_score_std"] = score, std
        return out


METRIC_NAMES = {"fvd_lite": "FVD-lite", "i3d": "FVD", "inception": "FID"}


def sample_size_warnings(reference: SetStats, generated: SetStats) -> list[str]:
    """A sentence for each Frechet distance computed on no more clips (or frames) per side
    than its features have dimensions: the covariance is then singular (rank <= n - 1) and
    the distance is biased, often far, from its large-sample value."""
    notes = []
    for key, acc in generated.stats.items():
        ref = reference.stats.get(key)
        n = min(acc.count, ref.count if ref is not None else acc.count)
        if acc.dim is not None and n <= acc.dim:
            unit = "frames" if key == "inception" else "clips"
            notes.append(f"{METRIC_NAMES.get(key, key)} from {n} {unit} per side with "
                         f"{acc.dim}-d features: the covariance is singular and the distance "
                         f"biased; use more than {acc.dim} {unit} per side")
    return notes


def compare(reference: SetStats, generated: SetStats) -> dict:
    """The metrics of ``generated`` against ``reference`` (see docs/EVAL.md for each), with
    ``"warnings"`` for distances on too few samples (`sample_size_warnings`)."""
    lite_r, lite_g = reference.stats["fvd_lite"], generated.stats["fvd_lite"]
    out: dict = {
        "fvd_lite": standardized_distance(lite_r, lite_g),
        "fvd_lite_groups": {name: standardized_distance(lite_r, lite_g, cols)
                            for name, cols in FEATURE_GROUPS.items()},
    }
    config = generated.config
    if "i3d" in generated.stats:
        out["fvd"] = stats_distance(reference.stats["i3d"], generated.stats["i3d"],
                                    unbiased=config.fvd.unbiased_cov)
    if "inception" in generated.stats:
        out["fid"] = stats_distance(reference.stats["inception"], generated.stats["inception"],
                                    unbiased=config.fid.unbiased)
        out["inception_score"], out["inception_score_std"] = (
            generated.inception_score.compute(return_std=True)
        )
    if config.tracking:
        score = ball_tracking_score(torch.cat(generated.clips), reference.tracking_stats())
        out["ball_tracking"] = score
    out["generated"] = generated.summary()
    out["reference"] = reference.summary()
    out["warnings"] = sample_size_warnings(reference, generated)
    return out


def save_reference(stats: SetStats, path: str | os.PathLike, meta: dict) -> None:
    """Save a reference set's statistics to an ``.npz`` (``meta``: settings, source, hashes)."""
    arrays = {}
    for name, acc in stats.stats.items():
        for key, value in acc.state_dict().items():
            arrays[f"{name}.{key}"] = value
    summary = stats.summary()
    if stats.config.tracking:
        summary["tracking"] = stats.tracking_stats()
    full = {**meta, "shape": list(stats.shape or ()), "summary": summary}
    arrays["meta"] = np.array(json.dumps(full))
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez(f, **arrays)


class _Loaded(SetStats):
    """A reference set restored from a file: statistics only, no clips."""

    def __init__(self, stats: dict, meta: dict, config: EvalConfig):
        super().__init__(meta["summary"]["clips"], config)
        self.stats, self.meta, self.shape = stats, meta, tuple(meta["shape"])
        self.tracking = meta["summary"].get("tracking")

    def summary(self) -> dict:
        return {k: v for k, v in self.meta["summary"].items() if k != "tracking"}


def load_reference(path: str | os.PathLike, config: EvalConfig) -> SetStats:
    """A reference saved by `save_reference`; ``.meta`` holds what was saved with it.

    Raises ``ValueError`` naming the file if it is not such a file.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = dict(data)
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{str(path)!r} is not a reference statistics file written by "
                         f"`vidiff eval --save-reference` ({error})") from error
    stats = {}
    for name in _STATS:
        keys = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(name + ".")}
        if keys:
            stats[name] = FeatureStats.from_state_dict(keys)
    if "fvd_lite" not in stats:
        raise ValueError(f"{str(path)!r} holds no FVD-lite statistics; not written by "
                         "`vidiff eval --save-reference`")
    return _Loaded(stats, meta, config)
