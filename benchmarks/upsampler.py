"""Super-resolution: a conditioned upsampler vs an unconditional model with guidance.

Trains two tiny models on bouncing balls (4 frames of 16x16, `--steps` steps each, same seeds
and data): an upsampler conditioned on the 8x8 average-pooled clip (``data.lowres_size=8``)
and an ordinary unconditional model. Then upsamples ``--clips`` held-out clips (dataset seed
99) from 8x8 to 16x16 with DDIM ``--sample-steps`` and reports, per method, the MSE of
``downsample(output)`` vs the low-res input (consistency, in [-1, 1] units) and the MSE of
the output vs the true 16x16 clip. The unconditional model is guided through the
downsampling (VDM eq. 7, weight w_r); the upsampler runs alone (w_r = 0) or guided too.
"nearest" is the pixel-repeated input (consistent by construction).

    .venv/bin/python benchmarks/upsampler.py                     # ~1.5 min on 2 CPU cores
    .venv/bin/python benchmarks/upsampler.py --steps 1000 --clips 16

Writes runs/upsampler/results.json and results.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _train_helpers import tiny_config  # noqa: E402

from vidiff.modelio.pipeline import Pipeline  # noqa: E402
from vidiff.sampling.conditional import ConditionalSampler, downsample, upsample_nearest  # noqa: E402
from vidiff.train.data import build_dataset  # noqa: E402
from vidiff.train.trainer import train  # noqa: E402


def _args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=300, help="training steps per model")
    p.add_argument("--clips", type=int, default=8, help="held-out clips to upsample")
    p.add_argument("--sample-steps", type=int, default=20, help="DDIM steps")
    p.add_argument("--out", default="runs/upsampler", help="results folder")
    return p.parse_args()


def _trained(out: Path, steps: int, *extra: str):
    if not (out / "checkpoints").exists():
        train(tiny_config(out, *extra, "train.sample_count=1", "train.resume=never",
                          steps=steps))
    return Pipeline.from_pretrained(out)


def _upsample(pipe, low, weight, steps):
    cs = ConditionalSampler(pipe.model, pipe.diffusion, pipe.prior, weight=weight,
                            sampler="ddim", steps=steps)
    g = torch.Generator().manual_seed(0)
    if pipe.spec.conditioning.lowres_size is not None:
        frames = pipe.spec.shape.frames
        return cs.upsample_conditioned(low, 2, frames, frames // 2, g)
    return cs.upsample_guided(low, 2, g)


def main() -> None:
    args = _args()
    torch.set_num_threads(1)
    out = Path(args.out)
    cond = _trained(out / f"cond_{args.steps}", args.steps, "data.lowres_size=8")
    plain = _trained(out / f"plain_{args.steps}", args.steps)
    data = build_dataset(replace(tiny_config(out).data, seed=99))  # clips neither has seen
    truth = torch.stack([data[i]["video"] for i in range(args.clips)])  # (N, C, F, 16, 16)
    low = downsample(truth, 2)  # (N, C, F, 8, 8)
    rows = [("nearest (pixel repeat)", "-", upsample_nearest(low, 2))]
    for name, pipe, weights in (("upsampler (conditioned)", cond, (0.0, 4.0)),
                                ("unconditional + guidance", plain, (4.0, 16.0))):
        rows += [(name, w, _upsample(pipe, low, w, args.sample_steps)) for w in weights]
    results = [{"method": name, "w_r": w,
                "mse_lowres": (downsample(video, 2) - low).square().mean().item(),
                "mse_highres": (video - truth).square().mean().item()}
               for name, w, video in rows]
    lines = [f"Upsampling {args.clips} held-out bouncing-balls clips 8x8 -> 16x16 (4 frames), "
             f"models trained {args.steps} steps, DDIM {args.sample_steps} steps, "
             f"{platform.processor() or platform.machine()}, torch {torch.__version__}", "",
             "| method | w_r | MSE downsample(out) vs input | MSE out vs true 16x16 |",
             "|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['w_r']} | {r['mse_lowres']:.4f} | {r['mse_highres']:.4f} |"
              for r in results]
    text = "\n".join(lines)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results},
                                                 indent=2))
    (out / "results.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
