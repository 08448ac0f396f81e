"""Image datasets over folders: single frames of a `VideoFolder` (`VideoFolderFrames`) and
folders of image files (`ImageFolder`), with the scanning, labels, captions and skipping of
unreadable files of `vidiff.data.folder`."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from PIL import Image

from vidiff.data.entries import _FolderDataset
from vidiff.data.folder import VideoFolder
from vidiff.data.resize import _size_pair, resize_crop_frames
from vidiff.data.scan import Entry, index_items, read_caption, scan_folder
from vidiff.io import IMAGE_SUFFIXES, VideoReadError, from_uint8, read_video, to_rgb

__all__ = ["ImageFolder", "VideoFolderFrames"]


class VideoFolderFrames(_FolderDataset):
    """Single frames of a `VideoFolder`: ``per_video`` items per video, one decoded frame each.

    Item ``j`` is a frame of video ``j // per_video``: at a random position (the dataset's
    ``offset="random"``) within segment ``j % per_video`` of the video, else at the segment's
    center or start. Only that frame is decoded (unlike `vidiff.data.FramesAsImages`, which
    loads a whole clip per frame). Items: ``"image"`` ``(3, H, W)`` in [-1, 1], ``"label"``,
    ``"caption"``, ``"path"``, ``"video_index"``, ``"frame_index"``. Unreadable videos are
    skipped by the folder datasets' rule (`vidiff.data.entries`), and the record of bad
    paths, the seed and the epoch are the videos' own: a video found broken by either is
    skipped by both.
    """

    def __init__(self, videos: VideoFolder, per_video: int = 1):
        if per_video < 1:
            raise ValueError(f"per_video must be >= 1, got {per_video}")
        self.videos, self.per_video = videos, int(per_video)

    # the state shared with the videos
    root = property(lambda self: self.videos.root)
    seed = property(lambda self: self.videos.seed)
    epoch = property(lambda self: self.videos.epoch)
    entries = property(lambda self: self.videos.entries)
    class_names = property(lambda self: self.videos.class_names)
    bad_paths = property(lambda self: self.videos.bad_paths)
    suffixes = property(lambda self: self.videos.suffixes)

    def __len__(self) -> int:
        return len(self.videos.entries) * self.per_video

    def set_epoch(self, epoch: int) -> None:
        """Sample different frames in each epoch."""
        self.videos.set_epoch(epoch)

    def _entry_of(self, index: int) -> Entry:
        return self.videos.entries[index // self.per_video]

    def _load(self, index: int, generator: torch.Generator) -> dict[str, Any]:
        v = self.videos
        i, seg = divmod(index, self.per_video)
        entry = v.entries[i]
        num = v._video_info(i)[0]
        lo = num * seg // self.per_video
        hi = max(lo, num * (seg + 1) // self.per_video - 1)
        if v.offset == "random":
            t = int(torch.randint(lo, hi + 1, (1,), generator=generator))
        else:
            t = lo if v.offset == "first" else (lo + hi) // 2
        try:
            frame = read_video(entry.path, t, max_frames=1)
        except VideoReadError:
            if t == 0:
                raise
            t, frame = 0, read_video(entry.path, 0, max_frames=1)
        frame = resize_crop_frames(to_rgb(frame), v.size, v.crop, generator)
        return {
            "image": from_uint8(frame)[:, 0],  # (1, h, w, 3) -> (3, h, w)
            "label": torch.tensor(entry.label, dtype=torch.int64),
            "caption": read_caption(entry) if v.captions else "",
            "path": str(entry.path),
            "video_index": torch.tensor(i),
            "frame_index": torch.tensor(t),
        }


class ImageFolder(_FolderDataset):
    """Images from a folder (searched recursively), for image pretraining.

    Every file with one of `vidiff.io.IMAGE_SUFFIXES` is an item (frames extracted from videos
    as png/jpg work as they are). Labels, captions (sidecar ``.txt``), ``size``/``crop`` and
    the skipping of unreadable files work as in `VideoFolder`. Items: ``"image"`` float32
    ``(3, H, W)`` in [-1, 1], ``"label"`` int64, ``"caption"`` str, ``"path"`` str.
    """

    kind = "image"

    def __init__(
        self,
        root: str | os.PathLike,
        size: int | tuple[int, int] = 64,
        crop: str = "center",
        labels: str | None = "subfolders",
        captions: bool = True,
        seed: int = 0,
        suffixes: tuple[str, ...] = IMAGE_SUFFIXES,
    ):
        super().__init__(root, seed)
        if crop not in ("center", "random"):
            raise ValueError(f'crop must be "center" or "random", got {crop!r}')
        self.size, self.crop, self.captions = _size_pair(size), crop, captions
        self.suffixes = tuple(s.lower() for s in suffixes)
        found = scan_folder(self.root, self.suffixes, frame_folders=False)
        self.entries, self.class_names = index_items(self.root, found, labels, captions)
        if not self.entries:
            raise self._empty_error("none found")

    def __len__(self) -> int:
        return len(self.entries)

    def _entry_of(self, index: int) -> Entry:
        return self.entries[index]

    def _load(self, index: int, generator: torch.Generator) -> dict[str, Any]:

        entry = self.entries[index]
        if entry.path.stat().st_size == 0:
            raise VideoReadError(entry.path, "the file is empty (0 bytes)")
        with Image.open(entry.path) as im:
            array = np.asarray(im.convert("RGB"))
        frame = torch.from_numpy(array.copy())[None]  # (1, H, W, 3)
        image = from_uint8(resize_crop_frames(frame, self.size, self.crop, generator))[:, 0]
        return {
            "image": image,
            "label": torch.tensor(entry.label, dtype=torch.int64),
            "caption": read_caption(entry) if self.captions else "",
            "path": str(entry.path),
        }

    def __repr__(self) -> str:
        return (
            f"ImageFolder({str(self.root)!r}, {len(self.entries)} images, "
            f"{self.num_classes} classes, size={self.size})"
        )
