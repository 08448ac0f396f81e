"""Datasets over folders of real videos and images (e.g. UCF-101: ``root/ClassName/v_x.avi``).

>>> ds = VideoFolder("UCF-101", frames=16, size=64, stride=2)
>>> item = ds[0]   # {"video": (3, 16, 64, 64) in [-1, 1], "label", "caption", "path", ...}
>>> ds.class_names[item["label"]]
'ApplyEyeMakeup'
>>> images = ds.as_images()            # single frames, for image pretraining / joint training
>>> ds = make_dataset("bouncing_balls", size=32)   # or a folder path

A *video* is a file with one of `VIDEO_SUFFIXES` or a folder whose files include image frames
(`vidiff.io.IMAGE_SUFFIXES`, read in natural order). The folder is scanned once, recursively,
by file names only (nothing is decoded; hidden files and folders are ignored). Clips are
decoded on access; the frame count and rate come from `vidiff.io.video_info` (headers only)
and are cached per process.

Randomness (clip start, crop position, sampled frame) comes from a private
`torch.Generator` seeded from ``(seed, epoch, index)`` (`set_epoch` changes the epoch), never
from global random state, so an item is reproducible in any worker and differs per epoch.

An unreadable file (corrupt, empty, truncated before the clip) never stops an epoch: the item
is replaced by the next readable index (deterministically), and a `SkippedVideoWarning` names
the file and the running count of unreadable files (`vidiff.data.entries`, shared by every
folder dataset).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from vidiff.data.entries import _READ_ERRORS, PaddedVideoWarning, _FolderDataset
from vidiff.data.resize import FitFrames, _size_pair
from vidiff.data.scan import Entry, index_items, read_caption, scan_folder
from vidiff.data.synthetic import SYNTHETIC, make_synthetic
from vidiff.io import VideoReadError, from_uint8, read_video, video_info

__all__ = ["VIDEO_SUFFIXES", "VideoFolder", "make_dataset"]

#: Suffixes of the video files `VideoFolder` picks up (frame folders count as videos too).
VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mov", ".mkv", ".gif")

class VideoFolder(_FolderDataset):
    """Clips from a folder (searched recursively) of video files and frame folders.

    Args:
        root: the folder. Missing: `FileNotFoundError`; no videos in it: `ValueError`.
        frames: frames per clip.
        size: output height and width (an int, or ``(height, width)``): each clip is resized
            (bilinear, antialiased) so that it just covers the size, then cropped.
        stride: take every ``stride``-th frame. Exclusive with ``fps``.
        fps: resample to this frame rate instead (source rate from `vidiff.io.video_info`;
            nearest source frame for each output time; frames repeat when upsampling). Videos
            without a known rate (frame folders) are read at ``stride=1``.
        crop: "center" or "random" (position from the item's generator).
        offset: where a clip starts in its video (or in its segment when ``clips_per_video``
            > 1): "random", "center" or "first".
        labels: "subfolders" (class = the immediate subfolder of ``root``; ``class_names``
            sorted; items directly in ``root`` get -1) or None (all -1).
        captions: read the caption from a sidecar ``.txt`` with the video's stem (for a frame
            folder ``name/``: ``name.txt`` next to it); "" when there is none.
        clips_per_video: 1 (one clip per video and epoch), an int ``k`` (the video is split
            into ``k`` equal segments, one clip from each), or "all" (every non-overlapping
            clip: needs the frame counts, so all videos are probed at construction).
        short: a video shorter than a clip is padded by repeating its last frame ("pad";
            ``item["num_real_frames"]`` counts the frames before the padding) or skipped like
            an unreadable file ("skip").
        seed: the seed of the per-item generators.
        probe: read every header at construction (`vidiff.io.video_info`, no decoding) and
            drop unreadable videos right away, with a warning each (implied by "all").
        suffixes: the video file suffixes to pick up (default `VIDEO_SUFFIXES`).
        frame_folders: whether folders of image frames count as videos.

    Items: ``"video"`` float32 ``(3, frames, H, W)`` in [-1, 1] (grayscale replicated, alpha
    dropped), ``"label"`` int64 (-1: none), ``"caption"`` str, ``"path"`` str,
    ``"frame_indices"`` int64 ``(frames,)`` (source frames used), ``"num_real_frames"`` int64.
    """

    kind = "video"

    def __init__(
        self,
        root: str | os.PathLike,
        frames: int = 16,
        size: int | tuple[int, int] = 64,
        stride: int = 1,
        fps: float | None = None,
        crop: str = "center",
        offset: str = "random",
        labels: str | None = "subfolders",
        captions: bool = True,
        clips_per_video: int | str = 1,
        short: str = "pad",
        seed: int = 0,
        probe: bool = False,
        suffixes: tuple[str, ...] = VIDEO_SUFFIXES,
        frame_folders: bool = True,
    ):
        super().__init__(root, seed)
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if fps is not None and (stride != 1 or not fps > 0):
            raise ValueError(
                f"give a positive fps or a stride, not both (fps={fps}, stride={stride})"
            )
        for name, value, valid in (
            ("crop", crop, ("center", "random")),
            ("offset", offset, ("random", "center", "first")),
            ("short", short, ("pad", "skip")),
        ):
            if value not in valid:
                raise ValueError(f"{name} must be one of {valid}, got {value!r}")
        if not (
            clips_per_video == "all" or (isinstance(clips_per_video, int) and clips_per_video >= 1)
        ):
            raise ValueError(
                f'clips_per_video must be an int >= 1 or "all", got {clips_per_video!r}'
            )
        self.frames, self.size = int(frames), _size_pair(size)
        self.stride, self.fps = int(stride), fps
        self.crop, self.offset, self.short = crop, offset, short
        self.captions, self.clips_per_video = captions, clips_per_video
        self.suffixes = tuple(s.lower() for s in suffixes)
        found = scan_folder(self.root, self.suffixes, frame_folders)
        self.entries, self.class_names = index_items(self.root, found, labels, captions)
        if not self.entries:
            raise self._empty_error("none found")
        self._info: dict[int, tuple[int, float | None]] = {}  # entry -> (frames, fps)
        self._padding_warned = False
        # with "all": item -> (entry index, clip number, clips of that entry)
        self._clips: list[tuple[int, int, int]] | None = None
        if probe or clips_per_video == "all":
            self._probe_all()

    # -- indexing -------------------------------------------------------------------------

    def _probe_all(self) -> None:
        good, info = [], {}
        for i, entry in enumerate(self.entries):
            try:
                info[len(good)] = self._video_info(i)
            except _READ_ERRORS as e:
                self._mark_bad(entry, e)
            else:
                good.append(entry)
        if not good:
            raise self._empty_error(f"all {len(self.entries)} found are unreadable")
        self.entries, self._info = good, info  # renumbered without the unreadable ones
        short = [e.rel for i, e in enumerate(good) if info[i][0] < self._span(i)]
        if short and self.short == "pad":
            self._warn_padded(short[0], len(short))
        if self.clips_per_video == "all":
            self._clips = []
            for i in range(len(self.entries)):
                n = self._num_windows(i)
                self._clips.extend((i, k, n) for k in range(n))

    def __len__(self) -> int:
        if self._clips is not None:
            return len(self._clips)
        return len(self.entries) * int(self.clips_per_video)

    def _locate(self, index: int) -> tuple[int, int, int]:
        """(entry index, clip number, clips of that entry) of an item."""
        if self._clips is not None:
            return self._clips[index]
        k = int(self.clips_per_video)
        return index // k, index % k, k

    def _entry_of(self, index: int) -> Entry:
        return self.entries[self._locate(index)[0]]

    def _video_info(self, i: int) -> tuple[int, float | None]:
        if i not in self._info:
            info = video_info(self.entries[i].path)
            if info.num_frames < 1:
                raise VideoReadError(self.entries[i].path, "the video has no frames")
            self._info[i] = (info.num_frames, info.fps)
        return self._info[i]

    @property
    def clip_fps(self) -> float | None:
        """The frame rate of the clips: ``fps`` when resampling, else the first readable
        video's rate divided by the stride (None when the files do not say)."""
        if self.fps is not None:
            return float(self.fps)
        for i in range(len(self.entries)):
            try:
                rate = self._video_info(i)[1]
            except _READ_ERRORS:
                continue
            return rate / self.stride if rate else None
        return None

    def _warn_padded(self, example: str, count: int | None) -> None:
        """Once per dataset: videos shorter than a clip are padded with their last frame."""
        self._padding_warned = True
        many = (f"{count} of the {len(self.entries)} videos are" if count is not None
                else f"{example} is (the first found; others are not counted)")
        warnings.warn(f"{many} shorter than a clip of {self.frames} frames at this stride/fps "
                      f"(e.g. {example}): their clips are padded by repeating the last frame; "
                      f"short='skip' (data.options.short) leaves them out", PaddedVideoWarning,
                      stacklevel=3)

    def _step(self, i: int) -> float:
        """Source frames per output frame."""
        if self.fps is None:
            return float(self.stride)
        src_fps = self._video_info(i)[1]
        return src_fps / self.fps if src_fps else 1.0

    def _num_windows(self, i: int) -> int:
        return max(1, self._video_info(i)[0] // self._span(i))

    def _span(self, i: int) -> int:
        """Source frames covered by one clip (first to last, inclusive)."""
        return int(round((self.frames - 1) * self._step(i))) + 1

    # -- loading --------------------------------------------------------------------------

    def _clip_start(self, i: int, clip: int, clips: int, g: torch.Generator) -> int:
        n = self._video_info(i)[0]
        span = self._span(i)
        if self._clips is not None:  # "all": consecutive windows
            return clip * span
        slack = max(0, n - span)  # the starts 0..slack keep the clip inside the video
        lo = (slack + 1) * clip // clips  # this clip's segment of starts
        hi = max(lo, (slack + 1) * (clip + 1) // clips - 1)
        if self.offset == "first":
            return lo
        if self.offset == "center":
            return (lo + hi) // 2
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    def _read(self, i: int, start: int, fit: FitFrames
              ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """uint8 frames (frames, h, w, 3) resized and cropped by `fit` as they are decoded,
        the source indices, the count before padding."""
        entry = self.entries[i]
        step = self._step(i)
        wanted = [start + int(round(k * step)) for k in range(self.frames)]  # (frames,)
        integral = self.fps is None
        end = wanted[-1] + 1
        try:
            got = read_video(entry.path, start, end, self.stride if integral else 1,
                             frame_fn=fit)
        except VideoReadError:
            if start == 0:
                raise
            # the header overstated the length (an estimate, or truncation): from the start
            start, wanted = 0, [w - start for w in wanted]
            got = read_video(entry.path, 0, wanted[-1] + 1, self.stride if integral else 1,
                             frame_fn=fit)
        # the positions of the wanted frames in what was decoded
        pos = [k for k in range(self.frames)] if integral else [w - start for w in wanted]
        real = sum(p < got.shape[0] for p in pos)
        if real < self.frames and self.short == "skip":
            raise VideoReadError(
                entry.path, f"{real} frames, fewer than the {self.frames} of a clip (short='skip')"
            )
        if real < self.frames and not self._padding_warned:
            self._warn_padded(entry.rel, None)
        pos = [min(p, got.shape[0] - 1) for p in pos]  # pad: repeat the last frame
        src = torch.tensor([start + (p * self.stride if integral else p) for p in pos])
        return got[pos], src, real

    def _load(self, index: int, generator: torch.Generator) -> dict[str, Any]:
        i, clip, clips = self._locate(index)
        entry = self.entries[i]
        start = self._clip_start(i, clip, clips, generator)
        # each frame resized and cropped as bytes when decoded; the float step at the end
        frames, src, real = self._read(i, start, FitFrames(self.size, self.crop, generator))
        video = from_uint8(frames)  # (F, h, w, 3) uint8 -> (3, F, h, w) float
        return {
            "video": video,
            "label": torch.tensor(entry.label, dtype=torch.int64),
            "caption": read_caption(entry) if self.captions else "",
            "path": str(entry.path),
            "frame_indices": src,
            "num_real_frames": torch.tensor(real, dtype=torch.int64),
        }

    def as_images(self, per_video: int = 1):
        """Single frames of these videos (a `vidiff.data.images.VideoFolderFrames`), for image
        pretraining or joint image-video batches."""
        # import cycle: vidiff.data.folder -> vidiff.data.images -> vidiff.data.folder
        from vidiff.data.images import VideoFolderFrames

        return VideoFolderFrames(self, per_video)

    def __repr__(self) -> str:
        return (
            f"VideoFolder({str(self.root)!r}, {len(self.entries)} videos, "
            f"{self.num_classes} classes, frames={self.frames}, size={self.size})"
        )


def _looks_like_path(source: str) -> bool:
    return any(s in source for s in ("/", os.sep, "~")) or source.startswith(".")


def make_dataset(source: str | os.PathLike, **kwargs: Any) -> Dataset:
    """A video dataset by name or folder.

    ``"bouncing_balls"`` / ``"moving_shapes"`` (any `vidiff.data.SYNTHETIC` name) build the
    synthetic dataset (`vidiff.data.make_synthetic`, ``kwargs`` are config fields); an existing
    folder (or anything that looks like a path) builds a `VideoFolder` with ``kwargs``. Any
    other name is a ValueError listing the valid names.
    """
    if isinstance(source, str) and source in SYNTHETIC:
        return make_synthetic(source, **kwargs)
    if not isinstance(source, str) or Path(source).is_dir() or _looks_like_path(source):
        return VideoFolder(source, **kwargs)
    valid = ", ".join(repr(n) for n in SYNTHETIC.names())
    raise ValueError(
        f"unknown dataset {source!r}: not a synthetic dataset name and not a folder; valid "
        f"names: {valid}, or the path of a folder of videos"
    )
