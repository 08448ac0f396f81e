"""Distill a trained model into a student that samples in fewer network calls, every stage an
ordinary run (resumable, interruptible, logged); docs/DISTILL.md has the methods.

Examples:
  vidiff distill runs/balls --steps 4 --out runs/balls-4       # progressive: 32 -> 16 -> 8 -> 4
  vidiff distill runs/balls --method guided --out runs/bg       # guidance in one call per step
  vidiff distill runs/balls --method guided --steps 4 --out runs/bg4    # then 4 steps
  vidiff distill runs/flow --method consistency --steps 2 --out runs/fc  # consistency model
  vidiff sample runs/balls-4 --out four_steps.mp4              # its 4 steps, no flags

progressive (Salimans & Ho 2022): rounds that each halve the steps; the target is where two
of the teacher's deterministic steps (DDIM on "trailing" timesteps for DDPM, Euler for a
flow) land. guided (Meng et al. 2023): the student learns the teacher's classifier-free
guided prediction with the scale as an input (one call per step instead of two), then, with
--steps, progressive rounds. consistency (Song et al. 2023): one run; the student maps any
point of the teacher's --teacher-steps trajectory to its end and samples with --steps
multistep consistency steps. The student starts from the teacher's EMA weights and trains on
the teacher's data with the teacher's settings (its noise prior included); --set changes any
of them. Intermediate stages are in OUT/rounds/; the final student is OUT, its spec set to
sample as it was made to. Running the same command again resumes where it stopped.
"""

from __future__ import annotations

import argparse
import sys

from vidiff.cli import CommandError
from vidiff.diffusion.distill import METHODS
from vidiff.modelio.checkpoint import CheckpointError
from vidiff.utils.config_io import ConfigError

NAME = "distill"
HELP = "distill a model into a few-step or one-call-guided student"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("teacher", metavar="RUN", help="the teacher: a run folder or checkpoint")
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="the student's sampling steps (guided: none keeps the "
                             "teacher's sampler)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the student's run folder")
    parser.add_argument("--method", default="progressive", choices=list(METHODS),
                        help="progressive: rounds that halve the steps; guided: guidance "
                             "as an input, one call per step; consistency: one run")
    parser.add_argument("--teacher-steps", type=int, default=None, metavar="M",
                        help="progressive: the first teacher's steps, N times a power of two;"
                             " consistency: the teacher's grid, a multiple of N (default: "
                             "the smallest N x 2^r >= 32)")
    parser.add_argument("--round-steps", type=int, default=500, metavar="S",
                        help="optimizer steps of each run (default 500)")
    parser.add_argument("--guidance-scale", type=float, default=1.0, metavar="W",
                        help="progressive, consistency: the teacher's classifier-free "
                             "guidance (1: as conditioned; the student keeps the teacher's "
                             "sampling guidance)")
    parser.add_argument("--guidance-range", type=float, nargs=2, default=(1.0, 4.0),
                        metavar=("LO", "HI"),
                        help="guided: the scales the student learns (default 1 4)")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+",
                        action="extend", default=[],
                        help="override the teacher's run settings, e.g. --set train.lr=1e-4")


def run(args: argparse.Namespace) -> int:
    from vidiff.train import NonFiniteLossError  # on use: other commands never load it
    from vidiff.train.rounds import distill

    try:
        result = distill(args.teacher, steps=args.steps, out=args.out,
                         teacher_steps=args.teacher_steps, round_steps=args.round_steps,
                         guidance_scale=args.guidance_scale, method=args.method,
                         guidance_range=tuple(args.guidance_range), overrides=args.overrides)
    except (ConfigError, CheckpointError) as err:
        raise CommandError(str(err)) from None
    except NonFiniteLossError as err:
        print(f"vidiff distill: error: {err}", file=sys.stderr)
        return 1
    if result.interrupted is not None:
        print(f"vidiff distill: stopped by a signal at step {result.step} of {result.out}; "
              f"run the same command again to resume", file=sys.stderr)
        return 128 + int(result.interrupted)
    steps = "the teacher's steps" if args.steps is None else f"{args.steps} steps"
    print(f"student: {args.out} ({args.method}, {steps}); sample it with: vidiff sample "
          f"{args.out} --out samples.mp4")
    return 0
