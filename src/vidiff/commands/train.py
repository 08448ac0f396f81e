"""Train a video diffusion model.

The run config comes from, in order: the defaults (train a small model on the built-in bouncing
balls), the checkpoint's config when --resume names one or --out already holds a run and no
--config is given (so `--resume CKPT --out NEW` continues that run in NEW), the
--config file (TOML, JSON or YAML), the shortcut options below, then --set overrides. Every key
is listed by `vidiff train --print-config`.

Examples:
  vidiff train --out runs/balls                       # a few minutes on a CPU
  vidiff train -c configs/balls.toml --set train.lr=5e-4 data.frames=16
  vidiff train --data path/to/videos --preset small --steps 100000 --out runs/mine
  torchrun --nproc_per_node 4 -m vidiff train -c my.toml --out runs/big   # DDP

Outputs in --out: log.jsonl (and TensorBoard logs when installed), checkpoints/step_*/
(safetensors weights and EMA weights, optimizer state; the newest few are kept) and
samples/step_*.mp4/.gif/.png. Running the same command again resumes from the newest
checkpoint and continues exactly where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from vidiff.cli import CommandError
from vidiff.modelio.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from vidiff.utils.config_io import ConfigError

NAME = "train"
HELP = "train a model on videos (built-in bouncing balls by default)"

# (option, config key, type, metavar, help)
SHORTCUTS = [
    ("--steps", "train.steps", int, "N", "optimizer steps"),
    ("--max-seconds", "train.max_seconds", float, "S",
     "stop after S seconds of training (LR decay ends with them)"),
    ("--out", "train.out", str, "DIR", "run folder for logs, checkpoints and samples"),
    ("--preset", "model.preset", str, "NAME",
     "U-Net preset: tiny, small, base, vdm-matched, ..."),
    ("--init-from", "model.init_from", str, "PATH",
     "start from an image model (run, checkpoint, diffusers UNet2DModel dir or Stable "
     "Diffusion root): inflated"),
    ("--prior", "prior.name", str, "NAME",
     "noise prior: independent, mixed, progressive, decomposed"),
    ("--device", "train.device", str, "DEVICE", "auto, cpu, cuda or cuda:N"),
    ("--batch-size", "data.batch_size", int, "N", "videos per process and micro-step"),
    ("--lr", "train.lr", float, "LR", "peak learning rate"),
    ("--frames", "data.frames", int, "N", "frames per clip"),
    ("--size", "data.size", int, "PIXELS", "frame height and width"),
    ("--seed", "train.seed", int, "N", "seed of the model init, noise and timesteps"),
    ("--precision", "train.precision", str, "P",
     "fp32, bf16 or fp16 (autocast; fp16 on CUDA only)"),
    ("--resume", "train.resume", str, "WHERE",
     "auto (newest checkpoint in --out), never, or a checkpoint / run folder"),
    ("--sample-every", "train.sample_every", int, "N",
     "steps between sample videos (0: at the end)"),
    ("--threads", "train.threads", int, "N", "torch CPU threads (0: the cores not already busy)"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="run config file: .toml, .json or .yaml (see configs/)")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+",
                        action="extend", default=[],
                        help="override config keys, e.g. --set train.lr=1e-4 data.frames=16 "
                             "model.overrides.model_channels=32")
    parser.add_argument("--data", metavar="SOURCE", default=argparse.SUPPRESS,
                        help="bouncing_balls, moving_shapes, or a folder of videos")
    for option, key, typ, metavar, text in SHORTCUTS:
        parser.add_argument(option, type=typ, default=argparse.SUPPRESS, metavar=metavar,
                            help=f"{text} (= --set {key}=...)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as JSON and exit")


def resolve_config(args):
    """The `RunConfig` of these arguments (see the module doc for the order)."""

    shortcuts = []
    data = getattr(args, "data", None)
    config_file = getattr(args, "config", None)
    if data is not None:
        if data in ("bouncing_balls", "moving_shapes"):
            shortcuts.append(f"data.source={data}")
        else:
            shortcuts += ["data.source=folder", f"data.path={data}"]
    for option, key, *_ in SHORTCUTS:
        value = getattr(args, option.lstrip("-").replace("-", "_"), None)
        if value is not None:
            shortcuts.append(f"{key}={value}")
    overrides = shortcuts + list(args.overrides)
    # the trainer loads on use: `vidiff sample` never imports vidiff.train
    from vidiff.train.config import load_run_config, merge_run_config
    from vidiff.train.resume import check_same_model
    from vidiff.train.validation import validate

    if config_file is not None:
        return load_run_config(config_file, overrides)
    # the run resumed (--resume CKPT, or a run folder that holds checkpoints): start from its
    # config, so a resume needs no flags and --resume CKPT --out NEW continues it
    probe = merge_run_config(None, overrides)  # where it resumes from, not yet validated
    resume, checkpoint = probe.train.resume, None
    if resume not in ("auto", "never"):
        checkpoint = load_checkpoint(resume)
    elif resume == "auto" and (found := list_checkpoints(probe.train.out)):
        checkpoint = load_checkpoint(found[-1])
    if checkpoint is None:
        return load_run_config(None, overrides)
    merged = merge_run_config(None, overrides, base=_run_of(checkpoint))
    check_same_model(checkpoint, merged)  # before validation: a new process is named as such
    return validate(merged)


def _run_of(checkpoint):
    """A checkpoint's run config as the base of a new one: its ``train.resume`` (where that
    run came from) back at the default, so the new run resumes as its own flags say."""
    from vidiff.train.config import RunConfig, TrainConfig

    config = RunConfig.from_dict(checkpoint.config)
    return replace(config, train=replace(config.train, resume=TrainConfig.resume))


def run(args: argparse.Namespace) -> int:
    # the trainer loads on use: `vidiff sample` never imports vidiff.train
    from vidiff.train import NonFiniteLossError, train

    try:
        config = resolve_config(args)
        if args.print_config:
            print(json.dumps(config.to_dict(), indent=2))
            return 0
        result = train(config)
    except (ConfigError, CheckpointError) as err:
        raise CommandError(str(err)) from None
    except NonFiniteLossError as err:
        print(f"vidiff train: error: {err}", file=sys.stderr)
        return 1
    if result.samples:
        print(f"samples: {', '.join(str(p) for p in result.samples)}")
    if result.interrupted is not None:  # a checkpoint was written; 128 + N as a shell would
        print(f"vidiff train: stopped by a signal at step {result.step}; resume with: "
              f"vidiff train --out {result.out}", file=sys.stderr)
        return 128 + int(result.interrupted)
    return 0
