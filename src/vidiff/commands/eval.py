"""Evaluate generated videos against reference videos: FVD, FID, IS, NLL and weight-free metrics.

The generated clips come from --generated (a .npy / .pt array as `vidiff sample` writes, one
video file, or a folder of videos) or are sampled on the fly from --checkpoint (--num videos,
batch by batch). The reference is a built-in synthetic dataset (bouncing_balls, moving_shapes),
a folder of real videos, an array file, or the .npz that --save-reference wrote (its pass is
then skipped). Always computed: FVD-lite, the temporal statistics and, for bouncing balls,
ball tracking; --i3d adds FVD, --inception per-frame FID and IS, --nll the variational bound
of --checkpoint on the reference clips. Every set is streamed in batches of --batch-size
clips, so memory stays bounded for any number of clips. Nothing is downloaded: the weight
files are local paths (docs/EVAL.md says where to get them).

Examples:
  vidiff eval -g samples.npy --reference bouncing_balls --out report.json
  vidiff eval -c runs/balls --num 2048 --reference bouncing_balls --save-reference ref.npz
  vidiff eval -g fake/ --reference ucf_clips/ --frames 16 --size 64 \\
      --i3d i3d_torchscript.pt --inception pt_inception-2015-12-05-6726825d.pth
  vidiff eval -c runs/balls --nll --nll-num 64 --reference bouncing_balls
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from pathlib import Path

import torch

from vidiff.cli import CommandError
from vidiff.commands._conditional import pick_device
from vidiff.data import SYNTHETIC
from vidiff.evaluate import (
    EvalConfig,
    checkpoint_clips,
    dataset_clips,
    file_sha256,
    load_reference,
    nll_bits_per_dim_on,
    open_videos,
    versions,
)
from vidiff.evaluate.job import EvalError, EvalJob, run_job
from vidiff.evaluate.sources import ARRAY_SUFFIXES
from vidiff.io import OutputPathError, check_output_file
from vidiff.metrics import FIDConfig, FVDConfig, load_fid_inception, load_i3d
from vidiff.metrics.weights import is_torchscript_file
from vidiff.modelio.checkpoint import CheckpointError
from vidiff.modelio.pipeline import Pipeline, read_spec
from vidiff.utils.threads import auto_threads

NAME = "eval"
HELP = "FVD, FID, IS, NLL and weight-free metrics of generated videos, as a JSON report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("-g", "--generated", help="generated clips: .npy/.pt array, a video file or a folder")
    add("-c", "--checkpoint", help="run folder / checkpoint to sample from (no --generated) "
        "and to score with --nll")
    add("-n", "--num", type=int, default=64, help="videos to sample from --checkpoint")
    add("--sampler", default=None, help="sampler for --checkpoint (None: the run's)")
    add("--steps", type=int, default=None, help="sampler steps (None: the run's)")
    add("--seed", type=int, default=0, help="seed of the sampling and NLL noise")
    add("-r", "--reference", default=None,
        help="bouncing_balls | moving_shapes | a folder of videos | an array file | an .npz "
             "from --save-reference (None: the checkpoint's training data)")
    add("--reference-num", type=int, default=None,
        help="reference clips (None: as many as generated)")
    add("--frames", type=int, default=None, help="reference clip length (None: generated's)")
    add("--size", type=int, default=None, help="reference frame size (None: generated's)")
    add("--i3d", help="I3D weights -> FVD: pytorch-i3d state dict or StyleGAN-V's "
        "i3d_torchscript.pt")
    add("--fvd-protocol", choices=("tf", "stylegan-v"), default="tf",
        help="FVD preprocessing and covariance convention (docs/EVAL.md)")
    add("--inception", help="pytorch-fid InceptionV3 weights -> per-frame FID and IS "
        "(pt_inception-2015-12-05-6726825d.pth)")
    add("--is-splits", type=int, default=10, help="Inception Score splits")
    add("--nll", action="store_true", help="bits/dim of --checkpoint on the reference clips")
    add("--nll-num", type=int, default=16, help="reference clips scored by --nll")
    add("--batch-size", type=int, default=16, help="clips per batch")
    add("--save-reference", metavar="NPZ", help="save the reference statistics for reuse")
    add("-o", "--out", help="write the JSON report here")
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add("--threads", type=int, default=0, help="torch CPU threads (0: the free cores)")
    add("--no-progress", action="store_true", help="no progress bars")


def _fail(message: str):
    raise CommandError(message)


def _check_args(args: argparse.Namespace) -> None:
    if not args.generated and not args.checkpoint:
        _fail("give the generated videos (--generated PATH) or a --checkpoint to sample from")
    if args.nll and not args.checkpoint:
        _fail("--nll scores a model: give its --checkpoint")
    for name in ("num", "batch_size", "nll_num", "is_splits", "reference_num", "frames",
                 "size", "steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            _fail(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for flag in ("i3d", "inception"):
        path = getattr(args, flag)
        if path is not None and not Path(path).expanduser().is_file():
            _fail(f"--{flag}: weights file not found: {path!r} (nothing is downloaded; see "
                  "docs/EVAL.md for where to get it)")
    if args.nll and str(args.reference).lower().endswith(".npz"):
        _fail("--nll needs reference videos, not a statistics file")
    if args.save_reference and str(args.reference).endswith(".npz"):
        _fail("--save-reference: the reference is already a statistics file")
    if args.checkpoint and not args.generated and args.num < 2:
        _fail(f"--num {args.num}: the metrics compare two sets of clips; sample at least 2")
    _check_outputs(args)


def _check_outputs(args: argparse.Namespace) -> None:
    """--out and --save-reference must be writable before any clip is scored."""
    for flag in ("out", "save_reference"):
        path = getattr(args, flag)
        if path:
            try:
                check_output_file(path, f"--{flag.replace('_', '-')}")
            except OutputPathError as err:
                _fail(str(err))


def _load_nets(args, device) -> tuple:
    """The I3D and Inception networks (or None) and their descriptions for the report."""
    nets, weights = [None, None], {}
    for i, (flag, load) in enumerate((("i3d", load_i3d), ("inception", load_fid_inception))):
        path = getattr(args, flag)
        if path is None:
            continue
        try:
            nets[i] = load(path).to(device)
        except (FileNotFoundError, ValueError) as err:
            _fail(f"--{flag}: {err}")
        kind = "torchscript" if is_torchscript_file(path) else "state_dict"
        weights[flag] = {"path": str(path), "sha256": file_sha256(path), "kind": kind}
    return nets[0], nets[1], weights


def _pipeline(args, device):
    """--checkpoint's `vidiff.Pipeline`, loaded once for the clips it samples and its --nll
    (None when neither needs it: the checkpoint then only names the reference data)."""
    if not args.checkpoint or (args.generated and not args.nll):
        return None
    try:
        pipe = Pipeline.from_pretrained(args.checkpoint, device=device)
    except (FileNotFoundError, ValueError, CheckpointError) as err:
        _fail(f"--checkpoint: {err}")
    if args.nll and pipe.spec.diffusion.process == "flow":
        _fail("--nll: flow-matching models have no variational bound here (the likelihood "
              "would need the probability-flow ODE, which vidiff does not integrate)")
    if args.nll and pipe.spec.conditional:  # said before any clip is scored
        _fail("--nll: conditional models are not supported (the bound needs the labels)")
    if args.nll and pipe.spec.autoencoder is not None:
        _fail("--nll: a latent model's bound would be in latent bits/dim, not the videos'; "
              "it is not reported")
    return pipe


def _generated(args, device, pipe):
    try:
        if args.generated:
            source = open_videos(args.generated)
            if source.count < 2:
                _fail(f"--generated {args.generated!r} holds {source.count} clip(s); the "
                      f"metrics compare two sets of clips and need at least 2 (a folder of "
                      f"videos, an (N, C, F, H, W) array, or -c CHECKPOINT --num N)")
            return source
        return checkpoint_clips(pipe, args.num, sampler=args.sampler, steps=args.steps,
                                seed=args.seed)
    except (FileNotFoundError, ValueError, CheckpointError) as err:
        _fail(f"--{'generated' if args.generated else 'checkpoint'}: {err}")


def _provenance(args):
    """--checkpoint's `vidiff.modelio.spec.Provenance` (its training data; None without a
    checkpoint): no weights read."""
    return _read_provenance(str(args.checkpoint)) if args.checkpoint else None


@functools.lru_cache(maxsize=4)
def _read_provenance(path: str):  # read once: the default reference and its clips both ask
    return read_spec(path).provenance


def _default_reference(args) -> str:
    if args.reference:
        return args.reference
    if not args.checkpoint:
        _fail("give a --reference: bouncing_balls, moving_shapes, a folder of videos, an "
              "array file or an .npz from --save-reference")
    data = _provenance(args)
    if data.data == "folder" and not data.data_path:
        _fail(f"{args.checkpoint!r} was trained on a folder of videos it does not name (an "
              f"exported model): give a --reference")
    return data.data_path if data.data == "folder" else data.data


def _reference_source(args, name: str, shape: tuple, count: int):
    """The reference clips (a ClipSource) with the generated clips' shape unless told.

    A synthetic reference of the checkpoint's own training data has the run's dataset options
    (e.g. ``max_balls``) and is held out: the clips of the next dataset seed, never trained on.
    """
    frames, size = args.frames or shape[1], args.size or shape[2]
    try:
        if Path(name).suffix.lower() in ARRAY_SUFFIXES:
            return open_videos(name)
        if name in SYNTHETIC:
            data = _provenance(args)
            own = data is not None and data.data == name
            return dataset_clips(name, frames, size, count,
                                 seed=data.data_seed + 1 if own else 1,
                                 options=data.data_options if own else {})
        if Path(name).is_dir():
            return dataset_clips(name, frames, size, count)
    except (FileNotFoundError, ValueError, TypeError) as err:
        _fail(f"--reference: {err}")
    valid = ", ".join(SYNTHETIC.names())
    _fail(f"--reference {name!r}: not a synthetic dataset ({valid}), a folder, an array file "
          "(.npy, .pt) or an .npz from --save-reference")


def _flagged(err, ref_name: str) -> str:
    """An `EvalError`'s message, prefixed by the argument at fault."""
    if err.flag == "reference":
        return f"--reference {ref_name!r}: {err}"
    if err.flag == "i3d":
        return f"--i3d: {err}"
    return f"{err.flag}: {err}" if err.flag else str(err)


def _is_tracked(name: str, reference) -> bool:
    if hasattr(reference, "meta"):
        return reference.meta.get("reference", {}).get("name") == "bouncing_balls"
    return name == "bouncing_balls"


def _nll(args, pipe, ref_name: str, shape: tuple, device, progress: bool) -> dict:
    shape_ = pipe.spec.shape
    source = _reference_source(argparse.Namespace(frames=shape_.frames, size=shape_.size,
                                                  checkpoint=args.checkpoint),
                               ref_name, shape, args.nll_num)
    return nll_bits_per_dim_on(source, pipe, batch_size=args.batch_size, seed=args.seed,
                               device=device, progress=progress)


def _say_counts(generated: int, reference: int, asked: int | None, ref_name: str) -> None:
    """How many clips each side has; a warning when the reference gave fewer than asked."""
    print(f"clips: {generated} generated, {reference} reference")
    if asked is not None and reference < asked:
        print(f"vidiff eval: warning: {asked} reference clips were asked for, {ref_name!r} "
              f"gave {reference}", file=sys.stderr)


def _clean(value):
    """NaN / inf -> None, numpy scalars -> floats (strict JSON)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _print_summary(metrics: dict) -> None:
    rows = [("FVD", metrics.get("fvd")), ("FID (per frame)", metrics.get("fid")),
            ("IS (per frame)", metrics.get("inception_score")),
            ("FVD-lite", metrics.get("fvd_lite")),
            ("ball tracking score", metrics.get("ball_tracking", {}).get("score")),
            ("steady frame pairs (generated)",
             metrics.get("ball_tracking", {}).get("steady_pairs")),
            ("steady frame pairs (reference)",
             metrics.get("ball_tracking", {}).get("ref_steady_pairs")),
            ("NLL (bits/dim)", metrics.get("nll", {}).get("bits_per_dim"))]
    for side in ("generated", "reference"):
        temporal = metrics[side]["temporal"]
        rows.append((f"frame consistency ({side})", temporal["frame_consistency"]))
        rows.append((f"flicker ({side})", temporal["flicker"]))
    print("| metric | value |\n|---|---|")
    for name, value in rows:
        if value is not None:
            print(f"| {name} | {value:.4f} |")


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    torch.set_num_threads(args.threads if args.threads > 0 else auto_threads())
    device = torch.device(pick_device(args.device))
    progress = False if args.no_progress else None
    i3d, inception, weights = _load_nets(args, device)
    ref_name = _default_reference(args)
    config = EvalConfig(batch_size=args.batch_size, fvd=FVDConfig(protocol=args.fvd_protocol),
                        fid=FIDConfig(), is_splits=args.is_splits)
    saved = Path(ref_name).suffix.lower() == ".npz"
    if saved:
        try:
            reference = load_reference(ref_name, config)
        except (OSError, ValueError) as err:
            _fail(f"--reference: {err}")
    else:
        def reference(shape: tuple, count: int):  # the reference clips, once shape is known
            return _reference_source(args, ref_name, shape, args.reference_num or count)
    config.tracking = _is_tracked(ref_name, reference if saved else None)
    pipe = _pipeline(args, device)
    generated_source = _generated(args, device, pipe)
    job = EvalJob(generated_source, reference, config, i3d, inception, weights, device,
                  progress, None if saved else args.save_reference)
    try:
        outcome = run_job(job)
    except EvalError as err:
        _fail(_flagged(err, ref_name))
    generated, reference = outcome.generated, outcome.reference
    reference_describe = outcome.reference_describe
    asked = None if saved else (args.reference_num or generated.count)
    _say_counts(generated.count, reference.count, asked, ref_name)
    metrics = outcome.metrics
    for note in metrics["warnings"]:
        print(f"vidiff eval: warning: {note}", file=sys.stderr)
    if args.nll:
        metrics["nll"] = _nll(args, pipe, ref_name, generated.shape, device, progress)
    report = {"metrics": metrics, "settings": {
        "generated": generated_source.describe, "reference": reference_describe,
        "clip_shape": list(generated.shape), "batch_size": args.batch_size,
        "weights": weights, **config.settings()}, "versions": versions()}
    report = _clean(report)
    _print_summary(report["metrics"])
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0
