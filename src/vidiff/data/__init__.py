"""Datasets: the built-in synthetic videos (bouncing balls, moving shapes) and helpers.

>>> from vidiff.data import make_synthetic, FramesAsImages
>>> ds = make_synthetic("bouncing_balls", size=32, frames=16)
>>> item = ds[0]     # {"video": (3, 16, 32, 32) in [-1, 1], "label", "caption", "positions", ...}
>>> ds.class_names[item["label"]] == item["caption"]
True
>>> ds = make_dataset("path/to/UCF-101", frames=16, size=64)   # a folder: VideoFolder
"""

from vidiff.data.balls import BouncingBalls, BouncingBallsConfig
from vidiff.data.entries import SkippedVideoWarning
from vidiff.data.folder import VIDEO_SUFFIXES, VideoFolder, make_dataset
from vidiff.data.frames import FramesAsImages
from vidiff.data.images import ImageFolder, VideoFolderFrames
from vidiff.data.render import COLORS
from vidiff.data.shapes import MovingShapes, MovingShapesConfig
from vidiff.data.synthetic import SYNTHETIC, SyntheticVideoDataset, item_generator, make_synthetic

__all__ = [
    "COLORS",
    "SYNTHETIC",
    "BouncingBalls",
    "BouncingBallsConfig",
    "FramesAsImages",
    "ImageFolder",
    "SkippedVideoWarning",
    "VIDEO_SUFFIXES",
    "VideoFolder",
    "VideoFolderFrames",
    "make_dataset",
    "MovingShapes",
    "MovingShapesConfig",
    "SyntheticVideoDataset",
    "item_generator",
    "make_synthetic",
]
