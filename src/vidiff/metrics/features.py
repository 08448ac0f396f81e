"""Hand-crafted, interpretable spatio-temporal features of video clips (no learned weights).

`video_features` maps each clip to a vector of `FEATURES`, named statistics in three groups:

- **appearance**: mean and spatial spread of each color channel, saturation, the share of
  dark and bright pixels;
- **sharpness**: log power of the luminance spectrum in four radial frequency bands (blur
  removes the high bands, noise fills them);
- **motion** (on luminance): log energy of frame differences at lags 1, 2, 4 and of the
  second temporal difference, temporal autocorrelation at lags 1, 2, 4, the high-frequency
  (flicker) share of temporal energy, global brightness flicker, and the path of the
  "foreground" (pixels whose luminance is away from the clip's per-pixel temporal median):
  its amount, the variation of its amount, and the speed and acceleration of its centroid.

All values are computed on the [0, 1] scale in float32 and returned in float64; logs use a
small offset so static or blank clips give finite values. The features depend on the frame
size and count (band edges are in cycles per pixel, lags in frames), so compare clips of one
resolution and length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidiff.metrics.temporal import hf_fraction, unit_range

__all__ = ["Feature", "FEATURES", "FEATURE_NAMES", "FEATURE_GROUPS", "video_features"]


@dataclass(frozen=True)
class Feature:
    """One feature: its name, group and resolution (differences below it are negligible)."""

    name: str
    group: str  # "appearance", "sharpness" or "motion"
    floor: float  # the smallest meaningful spread; used when standardizing (see distance.py)


_LAGS = (1, 2, 4)
_BANDS = ((0.0, 0.125), (0.125, 0.25), (0.25, 0.5), (0.5, 1.0))  # radial cycles per pixel

#: The features, in the column order of `video_features`.
FEATURES: tuple[Feature, ...] = (
    *(Feature(f"mean_{c}", "appearance", 0.01) for c in "rgb"),
    *(Feature(f"spatial_std_{c}", "appearance", 0.01) for c in "rgb"),
    Feature("saturation", "appearance", 0.01),
    Feature("dark_fraction", "appearance", 0.01),
    Feature("bright_fraction", "appearance", 0.01),
    *(Feature(f"log_band_power_{lo:g}_{hi:g}", "sharpness", 0.05) for lo, hi in _BANDS),
    *(Feature(f"log_diff_energy_lag{k}", "motion", 0.05) for k in _LAGS),
    Feature("log_accel_energy", "motion", 0.05),
    *(Feature(f"autocorr_lag{k}", "motion", 0.01) for k in _LAGS),
    Feature("temporal_hf_fraction", "motion", 0.01),
    Feature("log_brightness_flicker", "motion", 0.05),
    Feature("log_foreground_amount", "motion", 0.05),
    Feature("foreground_variation", "motion", 0.01),
    Feature("log_centroid_speed", "motion", 0.05),
    Feature("log_centroid_accel", "motion", 0.05),
)
#: The feature names, in column order.
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
#: Column indices of each group.
FEATURE_GROUPS: dict[str, list[int]] = {
    g: [i for i, f in enumerate(FEATURES) if f.group == g]
    for g in ("appearance", "sharpness", "motion")
}

_EPS = 1e-5  # offset of the logs of energies ([0, 1]^2 units; 8-bit quantization is ~1e-6)
_EPS_LIN = 1e-3  # offset of the logs of amplitudes and positions ([0, 1] units)


def _luma(u: torch.Tensor) -> torch.Tensor:
    """Luminance (Rec. 601 weights) ``(B, F, H, W)`` of ``(B, 3, F, H, W)``."""
    return 0.299 * u[:, 0] + 0.587 * u[:, 1] + 0.114 * u[:, 2]


def _appearance(u: torch.Tensor, luma: torch.Tensor) -> list[torch.Tensor]:
    mean = u.mean((2, 3, 4))  # (B, 3)
    spread = u.flatten(3).std(-1).mean(-1)  # per-frame spatial std, averaged: (B, 3)
    saturation = (u.amax(1) - u.amin(1)).mean((1, 2, 3))
    dark = (luma < 0.15).float().mean((1, 2, 3))
    bright = (luma > 0.6).float().mean((1, 2, 3))
    return [*mean.unbind(1), *spread.unbind(1), saturation, dark, bright]


def _sharpness(luma: torch.Tensor) -> list[torch.Tensor]:
    h, w = luma.shape[-2:]
    luma = luma - luma.mean((2, 3), keepdim=True)
    # power per frequency, normalized so that its mean over frequencies is the variance
    power = torch.fft.fft2(luma).abs().pow(2) / (h * w)  # (B, F, H, W)
    fy = torch.fft.fftfreq(h, device=luma.device).view(h, 1)
    fx = torch.fft.fftfreq(w, device=luma.device).view(1, w)
    radius = (fy**2 + fx**2).sqrt()  # (H, W) cycles per pixel, up to 0.71 at the corners
    out = []
    for lo, hi in _BANDS:
        band = (radius > lo) & (radius <= hi)
        out.append(torch.log(power[:, :, band].mean((1, 2)) + _EPS))
    return out


def _motion(luma: torch.Tensor) -> list[torch.Tensor]:
    b, f, h, w = luma.shape
    y = luma.unsqueeze(1)  # (B, 1, F, H, W): the temporal statistics run on luminance
    lags = [min(k, f - 1) for k in _LAGS]
    out = []
    for k in lags:  # log energy of frame differences at lag k
        out.append(torch.log((y[:, :, k:] - y[:, :, :-k]).pow(2).mean((1, 2, 3, 4)) + _EPS))
    if f >= 3:
        accel = (y[:, :, 2:] - 2 * y[:, :, 1:-1] + y[:, :, :-2]).pow(2).mean((1, 2, 3, 4))
    else:
        accel = torch.zeros(b, device=y.device)
    out.append(torch.log(accel + _EPS))
    z = y - y.mean(2, keepdim=True)  # deviation from the per-pixel temporal mean
    var = z.pow(2).mean((1, 2, 3, 4))
    for k in lags:  # temporal autocorrelation at lag k; a static clip counts as 1
        cov = (z[:, :, k:] * z[:, :, :-k]).mean((1, 2, 3, 4))
        out.append((cov + _EPS) / (var + _EPS))
    out.append(hf_fraction(y))  # flicker
    out.append(torch.log(luma.mean((2, 3)).std(1) + _EPS_LIN))  # global brightness flicker

    # the foreground: where a frame's luminance differs from the per-pixel temporal median
    weight = (luma - luma.median(1, keepdim=True).values).abs()  # (B, F, H, W)
    amount = weight.mean((2, 3))  # (B, F)
    out.append(torch.log(amount.mean(1) + _EPS_LIN))
    out.append(amount.std(1) / (amount.mean(1) + _EPS_LIN))
    ys = (torch.arange(h, device=y.device, dtype=y.dtype) + 0.5) / h
    xs = (torch.arange(w, device=y.device, dtype=y.dtype) + 0.5) / w
    total = weight.sum((2, 3)) + _EPS_LIN * h * w  # an empty frame's centroid is the center
    cx = ((weight * xs.view(1, 1, 1, w)).sum((2, 3)) + 0.5 * _EPS_LIN * h * w) / total
    cy = ((weight * ys.view(1, 1, h, 1)).sum((2, 3)) + 0.5 * _EPS_LIN * h * w) / total
    centroid = torch.stack([cx, cy], -1)  # (B, F, 2) in frame units
    speed = (centroid[:, 1:] - centroid[:, :-1]).norm(dim=-1).mean(1)
    if f >= 3:
        second = centroid[:, 2:] - 2 * centroid[:, 1:-1] + centroid[:, :-2]
        centroid_accel = second.norm(dim=-1).mean(1)
    else:
        centroid_accel = torch.zeros(b, device=y.device)
    out.append(torch.log(speed + _EPS_LIN))
    out.append(torch.log(centroid_accel + _EPS_LIN))
    return out


@torch.no_grad()
def video_features(videos: torch.Tensor, chunk_size: int = 32) -> torch.Tensor:
    """Features ``(B, D)`` float64 (CPU) of videos ``(B, C, F, H, W)`` in [-1, 1].

    ``D = len(FEATURES)``; column ``i`` is ``FEATURES[i]``. ``C`` is 3 (RGB) or 1 (gray,
    replicated); ``F >= 2`` (``F >= 5`` for distinct lags 1, 2, 4: shorter clips reuse the
    longest lag). Computed on the videos' device, ``chunk_size`` clips at a time (small chunks
    keep the temporaries in the allocator's cache: much faster on CPU); deterministic.
    """
    u = unit_range(videos)
    if u.shape[1] == 1:
        u = u.expand(-1, 3, -1, -1, -1)
    if u.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {u.shape[1]}")
    chunks = []
    for start in range(0, u.shape[0], chunk_size):
        x = u[start : start + chunk_size]
        luma = _luma(x)  # (b, F, H, W)
        cols = _appearance(x, luma) + _sharpness(luma) + _motion(luma)
        chunks.append(torch.stack(cols, 1).double().cpu())  # (b, D)
    if not chunks:
        return torch.zeros(0, len(FEATURES), dtype=torch.float64)
    return torch.cat(chunks)
