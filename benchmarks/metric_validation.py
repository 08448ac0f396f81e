"""Validation table of the weight-free video metrics (vidiff.metrics) on the synthetic data.

For each dataset, a reference set of real clips is compared with a disjoint real set (two of
them, to show the sampling spread) and with corrupted copies of that set at several levels:
frames shuffled (fraction of clips), Gaussian blur (sigma in pixels), pixels replaced by noise
(fraction), additive Gaussian noise (std on the [-1, 1] scale), 8-bit quantization and frozen
clips (the first frame repeated). Columns:

- FVD-lite (`video_distance`) and its appearance / sharpness / motion parts;
- mean frame consistency (correlation of consecutive frames) and flicker (high-frequency share
  of temporal energy);
- for bouncing balls, the tracking score (`ball_tracking_score`): overall score, fraction of
  clips with a constant ball count, the acceleration ratio against the real data, and the
  share of steady frame pairs (`steady_pairs`: same balls, within a few pixels, same colors,
  moving).

    python benchmarks/metric_validation.py [--clips 256] [--size 32] [--frames 16]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from vidiff.data import make_synthetic
from vidiff.io import from_uint8, to_uint8
from vidiff.metrics import (
    ball_tracking_score,
    ball_tracking_stats,
    corrupt,
    flicker,
    frame_consistency,
    reference_stats,
    video_distance,
)

LEVELS = [
    ("shuffle", [0.25, 0.5, 1.0]),
    ("blur", [0.5, 1.0, 2.0]),
    ("noise", [0.05, 0.1, 0.25, 0.5]),
    ("gauss", [0.01, 0.02, 0.05]),
]


def load(name: str, start: int, count: int, size: int, frames: int) -> torch.Tensor:
    ds = make_synthetic(name, size=size, frames=frames)
    return torch.stack([ds[i]["video"] for i in range(start, start + count)])


def fmt(value: float, width: int = 9) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-".rjust(width)
    return (f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}").rjust(width)


def table(name: str, clips: int, size: int, frames: int) -> None:
    balls = name == "bouncing_balls"
    real = load(name, 0, clips, size, frames)
    others = [load(name, clips * k, clips, size, frames) for k in (1, 2)]
    ref = reference_stats(real)
    ref_track = ball_tracking_stats(real) if balls else None

    rows: list[tuple[str, torch.Tensor]] = [
        ("real vs real (set B)", others[0]),
        ("real vs real (set C)", others[1]),
        ("uint8 quantized B", from_uint8(to_uint8(others[0]))),
        ("frozen B (first frame)", others[0][:, :, :1].expand_as(others[0]).contiguous()),
    ]
    for kind, levels in LEVELS:
        for level in levels:
            g = torch.Generator().manual_seed(0)
            rows.append((f"{kind} {level:g}", corrupt(others[0], kind, level, g)))

    head = ["FVD-lite", "appear.", "sharp.", "motion", "consist.", "flicker"]
    if balls:
        head += ["track", "cnt-const", "accel-x", "steady"]
    print(f"\n{name}: {clips} clips per side, {size}x{size}, {frames} frames")
    print(f"{'':24s}" + "".join(h.rjust(10) for h in head))
    print(
        f"{'real (reference set A)':24s}"
        + " " * 40
        + fmt(float(frame_consistency(real).mean()), 10)
        + fmt(float(flicker(real).mean()), 10)
        + (fmt(1.0, 10) + fmt(ref_track["count_constant"], 10) + fmt(1.0, 10)
           + fmt(ref_track["steady_pairs"], 10) if balls else "")
    )
    for label, videos in rows:
        d = video_distance(ref, videos, groups=True)
        cells = [
            d["total"],
            d["appearance"],
            d["sharpness"],
            d["motion"],
            float(frame_consistency(videos).mean()),
            float(flicker(videos).mean()),
        ]
        if balls:
            t = ball_tracking_score(videos, reference=ref_track)
            cells += [t["score"], t["count_constant"], t["accel_ratio"], t["steady_pairs"]]
        print(f"{label:24s}" + "".join(fmt(c, 10) for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=256, help="clips per set")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    for name in ("bouncing_balls", "moving_shapes"):
        table(name, args.clips, args.size, args.frames)
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
