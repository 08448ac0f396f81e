"""Checks of a `RunConfig`, before anything is built: every bad setting is a `ConfigError`
naming its key (``data.fps``, ``model.overrides``, ``diffusion.process``, ...), raised when
the config is loaded, not after the data or a latent cache has been built.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from vidiff.data.buckets import check_buckets
from vidiff.diffusion.ddpm import UNREAD_FIELDS, Diffusion
from vidiff.diffusion.distill import METHODS
from vidiff.diffusion.flow import FlowMatching
from vidiff.diffusion.losses import WEIGHTINGS
from vidiff.diffusion.predictions import PREDICTIONS
from vidiff.diffusion.priors import PRIORS, noise_prior
from vidiff.diffusion.process import PROCESSES, build_process
from vidiff.kinds import MODEL_KINDS
from vidiff.modelio.checkpoint import list_checkpoints
from vidiff.sampling.samplers import SamplingError
from vidiff.text import is_clip_root, resolve_text_encoder
from vidiff.text.t5 import is_t5_root
from vidiff.train.budget import CLOCKS
from vidiff.train.sharding import PARALLEL
from vidiff.train.trackers import TRACKERS
from vidiff.utils.config_io import ConfigError

if TYPE_CHECKING:
    from vidiff.train.config import RunConfig

__all__ = ["DATA_SOURCES", "LR_SCHEDULES", "PRECISIONS", "TRAINABLE", "validate"]

DATA_SOURCES = ("bouncing_balls", "moving_shapes", "folder")
PRECISIONS = ("fp32", "bf16", "fp16")
LR_SCHEDULES = ("constant", "cosine")
TRAINABLE = ("all", "temporal")
DISTILL_METHODS = METHODS  # distill.method's values (vidiff.train.student.OBJECTIVES)


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
    if d.fps is not None and d.fps <= 0:
        raise ConfigError(f"data.fps = {d.fps} must be > 0 (or none)")
    _check_buckets(config)
    _check_held_out(config)
    if d.use_captions and d.text_encoder != "hash":
        _check_text_encoder(d.text_encoder)
    config = _validate_model(config)
    _check_lowres(config)
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
    for name in t.report_to:
        _choice("train.report_to", name, tuple(TRACKERS.names()))
    _check_trainable(config)
    _check_distill(config)
    _choice("train.parallel", t.parallel, PARALLEL)
    _positive("train.sequence_parallel", t.sequence_parallel)
    _positive("train.shard_size", t.shard_size, 0)
    kind = MODEL_KINDS.get(config.model.kind)
    if t.sequence_parallel > 1 and kind.no_sequence_parallel:
        able = [n for n in MODEL_KINDS.names() if not MODEL_KINDS.get(n).no_sequence_parallel]
        raise ConfigError(f"train.sequence_parallel = {t.sequence_parallel}: model.kind = "
                          f"{kind.name!r} cannot split its clips ({kind.no_sequence_parallel}"
                          f"); the kinds that can: {', '.join(able)}")
    if t.offload and t.parallel == "ddp":
        raise ConfigError('train.offload needs train.parallel = "fsdp" or "hsdp" (it moves '
                          "the shards of the weights and AdamW state to CPU memory)")
    try:
        config.sample.check()
    except SamplingError as err:
        raise ConfigError(err.named(f"sample.{err.field}")) from None
    for key in ("steps", "grad_accum", "sample_count", "keep_checkpoints", "val_clips",
                "val_levels"):
        _positive(f"train.{key}", getattr(t, key))
    for key in ("warmup", "ema_start", "threads", "log_every", "loss_bins", "val_every",
                "sample_every", "ckpt_every"):
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


def _check_distill(config: RunConfig) -> None:
    """[distill]: a known method, an even number of teacher steps, a guidance scale >= 0."""
    d = config.distill
    if d.teacher is None:
        return
    _choice("distill.method", d.method, DISTILL_METHODS)
    if d.method == "progressive" and (d.teacher_steps < 2 or d.teacher_steps % 2):
        raise ConfigError(f"distill.teacher_steps = {d.teacher_steps} must be even and >= 2 "
                          f"(the student takes half as many)")
    if d.method == "consistency" and not (1 <= d.student_steps <= d.teacher_steps
                                          and d.teacher_steps % d.student_steps == 0):
        raise ConfigError(f"distill.student_steps = {d.student_steps} must divide "
                          f"distill.teacher_steps = {d.teacher_steps} (the student's times "
                          f"are the teacher's)")
    if not d.guidance_scale >= 0:
        raise ConfigError(f"distill.guidance_scale = {d.guidance_scale} must be >= 0 (1: none)")
    if not 0 <= d.guidance_min <= d.guidance_max:
        raise ConfigError(f"distill.guidance_min = {d.guidance_min} and guidance_max = "
                          f"{d.guidance_max}: need 0 <= min <= max")


def _check_held_out(config: RunConfig) -> None:
    """data.val_fraction in [0, 1), exclusive with data.val_data, an existing folder; neither
    with data.buckets (whose order needs every clip) nor in a distillation run (whose loss is
    the teacher's, not the data's)."""
    d = config.data
    if not 0 <= d.val_fraction < 1:
        raise ConfigError(f"data.val_fraction = {d.val_fraction} must be in [0, 1) (0: none)")
    held = "data.val_fraction" if d.val_fraction else "data.val_data" if d.val_data else None
    if d.val_fraction and d.val_data:
        raise ConfigError("data.val_fraction and data.val_data both hold out clips: set one")
    if d.val_data is not None and not Path(d.val_data).is_dir():
        raise ConfigError(f"data.val_data {d.val_data!r} is not a folder of videos")
    if held and d.buckets:
        raise ConfigError(f"{held} does not combine with data.buckets yet (a held-out set of "
                          f"one clip shape): remove one")
    if held and config.distill.teacher is not None:
        raise ConfigError(f"{held}: a distillation run learns its teacher, not the data; its "
                          f"validation loss would not measure it (remove {held})")


def _check_buckets(config: RunConfig) -> None:
    """data.buckets: [frames, height, width] lists (`vidiff.data.buckets.check_buckets`), on a
    folder, without what assumes one clip shape. With data.autoencoder each bucket gets its own
    latent cache; its frames and size are checked against the autoencoder when it is loaded
    (`vidiff.train.setup.latent_buckets`, before any clip is encoded)."""
    d = config.data
    if not d.buckets:
        return
    if d.source != "folder":
        raise ConfigError(f'data.buckets needs data.source = "folder" (videos of mixed sizes '
                          f'and lengths); data.source = {d.source!r} makes clips of one shape: '
                          f"data.frames x data.size x data.size")
    check_buckets(d.buckets, "data.buckets")
    for key, bad, why in (
            ("data.num_images", d.num_images, "its images are cut to one size"),
            ("data.lowres_size", d.lowres_size is not None, "the low-res size divides one "
             "size")):
        if bad:
            raise ConfigError(f"data.buckets does not combine with {key} ({why}): remove one")
    for key in ("frames", "size", "probe"):
        if key in d.options:
            raise ConfigError(f"data.options.{key} does not combine with data.buckets (the "
                              f"buckets give each clip's frames and size; every header is "
                              f"read): remove it")


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
    flow_samplers = FlowMatching.samplers
    if config.diffusion.process != "flow":
        if config.sample.sampler not in Diffusion.samplers and config.sample.sampler in \
                flow_samplers:
            raise ConfigError(f"sample.sampler = {config.sample.sampler!r} samples "
                              f"flow-matching models (diffusion.process = \"flow\")")
        return
    try:
        build_process(config.diffusion)
    except ValueError as err:
        raise ConfigError(f"diffusion: {err}") from None
    if config.sample.sampler not in flow_samplers:
        raise ConfigError(f'diffusion.process = "flow" samples with '
                          f'{" or ".join(flow_samplers)}: set sample.sampler = '
                          f'"euler" ({config.sample.sampler!r} is a DDPM sampler)')
    for bad, why in ((config.loss.weighting != "none", "loss.weighting (an SNR weighting of "
                      "DDPM's)"), (config.data.lowres_size is not None, "data.lowres_size (the "
                      "upsampler's guidance is DDPM's)")):
        if bad:
            raise ConfigError(f'diffusion.process = "flow" does not combine with {why}')


# the [diffusion] keys that one process does not read, and why
_UNREAD = {
    "flow": (UNREAD_FIELDS["flow"],
             'rectified flow (diffusion.process = "flow") has no beta schedule and always '
             "predicts the velocity"),
    "ddpm": (UNREAD_FIELDS["ddpm"], 'it applies to rectified flow (diffusion.process = '
                                    '"flow") and this run is DDPM\'s'),
}


def _refuse_unread(config: RunConfig) -> None:
    """A setting changed from its default that the run's process or model kind does not read
    is an error naming it (it would be silently ignored)."""
    default = type(config)()
    keys, why = _UNREAD.get(config.diffusion.process, ((), ""))
    for key in keys:
        value = getattr(config.diffusion, key)
        if value != getattr(default.diffusion, key):
            raise ConfigError(f"diffusion.{key} = {value!r} is not used: {why}; remove it")
    kind = MODEL_KINDS.get(config.model.kind)
    others = {k for name in MODEL_KINDS.names() for k in MODEL_KINDS.get(name).own_settings}
    for key in sorted(others - set(kind.own_settings)):  # [model] keys of other kinds only
        value = getattr(config.model, key)
        if value != getattr(default.model, key):
            owners = [n for n in MODEL_KINDS.names() if key in MODEL_KINDS.get(n).own_settings]
            raise ConfigError(f"model.{key} = {value!r} is not used: only model.kind = "
                              f"{' or '.join(owners)} reads it, and this run's is "
                              f"{kind.name!r}; remove it")


def _check_trainable(config: RunConfig) -> None:
    """train.trainable = "temporal" freezes all but the temporal layers: the model must have
    them, and the frozen rest must come from somewhere (model.init_from, or the checkpoint a
    resumed run continues)."""
    lora = config.train.lora
    try:
        lora.check()
    except ValueError as err:
        raise ConfigError(f"train.lora: {err}") from None
    if lora.rank and config.train.trainable != "all":
        raise ConfigError(f"train.lora.rank = {lora.rank} trains the adapters only; it does not "
                          f'combine with train.trainable = "{config.train.trainable}"')
    if lora.rank and config.model.init_from is None and not _resumes(config):
        raise ConfigError(f"train.lora.rank = {lora.rank} freezes the network under the "
                          f"adapters, and without model.init_from it keeps its random init: "
                          f"set model.init_from (--init-from, a pretrained model) or "
                          f"train.lora.rank = 0")
    if config.train.trainable != "temporal":
        return
    if config.model.overrides.get("temporal") is False:
        raise ConfigError('train.trainable = "temporal": the model has no temporal layers '
                          "(model.overrides.temporal = false makes an image model)")
    if config.model.init_from is None and not _resumes(config):  # resumed: trained layers
        raise ConfigError('train.trainable = "temporal" freezes every layer but the temporal '
                          "ones, and without model.init_from those keep their random init: "
                          'set model.init_from (an image model) or train.trainable = "all"')


def _check_text_encoder(name: str) -> None:
    if is_clip_root(Path(name).expanduser()) or is_t5_root(Path(name).expanduser()):
        return  # a Stable Diffusion root's CLIP, a Wan / LTX / CogVideoX root's T5
    try:
        resolve_text_encoder(name)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _validate_model(config: RunConfig) -> RunConfig:
    """model.kind, and the [model] settings as the kind reads them (`ModelKind.validate`);
    an unset model.preset becomes the kind's default preset."""
    m = config.model
    _choice("model.kind", m.kind, MODEL_KINDS.names())
    if m.init_from is not None and not str(m.init_from).strip():
        raise ConfigError("model.init_from is empty; give a path or leave it unset")
    kind = MODEL_KINDS.get(m.kind)
    if m.init_from is not None and not _resumes(config):  # a resumed run does not read it
        from vidiff.train.init import check_init_source  # import cycle: init -> config -> here

        check_init_source(config)
    if m.preset is None:
        config = replace(config, model=replace(m, preset=kind.default_preset))
    kind.validate(config)
    return config


def _resumes(config: RunConfig) -> bool:
    """Whether the run would resume from a checkpoint (its weights come from there)."""
    resume = config.train.resume
    return resume != "never" and (resume != "auto" or bool(list_checkpoints(config.train.out)))
