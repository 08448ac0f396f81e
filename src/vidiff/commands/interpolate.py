"""Fill in frames between the frames of a video (VDM section 3.1: frame interpolation).

The given frames are placed every FACTOR frames; the FACTOR - 1 frames between each pair are
sampled window by window (the model's length), conditioned on the given frames and on OVERLAP
frames of the previous window by reconstruction guidance (VDM eq. 7) or replacement. Without
--input, --num clips are sampled first and interpolated.

Examples:
  vidiff interpolate runs/balls --input clip.mp4 --factor 4 --out smooth.mp4
  vidiff interpolate runs/balls --num 2 --factor 2 --method replacement --out r.gif
"""

from __future__ import annotations

import argparse

from vidiff.cli import CommandError
from vidiff.commands import _conditional as common

NAME = "interpolate"
HELP = "fill in frames between given frames (reconstruction guidance or replacement)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_common_arguments(parser)
    parser.add_argument("--factor", type=int, default=2,
                        help="output frames per input frame: factor - 1 new frames per gap")
    parser.add_argument("--overlap", type=int, default=1,
                        help="frames each window shares with the previous one")


def run(args: argparse.Namespace) -> int:
    if args.factor < 2:
        raise CommandError(f"--factor must be >= 2, got {args.factor}")
    pipe, sampler, conditions = common.load(args)
    shape = pipe.spec.shape
    device = pipe.device
    if (t := common.temporal_factor(pipe)) > 1:
        raise CommandError(f"interpolation keeps every {args.factor}th frame as it is, and each "
                           f"latent frame of this model's video VAE holds {t} frames: use a "
                           f"model in pixels or with a per-frame VAE, or vidiff extend")
    video = common.model_input(args, pipe, conditions)  # (N, C, F, H, W), or latents
    sampler = common.conditioned(sampler, pipe, conditions, video.shape[0])
    if video.shape[2] < 2:
        raise CommandError("interpolation needs a video of at least 2 frames")
    overlap = common.window_overlap(args, shape.frames, lowest=0)
    out = sampler.interpolate(video, args.factor, shape.frames, overlap,
                              common.generator(args, device))
    common.write_output(args, common.as_video(pipe, out),
                        f"{video.shape[2]} frames interpolated x{args.factor}", pipe,
                        factor=args.factor)
    return 0
