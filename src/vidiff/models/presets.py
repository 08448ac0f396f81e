"""Named U-Net configurations, and the builders `unet_config` / `build_unet`.

| preset        | kind  | params | what it is                                                    |
|---------------|-------|--------|---------------------------------------------------------------|
| tiny          | video | 0.21M  | CPU tests: a forward on 1x3x4x16x16 takes milliseconds        |
| mini          | video | 0.89M  | the default run: 8x24x24 balls on a 2-core CPU in 6 minutes    |
| small         | video | 8.0M   | quick experiments on 32x32 / 64x64 clips                      |
| base          | video | 112M   | ADM-style 64x64 video model (scale-shift norm, 64-dim heads)  |
| vdm-matched   | video | 37.8M  | parameter-matched to video-diffusion-pytorch 0.7.0's Unet3D   |
| ddpm-cifar10  | image | 35.7M  | DDPM CIFAR-10 (Ho et al. 2020), exactly                       |
| vdm-ucf101    | video | 1.17B  | the VDM UCF-101 16x64x64 model size (Ho et al. 2022, app. A)  |

Parameter counts are for 3 input channels; `count_parameters(name)` gives them exactly.
"""

from __future__ import annotations

from dataclasses import fields, replace

import torch

from vidiff.models.config import UNetConfig
from vidiff.models.unet import UNet
from vidiff.utils.registry import Registry

UNET_PRESETS: Registry[UNetConfig] = Registry("unet preset")


def _register(name: str, config: UNetConfig) -> None:
    UNET_PRESETS.register(name)(config)


# ADM's (Dhariwal & Nichol 2021) conventions, used by the new-model presets
_ADM = {
    "use_scale_shift_norm": True,
    "time_flip_sin_to_cos": True,
    "time_freq_shift": 0.0,
    "downsample_padding": "symmetric",
}

_register(
    "tiny",
    UNetConfig(
        model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_ds=(2,),
        norm_groups=8, head_dim=16, dropout=0.0, rel_pos_num_buckets=8,
        rel_pos_max_distance=16, **_ADM,
    ),
)  # fmt: skip
# The default run's network: tiny's width on three levels (24, 12, 6 pixels at 24x24), spatial
# and temporal attention at the two lower ones, and a temporal conv after every residual
# block, so that every level mixes the frames (the largest single gain in coherence measured
# for the default run: docs/RESULTS.md)
_register(
    "mini",
    UNetConfig(
        model_channels=16, channel_mult=(1, 2, 4), num_res_blocks=1, attention_ds=(2, 4),
        norm_groups=8, head_dim=16, dropout=0.0, temporal_conv=True, rel_pos_num_buckets=8,
        rel_pos_max_distance=16, **_ADM,
    ),
)  # fmt: skip
_register(
    "small",
    UNetConfig(
        model_channels=64, channel_mult=(1, 2, 2), num_res_blocks=2, attention_ds=(2, 4),
        head_dim=32, dropout=0.0, **_ADM,
    ),
)  # fmt: skip
_register(
    "base",
    UNetConfig(
        model_channels=128, channel_mult=(1, 2, 3, 4), num_res_blocks=2,
        attention_ds=(2, 4, 8), head_dim=64, dropout=0.1, resblock_updown=True, **_ADM,
    ),
)  # fmt: skip
# Parameter-matched to video-diffusion-pytorch 0.7.0's Unet3D(dim=64, dim_mults=(1, 2, 4, 8)),
# which has 35,706,259 parameters: the same base width 64 and four levels, but the DDPM layout
# (a skip per block, one more block up than down) spends more parameters per level, so the
# widest level has 256 channels, not 512; VDM's 1024-wide conditioning embedding; spatial and
# temporal attention at 1/4 and 1/8 resolution and in the middle (heads of 32 channels).
_register(
    "vdm-matched",
    UNetConfig(
        model_channels=64, channel_mult=(1, 2, 4, 4), num_res_blocks=2, attention_ds=(4, 8),
        head_dim=32, dropout=0.0, time_embed_dim=1024, **_ADM,
    ),
)  # fmt: skip
# DDPM CIFAR-10 (Ho et al. 2020, appendix B): 128 channels, multipliers (1, 2, 2, 2), two
# blocks per level, attention at 16x16, dropout 0.1, 35.7M parameters; = google/ddpm-cifar10-32.
# These are UNetConfig's defaults.
_register("ddpm-cifar10", UNetConfig(temporal=False))
# VDM UCF-101 16x64x64 (Ho et al. 2022, appendix A): base 256 channels, multipliers
# (1, 2, 4, 8), 2 residual blocks per resolution, attention at 32, 16 and 8 (factors 2, 4, 8),
# 64-dim heads, 1024-dim conditioning embedding (= 4 x 256).
_register(
    "vdm-ucf101",
    UNetConfig(
        model_channels=256, channel_mult=(1, 2, 4, 8), num_res_blocks=2,
        attention_ds=(2, 4, 8), head_dim=64, dropout=0.1, **_ADM,
    ),
)  # fmt: skip


def unet_config(preset: str | UNetConfig, **overrides) -> UNetConfig:
    """The config of `preset` (a name or a UNetConfig) with `overrides` applied.

    An unknown preset name or override key raises ValueError naming it.
    """
    config = preset if isinstance(preset, UNetConfig) else UNET_PRESETS.get(preset)
    valid = {f.name for f in fields(UNetConfig)}
    for key in overrides:
        if key not in valid:
            raise ValueError(
                f"unknown UNetConfig field {key!r}; valid fields: {', '.join(sorted(valid))}"
            )
    return replace(config, **overrides) if overrides else config


def build_unet(preset_or_config: str | UNetConfig, **overrides) -> UNet:
    """A freshly initialized `UNet` for a preset name or a config, with `overrides` applied.

    >>> model = build_unet("vdm-matched", num_classes=101)
    """
    return UNet(unet_config(preset_or_config, **overrides))


def count_parameters(preset_or_config: str | UNetConfig, **overrides) -> int:
    """Number of parameters of the U-Net, counted without allocating it (meta device)."""
    with torch.device("meta"):
        model = build_unet(preset_or_config, **overrides)
    return sum(p.numel() for p in model.parameters())
