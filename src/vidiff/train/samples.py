"""A run's sample grids: their conditions checked against the model before the first step,
an upsampler's low-res condition, and the grid written as mp4, gif and png.

Every grid of a run uses the same noise (train.sample_seed) and the same conditions
(train.val_classes, train.val_prompts, cycled over its videos), so successive grids differ
only by what the weights learned.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import torch

from vidiff.io import write_video
from vidiff.sampling.conditional import downsample_to
from vidiff.train import distributed
from vidiff.train.config import RunConfig
from vidiff.train.interrupt import StopRequested
from vidiff.utils.config_io import ConfigError

__all__ = ["GRID_SUFFIXES", "check_sample_conditions", "lowres_condition", "write_grid"]

GRID_SUFFIXES = (".mp4", ".gif", ".png")  # each grid, in the order written


def check_sample_conditions(config: RunConfig, num_classes: int | None,
                            reads_captions: bool) -> None:
    """train.val_classes and train.val_prompts fit a model of `num_classes` classes (None:
    not class-conditional) that reads captions or not: a `ConfigError` naming the key."""
    t = config.train
    classes = num_classes if config.data.use_labels else None
    if t.val_classes and not classes:
        raise ConfigError("train.val_classes: the model is not class-conditional")
    bad = [c for c in t.val_classes if not 0 <= c < (classes or 0)]
    if bad:
        raise ConfigError(f"train.val_classes {bad}: the model's classes are 0.."
                          f"{(classes or 1) - 1}")
    if t.val_prompts and not reads_captions:
        raise ConfigError("train.val_prompts: the model reads no captions "
                          "(data.use_captions = false)")


def lowres_condition(dataset, size: int | None, count: int,
                     device: torch.device) -> torch.Tensor | None:
    """An upsampler's sample condition: the first `count` clips average-pooled to `size`
    (N, C, F, h, w); None for a model without one."""
    if size is None:
        return None
    clips = [dataset[i % len(dataset)]["video"] for i in range(count)]
    return downsample_to(torch.stack(clips).to(device), size)


def write_grid(out: Path, step: int, videos: Callable[[], torch.Tensor], *, fps: float,
               dist: distributed.DistInfo, sharded: bool, say,
               cutting: Callable[[], AbstractContextManager] | None = None) -> list[Path]:
    """Sample `videos()` and write ``out/samples/step_XXXXXXXX.{mp4,gif,png}`` (rank 0);
    every rank calls it.
    Inside `cutting()` (`StopSignals.cutting`) a stop request abandons the grid at once: the
    files written so far are returned (each file whole or absent). A `sharded` model
    samples on every rank (its forward gathers the weights), and its grid runs whole, as no
    rank may leave the others waiting in a gather."""
    distributed.barrier(dist)
    stem = out / "samples" / f"step_{step:08d}"
    paths: list[Path] = []
    if sharded:
        cutting = None
    if dist.is_main or sharded:
        try:
            with (cutting or contextlib.nullcontext)():
                grid = videos()
                for suffix in GRID_SUFFIXES if dist.is_main else ():
                    paths.append(write_video(stem.with_suffix(suffix), grid, fps=fps))
            say(f"samples: {stem}.mp4 / .gif / .png")
        except StopRequested:
            say(f"the samples of step {step} were cut short by the stop request "
                f"({len(paths)} of {len(GRID_SUFFIXES)} files written)")
    distributed.barrier(dist)  # every rank meets here, cut or not
    return paths
