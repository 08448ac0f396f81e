"""Video files: write float videos to mp4/webm/gif/png/npy, decode videos to uint8 frames.

>>> from vidiff.io import write_video, read_video, from_uint8
>>> write_video("sample.mp4", video)          # video: (C, F, H, W) or (B, C, F, H, W) in [-1, 1]
>>> frames = read_video("sample.mp4", max_frames=16)    # uint8 (F, H, W, 3)
>>> video = from_uint8(frames)                # float (3, F, H, W) in [-1, 1]
"""

from vidiff.io.convert import contact_sheet, from_uint8, tile_videos, to_rgb, to_uint8
from vidiff.io.paths import check_apart, check_new_folder, overlap
from vidiff.io.read import (
    IMAGE_SUFFIXES,
    VideoInfo,
    VideoReadError,
    grid_of,
    read_frames_folder,
    read_video,
    video_info,
)
from vidiff.io.write import (
    WRITE_SUFFIXES,
    OutputPathError,
    atomic_path,
    check_output_dir,
    check_output_file,
    gif_durations,
    write_video,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "WRITE_SUFFIXES",
    "VideoInfo",
    "OutputPathError",
    "VideoReadError",
    "atomic_path",
    "check_apart",
    "check_new_folder",
    "check_output_dir",
    "check_output_file",
    "contact_sheet",
    "from_uint8",
    "gif_durations",
    "grid_of",
    "overlap",
    "read_frames_folder",
    "read_video",
    "tile_videos",
    "to_rgb",
    "to_uint8",
    "video_info",
    "write_video",
]
