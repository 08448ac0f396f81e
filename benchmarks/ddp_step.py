"""DDP step time with the 1x1 convolutions as matrix products (vidiff's `Conv1x1`) and as the
plain channels-last convolution they replaced, whose weight gradients did not match DDP's
bucket layout (every rank warned "Grad strides do not match bucket view strides").

Each variant trains `--steps` steps under `torchrun --nproc_per_node 2` (gloo on CPU, NCCL on
CUDA) in its own processes, alternating, `--rounds` times; the table gives the median step
time after the first logged interval, and how many stride warnings each run printed.

    python benchmarks/ddp_step.py                          # CPU, small U-Net, 8x32x32, 2x2
    python benchmarks/ddp_step.py --device cuda --preset base --size 64 --frames 16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

LAUNCHER = """
import sys
if sys.argv[1] == "conv":  # the layout before: nn.Conv2d's own channels-last backward
    import torch.nn as nn
    import vidiff.models.blocks as blocks
    blocks.Conv1x1.forward = nn.Conv2d.forward
from vidiff.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_variant(variant: str, args, out: Path) -> tuple[float, int]:
    """(median seconds per step after the first interval, stride warnings printed)."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(LAUNCHER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(args.procs), f.name, variant, "train", "--out", str(out), "--steps",
           str(args.steps), "--preset", args.preset, "--device", args.device,
           "--set", f"data.frames={args.frames}", f"data.size={args.size}",
           f"data.batch_size={args.batch}", "train.progress=false", "train.sample_every=0",
           "train.sample_count=1", "sample.steps=1", f"train.threads={args.threads}",
           "train.log_every=10", "train.ckpt_every=0", "train.resume=never"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONWARNINGS="default")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    os.unlink(f.name)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    times = [1 / r["it_s"] for r in rows[1:]] or [1 / rows[0]["it_s"]]
    return statistics.median(times), proc.stderr.count("Grad strides do not match")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--preset", default="small")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=2, help="videos per process")
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    results: dict[str, list] = {"conv": [], "linear": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for variant in ("conv", "linear"):
                results[variant].append(run_variant(variant, args, Path(tmp) / f"{variant}{r}"))
    print(f"| 1x1 layout | s/step (median of {args.rounds} runs) | stride warnings per run |")
    print("|---|---|---|")
    names = {"conv": "channels-last Conv2d (before)", "linear": "Conv1x1 matmul (now)"}
    for variant, runs in results.items():
        step = statistics.median(t for t, _ in runs)
        print(f"| {names[variant]} | {step:.3f} | {max(w for _, w in runs)} |")
    print(f"\n{args.procs} processes, device {args.device}, preset {args.preset}, "
          f"{args.batch}x3x{args.frames}x{args.size}x{args.size} per process, "
          f"{args.threads} thread(s) each, {args.steps} steps")


if __name__ == "__main__":
    main()
