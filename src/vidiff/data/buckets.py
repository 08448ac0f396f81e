"""Buckets: training clips of several shapes (frames x height x width) from one folder of videos
of mixed resolutions, aspect ratios and lengths, as open video models are trained (Wan 2.1 and
CogVideoX take 1 + 4k frames, LTX-Video 1 + 8k, frames such as 480 x 832).

>>> ds = BucketedFolder("videos", [(17, 32, 48), (9, 48, 32)], fps=8)
>>> ds.report.lines()       # clips per bucket, videos skipped and why
>>> item = ds[0]            # {"video": (3, 17, 32, 48), "bucket": 0, "label", ...}

Each video goes to one bucket (`assign_bucket`): first by aspect ratio, the buckets whose h / w
is nearest the video's in log ratio, then by length, the longest of those buckets whose clip
the video holds at ``fps`` (resampled, `vidiff.data.VideoFolder`'s way) or ``stride``. A video
too short for every bucket of its aspect, or unreadable, is skipped with its reason in the
`BucketReport` (and a warning): nothing is dropped silently. Each bucket is a `VideoFolder`
over its own videos with the bucket's frames and size, so its clips are read, resampled,
resized to cover and cropped exactly as a `VideoFolder`'s are.

Items are numbered bucket after bucket (``offsets[b]`` is bucket b's first); a batch sampler
that draws each batch from one bucket is `vidiff.train.data.BucketOrder`.
"""

from __future__ import annotations

import bisect
import copy
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from vidiff.data.entries import _READ_ERRORS, SkippedVideoWarning
from vidiff.data.folder import VideoFolder
from vidiff.io import VideoReadError, video_info
from vidiff.utils.config_io import ConfigError

__all__ = ["Bucket", "BucketReport", "BucketedFolder", "assign_bucket", "check_buckets",
           "check_frame_rule", "clip_span"]

Bucket = tuple[int, int, int]  # (frames, height, width) of a bucket's clips

_SAME = 1e-9  # log aspect ratios closer than this are the same aspect


def check_frame_rule(frames: int, step: int, key: str) -> None:
    """A `ConfigError` naming `key` unless ``frames = 1 + step * k`` (k >= 0): the clip
    lengths of a model whose VAE compresses time by `step` (Wan 2.1 and CogVideoX: 4,
    LTX-Video: 8). The message gives the two nearest lengths that fit."""
    if step < 1:
        raise ValueError(f"the frame step must be >= 1, got {step}")
    if frames >= 1 and (frames - 1) % step == 0:
        return
    below = 1 + step * max(0, (frames - 1) // step)  # the nearest fitting lengths
    above = below + step
    raise ConfigError(f"{key}: {frames} frames do not fit this model: a clip has 1 + {step}k "
                      f"frames (nearest: {below} or {above})")


def check_buckets(buckets: Sequence, key: str = "data.buckets") -> list[Bucket]:
    """`buckets` as (frames, height, width) tuples: each 3 positive ints, no two of the same
    aspect ratio and frame count (a video could go to either); a `ConfigError` naming the
    bucket (``data.buckets[1]``) otherwise."""
    out: list[Bucket] = []
    for i, bucket in enumerate(buckets):
        ok = isinstance(bucket, (list, tuple)) and len(bucket) == 3 and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in bucket)
        if not ok:
            raise ConfigError(f"{key}[{i}] = {bucket!r}: a bucket is [frames, height, width], "
                              f"3 positive ints (e.g. [17, 480, 832])")
        f, h, w = (int(v) for v in bucket)
        for j, (f2, h2, w2) in enumerate(out):
            if f == f2 and abs(math.log(h / w) - math.log(h2 / w2)) < _SAME:
                raise ConfigError(f"{key}[{i}] = {list(bucket)} has the aspect ratio and the "
                                  f"frames of {key}[{j}] = {[f2, h2, w2]}: a video could go to "
                                  f"either; give them other frame counts or drop one")
        out.append((f, h, w))
    return out


def clip_span(frames: int, step: float) -> int:
    """Source frames covered by a clip of `frames` taking every `step`-th source frame (as
    `VideoFolder` reads it: first to last, inclusive)."""
    return int(round((frames - 1) * step)) + 1


def assign_bucket(height: int, width: int, num_frames: int, step: float,
                  buckets: Sequence[Bucket]) -> tuple[int | None, str]:
    """(bucket index, "") for a video of ``height x width`` and `num_frames` source frames,
    read at `step` source frames per clip frame; (None, why) when it is too short for every
    bucket of its aspect. The aspect: the buckets whose log(h / w) is nearest the video's
    (ties: the one listed first); the length: the longest of them whose clip fits."""
    ratio = math.log(height / width)
    logs = [math.log(h / w) for _, h, w in buckets]
    best = min(range(len(buckets)), key=lambda b: abs(logs[b] - ratio))
    group = [b for b in range(len(buckets)) if abs(logs[b] - logs[best]) < _SAME]
    group.sort(key=lambda b: -buckets[b][0])  # the longest clip first
    for b in group:
        if clip_span(buckets[b][0], step) <= num_frames:
            return b, ""
    f, h, w = buckets[group[-1]]
    return None, (f"{num_frames} frames; its aspect's shortest bucket {f}x{h}x{w} needs "
                  f"{clip_span(f, step)} source frames")


@dataclass
class BucketReport:
    """What the assignment did: the clips and videos of each bucket, the videos skipped and
    why. The trainer prints `lines()` in its banner and writes `to_dict()` as
    ``buckets.json`` into the run folder."""

    buckets: list[Bucket]  # (frames, height, width) of each bucket, as configured
    clips: list[int]  # clips each bucket gives per epoch
    videos: list[int]  # videos each bucket got
    found: int  # videos found in the folder
    # why -> {video (relative to the root): detail}: "too short", "unreadable"
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)
    rate: str = ""  # how the clips' frames are taken: "8 fps (resampled)" / "stride 2"
    source_fps: list[float] = field(default_factory=list)  # distinct source frame rates

    @property
    def num_skipped(self) -> int:
        """Videos left out, for any reason."""
        return sum(len(v) for v in self.skipped.values())

    def lines(self, shown: int = 3) -> list[str]:
        """Readable lines: a summary, one per bucket, one per reason for skipping (naming at
        most `shown` videos; ``buckets.json`` names them all)."""
        n = len(self.buckets)
        out = [f"buckets: {sum(self.videos)} of {self.found} videos in {n} bucket"
               f"{'s' if n != 1 else ''} (data.buckets), {self.num_skipped} skipped; frames "
               f"at {self.rate}"]
        for i, ((f, h, w), clips, videos) in enumerate(zip(self.buckets, self.clips,
                                                           self.videos, strict=True)):
            out.append(f"  bucket {i}: {f}x{h}x{w} (h/w {h / w:.2f}): {_count(clips, 'clip')}"
                       f" from {_count(videos, 'video')}")
        for why, videos in self.skipped.items():
            names = [f"{rel} ({detail})" for rel, detail in list(videos.items())[:shown]]
            more = f", and {len(videos) - shown} more" if len(videos) > shown else ""
            out.append(f"  skipped, {why}: {_count(len(videos), 'video')}: "
                       f"{'; '.join(names)}{more}")
        if len(self.source_fps) > 1 and "stride" in self.rate:
            rates = ", ".join(f"{r:g}" for r in self.source_fps)
            out.append(f"  note: the videos have several frame rates ({rates} fps) and a "
                       f"stride keeps each one's: set data.fps to resample them to one")
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``buckets.json``)."""
        return {
            "buckets": [{"frames": f, "height": h, "width": w, "clips": c, "videos": v}
                        for (f, h, w), c, v in zip(self.buckets, self.clips, self.videos,
                                                   strict=True)],
            "found": self.found, "skipped": self.skipped, "rate": self.rate,
            "source_fps": self.source_fps,
        }

    def write(self, path: str | os.PathLike) -> Path:
        """Write `to_dict()` as JSON to `path`; returns it."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


class BucketedFolder(Dataset):
    """The clips of a folder of videos, each video in one bucket (see the module docstring).

    Args:
        root: the folder (searched recursively, as `VideoFolder` searches it).
        buckets: (frames, height, width) of each bucket (`check_buckets`).
        stride, fps: how clip frames are taken from the source (exclusive; fps resamples).
        seed: the seed of the per-item generators (clip starts, random crops).
        **options: more `VideoFolder` keywords (crop, offset, labels, captions,
            clips_per_video, short, suffixes, frame_folders), the same for every bucket.

    Every video's header is read at construction (no decoding). A folder with no video that
    fits a bucket is a `ValueError`. Items: a `VideoFolder` item of the video's bucket, with
    ``"bucket"`` (its index) added.
    """

    kind = "video"

    def __init__(self, root: str | os.PathLike, buckets: Sequence[Sequence[int]], *,
                 stride: int = 1, fps: float | None = None, seed: int = 0, **options: Any):
        self.buckets = check_buckets(buckets)
        if not self.buckets:
            raise ValueError("no buckets given")
        for key in ("frames", "size", "probe"):
            if key in options:
                raise ValueError(f"{key!r} is set by the buckets (each bucket's frames and "
                                 f"size; every header is read), not an option")
        f0, h0, w0 = self.buckets[0]
        base = VideoFolder(root, frames=f0, size=(h0, w0), stride=stride, fps=fps, seed=seed,
                           probe=False, **options)
        self.root, self.class_names, self.bad_paths = base.root, base.class_names, \
            base.bad_paths
        self.fps, self.stride = fps, int(stride)
        members: list[list[int]] = [[] for _ in self.buckets]
        too_short: dict[str, str] = {}
        rates = set()
        for i, entry in enumerate(base.entries):
            try:
                info = video_info(entry.path)
                if info.num_frames < 1 or info.height < 1 or info.width < 1:
                    raise VideoReadError(entry.path, "the video has no frames")
            except _READ_ERRORS as err:
                base._mark_bad(entry, err)  # a SkippedVideoWarning naming it
                continue
            base._info[i] = (info.num_frames, info.fps)  # what VideoFolder reads it by
            if info.fps:
                rates.add(round(float(info.fps), 3))
            b, why = assign_bucket(info.height, info.width, info.num_frames, base._step(i),
                                   self.buckets)
            if b is None:
                too_short[entry.rel] = why
            else:
                members[b].append(i)
        if too_short:
            example = next(iter(too_short.items()))
            warnings.warn(f"{len(too_short)} of {len(base.entries)} videos are too short for "
                          f"every bucket of their aspect ratio and are skipped (e.g. "
                          f"{example[0]}: {example[1]})", SkippedVideoWarning, stacklevel=2)
        if not any(members):
            raise ValueError(f"no video in {str(self.root)!r} fits a bucket of {self.buckets} "
                             f"({len(too_short)} too short, {len(self.bad_paths)} unreadable)")
        self.views = [_bucket_view(base, bucket, idx) for bucket, idx in zip(
            self.buckets, members, strict=True)]
        self.entries = [e for view in self.views for e in view.entries]  # the videos in use
        self.bucket_sizes = [len(view) for view in self.views]  # clips per bucket
        self.offsets = [0]  # the flat index of each bucket's first clip
        for n in self.bucket_sizes:
            self.offsets.append(self.offsets[-1] + n)
        skipped = {"too short": too_short} if too_short else {}
        if self.bad_paths:
            skipped["unreadable"] = dict(self.bad_paths)
        rate = f"{float(fps):g} fps (resampled)" if fps is not None else f"stride {stride}"
        self.report = BucketReport(self.buckets, list(self.bucket_sizes),
                                   [len(v.entries) for v in self.views], len(base.entries),
                                   skipped, rate, sorted(rates))

    @property
    def num_classes(self) -> int:
        """The number of classes (labels ``0 .. num_classes - 1``; -1: none)."""
        return len(self.class_names)

    @property
    def clip_fps(self) -> float | None:
        """The clips' frame rate: ``fps`` when resampling, else the first video's rate
        divided by the stride (None when the files do not say)."""
        for view in self.views:
            if view.entries:
                return view.clip_fps
        return None

    def set_epoch(self, epoch: int) -> None:
        """Draw other clips and crops in each epoch (every bucket's)."""
        for view in self.views:
            view.set_epoch(epoch)

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """(bucket, index within the bucket) of flat item `index`."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        b = bisect.bisect_right(self.offsets, index) - 1
        return b, index - self.offsets[b]

    def __getitem__(self, index: int) -> dict[str, Any]:
        b, k = self.locate(index)
        item = self.views[b][k]  # an unreadable video is replaced within its bucket
        item["bucket"] = b
        return item

    def __repr__(self) -> str:
        shapes = ", ".join(f"{f}x{h}x{w}" for f, h, w in self.buckets)
        return (f"BucketedFolder({str(self.root)!r}, {len(self.entries)} videos in buckets "
                f"{shapes}: {self.bucket_sizes} clips)")


def _bucket_view(base: VideoFolder, bucket: Bucket, members: list[int]) -> VideoFolder:
    """`base` restricted to the entries `members`, with the bucket's frames and size: a
    `VideoFolder` whose headers are already read (as its ``probe`` would leave it)."""
    f, h, w = bucket
    view = copy.copy(base)  # shares bad_paths: an unreadable file counts once
    view.frames, view.size = f, (h, w)
    view.entries = [base.entries[i] for i in members]
    view._info = {k: base._info[i] for k, i in enumerate(members)}  # renumbered
    view._padding_warned = False
    view._clips = None
    if view.clips_per_video == "all":  # every non-overlapping clip of each video
        view._clips = [(k, c, n) for k in range(len(members))
                       for n in [view._num_windows(k)] for c in range(n)]
    return view
