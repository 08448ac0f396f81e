"""Resizing and cropping clips the way training makes them: resize to cover the target size
(aspect kept, antialiased bilinear), then crop (center, or at a random offset from a
generator). `resize_crop_frames` / `FitFrames` work on uint8 frames, before any float
conversion (the fast path of `vidiff.data.VideoFolder` and the window commands);
`resize_crop` is the float reference they are tested against."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vidiff.io import to_rgb

__all__ = ["FitFrames", "resize_crop", "resize_crop_frames"]


def _size_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size}")
    return int(h), int(w)


def _cover(h: int, w: int, size: tuple[int, int]) -> tuple[int, int]:
    """The smallest (height, width) that covers `size` with the aspect ratio of h x w kept."""
    th, tw = size
    scale = max(th / h, tw / w)
    return max(th, round(h * scale)), max(tw, round(w * scale))


def _crop_offset(nh: int, nw: int, size: tuple[int, int], crop: str,
                 generator: torch.Generator | None) -> tuple[int, int]:
    th, tw = size
    if crop == "random":  # y, then x, from the generator
        y = int(torch.randint(nh - th + 1, (1,), generator=generator))
        x = int(torch.randint(nw - tw + 1, (1,), generator=generator))
        return y, x
    return (nh - th) // 2, (nw - tw) // 2


def resize_crop_frames(
    frames: torch.Tensor,
    size: tuple[int, int],
    crop: str = "center",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`resize_crop` on uint8 frames ``(F, H, W, C)``, returning uint8 ``(F, h, w, C)``: the
    same geometry and the same bilinear antialiased filter, computed on bytes before any float
    conversion (torch's uint8 channels-last kernel), so the float step happens at the clip's
    final size. Values equal `resize_crop`'s rounded to the nearest of the 256 levels (within
    one level)."""
    nh, nw = _cover(*frames.shape[1:3], size)
    return _resize_crop_at(frames, (nh, nw, *_crop_offset(nh, nw, size, crop, generator)), size)


def _resize_crop_at(frames: torch.Tensor, geometry: tuple[int, int, int, int],
                    size: tuple[int, int]) -> torch.Tensor:
    """uint8 (F, H, W, C) resized to (nh, nw) and cropped at (y, x) to `size`."""
    nh, nw, y, x0 = geometry
    if (nh, nw) != tuple(frames.shape[1:3]):
        x = frames.permute(0, 3, 1, 2)  # (F, H, W, C) -> (F, C, H, W): a channels-last view
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        frames = x.permute(0, 2, 3, 1)  # (F, C, nh, nw) -> (F, nh, nw, C)
    return frames[:, y : y + size[0], x0 : x0 + size[1]]


class FitFrames:
    """`resize_crop_frames` one decoded frame at a time (a `read_video` ``frame_fn``): RGB,
    resized and cropped as each frame arrives, so a clip never holds full-resolution frames.
    The crop offset is drawn from the generator at the first frame, as `resize_crop` draws it."""

    def __init__(self, size: tuple[int, int], crop: str, generator: torch.Generator | None):
        self.size, self.crop, self.generator = size, crop, generator
        self.geometry: tuple[int, int, int, int] | None = None  # (nh, nw, y, x)

    def __call__(self, frame: np.ndarray) -> torch.Tensor:
        if not (frame.flags.writeable and frame.flags.c_contiguous):  # e.g. Pillow's arrays
            frame = np.array(frame)
        rgb = to_rgb(torch.from_numpy(frame))  # (H, W, 3) uint8
        if self.geometry is None:
            nh, nw = _cover(*rgb.shape[:2], self.size)
            self.geometry = (nh, nw, *_crop_offset(nh, nw, self.size, self.crop,
                                                   self.generator))
        return _resize_crop_at(rgb[None], self.geometry, self.size)[0]  # a view: stacked later


def resize_crop(
    video: torch.Tensor,
    size: tuple[int, int],
    crop: str = "center",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Resize ``(C, F, H, W)`` so it just covers ``size`` (aspect kept), then crop to it.

    The resize is bilinear with antialiasing (`torch.nn.functional.interpolate`); ``crop`` is
    "center" or "random" (offset from ``generator``).
    """
    c, f, h, w = video.shape
    th, tw = size
    nh, nw = _cover(h, w, size)
    if (nh, nw) != (h, w):
        frames = video.transpose(0, 1)  # (C, F, H, W) -> (F, C, H, W)
        frames = F.interpolate(
            frames, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False
        )
        video = frames.transpose(0, 1)  # (F, C, nh, nw) -> (C, F, nh, nw)
    y, x = _crop_offset(nh, nw, size, crop, generator)
    return video[:, :, y : y + th, x : x + tw].clamp(-1.0, 1.0).contiguous()
