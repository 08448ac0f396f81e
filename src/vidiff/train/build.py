"""The network of a run (``[model]``), its optimizer groups, and its description as a spec.

``model.kind`` names a registered `vidiff.kinds.ModelKind`, which resolves the preset and
overrides into its backbone config, builds the network (from scratch, or from the image
model of ``model.init_from``) and says what a checkpoint must match to be resumed.

`model_spec` describes the built network as a `vidiff.ModelSpec` (its kind and network config),
which the trainer writes into every checkpoint and `vidiff.Pipeline` builds the network back
from.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from vidiff.diffusion.priors import NoisePrior, PriorConfig, noise_prior
from vidiff.kinds import MODEL_KINDS, ModelKind, kind_of
from vidiff.modelio.spec import (
    AutoencoderSpec,
    ClipShape,
    Conditioning,
    ModelSpec,
    Preprocess,
    Provenance,
    TextEncoderSpec,
)
from vidiff.models.lora import LoraSpec, add_lora
from vidiff.text import text_width
from vidiff.train.config import RunConfig
from vidiff.train.init import load_image_model
from vidiff.utils.config_io import ConfigError

__all__ = ["build_model", "build_prior", "check_data_fits", "model_spec", "optimizer_groups",
           "resolve_backbone_config", "run_kind"]


def run_kind(config: RunConfig) -> type[ModelKind]:
    """The registered kind of ``model.kind``."""
    return MODEL_KINDS.get(config.model.kind)


def build_model(config: RunConfig, backbone) -> tuple[nn.Module, object]:
    """(model, backbone config) of a run; `backbone` is the resolved config of
    ``model.preset`` + overrides (conditioning included), the returned one the built model's
    (an imported architecture's own). Random init from ``train.seed``, without touching the
    global RNG."""
    kind = run_kind(config)
    source = config.model.init_from
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        image = None if source is None else load_image_model(source, MODEL_KINDS.get(
            kind.image_kind))
        model = kind.build_for_run(config, backbone, image)
        lora = run_lora(config)
        if lora is not None:  # its A matrices drawn from the seed too
            try:
                add_lora(model, lora)
            except ValueError as err:
                raise ConfigError(f"train.lora: {err}") from None
    return model, kind.backbone_config(kind.network_config(model))


def run_lora(config: RunConfig) -> LoraSpec | None:
    """The run's LoRA (``train.lora`` with its kind's targets when it names none); None
    without (rank 0)."""
    lora = config.train.lora
    if lora.rank == 0:
        return None
    return replace(lora, targets=list(lora.targets or run_kind(config).lora_targets))


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
    network = kind.network_config(model)
    backbone = kind.backbone_config(network)
    text = TextEncoderSpec(d.text_encoder, int(backbone.text_dim), d.max_tokens) \
        if d.use_captions else None
    return ModelSpec(
        kind=kind.name, network=network, diffusion=config.diffusion,
        prior=PriorConfig.of(build_prior(config)),
        shape=ClipShape.of(*clip),  # a bucketed run's: its first bucket's
        preprocess=Preprocess(crop="center", fps=fps),
        conditioning=Conditioning(list(class_names), text, d.lowres_size),
        sampling=config.sample,
        provenance=Provenance(step, d.source, d.path, dict(d.options), d.seed, d.num_images),
        autoencoder=None if d.autoencoder is None else AutoencoderSpec(
            d.autoencoder, ClipShape.of(3, *d.buckets[0]) if d.buckets
            else ClipShape(3, d.frames, d.size)),
        lora=run_lora(config),
    )


def build_prior(config: RunConfig) -> NoisePrior:
    """The noise prior of ``[prior]``; bad parameters are a `ConfigError`."""
    try:
        return noise_prior(config.prior.name, **config.prior.params)
    except ValueError as err:
        raise ConfigError(f"prior: {err}") from None


def optimizer_groups(model: nn.Module, config: RunConfig) -> list[dict]:
    """AdamW parameter groups of the run's network, as its kind groups them
    (`ModelKind.param_groups`: weight decay on matrices, none on vectors; VideoFusion's base
    generator at ``model.base_lr``); a network passed by hand gets the default grouping.
    Frozen parameters are left out."""
    try:
        kind = kind_of(model)
    except TypeError:
        kind = ModelKind
    return kind.param_groups(model, config)


def resolve_backbone_config(config: RunConfig, num_classes: int | None = None,
                            channels: int | None = None):
    """The backbone config of a run (`ModelKind.resolve`): the preset, its overrides, and
    what the data asks for (num_classes from the dataset, text_dim of the text encoder, and
    with `channels` (a latent run's latent channels) the in / out channels unless the
    overrides set them)."""
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
        return run_kind(config).resolve(config.model.preset, overrides)
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None


def check_data_fits(cfg, first: torch.Tensor, config: RunConfig,
                    clip_frames: int | None = None) -> None:
    """The data's clips (`first`: (C, F, H, W), a latent run's latents) fit the backbone
    config `cfg`, and their frames (`clip_frames`: a latent run's pixel clip, whose frames a
    video VAE compresses; default `first`'s) are ``data.frames``; a `ConfigError` saying what
    to change otherwise."""
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
    for i, (_, bh, bw) in enumerate(config.data.buckets):  # each batch has one's shape
        if bh % div or bw % div:
            raise ConfigError(f"data.buckets[{i}]: frames of {bh}x{bw} pixels do not fit the "
                              f"{config.model.preset} {config.model.kind}: height and width "
                              f"must be multiples of {div}")
    if config.data.buckets:
        return  # each bucket's frames are its own
    h, w = first.shape[-2:]
    if h % div or w % div:
        raise ConfigError(f"frames of {h}x{w} pixels do not fit the {config.model.preset}"
                          f" {config.model.kind}: data.size must be a multiple of {div}")
    frames = int(first.shape[1]) if clip_frames is None else clip_frames
    if frames != config.data.frames:
        raise ConfigError(f"the dataset gives {frames} frames, data.frames = "
                          f"{config.data.frames}")
