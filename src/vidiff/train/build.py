"""The network of a run (``[model]``), its optimizer groups, and its rebuild from a checkpoint.

``model.kind`` picks the network:

- ``"unet"``: the factorized space-time U-Net of ``model.preset`` + ``model.overrides``
  (``overrides.temporal = false``: an image U-Net, e.g. for image pretraining). With
  ``model.init_from`` the weights come from an image model, inflated (PYoCo's recipe).
- ``"videofusion"``: VideoFusion's decomposed model (`vidiff.models.VideoFusion`): the base
  generator is an image U-Net (``model.base_preset`` + ``model.base_overrides``, or the image
  model of ``model.init_from``), the residual generator the video U-Net of ``model.preset`` +
  ``model.overrides`` conditioned on the frame index. The base learns at ``model.base_lr``.

`model_spec` describes the built network as a `vidiff.ModelSpec` (its kind and network config:
a U-Net's `UNetConfig`, VideoFusion's ``config_dict()``), which the trainer writes into every
checkpoint and `vidiff.Pipeline` builds the network back from.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from vidiff.config_io import ConfigError
from vidiff.models import (
    DiT,
    FrameConditionedUNet,
    UNet,
    UNetConfig,
    VideoFusion,
    unet_config,
)
from vidiff.models.kinds import MODEL_KINDS, kind_of
from vidiff.priors import NoisePrior, PriorConfig, noise_prior
from vidiff.spec import (
    AutoencoderSpec,
    ClipShape,
    Conditioning,
    ModelSpec,
    Preprocess,
    Provenance,
    TextEncoderSpec,
)
from vidiff.text import text_width
from vidiff.train.config import RunConfig
from vidiff.train.init import (
    inflate_dit_to,
    inflate_to,
    is_diffusers_dir,
    load_image_dit,
    load_image_unet,
)

__all__ = ["build_model", "build_prior", "check_data_fits", "model_spec", "optimizer_groups",
           "resolve_unet_config", "videofusion_groups"]

def build_model(config: RunConfig, unet_cfg: UNetConfig) -> tuple[nn.Module, UNetConfig]:
    """(model, U-Net config) of a run; `unet_cfg` is the resolved
    config of ``model.preset`` + overrides (conditioning included). The U-Net config is the
    model's (``kind = "unet"``) or the residual generator's (``"videofusion"``). Random init
    from ``train.seed``, without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        if config.model.kind == "videofusion":
            model = _videofusion(config, replace(unet_cfg, temporal=True))
            return model, model.residual.config
        if config.model.kind == "dit":
            model = _dit(config, unet_cfg)
            return model, model.config
        source = config.model.init_from
        if source is None:
            return UNet(unet_cfg), unet_cfg
        model = _initialized_unet(config, unet_cfg, source)
        return model, model.config


def _initialized_unet(config: RunConfig, unet_cfg: UNetConfig, source: str) -> UNet:
    """The run's U-Net with the weights of the image model at `source`."""
    image = load_image_unet(source)
    if is_diffusers_dir(Path(source)):
        # the architecture is the directory's; overrides may set inflation fields only
        target = replace(image.config, **{**config.model.overrides, "temporal": unet_cfg.temporal})
        for key in ("num_classes", "text_dim"):  # the conditioning the data asks for
            if getattr(unet_cfg, key) not in (None, getattr(target, key)):
                raise ConfigError(f"model.init_from {source!r} has {key}={getattr(target, key)}"
                                  f", the data needs {getattr(unet_cfg, key)}")
        return inflate_to(image, target, source, "what model.overrides may change")
    what = f"this run's model (preset {config.model.preset!r} + model.overrides)"
    return inflate_to(image, unet_cfg, source, what)


def _dit(config: RunConfig, cfg) -> DiT:
    """The run's DiT: from scratch, or inflated from ``model.init_from`` (a diffusers DiT /
    PixArt folder, whose architecture it takes, or a vidiff image DiT run of this preset)."""
    source = config.model.init_from
    if source is None:
        return DiT(cfg)
    image = load_image_dit(source)
    if is_diffusers_dir(Path(source)):  # the folder's architecture; overrides: inflation only
        target = replace(image.config, **{**config.model.overrides, "temporal": cfg.temporal})
        for key in ("num_classes", "text_dim"):
            if getattr(cfg, key) not in (None, getattr(target, key)):
                raise ConfigError(f"model.init_from {source!r} has {key}="
                                  f"{getattr(target, key)}, the data needs {getattr(cfg, key)}")
    else:
        target = cfg
    return inflate_dit_to(image, target, source)


def _videofusion(config: RunConfig, residual_cfg: UNetConfig) -> VideoFusion:
    m = config.model
    residual = FrameConditionedUNet(UNet(residual_cfg))  # from scratch
    base = _base_generator(config, residual_cfg)
    if (base.config.in_channels, base.config.out_channels) != (
        residual_cfg.in_channels, residual_cfg.out_channels
    ):
        raise ConfigError(
            f"the base generator takes {base.config.in_channels} channels and the residual "
            f"generator {residual_cfg.in_channels}: they must match (the data's channels)"
        )
    prior = build_prior(config)
    conditional_base = base.config.num_classes is not None or bool(base.config.text_dim)
    try:
        return VideoFusion(base, residual, lam=prior.lam, key_frame=prior.key_frame,
                           schedule=config.diffusion, freeze_base=m.freeze_base,
                           condition_base=conditional_base)
    except ValueError as err:
        raise ConfigError(f"model.kind = \"videofusion\": {err}") from None


def _base_generator(config: RunConfig, residual_cfg: UNetConfig) -> UNet:
    """The image U-Net of ``model.base_preset`` + ``model.base_overrides`` (with the residual's
    channels and conditioning), loaded from ``model.init_from`` when it is set."""
    m = config.model
    if m.init_from is not None and is_diffusers_dir(Path(m.init_from)):
        return load_image_unet(m.init_from)  # its own architecture
    inherited = {k: getattr(residual_cfg, k)
                 for k in ("in_channels", "out_channels", "num_classes", "text_dim")}
    try:
        base_cfg = unet_config(m.base_preset, **{**inherited, **m.base_overrides,
                                                 "temporal": False})
    except ValueError as err:
        raise ConfigError(f"model.base_overrides: {err}") from None
    if m.init_from is None:
        return UNet(base_cfg)
    what = f"the base generator (model.base_preset {m.base_preset!r} + model.base_overrides)"
    return inflate_to(load_image_unet(m.init_from), base_cfg, m.init_from, what)


def model_spec(config: RunConfig, model: nn.Module, *, class_names: list[str],
               clip: tuple[int, int, int, int], fps: float | None,
               step: int = 0) -> ModelSpec | None:
    """The `ModelSpec` of a run's model (None for a network of no registered kind, e.g. one
    passed to the trainer by hand): every value resolved, so it needs no defaults to load."""
    try:
        kind = kind_of(model)
    except TypeError:
        return None
    d = config.data
    network = MODEL_KINDS.get(kind).network_config(model)
    unet = MODEL_KINDS.get(kind).unet_config(network)
    text = TextEncoderSpec(d.text_encoder, int(unet.text_dim), d.max_tokens) \
        if d.use_captions else None
    return ModelSpec(
        kind=kind, network=network, diffusion=config.diffusion,
        prior=PriorConfig.of(build_prior(config)),
        shape=ClipShape(clip[0], clip[1], clip[-1]),
        preprocess=Preprocess(crop="center", fps=fps),
        conditioning=Conditioning(list(class_names), text, d.lowres_size),
        sampling=config.sample,
        provenance=Provenance(step, d.source, d.path, dict(d.options), d.seed, d.num_images),
        autoencoder=None if d.autoencoder is None else AutoencoderSpec(
            d.autoencoder, ClipShape(3, d.frames, d.size)),
    )


def build_prior(config: RunConfig) -> NoisePrior:
    """The noise prior of ``[prior]``; bad parameters are a `ConfigError`."""
    try:
        return noise_prior(config.prior.name, **config.prior.params)
    except ValueError as err:
        raise ConfigError(f"prior: {err}") from None


def optimizer_groups(model: nn.Module, config: RunConfig) -> list[dict]:
    """AdamW parameter groups: weight decay on matrices, none on vectors (biases, norms);
    VideoFusion's base generator at ``model.base_lr`` (`videofusion_groups`). Frozen
    parameters are left out."""
    t = config.train
    if isinstance(model, VideoFusion):
        return videofusion_groups(model, t.lr, config.model.base_lr, t.weight_decay)
    decay, no_decay = split_decay(model.parameters())
    return [{"params": decay, "weight_decay": t.weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def split_decay(params: Iterable[nn.Parameter]) -> tuple[list, list]:
    """(matrices, vectors) of the trainable `params`: weight decay applies to the first only
    (biases and norm scales are left undecayed)."""
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return decay, no_decay


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


def resolve_unet_config(config: RunConfig, num_classes: int | None = None,
                        channels: int | None = None):
    """The `UNetConfig` of a run: the preset, its overrides, and what the data asks for
    (num_classes from the dataset, text_dim of the text encoder, and with `channels` (a
    latent run's latent channels) the in / out channels unless the overrides set them)."""
    from vidiff.models import unet_config

    overrides = dict(config.model.overrides)
    if channels is not None:
        overrides.setdefault("in_channels", channels)
        overrides.setdefault("out_channels", channels)
    if config.data.use_labels:
        if num_classes is not None:
            overrides.setdefault("num_classes", num_classes)
        if overrides.get("num_classes") is None:
            raise ConfigError("data.use_labels needs labelled data (or model.overrides."
                              "num_classes)")
    if config.data.use_captions:
        overrides.setdefault("text_dim", text_width(config.data))
    if config.data.lowres_size is not None:  # an upsampler: the low-res clip as extra input
        overrides.setdefault("cond_channels", overrides.get("in_channels", 3))
    try:
        if config.model.kind == "dit":
            from vidiff.models import dit_config

            return dit_config(config.model.preset, **overrides)
        return unet_config(config.model.preset, **overrides)
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None


def check_data_fits(cfg: UNetConfig, first: torch.Tensor, config: RunConfig) -> None:
    """The data's clips (`first`: (C, F, H, W)) fit the U-Net `cfg`; a `ConfigError` saying
    what to change otherwise."""
    channels = int(first.shape[0])
    if channels != cfg.in_channels:
        raise ConfigError(
            f"the data has {channels} channels (clips {tuple(first.shape)}) but the "
            f"model takes in_channels={cfg.in_channels}; set model.overrides.in_channels="
            f"{channels} (and out_channels) or use data with {cfg.in_channels} channels"
        )
    if cfg.out_channels != cfg.in_channels:
        raise ConfigError(f"model out_channels={cfg.out_channels} must equal in_channels="
                          f"{cfg.in_channels} (the prediction has the shape of x)")
    div = cfg.size_multiple
    h, w = first.shape[-2:]
    if h % div or w % div:
        raise ConfigError(f"frames of {h}x{w} pixels do not fit the {config.model.preset}"
                          f" {config.model.kind}: data.size must be a multiple of {div}")
    if first.shape[1] != config.data.frames:
        raise ConfigError(f"the dataset gives {first.shape[1]} frames, data.frames = "
                          f"{config.data.frames}")
