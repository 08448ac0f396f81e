"""Writing videos to files: mp4, webm, gif, png contact sheets and npy arrays.

Every writer goes through `atomic_path`: the file is written under a hidden temporary name in
the destination folder and moved into place with `os.replace`, so a reader never sees a
half-written file and a failed write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from vidiff.io.convert import contact_sheet, tile_videos, to_rgb, to_uint8

__all__ = ["WRITE_SUFFIXES", "OutputPathError", "atomic_path", "check_output_dir",
           "check_output_file", "gif_durations", "write_video"]

# Codecs tried in order for each container; the first one this FFmpeg build has is used.
_VIDEO_CODECS = {".mp4": ("libx264", "mpeg4"), ".webm": ("libvpx-vp9", "libvpx")}

# Encoder options per codec: constant quality, visually near lossless, reasonable speed.
_CODEC_OPTIONS = {
    "libx264": {"crf": "18", "preset": "medium"},
    "libvpx-vp9": {"crf": "20", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"},
    "libvpx": {"crf": "8", "b": "4M", "deadline": "good", "cpu-used": "4"},
    "mpeg4": {"flags": "+qscale", "global_quality": str(2 * 118)},  # qscale 2 (* FF_QP2LAMBDA)
}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path`` atomically.

    The temporary name is hidden (leading dot) and keeps the suffix, so writers that look at
    the suffix still work. On any exception the temporary file is removed and the exception
    propagates; an existing file at ``path`` is then left untouched. Missing parent folders
    are created. The new file gets the usual permissions (0o666 minus the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(6)}.tmp{path.suffix}")
    # O_EXCL: never clobber another writer's temporary file; mode 0o666 goes through the umask
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def gif_durations(num_frames: int, fps: float) -> list[int]:
    """Per-frame GIF delays in ms that keep the average frame rate exact.

    GIF stores delays in units of 10 ms, so 8 fps (125 ms) cannot be stored as one number;
    instead frame ``i`` lasts from ``round(i / fps)`` to ``round((i + 1) / fps)`` on the
    10 ms grid (120 or 130 ms, 1000 ms per 8 frames). Delays are at least 20 ms, as browsers
    show shorter ones as 100 ms, so GIFs above 50 fps play slower.
    """
    ends = [round((i + 1) * 100 / fps) for i in range(num_frames)]  # centiseconds
    starts = [0] + ends[:-1]
    return [max(2, e - s) * 10 for s, e in zip(starts, ends, strict=True)]


def _pick_codec(suffix: str) -> str:
    for name in _VIDEO_CODECS[suffix]:
        if name in av.codecs_available:
            return name
    raise RuntimeError(f"this FFmpeg build has none of the codecs {_VIDEO_CODECS[suffix]}")


def _pad_even(frames: torch.Tensor) -> torch.Tensor:
    """Pad (F, H, W, C) frames on the bottom/right by edge replication to even H and W."""
    _, h, w, _ = frames.shape
    if h % 2:
        frames = torch.cat([frames, frames[:, -1:]], dim=1)
    if w % 2:
        frames = torch.cat([frames, frames[:, :, -1:]], dim=2)
    return frames


GRID_TAG = "vidiff grid"  # the comment that marks a tiled batch (`vidiff.io.grid_of`)


def _grid_comment(batch: torch.Tensor, nrow: int | None) -> str | None:
    """The comment of a file that tiles several videos into one (None for one video)."""
    b, _, h, w, _ = batch.shape
    if b == 1:
        return None
    return f"{GRID_TAG}: {b} videos of {h}x{w}, {nrow or math.ceil(math.sqrt(b))} per row"


def _write_av(tmp: Path, frames: torch.Tensor, fps: float, suffix: str,
              comment: str | None = None) -> None:
    """Encode RGB uint8 frames (F, H, W, 3) with PyAV (yuv420p, constant quality)."""
    frames = _pad_even(frames)
    codec = _pick_codec(suffix)
    rate = Fraction(fps).limit_denominator(1001)
    fmt = {".mp4": "mp4", ".webm": "webm"}[suffix]
    opts = {"movflags": "+faststart"} if fmt == "mp4" else {}
    with av.open(str(tmp), mode="w", format=fmt, options=opts) as container:
        if comment:
            container.metadata["comment"] = comment
        stream = container.add_stream(codec, rate=rate, options=dict(_CODEC_OPTIONS[codec]))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for i, frame in enumerate(frames.numpy()):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            vf.time_base = 1 / rate
            container.mux(stream.encode(vf))
        container.mux(stream.encode(None))  # flush the encoder


def _write_gif(tmp: Path, frames: torch.Tensor, fps: float, comment: str | None = None) -> None:
    """A looping GIF through Pillow, one adaptive palette per frame."""
    images = [Image.fromarray(f) for f in frames.numpy()]
    images = [
        im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        for im in images
    ]
    images[0].save(
        tmp,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        loop=0,
        duration=gif_durations(len(images), fps),
        disposal=1,
        optimize=False,
        **({"comment": comment.encode()} if comment else {}),
    )


def _write_png(tmp: Path, batch: torch.Tensor) -> None:
    Image.fromarray(contact_sheet(to_rgb(batch)).numpy()).save(tmp, format="PNG")


def _write_npy(tmp: Path, batch: torch.Tensor) -> None:
    with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a name
        np.save(f, batch.numpy())


#: The suffixes `write_video` understands.
WRITE_SUFFIXES = (".mp4", ".webm", ".gif", ".png", ".npy")


def write_video(
    path: str | os.PathLike,
    video: torch.Tensor | np.ndarray,
    fps: float = 8,
    nrow: int | None = None,
) -> Path:
    """Write a video ``(C, F, H, W)`` or a batch ``(B, C, F, H, W)`` in [-1, 1] to ``path``.

    The format follows the suffix:

    - ``.mp4``: H.264 (libx264, CRF 18; MPEG-4 part 2 if this FFmpeg lacks libx264), yuv420p;
      odd heights/widths are padded to even by repeating the last row/column.
    - ``.webm``: VP9 (VP8 if missing), constant quality, yuv420p, padded like mp4.
    - ``.gif``: a looping GIF (Pillow), delays on GIF's 10 ms grid with an exact average
      rate (see `gif_durations`). Pillow merges identical consecutive frames into one longer
      frame, so a reader may see fewer frames (the timing is unchanged).
    - ``.png``: a contact sheet, frames left to right, one row per video of the batch.
    - ``.npy``: the exact uint8 frames ``(N, F, H, W, C)`` (N = 1 for a single video).

    For mp4, webm and gif a batch is tiled into one grid video, ``nrow`` videos per row
    (default ``ceil(sqrt(B))``). Single-channel videos are replicated to RGB (except in npy,
    which keeps the channels); a fourth (alpha) channel is dropped. ``fps`` may be fractional
    (e.g. 30000 / 1001). The write is atomic (`atomic_path`). Returns the path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise ValueError(
            f"cannot write {str(path)!r}: unknown suffix {path.suffix!r}; supported suffixes: "
            f"{', '.join(WRITE_SUFFIXES)}"
        )
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    frames = to_uint8(video)
    batch = frames if frames.dim() == 5 else frames.unsqueeze(0)  # (B, F, H, W, C)
    if batch.shape[0] == 0 or batch.shape[1] == 0:
        shape = tuple(batch.shape)
        raise ValueError(f"cannot write {str(path)!r}: the video has no frames {shape}")
    with atomic_path(path) as tmp:
        if suffix == ".png":
            _write_png(tmp, batch)
        elif suffix == ".npy":
            _write_npy(tmp, batch)
        else:  # one video: the batch tiled into a grid
            grid = to_rgb(tile_videos(batch, nrow=nrow))
            comment = _grid_comment(batch, nrow)  # readers can tell a grid from one video
            if suffix == ".gif":
                _write_gif(tmp, grid, fps, comment)
            else:
                _write_av(tmp, grid, fps, suffix, comment)
    return path


class OutputPathError(ValueError):
    """An output path that cannot be written; the message names it (one line)."""


def _probe_dir(folder: Path, what: str, shown: str) -> None:
    """Create `folder` (and parents) if needed and write a probe file in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputPathError(f"{what} {shown!r}: {str(folder)!r} exists and is a file, "
                              f"not a folder") from None
    except OSError as err:
        raise OutputPathError(f"{what} {shown!r}: cannot create folder {str(folder)!r} "
                              f"({err.strerror or err})") from None
    if not folder.is_dir():
        raise OutputPathError(f"{what} {shown!r}: {str(folder)!r} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".vidiff-write-test-", dir=folder)
    except OSError as err:
        raise OutputPathError(f"{what} {shown!r}: cannot write in {str(folder)!r} "
                              f"({err.strerror or err})") from None
    os.close(fd)
    os.unlink(probe)


def check_output_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Make sure the folder `path` exists (created if needed) and can be written, before any
    compute is spent; an `OutputPathError` naming `what` otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{what} {str(path)!r} is an existing file; it must be a folder "
                              f"(give a new path or the run folder)")
    _probe_dir(path, what, str(path))
    return path


def check_output_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """Make sure the file `path` can be written (its folder created if needed; an existing
    file is replaced), before any compute is spent; an `OutputPathError` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{what} {str(path)!r} is a folder; give a file name")
    _probe_dir(path.parent if str(path.parent) else Path("."), what, str(path))
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{what} {str(path)!r} exists and is read-only")
    return path
