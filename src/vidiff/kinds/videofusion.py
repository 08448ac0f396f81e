"""The ``videofusion`` kind: VideoFusion's base + residual generators (`VideoFusion`).

The residual generator is the video U-Net of ``model.preset`` + ``model.overrides``,
conditioned on the frame index; the base generator is an image U-Net
(``model.base_preset`` + ``model.base_overrides``, or the image model of
``model.init_from``, VideoFusion's pretrained base), learning at ``model.base_lr`` or frozen
(``model.freeze_base``). It predicts the noise and needs the decomposed prior.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from torch import nn

from vidiff.diffusion.priors import noise_prior
from vidiff.kinds.base import (
    ModelKind,
    _flat,
    block_modules,
    check_fields,
    is_diffusers_dir,
    split_decay,
)
from vidiff.kinds.unet import UNetKind, describe_unet
from vidiff.models.config import UNetConfig, unet_config_from_dict
from vidiff.models.frame_index import FrameConditionedUNet
from vidiff.models.presets import UNET_PRESETS, unet_config
from vidiff.models.unet import UNet
from vidiff.models.videofusion import VideoFusion
from vidiff.utils.config_io import ConfigError

__all__ = ["VideoFusionKind", "videofusion_groups"]


class VideoFusionKind(ModelKind):
    """VideoFusion's decomposed model; the network config is `VideoFusion.config_dict()`."""

    name = "videofusion"
    network_class = VideoFusion
    config_class = UNetConfig  # the residual generator's (model.overrides)
    presets = UNET_PRESETS
    default_preset = "mini"
    tiny_preset = "tiny"
    image_kind = "unet"
    processes = ("ddpm",)
    priors = ("decomposed",)
    prior_reason = "(its base generator estimates the noise all frames share)"
    summary = ("VideoFusion's decomposed model (a base image generator plus a residual video "
               "generator conditioned on the frame index)")
    own_settings = ("base_preset", "base_overrides", "base_lr", "freeze_base")
    guidance_settings = ("model.overrides.guidance_embed=true",
                         "model.base_overrides.guidance_embed=true")

    @classmethod
    def build(cls, network: dict) -> nn.Module:
        return VideoFusion.from_config(network)

    @classmethod
    def network_config(cls, model: nn.Module) -> dict:
        return model.config_dict()

    @classmethod
    def shard_units(cls, model: nn.Module) -> list[nn.Module]:
        """Each generator's blocks, then the base and the residual generator themselves."""
        return [*block_modules(model.base), *block_modules(model.residual), model.base,
                model.residual]

    @classmethod
    def backbone_config(cls, network: dict) -> UNetConfig:
        return unet_config_from_dict(network["residual"]["unet"])  # it carries the conditions

    @classmethod
    def architecture(cls, network: dict) -> dict[str, Any]:
        filled = {**network, "base": {**network["base"], "unet": asdict(
            unet_config_from_dict(network["base"]["unet"]))},
            "residual": {**network["residual"], "unet": asdict(cls.backbone_config(network))}}
        return {k: v for k, v in _flat(filled).items() if k not in ("format", "freeze_base")}

    @classmethod
    def describe(cls, network: dict) -> str:
        base = unet_config_from_dict(network["base"]["unet"])
        return (f"VideoFusion: residual generator {describe_unet(cls.backbone_config(network))}"
                f"; base generator {describe_unet(base)}")

    @classmethod
    def describe_settings(cls, model: dict) -> str:
        extra = f" with {json.dumps(model['overrides'])}" if model.get("overrides") else ""
        base = model.get("base_overrides") or {}
        base_extra = f" with {json.dumps(base)}" if base else ""
        line = (f"videofusion: residual generator preset {model.get('preset')!r}{extra}, base "
                f"generator preset {model.get('base_preset')!r}{base_extra} (base_lr "
                f"{model.get('base_lr')}{', frozen' if model.get('freeze_base') else ''})")
        init = model.get("init_from")
        return line + (f"\n             initialized from the image model {init}" if init else "")

    @classmethod
    def resolve(cls, preset: str, overrides: dict) -> UNetConfig:
        return unet_config(preset, **{**overrides, "temporal": True})

    @classmethod
    def validate(cls, config) -> None:
        m = config.model
        if m.overrides.get("temporal") is False:
            raise ConfigError("model.overrides.temporal = false: VideoFusion's residual "
                              "generator is a video U-Net")
        super().validate(config)
        if m.base_preset not in UNET_PRESETS:
            raise ConfigError(f"model.base_preset = {m.base_preset!r}: valid: "
                              f"{', '.join(UNET_PRESETS.names())}")
        check_fields("model.base_overrides", m.base_overrides, UNetConfig)
        from_init = m.init_from is not None and m.init_schedule  # [diffusion] may be replaced:
        if config.diffusion.prediction != "eps" and not from_init:  # checked again then
            raise ConfigError(f'model.kind = "videofusion" predicts the noise: it needs '
                              f'diffusion.prediction = "eps", got '
                              f'{config.diffusion.prediction!r}')
        if not m.base_lr >= 0:
            raise ConfigError(f"model.base_lr = {m.base_lr} must be >= 0")

    @classmethod
    def tiny_settings(cls, process: str) -> tuple[str, ...]:
        return (*super().tiny_settings(process), f"model.base_preset={cls.tiny_preset}",
                "diffusion.prediction=eps", "prior.name=decomposed")

    @classmethod
    def build_for_run(cls, config, backbone: UNetConfig,
                      image: nn.Module | None) -> nn.Module:
        residual_cfg = replace(backbone, temporal=True)
        residual = FrameConditionedUNet(UNet(residual_cfg))  # from scratch
        base = _base_generator(config, residual_cfg, image)
        if (base.config.in_channels, base.config.out_channels) != (
                residual_cfg.in_channels, residual_cfg.out_channels):
            raise ConfigError(f"the base generator takes {base.config.in_channels} channels and "
                              f"the residual generator {residual_cfg.in_channels}: they must "
                              f"match (the data's channels)")
        prior = noise_prior(config.prior.name, **config.prior.params)
        conditional_base = base.config.num_classes is not None or bool(base.config.text_dim)
        try:
            return VideoFusion(base, residual, lam=prior.lam, key_frame=prior.key_frame,
                               schedule=config.diffusion, freeze_base=config.model.freeze_base,
                               condition_base=conditional_base)
        except ValueError as err:
            raise ConfigError(f"model.kind = \"videofusion\": {err}") from None

    @classmethod
    def param_groups(cls, model: nn.Module, config) -> list[dict]:
        t = config.train
        return videofusion_groups(model, t.lr, config.model.base_lr, t.weight_decay)

    @classmethod
    def import_image(cls, path: Path) -> nn.Module:
        return UNetKind.import_image(path)


def videofusion_groups(model: VideoFusion, lr: float, base_lr: float,
                       weight_decay: float = 0.0) -> list[dict]:
    """VideoFusion's optimizer groups: the residual generator at `lr`, the base generator at
    `base_lr` (VideoFusion trains the residual from scratch and fine-tunes the pretrained base
    with a small learning rate). Each generator gets two groups, weight-decayed matrices and
    undecayed vectors, named "residual", "residual/no_decay", "base", "base/no_decay" under
    the key "name"; frozen parameters (a frozen base) and empty groups are left out.

    >>> opt = torch.optim.AdamW(videofusion_groups(model, lr=1e-4, base_lr=1e-5))
    """
    groups = []
    for name, module, group_lr in (("residual", model.residual, lr),
                                   ("base", model.base, base_lr)):
        decay, no_decay = split_decay(module.parameters())
        for suffix, params, wd in (("", decay, weight_decay), ("/no_decay", no_decay, 0.0)):
            if params:
                groups.append({"params": params, "lr": group_lr, "weight_decay": wd,
                               "name": name + suffix})
    return groups


def _base_generator(config, residual_cfg: UNetConfig, image: UNet | None) -> UNet:
    """The image U-Net of ``model.base_preset`` + ``model.base_overrides`` (with the residual's
    channels and conditioning), or `image` (from ``model.init_from``) in that architecture."""
    m = config.model
    if image is not None and is_diffusers_dir(Path(m.init_from)):
        return image  # its own architecture
    inherited = {k: getattr(residual_cfg, k)
                 for k in ("in_channels", "out_channels", "num_classes", "text_dim")}
    try:
        base_cfg = unet_config(m.base_preset, **{**inherited, **m.base_overrides,
                                                 "temporal": False})
    except ValueError as err:
        raise ConfigError(f"model.base_overrides: {err}") from None
    if image is None:
        return UNet(base_cfg)
    what = f"the base generator (model.base_preset {m.base_preset!r} + model.base_overrides)"
    return UNetKind.inflate(image, base_cfg, str(m.init_from), what)
