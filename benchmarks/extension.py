"""Extend 16-frame clips to 64 frames: reconstruction guidance vs replacement (VDM table 6).

Trains a tiny U-Net on 16-frame bouncing-balls clips (or reuses `--run`), then continues the
first 16 frames of held-out real 64-frame clips to 64 frames, window by window (16 frames,
`--overlap` of them known), with reconstruction guidance (VDM eq. 7, prior-aware) and with the
replacement method. Also shown: real clips, and 16-frame samples concatenated with no
conditioning (the worst case for the boundaries). Metrics on the 64-frame videos:

- FVD-lite (`vidiff.metrics.video_distance`) against real 64-frame clips, on the whole video
  and on the generated frames 16-63 alone;
- ball tracking score (`vidiff.metrics.ball_tracking_score`, 1 = as trackable as real);
- boundary jump: the mean squared frame difference across the first generated frame of each
  window, divided by the one between other consecutive generated frames (1 = seamless), and
  the same for the frame correlation drop (1 - `frame_consistency`).

    python benchmarks/extension.py [--run runs/ext16] [--train-seconds 1500] [--clips 32]

Writes runs/extension/results.json and results.md. VDM reports FVD 136 (reconstruction
guidance) vs 451 (replacement) for 64-frame extensions of a 16-frame UCF101 model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from vidiff.data import make_synthetic
from vidiff.metrics import ball_tracking_score, video_distance
from vidiff.modelio.pipeline import Pipeline
from vidiff.sampling.conditional import ConditionalSampler, window_starts
from vidiff.sampling.samplers import sample
from vidiff.train import load_run_config, train


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/ext16", help="run folder (trained if it has no model)")
    p.add_argument("--train-seconds", type=float, default=1500,
                   help="training budget in CPU seconds (1 thread)")
    p.add_argument("--size", type=int, default=16, help="frame size")
    p.add_argument("--clips", type=int, default=32, help="videos extended per method")
    p.add_argument("--real", type=int, default=256, help="real 64-frame reference clips")
    p.add_argument("--frames", type=int, default=64, help="frames after extension")
    p.add_argument("--overlap", type=int, default=8, help="known frames per window")
    p.add_argument("--weight", type=float, default=2.0, help="w_r of reconstruction guidance")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps per window")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", default="runs/extension", help="results folder")
    return p.parse_args()


WINDOW = 16  # frames of the trained model


def ensure_model(args):
    """Train the 16-frame model unless `args.run` already holds one."""
    if not (Path(args.run) / "checkpoints").exists():
        config = load_run_config(None, [
            f"train.out={args.run}", f"data.frames={WINDOW}", f"data.size={args.size}",
            "model.preset=tiny", "train.steps=100000", f"train.max_seconds={args.train_seconds}",
            "train.budget_clock=cpu", "train.threads=1",  # CPU-time budget: fair when shared
            "train.progress=false", "train.report_to=[]",
            "train.sample_count=4", "train.ckpt_every=0", "train.log_every=100",
        ])
        train(config)
    return Pipeline.from_pretrained(args.run)


def real_clips(args, count: int, seed: int) -> torch.Tensor:
    """`count` real bouncing-balls clips of `args.frames` frames, (N, 3, F, S, S)."""
    data = make_synthetic("bouncing_balls", frames=args.frames, size=args.size, seed=seed,
                          num_videos=count)
    return torch.stack([data[i]["video"] for i in range(count)])


def pair_stats(videos: torch.Tensor):
    """Per consecutive pair (F - 1,): mean squared difference and 1 - correlation ([0, 1])."""
    u = (videos.clamp(-1, 1) + 1) / 2
    b, c, f = u.shape[:3]
    x = u.transpose(1, 2).reshape(b, f, -1)  # (B, F, C*H*W)
    diff = (x[:, 1:] - x[:, :-1]).pow(2).mean((0, 2))
    x = x - x.mean(-1, keepdim=True)
    num = (x[:, 1:] * x[:, :-1]).mean(-1)
    den = (x[:, 1:].pow(2).mean(-1) * x[:, :-1].pow(2).mean(-1)).sqrt() + 1e-6
    return diff, (1 - num / den).mean(0)


def boundary_ratios(videos: torch.Tensor, boundaries: list[int], given: int):
    """(difference, decorrelation) across window boundaries over inside generated frames."""
    diff, decor = pair_stats(videos)
    at = torch.zeros(len(diff), dtype=torch.bool)
    at[[b - 1 for b in boundaries]] = True  # pair (b - 1, b): b is a window's first new frame
    inside = ~at
    inside[: given - 1] = False  # only pairs among generated frames
    return ((diff[at].mean() / diff[inside].mean()).item(),
            (decor[at].mean() / decor[inside].mean()).item())


def evaluate(name, videos, reference, boundaries, given, seconds) -> dict:
    """The table row of one method."""
    gen_part = videos[:, :, given:]
    diff, decor = boundary_ratios(videos, boundaries, given)
    return {
        "method": name,
        "fvd_lite_64": video_distance(reference, videos),
        "fvd_lite_new": video_distance(reference[:, :, given:], gen_part),
        "tracking": ball_tracking_score(videos, reference=reference)["score"],
        "boundary_diff": diff,
        "boundary_decor": decor,
        "seconds": seconds,
    }


def run_methods(args, pipe, clips):
    """{name: (videos, seconds)} for every method."""
    results = {}
    for method in ["reconstruction", "replacement"]:
        cs = ConditionalSampler(pipe.model, pipe.diffusion, pipe.prior, method=method,
                                weight=args.weight, sampler="ddim", steps=args.steps)
        start = time.perf_counter()
        out = cs.extend(clips, args.frames, WINDOW, args.overlap, torch.Generator().manual_seed(1))
        results[method] = (out, time.perf_counter() - start)
        print(f"{method}: {results[method][1]:.0f} s", flush=True)
    start = time.perf_counter()
    g = torch.Generator().manual_seed(1)
    shape = (len(clips), 3, WINDOW, args.size, args.size)
    parts = [sample(pipe.model, shape, diffusion=pipe.diffusion, prior=pipe.prior, sampler="ddim",
                    steps=args.steps, generator=g) for _ in range(args.frames // WINDOW - 1)]
    indep = torch.cat([clips, *parts], dim=2)
    results["independent windows"] = (indep, time.perf_counter() - start)
    return results


def table(rows: list[dict]) -> str:
    head = ("| method | FVD-lite 64 frames | FVD-lite frames 16-63 | tracking score | "
            "boundary diff ratio | boundary decorrelation ratio | seconds |")
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['fvd_lite_64']:.2f} | {r['fvd_lite_new']:.2f} | "
                     f"{r['tracking']:.3f} | {r['boundary_diff']:.2f} | "
                     f"{r['boundary_decor']:.2f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    pipe = ensure_model(args)
    reference = real_clips(args, args.real, seed=1)
    held_out = real_clips(args, args.clips, seed=2)
    clips = held_out[:, :, :WINDOW]  # the given 16 frames
    known = torch.arange(args.frames) < WINDOW
    boundaries = [s + args.overlap for s in window_starts(known, WINDOW, args.overlap)]
    rows = [evaluate("real clips", held_out, reference, boundaries, WINDOW, 0.0)]
    for name, (videos, seconds) in run_methods(args, pipe, clips).items():
        bounds = boundaries if name != "independent windows" else list(
            range(WINDOW, args.frames, WINDOW))
        rows.append(evaluate(name, videos, reference, bounds, WINDOW, seconds))
    text = table(rows)
    meta = (f"{args.clips} clips {args.size}x{args.size}, {WINDOW} -> {args.frames} frames, "
            f"overlap {args.overlap}, w_r {args.weight}, DDIM {args.steps} steps/window, "
            f"prior {pipe.prior!r}, model step {pipe.spec.provenance.step}; "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{args.threads} threads")
    print(text + "\n\n" + meta)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"rows": rows, "setup": meta,
                                                  "args": vars(args)}, indent=2))
    (out / "results.md").write_text(text + "\n\n" + meta + "\n")


if __name__ == "__main__":
    main()
