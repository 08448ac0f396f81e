"""Continue videos to any length with a model trained on shorter clips (VDM section 3.1).

The video is extended window by window: each window of the model's length starts OVERLAP
frames before the end of what exists so far, keeps those frames as known data and samples the
rest, conditioned by reconstruction guidance (VDM eq. 7, default) or by the replacement method.
Without --input, --num clips are sampled first and extended.

Examples:
  vidiff extend runs/balls --input clip.mp4 --frames 64 --out long.mp4
  vidiff extend runs/balls --num 4 --frames 48 --overlap 4 --method replacement --out r.gif
"""

from __future__ import annotations

import argparse

from vidiff.commands import _conditional as common

NAME = "extend"
HELP = "continue videos to any length (reconstruction guidance or replacement)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_common_arguments(parser)
    parser.add_argument("-f", "--frames", type=int, default=64, help="frames of the output")
    parser.add_argument("--overlap", type=int, default=None,
                        help="known frames in each new window (None: half the window)")


def run(args: argparse.Namespace) -> int:
    from vidiff.cli import CommandError

    model, info, sampler = common.load(args)
    device = next(model.parameters()).device
    video = (common.read_input(args, info.channels, info.size, device) if args.input
             else common.first_clip(args, model, info, device))
    overlap = common.window_overlap(args, info.frames)
    if args.frames < video.shape[2]:
        raise CommandError(f"--frames {args.frames} is shorter than the given video "
                           f"({video.shape[2]} frames)")
    out = sampler.extend(video, args.frames, info.frames, overlap, common.generator(args, device))
    common.write_output(args, out, f"extended from {video.shape[2]} frames, overlap {overlap}",
                        info)
    return 0
