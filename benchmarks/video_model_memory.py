"""Training memory of today's open video transformers at full size, counted without a GPU.

Each row is one training recipe (LoRA or full fine-tuning) of a diffusers 0.42.1 video
transformer built from its released checkpoint's config.json (written out below), with
gradient checkpointing on (diffusers' per-block `enable_gradient_checkpointing`):

- LoRA (peft `inject_adapter_in_model`, alpha = rank) on the attention projections to_q,
  to_k, to_v, to_out.0 (Wan also its feed-forward ffn.net.0.proj and ffn.net.2); the base is
  frozen in bf16 (the class's `_keep_in_fp32_modules` stay float32, as `from_pretrained(...,
  torch_dtype=torch.bfloat16)` keeps them), the LoRA weights, their gradients and AdamW's two
  moments are float32;
- full fine-tuning: float32 master weights, gradients and AdamW moments (16 bytes a parameter);
- one step: bf16 autocast forward, float32 MSE loss, backward, AdamW (`foreach`) step.

The count (benchmarks/_memory.py) builds the model on the meta device, materialises it as fake
tensors (`FakeTensorMode`: shapes only, nothing allocated) and runs a steady-state training
step under a dispatch mode that adds each new storage's bytes and takes them off when it is
freed; the peak is the largest live total. Attention is counted as a fused GPU kernel
(FlashAttention-2 / memory-efficient SDPA): it keeps q, k, v, the output and a float32
log-sum-exp per query, never the L x L matrix that the CPU math path would materialise.
Autocast runs as CPU autocast, whose cast lists differ from CUDA's in a few ops (CUDA keeps
layer_norm in float32, for instance); the CUDA measurement shows by how much that matters.

The text encoder and the VAE are not in memory: training reads cached text embeddings and
latents. Not counted: the CUDA context (~0.5 GiB), allocator rounding and fragmentation,
cuBLAS workspaces, kernel-internal buffers (the flash backward's float32 dq accumulator).

On a CUDA machine the Wan 1.3B LoRA row is also measured: the same model with random weights,
a warm-up step, then `torch.cuda.max_memory_allocated()` over one step (bf16 autocast).

    python benchmarks/video_model_memory.py [--recipes wan-1.3b-lora-r32,...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _memory import GIB, count_training_step, train_step  # noqa: E402

# --- the released checkpoints' transformer/config.json -----------------------------------------
# Wan-AI/Wan2.1-T2V-1.3B-Diffusers, transformer/config.json
WAN_1_3B = {
    "patch_size": (1, 2, 2),  # (t, h, w) patch of the latent
    "num_attention_heads": 12,  # heads; width 12 x 128 = 1536
    "attention_head_dim": 128,  # channels per head
    "in_channels": 16,  # latent channels in
    "out_channels": 16,  # latent channels out (velocity)
    "text_dim": 4096,  # umT5-XXL embedding width
    "freq_dim": 256,  # sinusoidal timestep features
    "ffn_dim": 8960,  # feed-forward hidden width
    "num_layers": 30,  # transformer blocks
    "cross_attn_norm": True,  # LayerNorm before the text cross-attention
    "qk_norm": "rms_norm_across_heads",  # RMSNorm of q and k over all heads
    "eps": 1e-6,  # norm epsilon
    "image_dim": None,  # no CLIP image input (text-to-video)
    "added_kv_proj_dim": None,  # no image key/value projections
    "rope_max_seq_len": 1024,  # rotary table length per axis
}
# Wan-AI/Wan2.1-T2V-14B-Diffusers, transformer/config.json (the 1.3B's with these changes)
WAN_14B = {
    **WAN_1_3B,
    "num_attention_heads": 40,  # heads; width 40 x 128 = 5120
    "ffn_dim": 13824,  # feed-forward hidden width
    "num_layers": 40,  # transformer blocks
}
# Lightricks/LTX-Video (the 2B model, v0.9), transformer/config.json
LTX_VIDEO = {
    "in_channels": 128,  # latent channels (the VAE's 32x32x8 patches)
    "out_channels": 128,  # latent channels out
    "patch_size": 1,  # spatial patch (the VAE patchifies already)
    "patch_size_t": 1,  # temporal patch
    "num_attention_heads": 32,  # heads; width 32 x 64 = 2048
    "attention_head_dim": 64,  # channels per head
    "cross_attention_dim": 2048,  # text tokens' width in cross-attention
    "num_layers": 28,  # transformer blocks
    "activation_fn": "gelu-approximate",  # feed-forward activation (hidden 4 x 2048)
    "qk_norm": "rms_norm_across_heads",  # RMSNorm of q and k
    "norm_elementwise_affine": False,  # block norms without weights
    "norm_eps": 1e-6,  # norm epsilon
    "caption_channels": 4096,  # T5-XXL embedding width
    "attention_bias": True,  # biases in q, k, v
    "attention_out_bias": True,  # bias in the output projection
}
# THUDM/CogVideoX-2b, transformer/config.json
COGVIDEOX_2B = {
    "num_attention_heads": 30,  # heads; width 30 x 64 = 1920
    "attention_head_dim": 64,  # channels per head
    "in_channels": 16,  # latent channels in
    "out_channels": 16,  # latent channels out
    "flip_sin_to_cos": True,  # timestep embedding layout
    "freq_shift": 0,  # timestep embedding shift
    "time_embed_dim": 512,  # timestep embedding width
    "text_embed_dim": 4096,  # T5-XXL embedding width
    "num_layers": 30,  # transformer blocks
    "dropout": 0.0,  # no dropout
    "attention_bias": True,  # biases in q, k, v
    "sample_width": 90,  # latent width of 720 px (positional table)
    "sample_height": 60,  # latent height of 480 px
    "sample_frames": 49,  # frames the positional table is for
    "patch_size": 2,  # spatial patch
    "temporal_compression_ratio": 4,  # the VAE's
    "max_text_seq_length": 226,  # text tokens
    "activation_fn": "gelu-approximate",  # feed-forward activation (hidden 4 x 1920)
    "timestep_activation_fn": "silu",  # timestep MLP activation
    "norm_elementwise_affine": True,  # LayerNorms with weights
    "norm_eps": 1e-5,  # norm epsilon
    "spatial_interpolation_scale": 1.875,  # sin-cos positional table scale
    "temporal_interpolation_scale": 1.0,  # its temporal scale
    "use_rotary_positional_embeddings": False,  # 2b: sin-cos positions, no rotary
    "use_learned_positional_embeddings": False,  # nor learned ones
}
# THUDM/CogVideoX-5b, transformer/config.json (the 2b's with these changes)
COGVIDEOX_5B = {
    **COGVIDEOX_2B,
    "num_attention_heads": 48,  # heads; width 48 x 64 = 3072
    "num_layers": 42,  # transformer blocks
    "use_rotary_positional_embeddings": True,  # 3D rotary positions instead of sin-cos
}

ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass(frozen=True)
class VideoModel:
    """A video transformer family: its class, config and latent / text shapes."""

    checkpoint: str  # the released checkpoint the config is from
    cls_name: str  # the diffusers class
    config: dict  # its config.json
    time_ratio: int  # the VAE's temporal compression (latent frames 1 + (F - 1) / ratio)
    space_ratio: int  # its spatial compression
    patch: int  # the transformer's spatial patch (latent sizes must divide by it)
    latent_channels: int  # channels of the latent
    text_tokens: int  # cached text embedding: tokens
    text_dim: int  # and width
    lora_targets: tuple[str, ...]  # peft target_modules
    batch: Callable  # (model, recipe, device, generator) -> the training batch
    forward: Callable  # (network, batch) -> prediction


@dataclass(frozen=True)
class Recipe:
    """One training configuration (a row of the table)."""

    model: str  # a MODELS name
    method: str  # "lora" or "full"
    rank: int  # LoRA rank (0: full fine-tuning)
    height: int  # pixels
    width: int  # pixels
    frames: int  # video frames
    batch: int  # videos per step


def _tensor(shape, dtype, device, g: torch.Generator | None) -> torch.Tensor:
    """`torch.empty` for the count (fake tensors carry no values); with a generator, random
    stand-ins for latents, embeddings and targets."""
    if g is None:
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.randn(shape, dtype=dtype, device=device, generator=g)  # not diffusion noise


def latent_shape(model: VideoModel, recipe: Recipe) -> tuple[int, int, int]:
    """(frames, height, width) of the latent of `recipe`'s clip."""
    t, s = model.time_ratio, model.space_ratio
    if (recipe.frames - 1) % t:
        raise ValueError(f"frames: {recipe.frames} is not 1 + a multiple of {t} ({recipe.model})")
    for key in ("height", "width"):
        if getattr(recipe, key) % (s * model.patch):
            raise ValueError(f"{key}: {getattr(recipe, key)} is not a multiple of "
                             f"{s * model.patch} ({recipe.model})")
    return 1 + (recipe.frames - 1) // t, recipe.height // s, recipe.width // s


def _batch(model: VideoModel, recipe: Recipe, shape, device, generator) -> dict:
    """The latents `x` of `shape`, a target like them, the text embeddings, a timestep."""
    x = _tensor(shape, torch.bfloat16, device, generator)
    text = _tensor((recipe.batch, model.text_tokens, model.text_dim), torch.bfloat16, device,
                   generator)
    t = torch.full((recipe.batch,), 500, dtype=torch.long, device=device)  # a timestep
    return {"x": x, "target": _tensor(shape, torch.bfloat16, device, generator), "text": text,
            "t": t}


def _wan_batch(model, recipe, device, generator=None) -> dict:
    f, h, w = latent_shape(model, recipe)
    return _batch(model, recipe, (recipe.batch, model.latent_channels, f, h, w), device,
                  generator)


def _wan_forward(net, b):
    return net(b["x"], b["t"], b["text"], return_dict=False)[0]


def _cog_batch(model, recipe, device, generator=None) -> dict:
    f, h, w = latent_shape(model, recipe)
    batch = _batch(model, recipe, (recipe.batch, f, model.latent_channels, h, w), device,
                   generator)  # CogVideoX takes (B, F', C, H', W')
    cfg = model.config
    if cfg["use_rotary_positional_embeddings"]:  # as CogVideoXPipeline prepares them
        from diffusers.models.embeddings import get_3d_rotary_pos_embed
        from diffusers.pipelines.cogvideo.pipeline_cogvideox import (
            get_resize_crop_region_for_grid,
        )

        p = cfg["patch_size"]
        grid = (h // p, w // p)
        crops = get_resize_crop_region_for_grid(grid, cfg["sample_width"] // p,
                                                cfg["sample_height"] // p)
        batch["rotary"] = get_3d_rotary_pos_embed(
            embed_dim=cfg["attention_head_dim"], crops_coords=crops, grid_size=grid,
            temporal_size=f, device=device)
    return batch


def _cog_forward(net, b):
    return net(b["x"], b["text"], b["t"], image_rotary_emb=b.get("rotary"), return_dict=False)[0]


def _ltx_batch(model, recipe, device, generator=None) -> dict:
    f, h, w = latent_shape(model, recipe)
    batch = _batch(model, recipe, (recipe.batch, f * h * w, model.latent_channels), device,
                   generator)  # (B, F'H'W', C): LTX takes the latent packed into tokens
    mask = torch.ones(recipe.batch, model.text_tokens, device=device)
    # rope scale as LTXPipeline sets it: (VAE time ratio / 25 fps, space ratio, space ratio)
    scale = (model.time_ratio / 25, model.space_ratio, model.space_ratio)
    return {**batch, "mask": mask, "size": (f, h, w), "rope_scale": scale}


def _ltx_forward(net, b):
    f, h, w = b["size"]
    return net(b["x"], b["text"], b["t"], b["mask"], num_frames=f, height=h, width=w,
               rope_interpolation_scale=b["rope_scale"], return_dict=False)[0]


_WAN = dict(cls_name="WanTransformer3DModel", time_ratio=4, space_ratio=8, patch=2,
            latent_channels=16, text_tokens=512, text_dim=4096,
            lora_targets=(*ATTENTION, "ffn.net.0.proj", "ffn.net.2"),
            batch=_wan_batch, forward=_wan_forward)
_COG = dict(cls_name="CogVideoXTransformer3DModel", time_ratio=4, space_ratio=8, patch=2,
            latent_channels=16, text_tokens=226, text_dim=4096, lora_targets=ATTENTION,
            batch=_cog_batch, forward=_cog_forward)
MODELS = {
    "wan-1.3b": VideoModel("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", config=WAN_1_3B, **_WAN),
    "wan-14b": VideoModel("Wan-AI/Wan2.1-T2V-14B-Diffusers", config=WAN_14B, **_WAN),
    "cogvideox-2b": VideoModel("THUDM/CogVideoX-2b", config=COGVIDEOX_2B, **_COG),
    "cogvideox-5b": VideoModel("THUDM/CogVideoX-5b", config=COGVIDEOX_5B, **_COG),
    "ltx-video": VideoModel(
        "Lightricks/LTX-Video", "LTXVideoTransformer3DModel", LTX_VIDEO, time_ratio=8,
        space_ratio=32, patch=1, latent_channels=128, text_tokens=128, text_dim=4096,
        lora_targets=ATTENTION, batch=_ltx_batch, forward=_ltx_forward),
}

RECIPES = {
    "wan-1.3b-lora-r32": Recipe("wan-1.3b", "lora", 32, 480, 832, 81, 1),
    "wan-1.3b-lora-r16-b4": Recipe("wan-1.3b", "lora", 16, 480, 832, 81, 4),
    "wan-1.3b-full": Recipe("wan-1.3b", "full", 0, 480, 832, 81, 1),
    "wan-14b-lora-r32": Recipe("wan-14b", "lora", 32, 480, 832, 81, 1),
    "cogvideox-2b-lora-r64": Recipe("cogvideox-2b", "lora", 64, 480, 720, 49, 1),
    "cogvideox-5b-lora-r64": Recipe("cogvideox-5b", "lora", 64, 480, 720, 49, 1),
    "ltx-video-lora-r32": Recipe("ltx-video", "lora", 32, 512, 768, 97, 1),
}
MEASURED = "wan-1.3b-lora-r32"  # the row measured on CUDA
BUDGET_GIB = 24  # the target card (RTX 3090 / 4090: 24 GiB)


def build(spec: VideoModel, recipe: Recipe) -> torch.nn.Module:
    """`recipe`'s network of family `spec` on the meta device: LoRA injected, trainable flags
    and dtypes set, gradient checkpointing on, train mode."""
    import diffusers
    from peft import LoraConfig, inject_adapter_in_model

    if recipe.method not in ("lora", "full"):
        raise ValueError(f"method: {recipe.method!r} is not 'lora' or 'full'")
    cls = getattr(diffusers, spec.cls_name)
    with torch.device("meta"):
        net = cls(**spec.config)
        if recipe.method == "lora":
            lora = LoraConfig(r=recipe.rank, lora_alpha=recipe.rank,
                              target_modules=list(spec.lora_targets))
            net = inject_adapter_in_model(lora, net)
    keep = tuple(cls._keep_in_fp32_modules or ())
    for name, p in net.named_parameters():
        trained = recipe.method == "full" or "lora_" in name
        p.requires_grad_(trained)
        fp32 = trained or any(m in name.split(".") for m in keep)  # diffusers' keep rule
        p.data = p.data.to(torch.float32 if fp32 else torch.bfloat16)
    net.enable_gradient_checkpointing()
    return net.train()


def count(spec: VideoModel, recipe: Recipe, name: str = "") -> dict:
    """The counted memory of `recipe` on family `spec`, as a table row."""
    start = time.perf_counter()
    step = count_training_step(build(spec, recipe), lambda: spec.batch(spec, recipe, "cpu"),
                               spec.forward)
    return {"recipe": name, **asdict(recipe), "checkpoint": spec.checkpoint,
            "latent": latent_shape(spec, recipe), **asdict(step),
            "count_seconds": round(time.perf_counter() - start, 1)}


def run_steps(spec: VideoModel, recipe: Recipe, device: str, seed: int = 0,
              after_warmup: Callable[[torch.nn.Module], None] = lambda net: None
              ) -> torch.nn.Module:
    """Really train `recipe` for two steps on `device` with random weights: a warm-up step
    (AdamW's moments, cuBLAS workspaces), `after_warmup(network)`, then the step a caller
    measures. Returns the network."""
    net = build(spec, recipe).to_empty(device=device)
    g = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for t in [*net.parameters(), *net.buffers()]:
            if t.is_floating_point():
                t.normal_(0.0, 0.02, generator=g)  # random weights
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4,
                            foreach=True)
    batch = spec.batch(spec, recipe, device, g)
    train_step(net, opt, batch, spec.forward)
    after_warmup(net)
    train_step(net, opt, batch, spec.forward)
    return net


def measure_cuda(spec: VideoModel, recipe: Recipe) -> int:
    """Peak CUDA bytes (`torch.cuda.max_memory_allocated`) of one training step of `recipe`
    (`run_steps`' second step: weights, AdamW state, batch and activations all included)."""
    torch.cuda.empty_cache()

    def reset(net) -> None:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    net = run_steps(spec, recipe, "cuda", after_warmup=reset)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del net
    torch.cuda.empty_cache()
    return peak


def machine() -> dict:
    """The machine and library versions the numbers come from."""
    import diffusers
    import peft

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "diffusers": diffusers.__version__,
            "peft": peft.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def table(rows: list[dict]) -> str:
    """The markdown table of `rows`."""
    measured = any("measured_peak" in r for r in rows)
    head = ["recipe", "clip (latent F'xH'xW')", "trainable params", "total params",
            "weights (GiB)", "grads + AdamW (GiB)", "activations (GiB)", "peak (GiB)",
            "peak in", f"< {BUDGET_GIB} GiB"] + (["measured CUDA peak (GiB)"] if measured else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        clip = (f"{r['batch']} x {r['frames']}x{r['height']}x{r['width']} "
                f"({'x'.join(map(str, r['latent']))})")
        cells = [r["recipe"], clip, f"{r['trainable'] / 1e6:,.1f}M", f"{r['params'] / 1e9:.2f}B",
                 f"{r['weights'] / GIB:.2f}", f"{(r['gradients'] + r['optimizer']) / GIB:.2f}",
                 f"{r['activations'] / GIB:.2f}", f"{r['peak'] / GIB:.2f}", r["peak_phase"],
                 "yes" if r["peak"] < BUDGET_GIB * GIB else "no"]
        if measured:
            m = r.get("measured_peak")
            cells.append("" if m is None else f"{m / GIB:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


NOTES = """\
Counted with fake tensors (benchmarks/_memory.py), one steady-state step: bf16 autocast,
gradient checkpointing per block, AdamW (foreach), attention as a fused (flash) kernel.
The text encoder and the VAE are not in memory: the step reads cached text embeddings
(Wan 512, CogVideoX 226, LTX 128 tokens x 4096) and cached latents. Grads + AdamW: the
gradients live at the peak and AdamW's two float32 moments; activations: everything else
live at the peak (checkpointed block inputs, the recomputed block's saved tensors, backward
temporaries, the batch). Not counted: the CUDA context (~0.5 GiB), allocator fragmentation,
kernel workspaces."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=",".join(RECIPES),
                        help=f"comma list of rows: {', '.join(RECIPES)}")
    parser.add_argument("--json", default=None, help="write the machine and the rows here")
    parser.add_argument("--no-measure", action="store_true",
                        help=f"on CUDA, do not measure {MEASURED} for real")
    args = parser.parse_args()
    names = [n for n in args.recipes.split(",") if n]
    for name in names:
        if name not in RECIPES:
            parser.error(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores; python {info['python']}, torch "
          f"{info['torch']}, diffusers {info['diffusers']}, peft {info['peft']}; "
          f"CUDA: {info['cuda'] or 'none'}\n")
    rows = []
    for name in names:
        recipe = RECIPES[name]
        spec = MODELS[recipe.model]
        row = count(spec, recipe, name)
        if name == MEASURED and torch.cuda.is_available() and not args.no_measure:
            row["measured_peak"] = measure_cuda(spec, recipe)
        print(f"  {name}: counted in {row['count_seconds']} s, {row['attention_calls']} "
              f"attention calls", file=sys.stderr, flush=True)
        rows.append(row)
    print(table(rows))
    print("\n" + NOTES)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
