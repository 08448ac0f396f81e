"""Sample videos from a trained checkpoint.

CHECKPOINT is a run folder (its newest checkpoint), a checkpoint folder
(runs/x/checkpoints/step_*) or one of its .safetensors files. The output format follows the
suffix of --out: .mp4 / .webm / .gif (the videos tiled into one grid video), .png (a contact
sheet: one row per video, frames left to right) or .npy (the exact uint8 frames, shaped
(N, F, H, W, C)). An --out that ends in "/" (or is a folder) gets one file per video,
video_0000.mp4, ... (--format picks the suffix): what `vidiff eval -g DIR` scores clip by clip
(it refuses the grid files, which would count as one clip).

Examples:
  vidiff sample runs/balls --out balls.mp4 --num 16
  vidiff sample runs/balls --out samples/ --num 64 --format mp4   # one file per video
  vidiff sample runs/balls --out sheet.png --sampler dpmpp_2m --steps 20 --seed 3
  vidiff sample runs/cond --class "two red balls" --guidance-scale 3 --out red.gif
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vidiff.cli import CommandError
from vidiff.commands._conditional import add_run_arguments, load_pipeline, output_fps
from vidiff.commands._conditions import add_condition_arguments, read_conditions
from vidiff.io import (
    WRITE_SUFFIXES,
    OutputPathError,
    check_output_dir,
    check_output_file,
    write_video,
)
from vidiff.sampling.samplers import SamplingError

NAME = "sample"
HELP = "sample videos from a checkpoint to mp4, gif, png or npy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="run folder, checkpoint folder, .safetensors file or "
                                           "exported model folder (vidiff export)")
    parser.add_argument("-o", "--out", default="samples.mp4",
                        help="output file; format by suffix: .mp4, .webm, .gif, .png, .npy; "
                             "a folder (ending in /): one file per video")
    parser.add_argument("--format", default="mp4", choices=("mp4", "webm", "gif", "png", "npy"),
                        help="the file format of each video when --out is a folder")
    parser.add_argument("-n", "--num", type=int, default=8, help="number of videos")
    parser.add_argument("--sampler", default=None,
                        help="ddpm, ddim or dpmpp_2m (None: the run's sample.sampler)")
    parser.add_argument("--steps", type=int, default=None,
                        help="sampler steps (None: the run's sample.steps)")
    parser.add_argument("--eta", type=float, default=None,
                        help="DDIM eta (stochasticity; None: the run's sample.eta, else 0)")
    add_condition_arguments(parser)  # --class, --caption, --negative-prompt, --guidance-scale
    add_run_arguments(parser)  # --seed, --weights, --device, --fps, --threads


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    per_video = str(args.out).endswith(("/", "\\")) or out.is_dir()
    if not per_video and out.suffix.lower() not in WRITE_SUFFIXES:
        raise CommandError(f"--out {args.out!r}: unknown suffix {out.suffix!r}; use one of "
                           f"{', '.join(WRITE_SUFFIXES)}, or a folder ending in /")
    try:  # before any sampling: the work is never lost
        check_output_dir(out) if per_video else check_output_file(out)
    except OutputPathError as err:
        raise CommandError(str(err)) from None
    if args.num < 1:
        raise CommandError(f"--num must be >= 1, got {args.num}")
    if args.steps is not None and args.steps < 1:
        raise CommandError(f"--steps must be >= 1, got {args.steps}")
    pipe = load_pipeline(args)
    spec = pipe.spec
    if spec.conditioning.lowres_size is not None:
        raise CommandError(f"{args.checkpoint!r} is a super-resolution model (from "
                           f"{spec.conditioning.lowres_size}x{spec.conditioning.lowres_size})"
                           f": use vidiff upsample")
    conditions = read_conditions(args, pipe)  # checked before any sampling
    try:
        chosen = pipe.sampling(args.sampler, args.steps, args.eta, args.guidance_scale)
    except SamplingError as err:
        raise CommandError(err.named(f"--{err.field.replace('_', '-')}")) from None
    generator = torch.Generator(device=pipe.device).manual_seed(args.seed)
    videos = pipe(args.num, sampler=chosen.sampler, steps=chosen.steps, eta=chosen.eta,
                  guidance_scale=chosen.guidance_scale, **conditions.call(),
                  generator=generator, progress=True)
    fps = output_fps(args, pipe)
    if per_video:
        for k, video in enumerate(videos.cpu()):
            write_video(out / f"video_{k:04d}.{args.format}", video, fps=fps)
    else:
        write_video(out, videos.cpu(), fps=fps)
    steps = chosen.steps or "default"
    guided = f", guidance {chosen.guidance_scale:g}" if spec.conditional else ""
    shape = spec.shape if spec.autoencoder is None else spec.autoencoder.pixel_shape
    frames, height, width = shape.fhw  # a bucketed run's first bucket: H and W apart
    print(f"wrote {out} ({args.num} videos of {frames}x{height}x{width}, "
          f"{chosen.sampler} {steps} steps{guided}, "
          f"step-{spec.provenance.step} {pipe.weights or 'unrecorded'} weights)")
    return 0
