"""Controlled corruptions of video batches, for validating metrics (and for tests).

Each takes videos ``(B, C, F, H, W)`` in [-1, 1] and returns a corrupted copy; randomness comes
from the ``generator`` argument only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = [
    "shuffle_frames",
    "gaussian_blur",
    "replace_with_noise",
    "add_noise",
    "corrupt",
    "CORRUPTIONS",
]


def shuffle_frames(
    videos: torch.Tensor, fraction: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Put the frames of ``round(fraction * B)`` randomly chosen clips in a random order.

    Each chosen clip gets its own permutation, never the identity (for ``F >= 2``).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    out = videos.clone()
    b, f = videos.shape[0], videos.shape[2]
    chosen = torch.randperm(b, generator=generator)[: round(fraction * b)]
    for i in chosen.tolist():
        perm = torch.randperm(f, generator=generator)
        while f > 1 and torch.equal(perm, torch.arange(f)):
            perm = torch.randperm(f, generator=generator)
        out[i] = videos[i][:, perm.to(videos.device)]
    return out


def _blur_matrix(n: int, sigma: float, device) -> torch.Tensor:
    """``(n, n)`` matrix of a 1D Gaussian blur with reflected borders (``x -> M @ x``)."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    matrix = torch.zeros(n, n, dtype=torch.float64)
    rows = torch.arange(n)
    for k, weight in zip(offsets.long().tolist(), kernel.tolist(), strict=True):
        cols = rows + k
        period = 2 * (n - 1) if n > 1 else 1  # reflect (no edge repeat), as F.pad "reflect"
        cols = cols % period if n > 1 else torch.zeros_like(cols)
        cols = torch.where(cols >= n, period - cols, cols)
        matrix.index_put_(
            (rows, cols), torch.full((n,), weight, dtype=torch.float64), accumulate=True
        )
    return matrix.to(device)


def gaussian_blur(videos: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur every frame with a Gaussian of ``sigma`` pixels (separable, reflected borders)."""
    if sigma <= 0:
        return videos.clone()
    h, w = videos.shape[-2:]
    rows = _blur_matrix(h, sigma, videos.device).float()  # (H, H)
    cols = _blur_matrix(w, sigma, videos.device).float()  # (W, W)
    out = rows @ videos.float() @ cols.T  # blurs along H, then along W
    return out.to(videos.dtype).contiguous()


def replace_with_noise(
    videos: torch.Tensor, fraction: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Replace a random ``fraction`` of the pixels (all channels) with uniform noise in [-1, 1]."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    b, c, f, h, w = videos.shape
    mask = torch.rand(b, 1, f, h, w, generator=generator) < fraction
    noise = torch.rand(b, c, f, h, w, generator=generator) * 2 - 1
    return torch.where(mask.to(videos.device), noise.to(videos), videos)


def add_noise(
    videos: torch.Tensor, std: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Add Gaussian noise of ``std`` (on the [-1, 1] scale) to every pixel, then clamp."""
    noise = torch.randn(videos.shape, generator=generator).to(videos)
    return (videos + std * noise).clamp(-1.0, 1.0)


#: The corruptions by name: ``CORRUPTIONS[kind](videos, level, generator)``.
CORRUPTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "shuffle": lambda v, level, g: shuffle_frames(v, level, g),
    "blur": lambda v, level, g: gaussian_blur(v, level),
    "noise": lambda v, level, g: replace_with_noise(v, level, g),
    "gauss": lambda v, level, g: add_noise(v, level, g),
}


def corrupt(
    videos: torch.Tensor, kind: str, level: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Apply a corruption by name: "shuffle" (fraction of clips), "blur" (sigma in pixels),
    "noise" (fraction of pixels replaced) or "gauss" (std of additive noise)."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; valid: {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[kind](videos, level, generator)
