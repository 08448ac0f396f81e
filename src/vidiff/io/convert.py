"""Conversions between the float video convention and uint8 frames, and frame layouts.

vidiff videos are float tensors ``(C, F, H, W)`` or ``(B, C, F, H, W)`` in [-1, 1]; files hold
uint8 frames ``(F, H, W, C)`` (channels last, the layout of PyAV, Pillow and numpy images).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["to_uint8", "from_uint8", "to_rgb", "tile_videos", "contact_sheet"]


def to_uint8(video: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Float video(s) in [-1, 1] to uint8 frames, channels last.

    ``(C, F, H, W) -> (F, H, W, C)`` and ``(B, C, F, H, W) -> (B, F, H, W, C)``. Values are
    clamped to [-1, 1] and rounded to the nearest of the 256 levels (-1 -> 0, 1 -> 255); NaN
    becomes 0 (mid gray). A uint8 input is taken as already quantized and only permuted.
    """
    video = torch.as_tensor(video).detach().cpu()
    if video.dim() not in (4, 5):
        raise ValueError(
            f"expected a video (C, F, H, W) or a batch (B, C, F, H, W), got shape "
            f"{tuple(video.shape)}"
        )
    if video.dtype != torch.uint8:
        if not video.is_floating_point():
            raise TypeError(f"expected a float video in [-1, 1] (or uint8), got {video.dtype}")
        video = video.float().nan_to_num(0.0).clamp(-1.0, 1.0)
        video = ((video + 1.0) * 127.5).round().to(torch.uint8)
    # (..., C, F, H, W) -> (..., F, H, W, C)
    return video.movedim(-4, -1).contiguous()


def from_uint8(frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 frames ``(F, H, W, C)`` (or ``(B, F, H, W, C)``) to a float video in [-1, 1].

    The inverse of `to_uint8`: returns ``(C, F, H, W)`` (or ``(B, C, F, H, W)``), float32.
    """
    frames = torch.as_tensor(frames)
    if frames.dim() not in (4, 5):
        raise ValueError(
            f"expected frames (F, H, W, C) or (B, F, H, W, C), got {tuple(frames.shape)}"
        )
    if frames.dtype != torch.uint8:
        raise TypeError(f"expected uint8 frames, got {frames.dtype}")
    # (..., F, H, W, C) -> (..., C, F, H, W): converted in one copy into a contiguous
    # float tensor, then scaled in place (the same arithmetic as float / 127.5 - 1)
    moved = frames.movedim(-1, -4)
    out = torch.empty(moved.shape, dtype=torch.float32)
    return out.copy_(moved).div_(127.5).sub_(1.0)


def to_rgb(frames: torch.Tensor) -> torch.Tensor:
    """Channels-last uint8 frames with 1 or 3 channels (or 4: alpha dropped) -> 3 channels."""
    channels = frames.shape[-1]
    if channels == 3:
        return frames
    if channels == 1:
        return frames.expand(*frames.shape[:-1], 3).contiguous()
    if channels == 4:
        return frames[..., :3].contiguous()
    raise ValueError(f"can only write videos with 1, 3 or 4 channels, got {channels}")


def tile_videos(
    frames: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 0
) -> torch.Tensor:
    """Tile a batch of videos ``(B, F, H, W, C)`` into one grid video ``(F, H', W', C)``.

    ``nrow`` videos per row (default ``ceil(sqrt(B))``, as in torchvision's ``make_grid``);
    ``padding`` pixels of value ``pad_value`` between tiles (none around the border). A batch
    of one is returned as is.
    """
    b, f, h, w, c = frames.shape
    if b == 1:
        return frames[0]
    ncol = max(1, min(b, nrow if nrow is not None else math.ceil(math.sqrt(b))))
    nrows = math.ceil(b / ncol)
    grid_h, grid_w = nrows * h + (nrows - 1) * padding, ncol * w + (ncol - 1) * padding
    grid = frames.new_full((f, grid_h, grid_w, c), pad_value)
    for i in range(b):
        y, x = (i // ncol) * (h + padding), (i % ncol) * (w + padding)
        grid[:, y : y + h, x : x + w] = frames[i]
    return grid


def contact_sheet(frames: torch.Tensor, padding: int = 2, pad_value: int = 255) -> torch.Tensor:
    """A contact sheet ``(H', W', C)`` of videos ``(B, F, H, W, C)``: one row per video.

    Frames run left to right in time, separated (also between rows) by ``padding`` pixels of
    value ``pad_value`` (white by default, so dark frames stay apart).
    """
    b, f, h, w, c = frames.shape
    sheet = frames.new_full((b * h + (b - 1) * padding, f * w + (f - 1) * padding, c), pad_value)
    for i in range(b):
        for t in range(f):
            y, x = i * (h + padding), t * (w + padding)
            sheet[y : y + h, x : x + w] = frames[i, t]
    return sheet
