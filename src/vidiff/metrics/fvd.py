"""Fréchet Video Distance with the I3D network, as the reference implementations compute it.

FVD (Unterthiner et al., 2018) embeds every clip with the Kinetics-400 I3D network, fits a
Gaussian to each set of embeddings, and reports the Fréchet distance between them,
``||mu_r - mu_g||^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2))``. Two reference pipelines are in use;
`FVDConfig.protocol` picks one:

- ``"tf"`` (default), the TF-hub reference (google-research ``frechet_video_distance.py``) and
  its PyTorch ports (TATS / content-debiased-fvd, common_metrics_on_video_quality): 8-bit
  frames resized to 224x224 (bilinear), scaled to [-1, 1], embedded as the 400 Kinetics logits
  averaged over time (TF's ``RGB/inception_i3d/Mean:0``; our detectors are called with
  ``rescale=False, resize=False, return_features=True``); unbiased covariances (tfgan).
  ``resize="bilinear"`` is PyTorch's (``align_corners=False``), as the ports;
  ``resize="tf1"`` is TF1's ``resize_bilinear`` (no half-pixel offset), as the TF original.
  Frames are stretched to a square, as the TF original (``tf.image.resize_bilinear(frames,
  [224, 224])``) and VideoGPT / TATS (``F.interpolate(frames, size=(224, 224))``) do;
  ``crop=True`` instead scales the shorter side to 224 (``ceil`` for the longer one) and
  center-crops, as the ports that feed StyleGAN-V's detector with ``resize=False`` do
  (``preprocess_single`` of fvd-comparison / common_metrics_on_video_quality). For square
  frames the two agree.
- ``"stylegan-v"``, StyleGAN-V's ``metrics/frechet_video_distance.py``: clips are quantized to
  uint8 with ``(x * 127.5 + 128).clamp(0, 255)`` and the detector does the rest,
  ``detector(x, rescale=True, resize=True, return_features=True)``; its feature statistics
  divide the covariance by ``N`` (biased), which ``unbiased=None`` follows.

We embed with the 400 logits, not the 1024-d pooled features, because both references do (the
StyleGAN-V detector's ``return_features`` are the 400 pre-softmax logits), so numbers are
comparable to published FVDs; ``load_i3d(path, features="pool")`` gives the 1024-d variant.
The weights decide comparability too: StyleGAN-V's ``i3d_torchscript.pt`` reproduces the
TF-hub network; pytorch-i3d's ``rgb_imagenet.pt`` is DeepMind's original release, whose
weights differ from TF-hub's, so its FVDs are not comparable to TF-hub ones.

Features are extracted in batches and streamed into float64 mean/covariance accumulators
(`FeatureStats`), so any number of clips runs in bounded memory; a set may also be given as
precomputed `FeatureStats` (reference statistics saved once, reused).

>>> i3d = load_i3d("i3d_torchscript.pt")
>>> fvd(real_videos, fake_videos, i3d)              # tensors (B, 3, F, H, W) in [-1, 1]
>>> fvd(real_loader, fake_loader, i3d, FVDConfig(protocol="stylegan-v"))
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidiff.metrics.frechet import FeatureStats, frechet_distance
from vidiff.metrics.i3d import I3D_MIN_FRAMES, load_i3d

__all__ = [
    "ClipsTooShortError",
    "FVDConfig",
    "preprocess_for_i3d",
    "i3d_features",
    "i3d_stats",
    "stats_distance",
    "fvd",
    "resize_bilinear_tf1",
]

VideoSource = Tensor | FeatureStats | Iterable[Any]


class ClipsTooShortError(ValueError):
    """Clips with fewer frames than I3D's receptive field (`I3D_MIN_FRAMES`)."""


@dataclass
class FVDConfig:
    """How clips become I3D features (defaults: the TF-hub reference)."""

    protocol: str = "tf"  # "tf" (resize + scale here) or "stylegan-v" (uint8 to the detector)
    resolution: int = 224  # "tf": frame size fed to I3D (trained at 224; at least 193 runs)
    resize: str = "bilinear"  # "tf": "bilinear" (PyTorch, align_corners=False) or "tf1"
    crop: bool = False  # "tf": scale the short side to `resolution` + center crop (no stretch)
    quantize: bool = True  # round to 8-bit levels first, as the references see saved videos
    batch_size: int = 8  # clips per forward pass
    unbiased: bool | None = None  # covariance / (N - 1); None: per protocol (tf yes, sgv no)

    def __post_init__(self):
        if self.protocol not in ("tf", "stylegan-v"):
            raise ValueError(f"protocol must be 'tf' or 'stylegan-v', got {self.protocol!r}")
        if self.resize not in ("bilinear", "tf1"):
            raise ValueError(f"resize must be 'bilinear' or 'tf1', got {self.resize!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def unbiased_cov(self) -> bool:
        """Whether covariances divide by ``N - 1`` (resolving ``unbiased=None``)."""
        return self.protocol == "tf" if self.unbiased is None else self.unbiased


# ----------------------------------------------------------------------------- shared helpers


def _device_of(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _iter_batches(source: Tensor | Iterable[Any], batch_size: int, ndim: int) -> Iterator[Tensor]:
    """Batches of at most ``batch_size`` from a tensor or an iterable of tensors / arrays.

    Items with ``ndim - 1`` dimensions are single samples (a batch of one).
    """
    items = [source] if torch.is_tensor(source) or isinstance(source, np.ndarray) else source
    for item in items:
        item = torch.as_tensor(item)
        if item.ndim == ndim - 1:
            item = item.unsqueeze(0)
        if item.ndim != ndim:
            raise ValueError(f"expected batches with {ndim} dimensions, got shape "
                             f"{tuple(item.shape)}")
        for start in range(0, item.shape[0], batch_size):
            yield item[start:start + batch_size]


def _to_255(x: Tensor, quantize: bool) -> Tensor:
    """Videos or images in [-1, 1] (float) or [0, 255] (uint8) -> float32 in [0, 255], 3 channels.

    ``quantize`` rounds to the 8-bit levels with StyleGAN-V's ``x * 127.5 + 128`` then floor.
    """
    if x.shape[1] == 1:
        x = x.expand(-1, 3, *x.shape[2:])  # grayscale -> RGB, as StyleGAN-V
    if x.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels in dim 1, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float()
    if not x.is_floating_point():
        raise ValueError(f"expected float videos in [-1, 1] or uint8, got {x.dtype}")
    x = x.float()
    if quantize:
        return (x * 127.5 + 128).clamp(0, 255).floor()
    return ((x + 1) * 127.5).clamp(0, 255)


def resize_bilinear_tf1(images: Tensor, size: tuple[int, int]) -> Tensor:
    """TF1's ``tf.image.resize_bilinear`` (``align_corners=False``, no half-pixel centers).

    Output pixel ``i`` samples the input at ``i * in / out`` (not ``(i + 0.5) * in / out - 0.5``
    as PyTorch's ``align_corners=False``), between the floor and the next pixel (clamped).
    ``images``: ``(N, C, H, W)`` float.
    """
    out = images
    for dim, new in ((2, size[0]), (3, size[1])):
        old = out.shape[dim]
        if old == new:
            continue
        scale = torch.tensor(old / new, dtype=torch.float32)
        src = torch.arange(new, dtype=torch.float32) * scale  # float32, as TF's kernel
        low = src.floor().long().clamp(max=old - 1)
        high = (low + 1).clamp(max=old - 1)
        frac = (src - low.float()).to(out.device, out.dtype)
        shape = [1, 1, 1, 1]
        shape[dim] = new
        frac = frac.view(shape)
        low, high = low.to(out.device), high.to(out.device)
        a, b = out.index_select(dim, low), out.index_select(dim, high)
        out = a + (b - a) * frac
    return out


# ----------------------------------------------------------------------------- FVD


def preprocess_for_i3d(videos: Tensor, config: FVDConfig | None = None) -> Tensor:
    """Videos ``(B, C, F, H, W)`` in [-1, 1] (or uint8) -> the detector's input for the protocol.

    ``"tf"``: float ``(B, 3, F, R, R)`` in [-1, 1], ``R = config.resolution``;
    ``"stylegan-v"``: uint8 ``(B, 3, F, H, W)``.
    """
    config = config or FVDConfig()
    if videos.ndim != 5:
        raise ValueError(f"expected videos (B, C, F, H, W), got shape {tuple(videos.shape)}")
    if videos.shape[2] < I3D_MIN_FRAMES:
        raise ClipsTooShortError(
            f"I3D needs clips of at least {I3D_MIN_FRAMES} frames (FVD uses 16), got "
            f"{videos.shape[2]}"
        )
    if config.protocol == "stylegan-v":
        return _to_255(videos, quantize=True).to(torch.uint8)
    x = _to_255(videos, config.quantize)  # (B, 3, F, H, W) in [0, 255]
    b, c, f, h, w = x.shape
    r = config.resolution
    if (h, w) != (r, r):
        frames = x.transpose(1, 2).reshape(b * f, c, h, w)  # (B*F, 3, H, W)
        size = _cover_size(h, w, r) if config.crop else (r, r)
        if config.resize == "tf1":
            frames = resize_bilinear_tf1(frames, size)
        else:
            frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
        top, left = (size[0] - r) // 2, (size[1] - r) // 2  # center crop (0 when stretched)
        frames = frames[:, :, top:top + r, left:left + r]
        x = frames.reshape(b, f, c, r, r).transpose(1, 2)  # (B, 3, F, R, R)
    return 2.0 * x / 255.0 - 1.0


def _cover_size(h: int, w: int, r: int) -> tuple[int, int]:
    """The size whose shorter side is ``r`` (the longer one rounded up), as the ports'
    ``preprocess_single`` computes it before its center crop."""
    scale = r / min(h, w)
    return (r, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), r)


def _as_detector(i3d: nn.Module | str | os.PathLike) -> nn.Module:
    if isinstance(i3d, (str, os.PathLike)):
        return load_i3d(i3d)
    return i3d


@torch.no_grad()
def i3d_features(
    videos: Tensor, i3d: nn.Module | str | os.PathLike, config: FVDConfig | None = None
) -> Tensor:
    """FVD embeddings ``(B, D)`` (float32, CPU) of videos ``(B, C, F, H, W)`` in [-1, 1].

    ``i3d`` is a detector from `load_i3d` (or a path to load). Batches of
    ``config.batch_size`` clips.
    """
    config = config or FVDConfig()
    detector = _as_detector(i3d)
    device = _device_of(detector)
    out = []
    for batch in _iter_batches(videos, config.batch_size, ndim=5):
        x = preprocess_for_i3d(batch, config).to(device)
        if config.protocol == "stylegan-v":
            feats = detector(x, rescale=True, resize=True, return_features=True)
        else:
            feats = detector(x, rescale=False, resize=False, return_features=True)
        out.append(feats.float().cpu())
    if not out:
        raise ValueError("no videos given")
    return torch.cat(out)


@torch.no_grad()
def i3d_stats(
    videos: Tensor | Iterable[Any],
    i3d: nn.Module | str | os.PathLike,
    config: FVDConfig | None = None,
) -> FeatureStats:
    """Streaming float64 mean/covariance of the FVD embeddings of all clips.

    ``videos``: a tensor ``(B, C, F, H, W)`` or an iterable of such batches (or single clips
    ``(C, F, H, W)``), e.g. a data loader; memory stays bounded by one batch.
    """
    config = config or FVDConfig()
    detector = _as_detector(i3d)
    stats = FeatureStats()
    for batch in _iter_batches(videos, config.batch_size, ndim=5):
        stats.update(i3d_features(batch, detector, config))
    if stats.count == 0:
        raise ValueError("no videos given")
    return stats


def stats_distance(a: FeatureStats, b: FeatureStats, unbiased: bool = True) -> float:
    """Fréchet distance between two sets' statistics; ``unbiased=False`` divides by ``N``."""
    if a.count < 2 or b.count < 2:
        raise ValueError(
            f"the Fréchet distance needs at least 2 samples per set, got {a.count} and {b.count}"
        )
    cov_a, cov_b = a.cov, b.cov
    if not unbiased:
        cov_a = cov_a * ((a.count - 1) / a.count)
        cov_b = cov_b * ((b.count - 1) / b.count)
    return frechet_distance(a.mean, cov_a, b.mean, cov_b)


def fvd(
    real: VideoSource,
    fake: VideoSource,
    i3d: nn.Module | str | os.PathLike,
    config: FVDConfig | None = None,
) -> float:
    """Fréchet Video Distance between two sets of clips (lower is better).

    ``real`` / ``fake``: tensors ``(B, C, F, H, W)`` in [-1, 1] (or uint8), iterables of such
    batches, or precomputed `FeatureStats` (from `i3d_stats`, with the same config and
    detector). ``i3d``: a detector from `load_i3d`, or a path to load one from. The reference
    protocol uses 16-frame clips; ``config`` selects the protocol (`FVDConfig`).
    """
    config = config or FVDConfig()
    detector = None if isinstance(real, FeatureStats) and isinstance(fake, FeatureStats) else (
        _as_detector(i3d)
    )
    stats = [
        s if isinstance(s, FeatureStats) else i3d_stats(s, detector, config) for s in (real, fake)
    ]
    return stats_distance(stats[0], stats[1], unbiased=config.unbiased_cov)
