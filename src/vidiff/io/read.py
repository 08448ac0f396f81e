"""Reading videos: container files through PyAV, GIFs through Pillow, npy arrays, frame folders.

All readers return uint8 frames ``(F, H, W, C)`` (RGB, channels last) as a torch tensor; use
`vidiff.io.from_uint8` for the float ``(C, F, H, W)`` convention. A frame range
(``start``, ``end``, ``stride``, ``max_frames``) is applied while decoding: frames after the
range are never decoded, and frames before it are skipped by seeking where the container allows.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import get_worker_info

from vidiff.io.write import GRID_TAG

__all__ = [
    "VideoReadError",
    "VideoInfo",
    "read_video",
    "read_frames_folder",
    "video_info",
    "IMAGE_SUFFIXES",
]

#: Image suffixes `read_frames_folder` picks up.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class VideoReadError(ValueError):
    """A video (or frame folder) exists but cannot be read: corrupt, empty, no video stream.

    ``path`` is the file, ``reason`` says what is wrong; the message names both. A missing
    file raises `FileNotFoundError` instead.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read video {self.path!r}: {reason}")

    def __reduce__(self):  # picklable (DataLoader workers send exceptions to the parent)
        return type(self), (self.path, self.reason)


@dataclass(frozen=True)
class VideoInfo:
    """What `video_info` knows about a video without decoding it."""

    num_frames: int  # number of frames (estimated from the duration when exact is False)
    fps: float | None  # average frame rate; None when the file has no timing (npy, folders)
    width: int  # frame width in pixels
    height: int  # frame height in pixels
    exact: bool  # whether num_frames was read from the file rather than estimated
    codec: str  # codec name ("h264", "vp9", "gif", "npy", "png", ...)

    @property
    def duration(self) -> float | None:
        """Length in seconds (num_frames / fps), None without an fps."""
        return self.num_frames / self.fps if self.fps else None


def _check_file(path: Path) -> None:
    if path.is_dir():
        return
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "no such video file", str(path))
    if path.stat().st_size == 0:
        raise VideoReadError(path, "the file is empty (0 bytes)")


def _check_range(start: int, end: int | None, stride: int, max_frames: int | None) -> None:
    if start < 0 or (end is not None and end < 0):
        raise ValueError(f"start and end must be >= 0, got start={start}, end={end}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if end is not None and end <= start:
        raise ValueError(f"empty frame range: start={start}, end={end}")


def _selected(num: int, start: int, end: int | None, stride: int, cap: int | None) -> range:
    """The frame indices of a range over ``num`` frames."""
    r = range(start, min(num, end) if end is not None else num, stride)
    return r[:cap] if cap is not None else r


def _finish(path: Path, frames: list[np.ndarray], start: int, total: int | None = None):
    """Stack decoded frames; a VideoReadError if there are none."""
    if not frames:
        if total == 0:
            raise VideoReadError(path, "the video has no frames")
        of = f" (the video has {total} frames)" if total is not None else ""
        raise VideoReadError(path, f"no frames at or after frame {start}{of}")
    if isinstance(frames[0], torch.Tensor):
        return torch.stack(frames)
    return torch.from_numpy(np.stack(frames))


def read_video(
    path: str | os.PathLike,
    start: int = 0,
    end: int | None = None,
    stride: int = 1,
    max_frames: int | None = None,
    frame_fn: FrameFn | None = None,
) -> torch.Tensor:
    """Decode frames ``start, start + stride, ... < end`` (at most ``max_frames``) of a video.

    Returns uint8 RGB frames ``(F, H, W, 3)``. Reads anything FFmpeg demuxes (mp4, webm, mkv,
    mov, avi, ...), GIFs (Pillow, frames composited), ``.npy`` files written by `write_video`
    (``(F, H, W, C)`` or ``(1, F, H, W, C)``; channels kept) and folders of image frames
    (`read_frames_folder`). Frame indices count decoded frames from 0; for a container and
    ``start > 0`` the decoder seeks to the keyframe before ``start`` and reads its index from
    its timestamp (``round((pts - start_pts) * fps)``, exact for constant frame rates).

    ``frame_fn`` maps each kept uint8 frame ``(H, W, C)`` (a numpy array) to what is stored
    (e.g. a resized crop), as it is decoded: full-resolution frames are never stacked or kept.

    Raises `FileNotFoundError` for a missing path and `VideoReadError` for a corrupt, empty or
    frameless file or an empty range.
    """
    _check_range(start, end, stride, max_frames)
    path = Path(path)
    _check_file(path)
    keep = frame_fn or _identity
    if path.is_dir():
        return read_frames_folder(path, start, end, stride, max_frames, frame_fn=keep)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _read_npy(path, start, end, stride, max_frames, keep)
    if suffix == ".gif":
        return _read_gif(path, start, end, stride, max_frames, keep)
    return _read_av(path, _selected(sys.maxsize, start, end, stride, max_frames), keep)


FrameFn = Callable[[np.ndarray], "np.ndarray | torch.Tensor"]


def _identity(frame: np.ndarray) -> np.ndarray:
    return frame


def _read_npy(path: Path, start, end, stride, max_frames, keep: FrameFn) -> torch.Tensor:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise VideoReadError(path, f"not a valid .npy file ({e})") from e
    if arr.ndim == 5 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 4 or arr.dtype != np.uint8:
        raise VideoReadError(
            path,
            f"expected uint8 frames (F, H, W, C), got {arr.dtype} {arr.shape}; a batch of "
            "several videos is read with numpy.load",
        )
    idx = _selected(arr.shape[0], start, end, stride, max_frames)
    return _finish(path, [keep(np.array(arr[i])) for i in idx], start, arr.shape[0])


def _read_gif(path: Path, start, end, stride, max_frames, keep: FrameFn) -> torch.Tensor:
    try:
        with Image.open(path) as im:
            idx = _selected(getattr(im, "n_frames", 1), start, end, stride, max_frames)
            frames = []
            for i in idx:
                im.seek(i)  # Pillow composites earlier frames (disposal) as needed
                frames.append(keep(np.asarray(im.convert("RGB"))))
            total = getattr(im, "n_frames", 1)
    except (UnidentifiedImageError, OSError, EOFError, SyntaxError) as e:
        raise VideoReadError(path, f"not a readable GIF ({e})") from e
    return _finish(path, frames, start, total)


def _open_av(path: Path):
    """Open a container and its first video stream; VideoReadError when impossible."""
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise VideoReadError(path, f"FFmpeg cannot open it ({e.strerror or e})") from e
    if not container.streams.video:
        container.close()
        raise VideoReadError(path, "the file has no video stream (no video frames)")
    return container, container.streams.video[0]


def _pts_index(frame, stream) -> int | None:
    """The index of a decoded frame from its timestamp (constant frame rate assumed)."""
    rate, tb = stream.average_rate or stream.guessed_rate, stream.time_base
    if frame.pts is None or not rate or tb is None:
        return None
    first = stream.start_time or 0
    return round((frame.pts - first) * tb * rate)


def _seek(container, stream, start: int) -> bool:
    """Seek to the last keyframe at or before frame ``start``; whether that worked."""
    rate, tb = stream.average_rate or stream.guessed_rate, stream.time_base
    if not rate or tb is None:
        return False
    target = (stream.start_time or 0) + int(start / rate / tb)
    try:
        container.seek(target, stream=stream, backward=True, any_frame=False)
    except av.error.FFmpegError:
        return False
    return True


def _decode_threads() -> int:
    """Decoder threads: FFmpeg's choice (0) in a plain process; in a DataLoader worker, the
    cores shared out between the workers, which already decode side by side (one each when
    there are as many workers as cores)."""
    worker = get_worker_info()
    if worker is None:
        return 0
    return max(1, (os.cpu_count() or 1) // max(1, worker.num_workers))


def _read_av(path: Path, wanted: range, keep: FrameFn = _identity,
             seek: bool = True) -> torch.Tensor:
    """Decode the frames at the indices ``wanted`` (a range) from a container file.

    With ``seek`` and ``wanted.start > 0`` the decoder first jumps to the keyframe before the
    range; the first frame's timestamp then tells its index and later frames are counted on
    from it. If the timestamp is missing or lies past the range start (the seek overshot),
    decoding restarts from the beginning and counts frames from 0.
    """
    container, stream = _open_av(path)
    frames: list[np.ndarray] = []
    restart = ended = False
    with container:
        stream.thread_type = "AUTO"
        stream.thread_count = _decode_threads()
        sought = seek and wanted.start > 0 and _seek(container, stream, wanted.start)
        index = None if sought else 0  # the index of the next decoded frame
        try:
            for frame in container.decode(stream):
                if index is None:
                    index = _pts_index(frame, stream)
                    if index is None or index > wanted.start:
                        restart = True
                        break
                if index > wanted[-1]:
                    break
                if index in wanted:
                    frames.append(keep(frame.to_ndarray(format="rgb24")))
                    if index == wanted[-1]:  # the last one: decode no further frame
                        index += 1
                        break
                index += 1
            else:
                ended = True
        except av.error.FFmpegError as e:
            msg = f"decoding failed after {len(frames)} frames ({e.strerror or e})"
            raise VideoReadError(path, msg) from e
        listed = stream.frames
    if restart:
        return _read_av(path, wanted, keep, seek=False)
    if not sought and not index:
        raise VideoReadError(path, "the video has no frames")
    if ended and index is not None and 0 < index < listed and len(wanted) > len(frames):
        warnings.warn(
            f"{str(path)!r}: decoding ended at frame {index} of the {listed} frames "
            "in its header; the file may be truncated",
            RuntimeWarning,
            stacklevel=3,
        )
    return _finish(path, frames, wanted.start)


def natural_key(name: str) -> list:
    """Sort key under which "frame2.png" comes before "frame10.png" (and "v2" before "v10"):
    digit runs compare as numbers, the rest case-insensitively."""
    parts = re.split(r"(\d+)", name)
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in parts]


def _frame_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        if not folder.exists():
            raise FileNotFoundError(errno.ENOENT, "no such frame folder", str(folder))
        raise NotADirectoryError(errno.ENOTDIR, "not a frame folder", str(folder))
    files = [
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    ]
    if not files:
        kinds = ", ".join(IMAGE_SUFFIXES)
        raise VideoReadError(folder, f"the folder has no image frames ({kinds})")
    return sorted(files, key=lambda p: natural_key(p.name))


def read_frames_folder(
    folder: str | os.PathLike,
    start: int = 0,
    end: int | None = None,
    stride: int = 1,
    max_frames: int | None = None,
    frame_fn: FrameFn | None = None,
) -> torch.Tensor:
    """Read a folder of image frames (png, jpg, ...) as uint8 RGB frames ``(F, H, W, 3)``.

    Files are ordered naturally ("frame2" before "frame10"); hidden files are ignored. The
    frame range and ``frame_fn`` work as in `read_video`, and only the selected files are
    opened. All frames must have the same size.
    """
    _check_range(start, end, stride, max_frames)
    folder = Path(folder)
    files = _frame_files(folder)
    keep = frame_fn or _identity
    frames, first = [], None
    for i in _selected(len(files), start, end, stride, max_frames):
        try:
            with Image.open(files[i]) as im:
                image = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise VideoReadError(files[i], f"not a readable image ({e})") from e
        first = image.shape if first is None else first
        if image.shape != first:
            raise VideoReadError(
                folder,
                f"frame {files[i].name} is {image.shape[1]}x{image.shape[0]}, "
                f"the first selected frame is {first[1]}x{first[0]}",
            )
        frames.append(keep(image))
    return _finish(folder, frames, start, len(files))


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Frame count, frame rate and size of a video file or frame folder, without decoding it.

    The frame count comes from the container header where it has one (mp4, mov, avi, gif,
    npy, folders; ``exact=True``) and is otherwise estimated from the duration and the frame
    rate (webm, mkv; ``exact=False``).
    """
    path = Path(path)
    _check_file(path)
    if path.is_dir():
        files = _frame_files(path)
        with Image.open(files[0]) as im:
            w, h = im.size
        return VideoInfo(len(files), None, w, h, True, files[0].suffix.lower().lstrip("."))
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise VideoReadError(path, f"not a valid .npy file ({e})") from e
        if arr.ndim not in (4, 5):
            raise VideoReadError(path, f"expected frames (F, H, W, C), got shape {arr.shape}")
        return VideoInfo(arr.shape[-4], None, arr.shape[-2], arr.shape[-3], True, "npy")
    if suffix == ".gif":
        try:
            with Image.open(path) as im:
                n, (w, h) = getattr(im, "n_frames", 1), im.size
                total_ms = 0
                for i in range(n):
                    im.seek(i)
                    total_ms += im.info.get("duration", 0) or 0
        except (UnidentifiedImageError, OSError, EOFError, SyntaxError) as e:
            raise VideoReadError(path, f"not a readable GIF ({e})") from e
        return VideoInfo(n, 1000 * n / total_ms if total_ms else None, w, h, True, "gif")
    container, stream = _open_av(path)
    with container:
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else None
        n, exact = stream.frames, True
        if not n:
            exact = False
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / av.time_base
            else:
                seconds = 0.0
            n = round(seconds * fps) if fps else 0
        ctx = stream.codec_context
        return VideoInfo(n, fps, ctx.width, ctx.height, exact, ctx.name)


def grid_of(path: str | os.PathLike) -> str | None:
    """The description of a tiled batch when `path` is a grid video that `write_video` wrote
    from several videos (``"vidiff grid: 8 videos of 24x24, 3 per row"``), else None."""
    path = Path(path)
    comment = ""
    try:
        if path.suffix.lower() == ".gif":
            with Image.open(path) as im:
                comment = im.info.get("comment", b"")
                comment = comment.decode(errors="replace") if isinstance(comment, bytes) else ""
        elif path.is_file() and path.suffix.lower() not in (".npy", ".png"):
            with av.open(str(path)) as container:
                comment = next((v for k, v in container.metadata.items()
                                if k.lower() == "comment"), "")  # webm: "COMMENT"
    except (OSError, av.error.FFmpegError, UnidentifiedImageError):
        return None
    return comment if comment.startswith(GRID_TAG) else None
