"""Continue videos to any length with a model trained on shorter clips (VDM section 3.1).

The video is extended window by window: each window of the model's length starts OVERLAP
frames before the end of what exists so far, keeps those frames as known data and samples the
rest, conditioned by reconstruction guidance (VDM eq. 7, default) or by the replacement method.
Without --input, --num clips are sampled first and extended.

Examples:
  vidiff extend runs/balls --input clip.mp4 --frames 64 --out long.mp4
  vidiff extend runs/balls --num 4 --frames 48 --overlap 4 --method replacement --out r.gif
  vidiff extend runs/balls --input long.mp4 --context 16 --frames 8 --out longer.mp4
"""

from __future__ import annotations

import argparse

import torch

from vidiff.cli import CommandError
from vidiff.commands import _conditional as common

NAME = "extend"
HELP = "continue videos to any length (reconstruction guidance or replacement)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_common_arguments(parser)
    parser.add_argument("-f", "--frames", type=int, default=64,
                        help="frames of the output; with --context: new frames to add")
    parser.add_argument("--overlap", type=int, default=None,
                        help="known frames in each new window (None: half the window)")
    parser.add_argument("--context", type=int, default=None, metavar="N",
                        help="condition on the last N frames of the input only and add "
                             "--frames new frames after the whole input (long inputs)")


def run(args: argparse.Namespace) -> int:
    pipe, sampler = common.load(args)
    shape = pipe.spec.shape
    device = pipe.device
    video = common.model_input(args, pipe)  # (N, C, F, H, W), a latent model's latents
    overlap = common.window_overlap(args, shape.frames)
    given, gen = video.shape[2], common.generator(args, device)
    if args.context is None:
        if args.frames < given:
            raise CommandError(f"--frames {args.frames} is shorter than the given video "
                               f"({given} frames); to add frames to a long video, use "
                               f"--context N --frames NEW")
        out = sampler.extend(video, args.frames, shape.frames, overlap, gen)
        what = f"extended from {given} frames, overlap {overlap}"
    else:
        if not 1 <= args.context <= given or args.frames < 1:
            raise CommandError(f"--context {args.context} must be in [1, {given}] (the input's "
                               f"frames) and --frames (new frames) >= 1, got {args.frames}")
        # (B, C, given, H, W): the last N frames condition; the rest is put back in front
        tail = sampler.extend(video[:, :, given - args.context:], args.context + args.frames,
                              shape.frames, overlap, gen)
        out = torch.cat([video[:, :, :given - args.context], tail], dim=2)
        what = f"{args.frames} frames added after {given}, from the last {args.context}"
    common.write_output(args, common.as_video(pipe, out), what, pipe)
    return 0
