"""Distill a trained model into a few-step student (progressive distillation, Salimans & Ho
2022): rounds that each halve the sampling steps, the student of one round the teacher of the
next, every round an ordinary run (resumable, interruptible, logged).

Examples:
  vidiff distill runs/balls --steps 4 --out runs/balls-4       # 32 -> 16 -> 8 -> 4 steps
  vidiff distill runs/balls --steps 2 --teacher-steps 64 --round-steps 2000 --out runs/b2
  vidiff sample runs/balls-4 --out four_steps.mp4              # its 4 steps, no flags

The student starts from the teacher's EMA weights and trains on the teacher's data with the
teacher's settings (its noise prior included: a student of a progressive-prior teacher starts
from the same correlated x_T); --set changes any of them. Each round's x_t are drawn at the
teacher's times, the target is where two of the teacher's deterministic steps (DDIM on
"trailing" timesteps for DDPM, Euler for flow) land. Intermediate rounds are in
OUT/rounds/; the final student is OUT, its spec set to sample with --steps steps. Running the
same command again resumes the round that was stopped. docs/DISTILL.md has the method.
"""

from __future__ import annotations

import argparse
import sys

from vidiff.cli import CommandError
from vidiff.modelio.checkpoint import CheckpointError
from vidiff.utils.config_io import ConfigError

NAME = "distill"
HELP = "distill a model into a few-step student (progressive distillation)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("teacher", metavar="RUN", help="the teacher: a run folder or checkpoint")
    parser.add_argument("--steps", type=int, required=True, metavar="N",
                        help="the student's sampling steps")
    parser.add_argument("--out", required=True, metavar="DIR", help="the student's run folder")
    parser.add_argument("--method", default="progressive", choices=["progressive"],
                        help="progressive: each round halves the steps")
    parser.add_argument("--teacher-steps", type=int, default=None, metavar="M",
                        help="the first teacher's steps, N times a power of two (default: the "
                             "smallest such M >= 32)")
    parser.add_argument("--round-steps", type=int, default=500, metavar="S",
                        help="optimizer steps of each round (default 500)")
    parser.add_argument("--guidance-scale", type=float, default=1.0, metavar="W",
                        help="the teacher's classifier-free guidance (1: as conditioned; the "
                             "student keeps the teacher's sampling guidance)")
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
                         overrides=args.overrides)
    except (ConfigError, CheckpointError) as err:
        raise CommandError(str(err)) from None
    except NonFiniteLossError as err:
        print(f"vidiff distill: error: {err}", file=sys.stderr)
        return 1
    if result.interrupted is not None:
        print(f"vidiff distill: stopped by a signal at step {result.step} of {result.out}; "
              f"run the same command again to resume", file=sys.stderr)
        return 128 + int(result.interrupted)
    print(f"student: {args.out} ({args.steps} steps); sample it with: vidiff sample "
          f"{args.out} --out samples.mp4")
    return 0
