"""Single frames of a video dataset, for image pretraining and joint image-video training."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = ["FramesAsImages"]


class FramesAsImages(Dataset):
    """Every frame of a video dataset as an image item.

    Item ``j`` is frame ``j % F`` of video ``j // F`` (``F`` frames per video), so the length
    is ``len(videos) * F`` and a shuffling sampler mixes frames of different videos. Items are
    dicts with ``"image"`` ``(C, H, W)``, ``"video_index"`` and ``"frame_index"``, plus the
    video item's entries that are not per-video tensors (``"label"``, ``"caption"``,
    ``"num_objects"``, ...: strings, numbers and 0-d tensors), and ``"positions"`` at that
    frame ``(N, 2)`` when the video item has them.

    ``videos`` is any map-style dataset of dicts with a ``"video"`` ``(C, F, H, W)`` entry
    (e.g. `vidiff.data.BouncingBalls`). ``frames`` defaults to ``videos.config.frames`` when
    there is one, else to the frame count of item 0. Frames of one video are rendered (or
    loaded) again for each of its frames; the synthetic datasets are fast enough for that.
    """

    def __init__(self, videos: Dataset, frames: int | None = None):
        self.videos = videos
        if frames is None:
            frames = getattr(getattr(videos, "config", None), "frames", None)
        if frames is None:
            frames = videos[0]["video"].shape[1]
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.frames = int(frames)

    def __len__(self) -> int:
        return len(self.videos) * self.frames  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} frames")
        video_index, frame_index = divmod(index % n, self.frames)
        item = self.videos[video_index]
        out: dict[str, Any] = {
            "image": item["video"][:, frame_index],  # (C, F, H, W) -> (C, H, W)
            "video_index": torch.tensor(video_index),
            "frame_index": torch.tensor(frame_index),
        }
        for key, value in item.items():
            if key == "positions":
                out[key] = value[:, frame_index]  # (N, F, 2) -> (N, 2)
            elif key != "video" and not (torch.is_tensor(value) and value.dim() > 0):
                out[key] = value
        return out
