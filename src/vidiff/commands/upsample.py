"""Spatial super-resolution with a model trained at the high resolution (VDM section 3.1).

The low-resolution input (the model's size divided by FACTOR) is the observation y = A(x) of
the high-resolution video through A = average pooling of FACTOR x FACTOR blocks; the model
samples x with reconstruction guidance on ||y - A(xhat)||^2 (VDM eq. 7, the error taken
through the downsampling). The whole clip is sampled at once. Without --input, --num videos
are sampled at the model's size and downsampled first (a round trip to compare against).

Examples:
  vidiff upsample runs/balls32 --input low16.mp4 --factor 2 --out high.mp4
  vidiff upsample runs/balls32 --num 4 --factor 4 --guidance-weight 8 --out round.gif
"""

from __future__ import annotations

import argparse

from vidiff.commands import _conditional as common

NAME = "upsample"
HELP = "spatial super-resolution by reconstruction guidance through downsampling"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_common_arguments(parser, weight=4.0)
    parser.add_argument("--factor", type=int, default=2, help="upsampling factor (2, 4, ...)")


def run(args: argparse.Namespace) -> int:
    from vidiff.cli import CommandError
    from vidiff.conditional import downsample

    if args.factor < 2:
        raise CommandError(f"--factor must be >= 2, got {args.factor}")
    if args.method != "reconstruction" or args.guidance_weight <= 0:
        raise CommandError("upsample needs --method reconstruction and --guidance-weight > 0 "
                           "(there is nothing to replace: no pixel is known)")
    model, info, sampler = common.load(args)
    if info.size % args.factor:
        raise CommandError(f"--factor {args.factor} does not divide the model's size "
                           f"{info.size}")
    device = next(model.parameters()).device
    low_size = info.size // args.factor
    low = (common.read_input(args, info.channels, low_size, device) if args.input
           else downsample(common.first_clip(args, model, info, device), args.factor))
    out = sampler.upsample_guided(low, args.factor, common.generator(args, device))
    common.write_output(args, out, f"upsampled x{args.factor} from {low_size}x{low_size}")
    return 0
