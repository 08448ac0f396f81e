"""An imported Stable-Diffusion-form U-Net: vidiff's against diffusers' own, same weights.

A `UNet2DConditionModel` in SD 1's form at a CPU-sized width (channels 128/256/256, two
resnets per level, cross-attention to 77 text tokens of width 256) is saved, loaded into
vidiff (`load_diffusers_unet`), and both run a train step (forward, backward) and a forward
on the same 8 latents of 32x32; then vidiff's inflated model on 8 frames of one video (the
temporal attention's cost). Alternating rounds, best of 3 per round, one process.

    python benchmarks/sd_unet_speed.py [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from vidiff.models import load_diffusers_unet

CONFIG = dict(sample_size=32, in_channels=4, out_channels=4, layers_per_block=2,
              block_out_channels=(128, 256, 256), cross_attention_dim=256,
              down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
              up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
              attention_head_dim=8)


def best(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def train_step(forward):
    forward().square().mean().backward()


def main() -> None:
    import diffusers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ref = diffusers.UNet2DConditionModel(**CONFIG).train()
    with tempfile.TemporaryDirectory() as folder:
        ref.save_pretrained(Path(folder))
        ours = load_diffusers_unet(folder, inflate=False).train()
        video = load_diffusers_unet(folder).train()
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(8, 4, 32, 32, generator=g), torch.randint(0, 1000, (8,), generator=g)
    text = torch.randn(8, 77, 256, generator=g)
    clip = x.transpose(0, 1)[None].contiguous()  # (8, 4, H, W) -> (1, 4, 8, H, W): one video
    rows = {k: [] for k in ("diffusers", "vidiff", "vidiff inflated")}
    for _ in range(args.rounds):
        rows["diffusers"].append((
            best(lambda: train_step(lambda: ref(x, t, encoder_hidden_states=text).sample)),
            best(lambda: _no_grad(lambda: ref(x, t, encoder_hidden_states=text)))))
        rows["vidiff"].append((best(lambda: train_step(lambda: ours(x, t, text_emb=text))),
                               best(lambda: _no_grad(lambda: ours(x, t, text_emb=text)))))
        rows["vidiff inflated"].append((
            best(lambda: train_step(lambda: video(clip, t[:1], text_emb=text[:1]))),
            best(lambda: _no_grad(lambda: video(clip, t[:1], text_emb=text[:1])))))
    base = min(rows["diffusers"])
    params = sum(p.numel() for p in ref.parameters()) / 1e6
    print(f"SD-form U-Net, {params:.1f}M parameters; 8 latents 4x32x32 (inflated: one video of "
          f"8 frames), text 77x256; {args.threads} threads; best of {args.rounds} rounds\n")
    print("| model | train step (s) | forward (s) | train vs diffusers | forward vs diffusers |")
    print("|---|---|---|---|---|")
    for name, times in rows.items():
        train, fwd = min(t[0] for t in times), min(t[1] for t in times)
        print(f"| {name} | {train:.3f} | {fwd:.3f} | {train / base[0]:.2f} | "
              f"{fwd / base[1]:.2f} |")


def _no_grad(fn):
    with torch.no_grad():
        return fn()


if __name__ == "__main__":
    main()
