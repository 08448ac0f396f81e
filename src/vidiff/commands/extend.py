"""Continue videos to any length with a model trained on shorter clips (VDM section 3.1).

The video is extended window by window: each window of the model's length starts OVERLAP
frames before the end of what exists so far, keeps those frames as known data and samples the
rest, conditioned by reconstruction guidance (VDM eq. 7, default) or by the replacement method.
Without --input, --num clips are sampled first and extended.

Image-to-video: --input first_frame.png with --caption (or --class) samples a clip that starts
with the image; a video VAE encodes the first frame alone (causally), so its first latent
frame is exactly the image's. --frames, --context count video frames: with a video VAE of
temporal factor t, a clip has 1 + t k frames and --context / new frames are multiples of t.

Examples:
  vidiff extend runs/balls --input clip.mp4 --frames 64 --out long.mp4
  vidiff extend runs/wan_lora --input first_frame.png --caption "a red ball bounces" \
      --frames 81 --out ball.mp4
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
    pipe, sampler, conditions = common.load(args)
    shape = pipe.spec.shape
    device = pipe.device
    overlap = common.window_overlap(args, shape.frames)
    if args.context is None:  # the frame counts in the model's frames, before any compute
        frames = common.latent_frames(pipe, args.frames, f"--frames {args.frames}")
    else:
        context = common.later_frames(pipe, args.context, "--context", whole_clip=False)
        new = common.later_frames(pipe, args.frames, "--frames", whole_clip=True)
    video = common.model_input(args, pipe, conditions)  # (N, C, F, H, W), or latents
    sampler = common.conditioned(sampler, pipe, conditions, video.shape[0])
    given, gen = video.shape[2], common.generator(args, device)
    shown = common.video_frames(pipe, given)  # the input's video frames
    if args.context is None:
        if frames < given:
            raise CommandError(f"--frames {args.frames} is shorter than the given video "
                               f"({shown} frames); to add frames to a long video, use "
                               f"--context N --frames NEW")
        out = sampler.extend(video, frames, shape.frames, overlap, gen)
        what = f"extended from {shown} frames, overlap {overlap}"
    else:
        t = common.temporal_factor(pipe)
        most = given if t == 1 else given - 1  # a video VAE: the frames after the first
        if not 1 <= context <= most or new < 1:
            raise CommandError(f"--context {args.context} must be in [1, {t * most}] (the "
                               f"input's frames) and --frames (new frames) >= 1, got "
                               f"{args.frames}")
        # (B, C, given, H, W): the last N frames condition; the rest is put back in front
        tail = sampler.extend(video[:, :, given - context:], context + new, shape.frames,
                              overlap, gen)
        out = torch.cat([video[:, :, :given - context], tail], dim=2)
        what = f"{args.frames} frames added after {shown}, from the last {args.context}"
    common.write_output(args, common.as_video(pipe, out), what, pipe)
    return 0

