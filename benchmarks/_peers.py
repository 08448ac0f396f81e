"""The three U-Nets of the speed benchmark, built behind one interface.

`build(name, batch, frames, device)` returns `(model, call)`, where `call(model, x, t)` runs one
denoiser forward on x (B, 3, F, H, W), t int64 (B,) and returns a (B, 3, F, H, W) tensor.

| name      | model                                                                     | params |
|-----------|---------------------------------------------------------------------------|--------|
| vidiff    | vidiff `build_unet("vdm-matched")`                                        | 37.8M  |
| vdp       | video-diffusion-pytorch 0.7.0 `Unet3D(dim=64, dim_mults=(1, 2, 4, 8))`    | 35.7M  |
| diffusers | diffusers `UNet3DConditionModel`, `DIFFUSERS_CONFIG` below                | 35.6M  |

Each benchmark worker imports only the model it measures, so the torchvision stub that
video-diffusion-pytorch needs never meets diffusers (whose import probes torchvision's spec).
"""

from __future__ import annotations

import sys
import types

import torch

# video-diffusion-pytorch's Unet3D(dim=64, dim_mults=(1, 2, 4, 8)): 35,706,259 parameters.
VDP_CONFIG = {"dim": 64, "dim_mults": (1, 2, 4, 8)}

# diffusers UNet3DConditionModel parameter-matched to Unet3D (35,576,387 vs 35,706,259, -0.4%):
# diffusers' default block types (CrossAttnDownBlock3D x3 + DownBlock3D, mirrored up) with its
# default 2 layers per block (like Unet3D's two ResnetBlocks per level); widths
# (64, 128, 192, 192) instead of Unet3D's (64, 128, 256, 512) because every diffusers level also
# carries temporal convs and spatial + temporal transformers. attention_head_dim=8 is, by
# diffusers' naming quirk, 8 heads per level (head dim 8/16/24/24) and the 8-head x 8-dim input
# temporal transformer (= 64 = block_out_channels[0]). The model requires encoder_hidden_states:
# the benchmark passes zeros (B, 1, 64), one token of a small cross_attention_dim=64.
# (64, 128, 256, 256) with layers_per_block=1 (37.2M, +4.3%) would also be within 10%.
DIFFUSERS_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (64, 128, 192, 192),
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 64,
    "norm_num_groups": 32,
}
DIFFUSERS_TEXT_TOKENS = 1

VIDIFF_PRESET = "vdm-matched"

# the transformers of benchmarks/dit_speed.py: diffusers' LatteTransformer3DModel (spatial
# blocks with cross-attention to the caption, temporal blocks; adaLN-single) and vidiff's DiT
# of the same width, depth, heads and modulation (adaLN-single), text by cross-attention
LATTE_CONFIG = {"num_attention_heads": 6, "attention_head_dim": 64, "in_channels": 3,
                "out_channels": 3, "num_layers": 6, "sample_size": 32, "patch_size": 2,
                "caption_channels": 64, "cross_attention_dim": 384, "attention_bias": True,
                "activation_fn": "gelu-approximate", "num_embeds_ada_norm": 1000,
                "norm_type": "ada_norm_single", "norm_elementwise_affine": False,
                "norm_eps": 1e-6, "video_length": 16}
DIT_CONFIG = {"hidden": 384, "depth": 6, "heads": 6, "patch_size": 2, "text_dim": 64,
              "adaln": "single", "time_freq_shift": 0.0}
TEXT_TOKENS = 8

MODELS = ("vidiff", "vdp", "diffusers", "dit", "latte")
LABELS = {
    "vidiff": f"vidiff `{VIDIFF_PRESET}`",
    "vdp": "video-diffusion-pytorch Unet3D",
    "diffusers": "diffusers UNet3DConditionModel",
    "dit": "vidiff DiT",
    "latte": "diffusers LatteTransformer3DModel",
}


def _stub_torchvision() -> None:
    """video-diffusion-pytorch imports `torchvision.transforms as T` and `torchvision.utils`
    at load time (for its GIF dataset and trainer) but its Unet3D never uses them; torchvision
    is not installed (it would pull another torch), so stub exactly what the import touches."""
    if "torchvision" in sys.modules:
        return
    tv = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    utils = types.ModuleType("torchvision.utils")

    def _unavailable(*args, **kwargs):  # T.ToTensor() is evaluated as a default argument
        return None

    for attr in ("ToTensor", "Compose", "Resize", "RandomHorizontalFlip", "Lambda", "CenterCrop"):
        setattr(transforms, attr, _unavailable)
    tv.transforms, tv.utils = transforms, utils
    sys.modules.update(
        {"torchvision": tv, "torchvision.transforms": transforms, "torchvision.utils": utils}
    )


def _vidiff(batch: int, device: torch.device):
    from vidiff.models import build_unet

    model = build_unet(VIDIFF_PRESET).to(device)

    def call(m, x, t):
        return m(x, t)

    return model, call


def _vdp(batch: int, device: torch.device):
    _stub_torchvision()
    from video_diffusion_pytorch import Unet3D

    model = Unet3D(**VDP_CONFIG).to(device)

    def call(m, x, t):
        return m(x, t)  # prob_focus_present=0: full temporal attention, as in its training

    return model, call


def _diffusers(batch: int, device: torch.device):
    from diffusers import UNet3DConditionModel

    model = UNet3DConditionModel(**DIFFUSERS_CONFIG).to(device)
    dim = DIFFUSERS_CONFIG["cross_attention_dim"]
    text = torch.zeros(batch, DIFFUSERS_TEXT_TOKENS, dim, device=device)

    def call(m, x, t):
        return m(x, t, encoder_hidden_states=text.to(x.dtype)).sample

    return model, call


def _dit(batch: int, device: torch.device):
    from vidiff.models import DiT, DiTConfig

    model = DiT(DiTConfig(**DIT_CONFIG)).to(device)
    text = torch.zeros(batch, TEXT_TOKENS, DIT_CONFIG["text_dim"], device=device)

    def call(m, x, t):
        return m(x, t, text_emb=text.to(x.dtype))

    return model, call


def _latte(batch: int, device: torch.device):
    from diffusers import LatteTransformer3DModel

    model = LatteTransformer3DModel(**LATTE_CONFIG).to(device)
    text = torch.zeros(batch, TEXT_TOKENS, LATTE_CONFIG["caption_channels"], device=device)

    def call(m, x, t):
        return m(x, t, encoder_hidden_states=text.to(x.dtype)).sample

    return model, call


_BUILDERS = {"vidiff": _vidiff, "vdp": _vdp, "diffusers": _diffusers, "dit": _dit,
             "latte": _latte}


def build(name: str, batch: int, device: torch.device):
    """(model, call) for model `name` in MODELS; see the module docstring."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return _BUILDERS[name](batch, device)
