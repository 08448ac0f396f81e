"""Checks of a `RunConfig`, before anything is built: every bad setting is a `ConfigError`
naming its key (``data.fps``, ``model.overrides``, ``diffusion.process``, ...), raised when
the config is loaded, not after the data or a latent cache has been built.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vidiff.config_io import ConfigError
from vidiff.flow_samplers import FLOW_SAMPLERS
from vidiff.kinds import MODEL_KINDS
from vidiff.losses import WEIGHTINGS
from vidiff.predictions import PREDICTIONS
from vidiff.priors import PRIORS, noise_prior
from vidiff.process import PROCESSES, build_process
from vidiff.samplers import SAMPLERS, SamplingError
from vidiff.text import is_clip_root, resolve_text_encoder
from vidiff.train.budget import CLOCKS

if TYPE_CHECKING:
    from vidiff.train.config import RunConfig

__all__ = ["DATA_SOURCES", "LR_SCHEDULES", "PRECISIONS", "TRAINABLE", "validate"]

DATA_SOURCES = ("bouncing_balls", "moving_shapes", "folder")
PRECISIONS = ("fp32", "bf16", "fp16")
LR_SCHEDULES = ("constant", "cosine")
TRAINABLE = ("all", "temporal")


def _choice(key: str, value, valid) -> None:
    if value not in valid:
        raise ConfigError(f"{key} = {value!r} is not valid; choose one of {', '.join(valid)}")


def _positive(key: str, value, minimum=1) -> None:
    if value < minimum:
        raise ConfigError(f"{key} = {value!r} must be >= {minimum}")


def validate(config: RunConfig) -> RunConfig:
    """Check values that a type alone cannot (choices, ranges); returns `config`."""
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
    _validate_model(config)
    _choice("diffusion.prediction", config.diffusion.prediction, PREDICTIONS)
    _positive("diffusion.timesteps", config.diffusion.timesteps, 2)
    _validate_process(config)
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
    if not MODEL_KINDS.get(m.kind).upsampler or m.init_from is not None:
        raise ConfigError(f"data.lowres_size (a super-resolution model) needs a model kind "
                          f"that takes the low-res clip (unet) and no model.init_from; "
                          f"model.kind = {m.kind!r}")


def _validate_process(config: RunConfig) -> None:
    """diffusion.process and, for rectified flow, what it does not combine with."""
    _choice("diffusion.process", config.diffusion.process, PROCESSES)
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
                      "DDPM's)"), (config.data.lowres_size is not None, "data.lowres_size (the "
                      "upsampler's guidance is DDPM's)")):
        if bad:
            raise ConfigError(f'diffusion.process = "flow" does not combine with {why}')


def _check_text_encoder(name: str) -> None:
    if is_clip_root(Path(name).expanduser()):
        return  # a Stable Diffusion pipeline root's CLIP text encoder
    try:
        resolve_text_encoder(name)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _validate_model(config: RunConfig) -> None:
    """model.kind, and the [model] settings as the kind reads them (`ModelKind.validate`)."""
    m = config.model
    _choice("model.kind", m.kind, MODEL_KINDS.names())
    if m.init_from is not None and not str(m.init_from).strip():
        raise ConfigError("model.init_from is empty; give a path or leave it unset")
    MODEL_KINDS.get(m.kind).validate(config)
