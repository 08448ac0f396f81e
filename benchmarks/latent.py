"""Pixel-space against latent-space video diffusion at equal CPU time.

1. Trains a small `diffusers.AutoencoderKL` (4x downsampling, 4 latent channels; MSE + a
   small KL term) on frames of the built-in moving shapes at ``--size`` (64), for
   ``--vae-seconds`` of process CPU time, and sets its ``scaling_factor`` to 1 / the latents'
   standard deviation (Stable Diffusion's convention).
2. Trains the same video U-Net preset twice for ``--budget`` process-CPU seconds each: on the
   pixels, and with ``data.autoencoder`` on the latents (encoded once into the latent cache;
   the cache's encoding time is reported apart).
3. Samples ``--num`` clips from each (DDIM ``--steps``; the latent model's decoded) and scores
   them with FVD-lite against held-out real clips.

Prints a table, writes ``OUT/results.json``, ``OUT/results.md`` and ``OUT/latent.png``.

    .venv/bin/python benchmarks/latent.py                        # ~15 min on 2 cores
    .venv/bin/python benchmarks/latent.py --vae-seconds 10 --budget 10 --num 8 --ref-num 16 \\
        --out /tmp/latent                                        # smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import _claims as C
import torch

DATA = "moving_shapes"


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=64, help="frame size in pixels")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--vae-seconds", type=float, default=150.0, help="CPU-s of VAE training")
    p.add_argument("--budget", type=float, default=240.0, help="CPU-s per diffusion run")
    p.add_argument("--preset", default="tiny", help="the video U-Net of both runs")
    p.add_argument("--videos", type=int, default=512, help="training clips (both runs)")
    p.add_argument("--num", type=int, default=32, help="sampled clips per run")
    p.add_argument("--ref-num", type=int, default=128, help="held-out real clips")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/latent")
    p.set_defaults(device="cpu")
    return p.parse_args(argv)


def clips(args, seed: int, count: int) -> torch.Tensor:
    from vidiff.data import make_synthetic

    data = make_synthetic(DATA, frames=args.frames, size=args.size, seed=seed,
                          num_videos=count)
    return torch.stack([data[i]["video"] for i in range(count)])  # (N, 3, F, S, S)


def train_vae(args, folder: Path) -> dict:
    """A small AutoencoderKL on single frames for `args.vae_seconds` of CPU time."""
    import diffusers

    if (folder / "config.json").is_file():
        return json.loads((folder.parent / "vae_facts.json").read_text())
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1, norm_num_groups=16, sample_size=args.size)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    frames = clips(args, 10, 256).transpose(1, 2).reshape(-1, 3, args.size, args.size)
    g = torch.Generator().manual_seed(0)
    start, steps, loss = time.process_time(), 0, float("nan")
    while time.process_time() - start < args.vae_seconds:
        x = frames[torch.randint(0, len(frames), (16,), generator=g)]
        post = vae.encode(x).latent_dist
        recon = vae.decode(post.sample(generator=g)).sample
        total = (recon - x).square().mean() + 1e-4 * post.kl().mean() / x[0].numel()
        opt.zero_grad()
        total.backward()
        opt.step()
        steps, loss = steps + 1, float(total.detach())
    with torch.no_grad():
        z = vae.encode(frames[:128]).latent_dist.mode()
        recon = vae.decode(z).sample
    vae.register_to_config(scaling_factor=float(1 / z.std()))
    vae.save_pretrained(folder)
    facts = {"steps": steps, "loss": loss, "cpu_s": time.process_time() - start,
             "recon_mse": float((recon - frames[:128]).square().mean()),
             "scaling_factor": float(1 / z.std()),
             "parameters": sum(p.numel() for p in vae.parameters())}
    (folder.parent / "vae_facts.json").write_text(json.dumps(facts))
    return facts


def diffusion_run(args, out: Path, extra: list[str]) -> dict:
    budget, _ = C.budget(argparse.Namespace(budget=args.budget, device="cpu"))
    ns = argparse.Namespace(threads=args.threads, device="cpu", overrides=[])
    base = [f"data.source={DATA}", f"data.size={args.size}", f"data.frames={args.frames}",
            f"data.num_videos={args.videos}",
            f"model.preset={args.preset}", "sample.sampler=ddim", f"sample.steps={args.steps}"]
    return C.train_run(ns, out, [*base, *budget, *extra], tag="latent")


def main(argv=None) -> int:
    from vidiff.metrics import reference_stats, video_distance
    from vidiff.modelio.pipeline import Pipeline

    args = _args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = C.start(args, "latent")
    vae = train_vae(args, out / "vae")
    C.log("latent", f"VAE: {vae}")
    runs = {"pixel": diffusion_run(args, out / "pixel", []),
            "latent": diffusion_run(args, out / "latent",
                                    [f"data.autoencoder={out / 'vae'}"])}
    ref = reference_stats(clips(args, 1, args.ref_num))
    rows = {"real clips": {"fvd_lite": float(video_distance(ref, clips(args, 2, args.num)))}}
    for name, facts in runs.items():
        pipe = Pipeline.from_pretrained(facts["out"])
        t0 = time.perf_counter()
        videos = pipe(args.num, generator=torch.Generator().manual_seed(0))
        # the budget is the training loop's CPU time (the latent cache is built before it)
        rows[name] = {"steps": facts["steps"], "cpu_s_per_step": args.budget / facts["steps"],
                      "setup_cpu_s": facts["cpu_s"] - args.budget,
                      "sampling_s": time.perf_counter() - t0,
                      "fvd_lite": float(video_distance(ref, videos)),
                      "parameters": sum(p.numel() for p in pipe.model.parameters()),
                      "clip": list(pipe.clip_shape)}
    lines = ["| run | model clip (C, F, H, W) | steps in budget | CPU-s / step | "
             f"sampling s / {args.num} clips | FVD-lite ↓ |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        if "steps" not in r:
            lines.append(f"| {name} | | | | | {r['fvd_lite']:.1f} |")
            continue
        lines.append(f"| {name} | {tuple(r['clip'])} | {r['steps']} | "
                     f"{r['cpu_s_per_step']:.3f} | {r['sampling_s']:.0f} | {r['fvd_lite']:.1f} |")
    text = "\n".join([f"Machine: {machine}.", f"{DATA} {args.frames}x{args.size}x{args.size}; "
                      f"`{args.preset}` U-Net; {args.budget:.0f} process-CPU s per run; VAE "
                      f"{vae['parameters']:,} parameters, {vae['steps']} steps "
                      f"({vae['cpu_s']:.0f} CPU-s), reconstruction MSE {vae['recon_mse']:.4f}; "
                      f"DDIM {args.steps}, {args.num} clips vs {args.ref_num} held-out.", "",
                      *lines])
    print(text)
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"vae": vae, "rows": rows,
                                                  "args": vars(args)}, indent=2))
    _plot(out / "latent.png", rows)
    return 0


def _plot(path: Path, rows: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in rows if "steps" in rows[n]]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, key, title in zip(axes, ("fvd_lite", "cpu_s_per_step", "sampling_s"),
                              ("FVD-lite (lower is better)", "CPU-s per training step",
                               "sampling s"), strict=True):
        ax.bar(names, [rows[n][key] for n in names], color=["tab:blue", "tab:orange"])
        if key == "fvd_lite":
            ax.axhline(rows["real clips"]["fvd_lite"], color="gray", lw=1, label="real clips")
            ax.legend()
        ax.set_title(title)
    fig.suptitle("pixel vs latent video diffusion at equal CPU time")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot: {path}")


if __name__ == "__main__":
    sys.exit(main())
