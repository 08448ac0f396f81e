"""Spatial super-resolution (VDM section 3.1; Imagen Video / VDM cascades).

Two kinds of checkpoint:

- a super-resolution model (trained with data.lowres_size): the U-Net takes the low-resolution
  video as an extra input (upsampled by nearest neighbour, concatenated to its channels). The
  --input must have the model's low resolution. --guidance-weight > 0 adds reconstruction
  guidance through the downsampling (below); 0 is the model's conditioning alone. Clips
  longer than the model's frames are sampled in windows overlapping by --overlap frames.
- an ordinary model trained at the high resolution: the low-resolution input (the model's
  size divided by --factor, resized to it) is the observation y = A(x) of the high-resolution
  video through A = average pooling of FACTOR x FACTOR blocks; the model samples x with
  reconstruction guidance on ||y - A(xhat)||^2 (VDM eq. 7). The whole clip is sampled at once.
  Without --input, --num videos are sampled first and downsampled (a round trip).

Examples:
  vidiff upsample runs/sr16to32 --input low16.mp4 --out high.mp4 --guidance-weight 0
  vidiff upsample runs/balls32 --input low16.mp4 --factor 2 --out high.mp4
  vidiff upsample runs/balls32 --num 4 --factor 4 --guidance-weight 8 --out round.gif
"""

from __future__ import annotations

import argparse

from vidiff.cli import CommandError
from vidiff.commands import _conditional as common
from vidiff.sampling.conditional import downsample
from vidiff.sampling.guidance import RECONSTRUCTION_WEIGHT

NAME = "upsample"
HELP = "spatial super-resolution: a model conditioned on the low-res video, or guidance"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_common_arguments(parser, weight=2 * RECONSTRUCTION_WEIGHT)
    parser.add_argument("--factor", type=int, default=None,
                        help="upsampling factor (2, 4, ...; None: the super-resolution "
                             "model's own, or 2)")
    parser.add_argument("--overlap", type=int, default=None,
                        help="super-resolution model, clips longer than its frames: frames "
                             "shared by consecutive windows (None: half the window)")


def run(args: argparse.Namespace) -> int:
    if args.factor is not None and args.factor < 2:
        raise CommandError(f"--factor must be >= 2, got {args.factor}")
    pipe, sampler, conditions = common.load(args)
    shape = pipe.spec.shape
    if pipe.spec.conditioning.lowres_size is not None:
        return _conditioned(args, pipe, sampler, conditions)
    factor = args.factor or 2
    if args.method != "reconstruction" or args.guidance_weight <= 0:
        raise CommandError("upsample with a model that is not a super-resolution model needs "
                           "--method reconstruction and --guidance-weight > 0 (there is "
                           "nothing to replace: no pixel is known)")
    if shape.size % factor:
        raise CommandError(f"--factor {factor} does not divide the model's size {shape.size}")
    device = pipe.device
    low_size = shape.size // factor
    low = (common.read_input(args, shape.channels, low_size, device) if args.input
           else downsample(common.first_clip(args, pipe, conditions), factor))
    sampler = common.conditioned(sampler, pipe, conditions, low.shape[0])
    out = sampler.upsample_guided(low, factor, common.generator(args, device))
    common.write_output(args, out, f"upsampled x{factor} from {low_size}x{low_size}", pipe)
    return 0


def _conditioned(args: argparse.Namespace, pipe, sampler, conditions) -> int:
    """A super-resolution model: the --input at its low resolution is its condition."""
    shape = pipe.spec.shape
    low_size, size = pipe.spec.conditioning.lowres_size, shape.size
    factor = size // low_size
    what = f"the model upsamples {low_size}x{low_size} to {size}x{size}"
    if args.factor not in (None, factor):
        raise CommandError(f"--factor {args.factor}: {what} (x{factor})")
    if args.input is None:
        raise CommandError(f"a super-resolution model needs --input, a {low_size}x{low_size} "
                           f"video ({what})")
    device = pipe.device
    low = common.read_input(args, shape.channels, None, device)  # (N, C, F, h, w)
    if tuple(low.shape[-2:]) != (low_size, low_size):
        raise CommandError(f"--input {args.input!r} is {low.shape[-2]}x{low.shape[-1]}; {what}")
    sampler = common.conditioned(sampler, pipe, conditions, low.shape[0])
    # the overlap counts only for clips longer than the model's window
    overlap = common.window_overlap(args, shape.frames) if low.shape[2] > shape.frames else 0
    out = sampler.upsample_conditioned(low, factor, shape.frames, overlap,
                                       common.generator(args, device))
    common.write_output(args, out, f"super-resolution model x{factor} from "
                                   f"{low_size}x{low_size}", pipe)
    return 0
