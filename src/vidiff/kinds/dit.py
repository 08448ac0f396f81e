"""The ``dit`` kind: the factorized space-time diffusion transformer (`DiT`).

``model.preset`` (dit-tiny ... dit-xl) + ``model.overrides`` make its `DiTConfig`.
``model.init_from`` an image DiT (a vidiff image DiT run, or a diffusers
``DiTTransformer2DModel`` / ``PixArtTransformer2DModel`` folder or pipeline root) inflates it.
This module is the worked example of docs/DESIGN.md, "Adding a model kind".
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from vidiff.kinds.base import ModelKind, is_diffusers_dir
from vidiff.models.diffusers_dit import (
    CLASSES,
    diffusers_transformer_config,
    load_diffusers_transformer,
)
from vidiff.models.dit import DiT, inflate_dit
from vidiff.models.dit_config import (
    DIT_PRESETS,
    DiTConfig,
    dit_config,
)

__all__ = ["DiTKind"]


class DiTKind(ModelKind):
    """An image or video `DiT`; the network config is its `DiTConfig`'s fields."""

    name = "dit"
    network_class = DiT
    config_class = DiTConfig
    presets = DIT_PRESETS
    default_preset = "dit-mini"
    tiny_preset = "dit-tiny"
    image_kind = "dit"
    diffusers_subfolder = "transformer"
    diffusers_classes = CLASSES

    no_sequence_parallel = ""

    @classmethod
    def split_sequence(cls, model: nn.Module, group, degree: int) -> None:
        model.enable_sequence_parallel(group)  # each frame's patches over the group

    @classmethod
    def check_diffusers_config(cls, config: dict, source: str) -> None:
        diffusers_transformer_config(config, source)
    summary = "a factorized space-time diffusion transformer (DiT blocks, temporal attention)"

    @classmethod
    def describe(cls, network: dict) -> str:
        cfg = cls.backbone_config(network)
        video = "temporal blocks" if cfg.temporal else "image DiT (no temporal blocks)"
        return (f"DiT of {cfg.depth} blocks, width {cfg.hidden}, {cfg.heads} heads, patch "
                f"{cfg.patch_size}, adaLN-{'single' if cfg.adaln == 'single' else 'Zero'}, "
                f"{video}")

    @classmethod
    def resolve(cls, preset: str, overrides: dict) -> DiTConfig:
        return dit_config(preset, **overrides)

    @classmethod
    def import_image(cls, path: Path) -> nn.Module:
        if not is_diffusers_dir(path, "transformer"):
            raise ValueError("not a diffusers DiTTransformer2DModel / PixArtTransformer2DModel "
                             "folder or pipeline root (no config.json and "
                             "diffusion_pytorch_model.* in it or in transformer/)")
        return load_diffusers_transformer(path, inflate=False)

    @classmethod
    def inflate_network(cls, image: nn.Module, options: dict) -> nn.Module:
        return inflate_dit(image, **options)
