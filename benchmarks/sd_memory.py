"""Training memory of Stable Diffusion 1.5 made into a video model, counted without a GPU.

The issue's target: SD 1.5's U-Net, inflated (a temporal attention after each of its 16
spatial transformers), trained on 16 frames of 256 x 256 (latents 16 x 32 x 32), batch 1, bf16
autocast, must fit a 24 GB GPU. This script builds that network on PyTorch's meta device
(shapes only: no weights, no compute, no download; the config is SD 1.5's published
unet/config.json), counts its parameters, and counts the bytes autograd saves for the
backward pass by running the forward under `saved_tensors_hooks`:

- attention is counted as the GPU runs it (flash / memory-efficient SDPA keeps q, k, v, the
  output and a float32 log-sum-exp per query, not the L x L matrix the CPU math kernel keeps);
- the model runs in bf16 like autocast's activations; saved weights stand for autocast's bf16
  weight copies; GroupNorm32 keeps its float32 input, as it does on the GPU;
- gradient checkpointing (vidiff's, per layer: `UNet.set_gradient_checkpointing`) keeps each
  layer's input and, during the backward pass, one layer's saved tensors at a time: counted
  as the sum of the layer inputs plus the largest layer's saves.

Then the total: fp32 weights, gradients and AdamW moments of the trained parameters, the EMA
(frozen parameters are shared with the model, `vidiff.train.ema`), the CLIP-L text encoder,
and the activations. Run: python benchmarks/sd_memory.py [--frames 16] [--latent 32]. What it
cannot see: the CUDA context (~0.5 GB), allocator fragmentation, cuDNN workspaces. With
``--measure`` on a CUDA machine it also runs real training steps of the same network (random
weights) and reports `torch.cuda.max_memory_allocated` beside the count; the GPU check
(benchmarks/gpu_check.sh) does that when a GPU is lent.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch
import torch.nn.functional as F

from vidiff.models import Stage, UNet, is_temporal_parameter
from vidiff.models.diffusers_sd import RELEASED_CONFIGS, sd_config_to_unet_config

SD15 = RELEASED_CONFIGS["sd-1.5"]  # runwayml/stable-diffusion-v1-5 unet/config.json
CLIP_L_PARAMS = 123_060_480  # openai/clip-vit-large-patch14's text model
GB = 2**30


class _FlashCount(torch.autograd.Function):
    """SDPA as a fused kernel saves: q, k, v, the output and a float32 log-sum-exp."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = torch.empty_like(q)
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):  # never called: the count needs the forward only
        raise NotImplementedError


def _fused_sdpa(q, k, v, attn_mask=None, **_):
    return _FlashCount.apply(q, k, v)


def activation_bytes(model: UNet, frames: int, latent: int, text_len: int):
    """(bytes saved without checkpointing, bytes with per-layer checkpointing)."""
    cfg = model.config
    x = torch.empty(1, cfg.in_channels, frames, latent, latent, device="meta",
                    dtype=torch.bfloat16)
    text = torch.empty(1, text_len, cfg.text_dim, device="meta", dtype=torch.bfloat16)
    t = torch.zeros(1, dtype=torch.long, device="meta")
    saved, inputs, per_layer = [0], [0], []

    def pack(tensor):
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    def before(module, args):
        inputs[0] += args[0].numel() * args[0].element_size()
        module._mark = saved[0]

    def after(module, args, out):
        per_layer.append(saved[0] - module._mark)

    hooks = []
    for stage in (m for m in model.modules() if isinstance(m, Stage)):
        for layer in stage.layers:
            hooks += [layer.register_forward_pre_hook(before),
                      layer.register_forward_hook(after)]
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _fused_sdpa
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(x, t, text_emb=text)
    finally:
        F.scaled_dot_product_attention = original
        for h in hooks:
            h.remove()
    outside = saved[0] - sum(per_layer)  # conv_in, embeddings, the output head
    return saved[0], inputs[0] + max(per_layer) + outside


def measured_peak(cfg, trainable: str, checkpointing: bool, frames: int, latent: int) -> float:
    """GB: the peak CUDA memory of two AdamW steps (bf16 autocast, EMA) of `cfg`'s network
    with random weights, trained on `trainable` parameters."""
    from vidiff.train.ema import EMA

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    with torch.device("cuda"):
        model = UNet(replace(cfg, gradient_checkpointing=checkpointing))
    for name, p in model.named_parameters():
        p.requires_grad_(trainable == "all" or is_temporal_parameter(name))
    ema = EMA(model, 0.999)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    text_encoder = torch.empty(CLIP_L_PARAMS, device="cuda")  # its weights' place
    g = torch.Generator("cuda").manual_seed(0)
    for step in range(2):
        x = torch.randn(1, 4, frames, latent, latent, device="cuda", generator=g)
        text = torch.randn(1, 77, cfg.text_dim, device="cuda", generator=g)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(x, torch.tensor([500], device="cuda"), text_emb=text).float().square()
        loss.mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(model, step + 1)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / GB
    del model, ema, opt, text_encoder
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--latent", type=int, default=32, help="latent size (pixels / 8)")
    parser.add_argument("--measure", action="store_true",
                        help="also measure the peak on the CUDA GPU (random weights)")
    args = parser.parse_args()
    cfg = replace(sd_config_to_unet_config(SD15), temporal=True, null_text_tokens=77)
    with torch.device("meta"):
        model = UNet(cfg).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    temporal = sum(p.numel() for n, p in model.named_parameters() if is_temporal_parameter(n))
    print(f"SD 1.5 U-Net inflated: {params / 1e6:.1f}M parameters, {temporal / 1e6:.1f}M of "
          f"them temporal; {args.frames} frames of {args.latent}x{args.latent} latents, "
          f"batch 1, bf16 autocast\n")
    measure = args.measure and torch.cuda.is_available()
    print("| trained        | checkpointing | weights | grads + AdamW | EMA  | text enc. "
          "| activations | total (GB) |" + (" measured peak (GB) |" if measure else ""))
    print("|----------------|---------------|---------|---------------|------|-----------"
          "|-------------|------------|" + ("--------------------|" if measure else ""))
    for trainable in ("temporal", "all"):
        for name, p in model.named_parameters():
            p.requires_grad_(trainable == "all" or is_temporal_parameter(name))
        plain, checkpointed = activation_bytes(model, args.frames, args.latent, 77)
        trained = params if trainable == "all" else temporal
        weights, optim, ema = 4 * params, 12 * trained, 4 * trained
        text = 4 * CLIP_L_PARAMS
        for ckpt, act in (("off", plain), ("on", checkpointed)):
            total = weights + optim + ema + text + act
            peak = ""
            if measure:
                gb = measured_peak(cfg, trainable, ckpt == "on", args.frames, args.latent)
                peak = f" {gb:18.2f} |"
            print(f"| {trainable:<14} | {ckpt:<13} | {weights / GB:7.2f} | {optim / GB:13.2f} "
                  f"| {ema / GB:4.2f} | {text / GB:9.2f} | {act / GB:11.2f} | "
                  f"{total / GB:10.2f} |{peak}")


if __name__ == "__main__":
    main()
