"""The ``unet`` kind: the factorized space-time U-Net of Video Diffusion Models (`UNet`).

``model.preset`` + ``model.overrides`` make its `UNetConfig` (``overrides.temporal = false``:
an image U-Net, e.g. for image pretraining). ``model.init_from`` an image U-Net (a vidiff
image run, a diffusers ``UNet2DModel`` folder or a Stable Diffusion pipeline) inflates it:
the temporal blocks start as the identity (PYoCo's recipe). The only kind that can be a
super-resolution model (``data.lowres_size``).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from vidiff.kinds.base import ModelKind, is_diffusers_dir
from vidiff.models.config import UNetConfig
from vidiff.models.diffusers_io import diffusers_config_to_unet_config, load_diffusers_unet
from vidiff.models.inflate import inflate
from vidiff.models.presets import UNET_PRESETS, unet_config
from vidiff.models.sd_folder import empty_prompt, is_latent_unet
from vidiff.models.unet import UNet

__all__ = ["UNetKind", "describe_unet"]


class UNetKind(ModelKind):
    """An image or video `UNet`; the network config is its `UNetConfig`'s fields."""

    name = "unet"
    network_class = UNet
    config_class = UNetConfig
    presets = UNET_PRESETS
    default_preset = "mini"
    tiny_preset = "tiny"
    image_kind = "unet"
    summary = "a factorized space-time U-Net (Video Diffusion Models)"
    upsampler = True
    diffusers_subfolder = "unet"
    diffusers_classes = ("UNet2DModel", "UNet2DConditionModel")

    @classmethod
    def check_diffusers_config(cls, config: dict, source: str) -> None:
        diffusers_config_to_unet_config(config, source)

    @classmethod
    def describe(cls, network: dict) -> str:
        return describe_unet(cls.backbone_config(network))

    @classmethod
    def describe_settings(cls, model: dict) -> str:
        init = model.get("init_from")
        if init and is_diffusers_dir(Path(init)):
            extra = f" with overrides {model['overrides']}" if model.get("overrides") else ""
            return f"the diffusers U-Net of {init}, inflated{extra}"
        line = super().describe_settings(model)
        return line + (f"\n             initialized from the image model {init}" if init else "")

    @classmethod
    def resolve(cls, preset: str, overrides: dict) -> UNetConfig:
        return unet_config(preset, **overrides)

    @classmethod
    def import_image(cls, path: Path) -> nn.Module:
        if not is_diffusers_dir(path):
            raise ValueError("not a diffusers UNet2DModel / UNet2DConditionModel folder or "
                             "pipeline root (no config.json and diffusion_pytorch_model.* in "
                             "it or in unet/)")
        null = empty_prompt(path) if is_latent_unet(path) else None
        return load_diffusers_unet(path, inflate=False, null_text=null)

    @classmethod
    def inflate_network(cls, image: nn.Module, options: dict) -> nn.Module:
        return inflate(image, **options)


def describe_unet(cfg: UNetConfig) -> str:
    """One line on a U-Net: widths, spatial blocks, temporal layers."""
    widths = ", ".join(str(cfg.level_channels(i)) for i in range(cfg.num_levels))
    blocks = ("spatial transformers (LDM / Stable Diffusion)" if cfg.spatial_block ==
              "transformer" else "self-attention")
    video = "temporal attention" if cfg.temporal else "image U-Net (no temporal layers)"
    return f"U-Net of {widths} channels, {blocks}, {video}"

