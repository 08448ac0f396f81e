"""Where the clips of an evaluation come from, streamed in batches of bounded size.

A `ClipSource` knows how many clips it holds and yields them as float batches
``(B, 3, F, H, W)`` in [-1, 1], never all at once:

- `open_videos`: a file or folder of videos: ``.npy`` (uint8 ``(N, F, H, W, C)`` as
  ``vidiff sample`` writes, memory-mapped), ``.pt`` (a tensor: uint8 ``(N, F, H, W, C)`` or
  float ``(N, C, F, H, W)`` in [-1, 1], memory-mapped), one video file (mp4, gif, ...: one
  clip), or a folder of such files (one clip per video, natural order);
- `dataset_clips`: a built-in synthetic dataset by name or a folder of real videos, resized
  and cropped to the generated clips' size (`vidiff.data.make_dataset`);
- `checkpoint_clips`: videos sampled from a trained model, batch by batch.

Sources raise ``ValueError`` (or ``FileNotFoundError``) naming the file for bad input.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidiff.data import SYNTHETIC, make_dataset
from vidiff.data.folder import VIDEO_SUFFIXES
from vidiff.io import from_uint8, grid_of, read_video
from vidiff.io.read import natural_key
from vidiff.modelio.pipeline import Pipeline

__all__ = ["ClipSource", "open_videos", "dataset_clips", "checkpoint_clips", "ARRAY_SUFFIXES"]

#: Files that hold many clips at once.
ARRAY_SUFFIXES = (".npy", ".pt", ".pth")


@dataclass
class ClipSource:
    """A finite stream of clips: ``count`` of them, ``batches(batch_size)`` yields them.

    ``describe`` says where they come from (for the report); ``frames`` optionally cuts every
    clip to its first ``frames`` frames (a clip that is shorter is a ``ValueError``).
    """

    describe: dict
    count: int
    _batches: Callable[[int], Iterator[torch.Tensor]]
    frames: int | None = None

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Float batches ``(B, 3, F, H, W)`` in [-1, 1], ``B <= batch_size``."""
        for batch in self._batches(batch_size):
            if batch.shape[1] == 1:
                batch = batch.expand(-1, 3, -1, -1, -1)  # grayscale -> RGB
            if self.frames is not None:
                if batch.shape[2] < self.frames:
                    raise ValueError(f"{self.describe['path']}: clips have {batch.shape[2]} "
                                     f"frames, fewer than the {self.frames} asked for")
                batch = batch[:, :, :self.frames]
            yield batch


def _float_clips(array, start: int, stop: int, path: Path) -> torch.Tensor:
    """Clips ``start:stop`` of an array as float ``(B, C, F, H, W)`` in [-1, 1]."""
    part = torch.as_tensor(np.array(array[start:stop]))  # a copy: out of the memory map
    if part.dtype == torch.uint8:
        return from_uint8(part)  # (B, F, H, W, C) -> (B, C, F, H, W)
    if not part.is_floating_point():
        raise ValueError(f"{str(path)!r}: expected uint8 or float clips, got {part.dtype}")
    return part.float()


def _load_array(path: Path):
    """The array of a .npy / .pt file, memory-mapped, as ``(N, ...)`` with 5 dimensions."""
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            array = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # unpickling and format errors come in many types
        raise ValueError(f"{str(path)!r} could not be read as an array of clips "
                         f"({type(error).__name__}: {error})") from error
    if isinstance(array, dict) and "video" in array:
        array = array["video"]
    if not (torch.is_tensor(array) or isinstance(array, np.ndarray)):
        raise ValueError(f"{str(path)!r} does not hold a tensor of clips "
                         f"(got {type(array).__name__})")
    if array.ndim == 4:
        array = array[None]  # one clip
    uint8 = array.dtype in (np.uint8, torch.uint8)
    if array.ndim != 5 or (uint8 and array.shape[-1] not in (1, 3)) or (
        not uint8 and array.shape[1] not in (1, 3)
    ):
        raise ValueError(f"{str(path)!r}: expected uint8 clips (N, F, H, W, C) or float clips "
                         f"(N, C, F, H, W), got {array.dtype} {tuple(array.shape)}")
    return array


def _array_source(path: Path) -> ClipSource:
    array = _load_array(path)

    def batches(batch_size: int) -> Iterator[torch.Tensor]:
        for start in range(0, array.shape[0], batch_size):
            yield _float_clips(array, start, start + batch_size, path)

    return ClipSource({"kind": "array", "path": str(path)}, int(array.shape[0]), batches)


def _read_clip(path: Path) -> torch.Tensor:
    if path.suffix.lower() in ARRAY_SUFFIXES:
        return _float_clips(_load_array(path), 0, 1, path)[0]
    return from_uint8(read_video(path))  # (C, F, H, W)


def _files_source(files: list[Path], describe: dict) -> ClipSource:
    def batches(batch_size: int) -> Iterator[torch.Tensor]:
        pending: list[torch.Tensor] = []
        for path in files:
            clip = _read_clip(path)
            if pending and clip.shape != pending[0].shape:
                raise ValueError(f"{str(path)!r}: clip of shape {tuple(clip.shape)} differs "
                                 f"from the earlier clips' {tuple(pending[0].shape)} "
                                 "(C, F, H, W); all clips must have one size")
            pending.append(clip)
            if len(pending) == batch_size:
                yield torch.stack(pending)
                pending = []
        if pending:
            yield torch.stack(pending)

    return ClipSource(describe, len(files), batches)


def open_videos(path: str | os.PathLike, frames: int | None = None) -> ClipSource:
    """The clips of a file (``.npy``, ``.pt``, one video) or of a folder of video files.

    ``frames`` cuts every clip to its first ``frames`` frames.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {str(path)!r}")
    if path.is_dir():
        suffixes = VIDEO_SUFFIXES + ARRAY_SUFFIXES
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in suffixes),
                       key=lambda p: natural_key(p.name))
        if not files:
            raise ValueError(f"{str(path)!r} holds no videos ({', '.join(suffixes)})")
        _refuse_grids(files)
        source = _files_source(files, {"kind": "folder", "path": str(path)})
    elif path.suffix.lower() in ARRAY_SUFFIXES:
        source = _array_source(path)
    else:
        _refuse_grids([path])
        source = _files_source([path], {"kind": "video", "path": str(path)})
    source.frames = frames
    return source


def _refuse_grids(files: list[Path]) -> None:
    """A grid of several videos tiled into one file would be scored as one clip."""
    for file in files:
        grid = grid_of(file)
        if grid is not None:
            what = grid[len("vidiff grid: "):]
            raise ValueError(f"{str(file)!r} holds {what}, tiled into one file (a vidiff "
                             f"sample grid), which would be scored as one clip; write one file "
                             f"per video with vidiff sample --out DIR/, or an .npy")


def _stack_items(dataset, count: int) -> Callable[[int], Iterator[torch.Tensor]]:
    def batches(batch_size: int) -> Iterator[torch.Tensor]:
        for start in range(0, count, batch_size):
            items = [dataset[i]["video"] for i in range(start, min(start + batch_size, count))]
            yield torch.stack(items)

    return batches


def dataset_clips(source: str, frames: int, size: int, count: int, seed: int = 0,
                  options: dict | None = None) -> ClipSource:
    """``count`` clips (or all there are) of a synthetic dataset or a folder of real videos.

    Synthetic clips are items ``0 .. count-1`` of ``make_synthetic(source, frames=frames,
    size=size, seed=seed, **options)`` (a training run's data of seed s is held out by seed
    s + 1); folder clips start at each video's first frame, resized to cover
    ``size`` and center-cropped (`vidiff.data.VideoFolder`).
    """
    if source in SYNTHETIC:
        dataset = make_dataset(source, frames=frames, size=size, seed=seed,
                               num_videos=max(count, 1), **(options or {}))
        describe = {"kind": "synthetic", "name": source, "seed": seed, **(options or {})}
    else:
        dataset = make_dataset(source, frames=frames, size=size, seed=seed, offset="first",
                               crop="center", labels=None, captions=False)
        describe = {"kind": "folder", "path": str(source)}
    count = min(count, len(dataset))
    return ClipSource(describe, count, _stack_items(dataset, count))


def checkpoint_clips(
    path,
    count: int,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    weights: str | None = None,
) -> ClipSource:
    """``count`` videos sampled from a checkpoint or exported model (`path`; or an already
    loaded `vidiff.Pipeline`, whose `weights` and `device` are its own), one batch at a time.

    Batch ``k`` (``batch_size`` videos) uses the noise seed ``seed + k``; class-conditional
    models cycle through the classes over all batches. ``sampler`` / ``steps`` default to the
    model's own sampling settings (its spec's), and so does the guidance scale.
    """
    pipe = path if isinstance(path, Pipeline) else Pipeline.from_pretrained(
        path, weights=weights, device=device)
    chosen = pipe.sampling(sampler, steps)
    classes = pipe.spec.num_classes

    def batches(batch_size: int) -> Iterator[torch.Tensor]:
        for k, start in enumerate(range(0, count, batch_size)):
            n = min(batch_size, count - start)
            labels = [(start + i) % classes for i in range(n)] if classes is not None else None
            g = torch.Generator(device=pipe.device).manual_seed(seed + k)
            yield pipe(n, sampler=chosen.sampler, steps=chosen.steps, eta=chosen.eta,
                       class_labels=labels, generator=g, batch_size=n).float().cpu()

    describe = {"kind": "checkpoint", "path": str(pipe.source),
                "step": pipe.spec.provenance.step, "weights": pipe.weights,
                "sampler": chosen.sampler, "steps": chosen.steps, "seed": seed,
                "guidance_scale": chosen.guidance_scale}
    return ClipSource(describe, count, batches)
