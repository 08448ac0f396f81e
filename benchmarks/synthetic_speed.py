"""How fast the built-in synthetic datasets make clips, against how fast the default run's
training step consumes them (a ratio on the same machine, the same thread count): a ratio
well above 1 means data generation never holds training up with `data.workers = 0`.

    .venv/bin/python benchmarks/synthetic_speed.py            # ~30 s on 2 cores
"""

from __future__ import annotations

import argparse
import time

import torch

from vidiff.data.synthetic import make_synthetic
from vidiff.diffusion.losses import diffusion_loss
from vidiff.diffusion.process import build_process
from vidiff.models.presets import build_unet
from vidiff.train.config import RunConfig


def clips_per_second(name: str, frames: int, size: int, count: int) -> float:
    ds = make_synthetic(name, frames=frames, size=size)
    ds[0]  # one-time set-up
    start = time.perf_counter()
    for i in range(count):
        ds[i]
    return count / (time.perf_counter() - start)


def videos_per_second(config: RunConfig, steps: int) -> float:
    """Training videos per second of the default run's network (forward + backward)."""
    d = config.data
    net = build_unet(config.model.preset or "mini", num_classes=8)
    process = build_process(config.diffusion)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(d.batch_size, 3, d.frames, d.size, d.size, generator=g) * 2 - 1
    labels = torch.zeros(d.batch_size, dtype=torch.long)

    def step():
        t = process.sample_t(d.batch_size, generator=g)
        noise = torch.randn(x0.shape, generator=g)
        loss = diffusion_loss(net, process, x0, t, noise, cond={"class_labels": labels})
        opt.zero_grad()
        loss.mean().backward()
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * d.batch_size / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)
    config = RunConfig()
    d = config.data
    train = videos_per_second(config, args.steps)
    print(f"| dataset | clips / s ({d.frames}x{d.size}x{d.size}) | training consumes / s | "
          f"ratio |")
    print("|---|---|---|---|")
    for name in ("bouncing_balls", "moving_shapes"):
        made = clips_per_second(name, d.frames, d.size, args.clips)
        print(f"| {name} | {made:.0f} | {train:.1f} | {made / train:.0f}x |")
    print(f"\n{torch.get_num_threads()} torch thread(s), torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
