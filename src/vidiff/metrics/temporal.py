"""Per-clip temporal statistics that need no weights: consistency, change, flicker.

All take float videos ``(B, C, F, H, W)`` in [-1, 1] (``F >= 2``) and return one float32 value
per clip ``(B,)``; values are computed on the [0, 1] scale.

- `frame_consistency`: mean Pearson correlation of consecutive frames (1: consistent; shuffled
  frames or noise: about 0). Invariant to per-frame brightness and contrast changes.
- `frame_difference`: mean squared change between consecutive frames (0: static).
- `flicker`: the share of temporal energy above 0.25 cycles per frame (smooth motion: near 0;
  white noise in time: 0.5; alternating frames: 1).

`TemporalStats` averages all three over any number of batches in constant memory.
"""

from __future__ import annotations

import torch

__all__ = ["frame_consistency", "frame_difference", "flicker", "unit_range", "TemporalStats"]


def unit_range(videos: torch.Tensor, min_frames: int = 2) -> torch.Tensor:
    """Check a batch ``(B, C, F, H, W)`` and map it from [-1, 1] to float32 [0, 1]."""
    if videos.dim() != 5:
        raise ValueError(f"expected videos (B, C, F, H, W), got shape {tuple(videos.shape)}")
    if videos.shape[2] < min_frames:
        raise ValueError(f"need at least {min_frames} frames, got {videos.shape[2]}")
    return (videos.float().nan_to_num(0.0).clamp(-1.0, 1.0) + 1.0) / 2.0


def frame_consistency(videos: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean Pearson correlation between consecutive frames, per clip ``(B,)``.

    1 means every frame equals the previous one up to brightness and contrast; unrelated
    frames (shuffled, noise) give about 0. A constant frame has no contrast to correlate:
    two constant frames count as consistent (1) through ``eps``.
    """
    return _consistency(unit_range(videos), eps)


def _consistency(u: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """`frame_consistency` of videos already on the [0, 1] scale."""
    b, c, f, h, w = u.shape
    x = u.transpose(1, 2).reshape(b, f, -1)  # (B, C, F, H, W) -> (B, F, C*H*W)
    x = x - x.mean(-1, keepdim=True)
    num = (x[:, 1:] * x[:, :-1]).mean(-1)  # (B, F-1)
    den = (x[:, 1:].pow(2).mean(-1) * x[:, :-1].pow(2).mean(-1)).sqrt()
    return ((num + eps) / (den + eps)).mean(-1)


def frame_difference(videos: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between consecutive frames, per clip ``(B,)`` ([0, 1] scale)."""
    return _difference(unit_range(videos))


def _difference(u: torch.Tensor) -> torch.Tensor:
    """`frame_difference` of videos already on the [0, 1] scale."""
    return (u[:, :, 1:] - u[:, :, :-1]).pow(2).mean((1, 2, 3, 4))


def flicker(videos: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Fraction of each clip's temporal energy above a quarter of the frame rate ``(B,)``.

    Every pixel's deviation from its temporal mean is split into temporal frequencies (real
    FFT over the frames); the result is the share of that (non-constant) energy at
    frequencies above 0.25 cycles per frame. Smooth motion is mostly low-frequency (near 0),
    white noise in time gives about 0.5, frame-to-frame flicker (alternating frames)
    approaches 1; a static clip gives 0.
    """
    return hf_fraction(unit_range(videos), eps)


def hf_fraction(u: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """`flicker` of videos ``(B, C, F, H, W)`` already on the [0, 1] scale."""
    f = u.shape[2]
    z = u - u.mean(2, keepdim=True)
    power = torch.fft.rfft(z, dim=2).abs().pow(2)  # (B, C, F//2+1, H, W)
    freqs = torch.fft.rfftfreq(f)  # cycles per frame, (F//2+1,)
    weight = torch.ones_like(freqs)
    if f % 2 == 0:
        weight[-1] = 0.5  # the Nyquist bin is counted once by rfft, twice by the full FFT
    power = power * weight.view(1, 1, -1, 1, 1).to(power)
    high = power[:, :, (freqs > 0.25).to(power.device)].sum((1, 2, 3, 4))
    total = power[:, :, 1:].sum((1, 2, 3, 4))
    return high / (total + eps * z[0].numel())


class TemporalStats:
    """Running means of `frame_consistency`, `frame_difference` and `flicker` over clips.

    ``update(videos)`` adds a batch ``(B, C, F, H, W)``; ``compute()`` returns the three means
    (keys ``"frame_consistency"``, ``"frame_difference"``, ``"flicker"``) and ``"clips"``.
    """

    NAMES = ("frame_consistency", "frame_difference", "flicker")

    def __init__(self):
        self.sums = dict.fromkeys(self.NAMES, 0.0)
        self.count = 0

    def update(self, videos: torch.Tensor) -> None:
        """Add a batch of clips."""
        u = unit_range(videos)  # once for the three statistics
        for name, fn in zip(self.NAMES, (_consistency, _difference, hf_fraction), strict=True):
            self.sums[name] += float(fn(u).double().sum())
        self.count += videos.shape[0]

    def compute(self) -> dict[str, float]:
        """The mean of each statistic over all clips added."""
        if self.count == 0:
            raise ValueError("no clips added")
        out = {name: total / self.count for name, total in self.sums.items()}
        return {**out, "clips": self.count}
