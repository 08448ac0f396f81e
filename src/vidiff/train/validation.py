"""Checks of a `RunConfig`, before anything is built: every bad setting is a `ConfigError`
naming its key (``data.fps``, ``model.overrides``, ``diffusion.process``, ...), raised when
the config is loaded, not after the data or a latent cache has been built.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vidiff.config_io import ConfigError
from vidiff.losses import WEIGHTINGS
from vidiff.predictions import PREDICTIONS
from vidiff.samplers import SamplingError

if TYPE_CHECKING:
    from vidiff.train.config import RunConfig

__all__ = ["DATA_SOURCES", "LR_SCHEDULES", "MODEL_KINDS", "PRECISIONS", "TRAINABLE", "validate"]

DATA_SOURCES = ("bouncing_balls", "moving_shapes", "folder")
PRECISIONS = ("fp32", "bf16", "fp16")
LR_SCHEDULES = ("constant", "cosine")
TRAINABLE = ("all", "temporal")
MODEL_KINDS = ("unet", "videofusion", "dit")


def _choice(key: str, value, valid) -> None:
    if value not in valid:
        raise ConfigError(f"{key} = {value!r} is not valid; choose one of {', '.join(valid)}")


def _positive(key: str, value, minimum=1) -> None:
    if value < minimum:
        raise ConfigError(f"{key} = {value!r} must be >= {minimum}")


def validate(config: RunConfig) -> RunConfig:
    """Check values that a type alone cannot (choices, ranges); returns `config`."""
    from vidiff.models import UNET_PRESETS
    from vidiff.priors import PRIORS, noise_prior
    from vidiff.train.budget import CLOCKS

    d, t = config.data, config.train
    _choice("data.source", d.source, DATA_SOURCES)
    if d.source == "folder" and not d.path:
        raise ConfigError('data.source = "folder" needs data.path, the folder of videos')
    for key in ("frames", "size", "stride", "batch_size", "text_dim", "max_tokens"):
        _positive(f"data.{key}", getattr(d, key))
    for key in ("num_videos", "num_images", "workers", "seed"):
        _positive(f"data.{key}", getattr(d, key), 0)
    _check_lowres(config)
    if d.fps is not None and d.fps <= 0:
        raise ConfigError(f"data.fps = {d.fps} must be > 0 (or none)")
    if d.use_captions and d.text_encoder != "hash":
        _check_text_encoder(d.text_encoder)
    if config.model.kind == "dit":
        from vidiff.models import DIT_PRESETS

        _choice("model.preset", config.model.preset, DIT_PRESETS.names())
    else:
        _choice("model.preset", config.model.preset, UNET_PRESETS.names())
    _validate_model(config)
    _choice("diffusion.prediction", config.diffusion.prediction, PREDICTIONS)
    _positive("diffusion.timesteps", config.diffusion.timesteps, 2)
    _validate_process(config)
    _refuse_unread(config)
    _choice("prior.name", config.prior.name, PRIORS.names())
    try:  # the parameters too, before any data is read (building a prior costs nothing)
        noise_prior(config.prior.name, **config.prior.params)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"prior: {err}") from None
    _choice("loss.weighting", config.loss.weighting, WEIGHTINGS)
    _choice("train.precision", t.precision, PRECISIONS)
    _choice("train.lr_schedule", t.lr_schedule, LR_SCHEDULES)
    _choice("train.budget_clock", t.budget_clock, tuple(CLOCKS))
    _choice("train.trainable", t.trainable, TRAINABLE)
    _check_trainable(config)
    try:
        config.sample.check()
    except SamplingError as err:
        raise ConfigError(err.named(f"sample.{err.field}")) from None
    for key in ("steps", "grad_accum", "sample_count", "keep_checkpoints"):
        _positive(f"train.{key}", getattr(t, key))
    for key in ("warmup", "ema_start", "threads", "log_every", "sample_every", "ckpt_every"):
        if getattr(t, key) is not None:
            _positive(f"train.{key}", getattr(t, key), 0)
    if t.max_seconds < 0:
        raise ConfigError(f"train.max_seconds = {t.max_seconds} must be >= 0 (0: no limit)")
    if not t.lr > 0:
        raise ConfigError(f"train.lr = {t.lr} must be > 0")
    if not 0 <= t.ema_decay < 1:
        raise ConfigError(f"train.ema_decay = {t.ema_decay} must be in [0, 1)")
    if not 0 <= t.cond_drop_prob <= 1:
        raise ConfigError(f"train.cond_drop_prob = {t.cond_drop_prob} must be in [0, 1]")
    if not 0 <= t.min_lr_ratio <= 1:
        raise ConfigError(f"train.min_lr_ratio = {t.min_lr_ratio} must be in [0, 1]")
    if t.grad_clip < 0 or t.weight_decay < 0:
        raise ConfigError("train.grad_clip and train.weight_decay must be >= 0")
    return config


def _check_lowres(config: RunConfig) -> None:
    d, m = config.data, config.model
    if d.lowres_size is None:
        return
    if not 0 < d.lowres_size < d.size or d.size % d.lowres_size:
        raise ConfigError(f"data.lowres_size = {d.lowres_size} must divide data.size = "
                          f"{d.size} and be smaller (e.g. {d.size // 2})")
    if m.kind != "unet" or m.init_from is not None:
        raise ConfigError("data.lowres_size (a super-resolution model) needs model.kind = "
                          "\"unet\" and no model.init_from")


def _validate_process(config: RunConfig) -> None:
    """diffusion.process and, for rectified flow, what it does not combine with."""
    from vidiff.flow_samplers import FLOW_SAMPLERS
    from vidiff.process import PROCESSES, build_process

    _choice("diffusion.process", config.diffusion.process, PROCESSES)
    from vidiff.samplers import SAMPLERS

    if config.diffusion.process != "flow":
        if config.sample.sampler not in SAMPLERS and config.sample.sampler in FLOW_SAMPLERS:
            raise ConfigError(f"sample.sampler = {config.sample.sampler!r} samples "
                              f"flow-matching models (diffusion.process = \"flow\")")
        return
    try:
        build_process(config.diffusion)
    except ValueError as err:
        raise ConfigError(f"diffusion: {err}") from None
    if config.sample.sampler not in FLOW_SAMPLERS:
        raise ConfigError(f'diffusion.process = "flow" samples with '
                          f'{" or ".join(FLOW_SAMPLERS.names())}: set sample.sampler = '
                          f'"euler" ({config.sample.sampler!r} is a DDPM sampler)')
    for bad, why in ((config.loss.weighting != "none", "loss.weighting (an SNR weighting of "
                      "DDPM's)"), (config.model.kind == "videofusion",
                      'model.kind = "videofusion" (its decomposition predicts the noise)'),
                     (config.data.lowres_size is not None, "data.lowres_size (the "
                      "upsampler's guidance is DDPM's)")):
        if bad:
            raise ConfigError(f'diffusion.process = "flow" does not combine with {why}')


# the [diffusion] keys that one process does not read, and why
_UNREAD = {
    "flow": (("schedule", "timesteps", "prediction", "schedule_kwargs"),
             'rectified flow (diffusion.process = "flow") has no beta schedule and always '
             "predicts the velocity"),
    "ddpm": (("flow_shift", "flow_time"), 'it applies to rectified flow (diffusion.process = '
                                          '"flow") and this run is DDPM\'s'),
}
# the [model] keys that only VideoFusion reads
_VIDEOFUSION_KEYS = ("base_preset", "base_overrides", "base_lr", "freeze_base")


def _refuse_unread(config: RunConfig) -> None:
    """A setting changed from its default that the run's process or model kind does not read
    is an error naming it (it would be silently ignored)."""
    default = type(config)()
    keys, why = _UNREAD.get(config.diffusion.process, ((), ""))
    for key in keys:
        value = getattr(config.diffusion, key)
        if value != getattr(default.diffusion, key):
            raise ConfigError(f"diffusion.{key} = {value!r} is not used: {why}; remove it")
    if config.model.kind != "videofusion":
        for key in _VIDEOFUSION_KEYS:
            value = getattr(config.model, key)
            if value != getattr(default.model, key):
                raise ConfigError(f"model.{key} = {value!r} is not used: it sets VideoFusion's "
                                  f"base generator, and model.kind is {config.model.kind!r}")


def _check_trainable(config: RunConfig) -> None:
    """train.trainable = "temporal" freezes all but the temporal layers: the model must have
    them, and the frozen rest must come from somewhere (model.init_from)."""
    if config.train.trainable != "temporal":
        return
    if config.model.overrides.get("temporal") is False:
        raise ConfigError('train.trainable = "temporal": the model has no temporal layers '
                          "(model.overrides.temporal = false makes an image model)")
    if config.model.init_from is None:
        raise ConfigError('train.trainable = "temporal" freezes every layer but the temporal '
                          "ones, and without model.init_from those keep their random init: "
                          'set model.init_from (an image model) or train.trainable = "all"')


def _check_text_encoder(name: str) -> None:
    from vidiff.text import is_clip_root, resolve_text_encoder

    if is_clip_root(Path(name).expanduser()):
        return  # a Stable Diffusion pipeline root's CLIP text encoder
    try:
        resolve_text_encoder(name)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _check_overrides(config: RunConfig) -> None:
    """model.overrides (and base_overrides) name fields of the network's config and, without
    model.init_from, make a valid config of the preset: checked before any data is read (the
    conditions that the data adds are checked when the network is built)."""
    from vidiff.models import (
        DIT_PRESETS,
        UNET_PRESETS,
        DiTConfig,
        UNetConfig,
        dit_config,
        unet_config,
    )

    m = config.model
    config_class, build, presets = ((DiTConfig, dit_config, DIT_PRESETS) if m.kind == "dit"
                                    else (UNetConfig, unet_config, UNET_PRESETS))
    for key, overrides, cls in (("model.overrides", m.overrides, config_class),
                                ("model.base_overrides", m.base_overrides, UNetConfig)):
        unknown = sorted(set(overrides) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"{key}: unknown field(s) {unknown}; valid: the fields of "
                              f"{cls.__name__}: {', '.join(cls.field_names())}")
    if m.init_from is None and m.preset in presets:
        try:
            build(m.preset, **m.overrides)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"model.overrides: {err}") from None


def _resumes(config: RunConfig) -> bool:
    """Whether the run would resume from a checkpoint (its weights come from there)."""
    from vidiff.checkpoint import list_checkpoints

    resume = config.train.resume
    return resume != "never" and (resume != "auto" or bool(list_checkpoints(config.train.out)))


def _validate_model(config: RunConfig) -> None:
    from vidiff.models import UNET_PRESETS

    m = config.model
    _choice("model.kind", m.kind, MODEL_KINDS)
    _check_overrides(config)
    if m.init_from is not None and not str(m.init_from).strip():
        raise ConfigError("model.init_from is empty; give a path or leave it unset")
    if m.init_from is not None and not _resumes(config):  # a resumed run does not read it
        from vidiff.train.init import check_init_source

        check_init_source(config)
    if m.kind != "videofusion":
        return
    _choice("model.base_preset", m.base_preset, UNET_PRESETS.names())
    if config.prior.name != "decomposed":
        raise ConfigError(f'model.kind = "videofusion" needs prior.name = "decomposed" (its base '
                          f"generator estimates the noise all frames share), got "
                          f"{config.prior.name!r}")
    from_init = m.init_from is not None and m.init_schedule  # [diffusion] may be replaced:
    if config.diffusion.prediction != "eps" and not from_init:  # checked again then (trainer)
        raise ConfigError(f'model.kind = "videofusion" predicts the noise: it needs '
                          f'diffusion.prediction = "eps", got {config.diffusion.prediction!r}')
    if not m.base_lr >= 0:
        raise ConfigError(f"model.base_lr = {m.base_lr} must be >= 0")
    if m.overrides.get("temporal") is False:
        raise ConfigError("model.overrides.temporal = false: VideoFusion's residual generator "
                          "is a video U-Net")
