"""What `vidiff extend`, `interpolate` and `upsample` share: arguments, loading the model and
its conditions (`vidiff.commands._conditions`), reading the input video, writing the output."""

from __future__ import annotations

import argparse
import functools
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from vidiff.cli import CommandError
from vidiff.commands._conditions import Conditions, add_condition_arguments, read_conditions
from vidiff.data.resize import FitFrames, resize_crop_frames
from vidiff.io import (
    WRITE_SUFFIXES,
    OutputPathError,
    VideoReadError,
    check_output_file,
    from_uint8,
    read_video,
    to_rgb,
    video_info,
    write_video,
)
from vidiff.modelio.checkpoint import CheckpointError
from vidiff.modelio.pipeline import Pipeline
from vidiff.modelio.spec import DEFAULT_FPS
from vidiff.sampling.conditional import ConditionalSampler
from vidiff.sampling.guidance import RECONSTRUCTION_WEIGHT
from vidiff.sampling.samplers import SamplingConfig, SamplingError
from vidiff.utils.threads import ThreadCount


def add_common_arguments(parser: argparse.ArgumentParser, weight: float | None = None) -> None:
    """The checkpoint, input, output, conditioning method and sampler options; `weight`:
    the default w_r (None: `vidiff.sampling.guidance.RECONSTRUCTION_WEIGHT`)."""
    parser.add_argument("checkpoint", help="run folder, checkpoint folder, .safetensors file or "
                                           "exported model folder (vidiff export)")
    parser.add_argument("-i", "--input", default=None,
                        help="the given video: mp4/webm/gif/npy (npy: (N, F, H, W, C) uint8 for "
                             "N videos) or a folder of frames; None: sample it first")
    parser.add_argument("-o", "--out", default="out.mp4",
                        help="output file; format by suffix: .mp4, .webm, .gif, .png, .npy")
    parser.add_argument("-n", "--num", type=int, default=1,
                        help="videos to sample first when there is no --input")
    parser.add_argument("--method", choices=("reconstruction", "replacement"),
                        default="reconstruction",
                        help="reconstruction guidance (VDM eq. 7) or the replacement baseline")
    parser.add_argument("--guidance-weight", type=float, default=weight or RECONSTRUCTION_WEIGHT,
                        help="w_r of reconstruction guidance (VDM eq. 7)")
    parser.add_argument("--sampler", default=None,
                        help="ddpm, ddim or dpmpp_2m (None: the run's sample.sampler)")
    parser.add_argument("--steps", type=int, default=None,
                        help="sampler steps per window (None: the run's sample.steps)")
    add_condition_arguments(parser)  # none given: the unconditional model
    add_run_arguments(parser)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """--seed, --weights, --device, --fps and --threads (shared with `vidiff sample`)."""
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise")
    parser.add_argument("--weights", choices=("ema", "model"), default=None,
                        help="which weights: the EMA (default) or the raw trained ones; an "
                             "exported model holds one set (the one it was exported with)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--fps", type=frame_rate, default=None,
                        help="frame rate of mp4/gif (default: the training data's, as recorded "
                             "in the checkpoint; 8 for the built-in data)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: the cores not already busy)")


def frame_rate(text: str) -> float:
    """An --fps value: a positive, finite number (argparse names the option in its error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive frame rate, got {text}")
    return value


def pick_device(name: str) -> str:
    """The torch device of a --device value (auto: cuda when there is one); a clear error
    for cuda without CUDA. Shared by `vidiff sample` and the conditional commands."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CommandError("--device cuda: torch sees no CUDA device; use --device cpu")
    return name


def output_fps(args: argparse.Namespace, pipe, factor: float = 1.0) -> float:
    """--fps; else the --input video's frame rate, else the model's training clips' rate
    (its spec), else 8; times `factor` (interpolation makes `factor` frames of one)."""
    if args.fps is not None:
        return args.fps
    source = getattr(args, "input", None)
    header = _input_header(source) if source is not None else None
    rate = header.fps if header is not None else None
    return float(rate or pipe.spec.preprocess.fps or DEFAULT_FPS) * factor


@functools.lru_cache(maxsize=8)
def _input_header(source: str):
    """`vidiff.io.video_info` of an --input video file, read once per command (None for an
    .npy batch, a frame folder or an unreadable header)."""
    path = Path(source)
    if path.suffix.lower() in (".npy", "") or path.is_dir():
        return None
    try:
        return video_info(path)
    except (VideoReadError, OSError, ValueError):
        return None


def check_common(args: argparse.Namespace) -> None:
    """Clear errors for bad values of the common arguments."""
    if Path(args.out).suffix.lower() not in WRITE_SUFFIXES:
        raise CommandError(f"--out {args.out!r}: unknown suffix {Path(args.out).suffix!r}; "
                           f"use one of {', '.join(WRITE_SUFFIXES)}")
    if args.input is not None and not Path(args.input).exists():
        raise CommandError(f"--input {args.input!r}: no such file or folder")
    try:
        check_output_file(args.out)  # before any sampling: the work is never lost
    except OutputPathError as err:
        raise CommandError(str(err)) from None
    for key in ("num", "steps"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            raise CommandError(f"--{key} must be >= 1, got {getattr(args, key)}")
    if args.guidance_weight < 0:
        raise CommandError(f"--guidance-weight must be >= 0, got {args.guidance_weight}")
    if args.sampler is not None:  # before the model is loaded
        try:
            SamplingConfig(sampler=args.sampler, steps=None).check()
        except SamplingError as err:
            raise CommandError(err.named("--sampler")) from None


def load_pipeline(args: argparse.Namespace):
    """The `vidiff.Pipeline` of args.checkpoint (a run, checkpoint or exported folder) with
    --weights on --device, after setting --threads; a `CommandError` for a bad checkpoint.
    Shared with `vidiff sample`. Prints the device and the CPU threads; with --threads 0 the
    count is re-checked as the model runs (`vidiff.utils.threads.ThreadCount`)."""

    threads = ThreadCount(args.threads)
    try:
        pipe = Pipeline.from_pretrained(args.checkpoint, weights=args.weights,
                                        device=pick_device(args.device))
    except (CheckpointError, ValueError) as err:
        raise CommandError(str(err)) from None
    print(f"sampling on {pipe.device} with {threads.describe()}")
    if threads.auto:  # re-checked as the model runs (each call is a clock read between)
        pipe.model.register_forward_pre_hook(lambda module, inputs: threads.poll())
    return pipe


def window_overlap(args: argparse.Namespace, frames: int, lowest: int = 1) -> int:
    """--overlap (None: half the model's `frames`), a `CommandError` unless it is in
    [lowest, frames - 1]."""
    overlap = frames // 2 if args.overlap is None else args.overlap
    if not lowest <= overlap < frames:
        raise CommandError(f"--overlap must be in [{lowest}, {frames - 1}] (the model samples "
                           f"{frames} frames at a time), got {overlap}")
    return overlap


def load(args: argparse.Namespace):
    """(Pipeline, ConditionalSampler) for the checkpoint and options of `args`."""
    check_common(args)
    pipe = load_pipeline(args)
    latent = pipe.spec.autoencoder is not None
    if latent and args.command == "upsample":
        raise CommandError("latent models are not supported (their conditioning would have "
                           "to run on latents of another size)")
    if pipe.spec.shape.frames < 2 and args.command in ("extend", "interpolate"):
        raise CommandError(f"{args.checkpoint!r} is an image model (1 frame a sample): "
                           f"vidiff {args.command} needs a video model")
    conditions = read_conditions(args, pipe)
    if args.guidance_scale not in (None, 1.0) and not conditions.given:
        raise CommandError(f"--guidance-scale {args.guidance_scale:g} needs --class or --caption "
                           f"(without them vidiff {args.command} samples the unconditional "
                           f"model)")
    try:  # the model's own sampler unless told (what `vidiff sample` and the run's samples use)
        chosen = pipe.sampling(args.sampler, args.steps, guidance_scale=args.guidance_scale)
    except SamplingError as err:
        raise CommandError(err.named(f"--{err.field.replace('_', '-')}")) from None
    args.sampler, args.steps = chosen.sampler, chosen.steps
    # the network as its sampler calls it (a flow model's: the velocity of float time), with
    # classifier-free guidance when a condition was given
    scale = chosen.guidance_scale if conditions.given else 1.0
    sampler = ConditionalSampler(pipe.denoiser(scale), pipe.diffusion, pipe.prior,
                                 method=args.method,
                                 weight=args.guidance_weight, sampler=args.sampler,
                                 steps=args.steps, progress=True, clip_x0=not latent)
    return pipe, sampler, conditions


def _read_frames(path: Path, size: int | None):
    """uint8 (N, F, h, w, C): one video, or the N videos of an .npy batch, each frame resized
    to cover `size` x `size` and center-cropped as it is decoded (the training data's
    geometry, `vidiff.data.resize.resize_crop_frames`), so memory follows the model's clip
    size, not the file's resolution. `size` None: frames as they are."""
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if arr.ndim == 5 and arr.dtype == np.uint8:
                batch = torch.from_numpy(np.array(arr))
                if size is None:
                    return batch
                return torch.stack([resize_crop_frames(v, (size, size)) for v in batch])
        fit = FitFrames((size, size), "center", None) if size is not None else None
        return read_video(path, frame_fn=fit).unsqueeze(0)
    except (VideoReadError, ValueError, OSError) as err:
        raise CommandError(f"--input {str(path)!r}: {err}") from None


def read_input(args: argparse.Namespace, channels: int, size: int | None, device):
    """The --input videos as float (N, C, F, h, w) in [-1, 1] on `device`: resized to cover
    `size` x `size` and center-cropped, as the training clips were (None: as they are). A
    different input size or aspect is said, never silently changed."""
    path = Path(args.input)
    frames = _read_frames(path, size)  # (N, F, h, w, C) uint8
    if frames.shape[-1] != channels:
        if channels != 3:
            raise CommandError(f"--input {args.input!r} has {frames.shape[-1]} channels; the "
                               f"model takes {channels}")
        frames = to_rgb(frames)
    header = _input_header(args.input) if size is not None else None
    if header is not None and (header.height, header.width) != (size, size):
        print(f"--input {args.input!r}: {header.width}x{header.height} frames resized to cover "
              f"{size}x{size} and center-cropped, as the model's training clips were")
    return from_uint8(frames).to(device)  # (N, C, F, h, w)


def first_clip(args: argparse.Namespace, pipe, conditions: Conditions):
    """--num videos of the model's own length, sampled with its own sampling settings
    (the given conditions, else its classes in turn; its guidance scale) when there is no
    --input; a latent model's stay latents."""
    return pipe(args.num, sampler=args.sampler, steps=args.steps, **conditions.call(),
                guidance_scale=args.guidance_scale, generator=generator(args, pipe.device),
                decode=False)


def conditioned(sampler: ConditionalSampler, pipe, conditions: Conditions,
                count: int) -> ConditionalSampler:
    """`sampler` with the conditions of `count` videos (none given: the unconditional
    model's empty `vidiff.Cond`)."""
    return replace(sampler, cond=conditions.cond(pipe, count))


def model_input(args: argparse.Namespace, pipe, conditions: Conditions):
    """The given videos in the model's space: --input read at the model's video size (and a
    latent model's encoded), or `first_clip`."""
    if args.input is None:
        return first_clip(args, pipe, conditions)
    shape = pipe.video_shape
    video = read_input(args, shape.channels, shape.size, pipe.device)
    if pipe.autoencoder is None:
        return video
    latent_frames(pipe, video.shape[2], f"--input {args.input!r}")  # before encoding
    return pipe.encode(video)


def temporal_factor(pipe) -> int:
    """Frames per latent frame after the first (1: pixels, or a VAE of single frames)."""
    return 1 if pipe.autoencoder is None else getattr(pipe.autoencoder, "temporal", 1)


def latent_frames(pipe, frames: int, where: str) -> int:
    """The model's frames of a clip of `frames` video frames: a video VAE's 1 + (frames - 1)
    / t latent frames; off its frame rule a `CommandError` that starts with `where` (the
    option that gave them)."""
    if temporal_factor(pipe) == 1:
        return frames
    shape = pipe.video_shape
    try:
        return pipe.autoencoder.latent_shape((shape.channels, frames, *shape.fhw[1:]))[1]
    except ValueError as err:
        raise CommandError(f"{where}: {err}") from None


def video_frames(pipe, frames: int) -> int:
    """The video frames of a clip of `frames` model frames (a video VAE's 1 + t (f - 1))."""
    return 1 + temporal_factor(pipe) * (frames - 1)


def later_frames(pipe, frames: int, option: str, *, whole_clip: bool) -> int:
    """The latent frames of `frames` video frames after a clip's first: a video VAE's later
    latent frames hold t frames each, so `frames` is a multiple of t; frames added to a clip
    (`whole_clip`) keep its frame count on the VAE's rule (CogVideoX: a multiple of 2t)."""
    t, step = temporal_factor(pipe), 1
    if t > 1:
        step = getattr(pipe.autoencoder, "frame_step", t) if whole_clip else t
    if frames % step:
        raise CommandError(f"{option} {frames}: each latent frame after the first holds {t} "
                           f"frames of this model's VAE; give a multiple of {step}")
    return frames // t


def as_video(pipe, out):
    """The model's output as videos (a latent model's decoded)."""
    return out if pipe.autoencoder is None else pipe.decode(out)


def write_output(args: argparse.Namespace, video, what: str, pipe,
                 factor: float = 1.0) -> None:
    """Write `video` (N, C, F, H, W) to --out at `output_fps` and say what was written."""
    write_video(args.out, video.cpu(), fps=output_fps(args, pipe, factor))
    n, _, f, h, w = video.shape
    print(f"wrote {args.out} ({n} videos of {f}x{h}x{w}, {what}, {args.method}"
          f"{'' if args.method == 'replacement' else f' w_r={args.guidance_weight}'}, "
          f"{args.sampler} {args.steps} steps)")


def generator(args: argparse.Namespace, device):
    """The torch.Generator of all the command's noise, seeded by --seed."""
    return torch.Generator(device=device).manual_seed(args.seed)
