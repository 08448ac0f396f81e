"""Share of sampling wall time spent outside the denoiser: vidiff vs diffusers' schedulers.

For 50-step DDIM and 1000-step DDPM with a realistic denoiser (vidiff's U-Net), time the whole
sampling loop and the time inside denoiser calls; the rest is the sampler's overhead (noise
draws from the prior, the update arithmetic, bookkeeping). diffusers' DDIMScheduler and
DDPMScheduler run the same denoiser in a plain loop as the peer. Goal: vidiff's overhead < 2%.

    python benchmarks/sampler_overhead.py [--preset small] [--shape 2,3,8,32,32] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

import vidiff
from vidiff.models import build_unet


class TimedDenoiser:
    """Wraps a denoiser and accumulates the wall time spent inside it."""

    def __init__(self, model, device):
        self.model, self.device, self.seconds, self.calls = model, device, 0.0, 0

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def __call__(self, x, t, **cond):
        self._sync()
        start = time.perf_counter()
        out = self.model(x, t, **cond)
        self._sync()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def run_vidiff(den, shape, sampler, steps, prior, device):
    diffusion = vidiff.Diffusion()
    g = torch.Generator(device=device).manual_seed(0)
    den.seconds, den.calls = 0.0, 0
    start = time.perf_counter()
    vidiff.sample(
        den,
        shape,
        diffusion=diffusion,
        prior=prior,
        sampler=sampler,
        steps=steps,
        generator=g,
        device=device,
        spacing="leading",
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, den.seconds, den.calls


def run_diffusers(den, shape, sampler, steps, device):
    import diffusers

    cls = diffusers.DDIMScheduler if sampler == "ddim" else diffusers.DDPMScheduler
    sched = cls(num_train_timesteps=1000, beta_schedule="linear")
    g = torch.Generator(device=device).manual_seed(0)
    den.seconds, den.calls = 0.0, 0
    start = time.perf_counter()
    sched.set_timesteps(steps)
    x = torch.randn(shape, generator=g, device=device)
    with torch.no_grad():
        for t in sched.timesteps:
            out = den(x, t.expand(shape[0]).to(device))
            x = sched.step(out, t, x, generator=g).prev_sample
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, den.seconds, den.calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="small", help="vidiff U-Net preset of the denoiser")
    parser.add_argument("--shape", default="2,3,8,32,32", help="B,C,F,H,W")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ddpm-steps", type=int, default=1000)
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--prior", default="mixed", help="vidiff noise prior")
    parser.add_argument("--no-peer", action="store_true", help="skip diffusers")
    args = parser.parse_args()
    device = torch.device(args.device)
    shape = tuple(int(v) for v in args.shape.split(","))
    model = build_unet(args.preset).to(device).eval()
    den = TimedDenoiser(lambda x, t, **c: model(x, t, **c), device)
    prior = vidiff.noise_prior(args.prior)
    with torch.no_grad():
        den(
            torch.zeros(shape, device=device),
            torch.zeros(shape[0], dtype=torch.int64, device=device),
        )  # warm up
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    print(f"denoiser: vidiff U-Net {args.preset!r}, input {shape}\n")
    print("| sampler | steps | library | total (s) | in denoiser (s) | overhead (s) | share |")
    print("|---|---|---|---|---|---|---|")
    for sampler, steps in [("ddim", args.ddim_steps), ("ddpm", args.ddpm_steps)]:
        runs = [
            (
                "vidiff (" + args.prior + " prior)",
                run_vidiff(den, shape, sampler, steps, prior, device),
            )
        ]
        if not args.no_peer:
            runs.append(("diffusers", run_diffusers(den, shape, sampler, steps, device)))
        for name, (total, inside, calls) in runs:
            assert calls == steps, (name, calls)
            over = total - inside
            print(
                f"| {sampler} | {steps} | {name} | {total:.2f} | {inside:.2f} | {over:.3f} | "
                f"{100 * over / total:.2f}% |"
            )


if __name__ == "__main__":
    main()
