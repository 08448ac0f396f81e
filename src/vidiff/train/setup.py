"""Building a run, piece by piece: its data, its network (wrapped for DDP and compile) and its
optimization. Each function takes what it needs and returns a typed object; the trainer calls
them in order (data, the restore point, network, optimization) and keeps the results.

>>> data = build_data(config)                        # the dataset, classes, clip shape
>>> net = build_network(data.config, data, dist, resumed=False)  # a resume: load weights
>>> net = wrap_network(net, data.config, dist)        # DDP, or FSDP2 shards; compiled
>>> opt = build_optimization(net.raw, data.config)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from vidiff.data.latents import BucketedLatents, LatentCache
from vidiff.data.scan import read_caption
from vidiff.data.split import held_out_split
from vidiff.io import OutputPathError, check_apart
from vidiff.kinds import is_imported
from vidiff.models import is_temporal_parameter, load_diffusers_vae
from vidiff.text import build_text_encoder
from vidiff.text.cache import TextCache
from vidiff.train import distributed, sharding
from vidiff.train.build import (
    build_model,
    check_data_fits,
    optimizer_groups,
    resolve_backbone_config,
    run_kind,
)
from vidiff.train.config import RunConfig, warmup_steps
from vidiff.train.data import JointVideoDataset, build_dataset, image_dataset
from vidiff.train.ema import EMA
from vidiff.train.schedule import WarmupSchedule
from vidiff.utils.config_io import ConfigError

__all__ = ["RunData", "RunNetwork", "RunOptimization", "build_data", "build_network",
           "build_optimization", "describe_launch", "freeze_all_but_temporal", "launch_notes",
           "parallel_of", "wrap_network"]


@dataclass
class RunData:
    """A run's data and what it decides about the run."""

    config: RunConfig  # the run's config with data.use_labels resolved (True / False)
    dataset: torch.utils.data.Dataset  # the videos (a latent model's: their latents)
    train_data: JointVideoDataset  # the videos with their K joint-training images
    class_names: list[str]  # the dataset's classes ([] without)
    first: torch.Tensor  # item 0's clip (C, F, H, W): the data's channels and shape
    text_encoder: object | None  # the frozen text encoder of a text-conditional run
    autoencoder: object | None = None  # a latent run's `vidiff.models.VideoAutoencoder`
    pixels: torch.utils.data.Dataset | None = None  # a latent run's videos themselves
    # the held-out clips of the validation loss (a latent run's: their latents), None: none
    val: torch.utils.data.Dataset | None = None

    @property
    def channels(self) -> int:
        return int(self.first.shape[0])

    @property
    def clip(self) -> tuple[int, int, int, int]:
        """(C, F, H, W) of the model's clips: item 0's, or a bucketed run's first bucket's
        (the shape its spec records; a latent run's: the bucket's latents)."""
        buckets = self.config.data.buckets
        if not buckets:
            return tuple(self.first.shape)
        if self.autoencoder is not None:
            return tuple(self.dataset.shapes[0])  # a BucketedLatents
        return (self.channels, *buckets[0])

    @property
    def fps(self) -> float:
        """The frame rate of the training clips (folders: as resampled; synthetic: 8)."""
        videos = self.pixels if self.pixels is not None else self.dataset
        return float(getattr(videos, "clip_fps", None) or 8.0)


def build_data(config: RunConfig, dist: distributed.DistInfo | None = None) -> RunData:
    """The data of `config`: a `ConfigError` for an empty or unreadable dataset. With
    ``data.autoencoder`` the clips are encoded once into a `vidiff.data.LatentCache` (built
    by rank 0 while the other ranks wait) and the run's items are their latents; with
    ``data.buckets`` too, one cache per bucket (`vidiff.data.latents.BucketedLatents`), every
    bucket checked against the autoencoder before any header is read or clip encoded."""
    d = config.data
    autoencoder = None
    if d.autoencoder is not None:
        check_cache_root(config)
        autoencoder = load_autoencoder(d.autoencoder)
        latent_buckets(config, autoencoder)
    dataset = build_dataset(d)
    if len(dataset) == 0:
        raise ConfigError(f"the {d.source} dataset is empty")
    class_names = list(getattr(dataset, "class_names", []) or [])
    if d.use_labels is None:  # class-conditional when the data has classes
        d = replace(d, use_labels=bool(class_names))
        config = replace(config, data=d)
    pixels = None
    if autoencoder is not None:
        pixels, dataset = dataset, _latent_cache(config, dataset, autoencoder, dist)
    try:
        first = dataset[0]["video"]
    except (ValueError, OSError) as err:  # e.g. every video of a folder unreadable
        raise ConfigError(f"data: {err}") from None
    dataset, val = _held_out(config, dataset, autoencoder, dist)
    images = image_dataset(dataset, d.frames) if d.num_images else None
    text = build_text_encoder(d) if d.use_captions else None
    if text is not None and hasattr(text, "free"):  # a T5: encode the captions once, free it
        text = _cached_text(config, text, [dataset, val], class_names, dist)
    return RunData(config, dataset, JointVideoDataset(dataset, images), class_names, first,
                   text, autoencoder, pixels, val)


def _held_out(config: RunConfig, dataset, autoencoder, dist):
    """(the training clips, the held-out clips or None): data.val_fraction's split of the
    dataset (`vidiff.data.split`), or data.val_data's folder read like data.path (a latent
    run's encoded into a cache beside the training one)."""
    d = config.data
    if d.val_fraction:
        try:
            return held_out_split(dataset, d.val_fraction)
        except ValueError as err:
            raise ConfigError(f"data.val_fraction: {err}") from None
    if d.val_data is None:
        return dataset, None
    vd = replace(d, source="folder", path=d.val_data, buckets=[])
    try:
        val = build_dataset(vd)
        val[0]
    except (ConfigError, ValueError, OSError) as err:
        raise ConfigError(f"data.val_data {d.val_data!r}: {err}") from None
    if autoencoder is not None:
        root = f"{_cache_root(config)}-val"
        val_config = replace(config, data=replace(vd, latent_cache=root))
        val = _latent_cache(val_config, val, autoencoder, dist)
    return dataset, val


def _captions(dataset, class_names: list[str]) -> list[str]:
    """Every caption the run's items can carry: a latent cache's, a folder's sidecar texts,
    synthetic data's class names (its captions)."""
    found = getattr(dataset, "captions", None)
    if isinstance(found, list):
        return [*found, *class_names]
    entries = getattr(dataset, "entries", None)
    if entries is not None:
        return [read_caption(e) for e in entries] + list(class_names)
    return list(class_names)


def _cached_text(config: RunConfig, encoder, datasets, class_names, dist) -> TextCache:
    """The captions' embeddings in a `vidiff.text.cache.TextCache` under the run folder
    (rank 0 builds it while the others wait), the T5 encoder freed."""
    folder = Path(config.train.out) / "text_cache"
    shared = dist is not None and dist.distributed
    if shared and not dist.is_main:
        distributed.barrier(dist)
    captions = [c for ds in datasets if ds is not None for c in _captions(ds, class_names)]
    cache = TextCache.build(encoder, captions, folder)
    if shared and dist.is_main:
        distributed.barrier(dist)
    encoder.free()  # 5-11 GB that training does not need
    return cache


def load_autoencoder(path: str):
    """The `VideoAutoencoder` of ``data.autoencoder``; a `ConfigError` naming what is wrong."""
    try:
        return load_diffusers_vae(path)
    except (FileNotFoundError, ValueError, ImportError, OSError) as err:
        raise ConfigError(f"data.autoencoder {path!r}: {err}") from None


def latent_buckets(config: RunConfig, autoencoder) -> list[tuple[int, int, int, int]]:
    """The latent (c, f, h, w) of each of ``data.buckets`` (the autoencoder's
    ``latent_shape``); a `ConfigError` naming ``data.buckets[i]`` for one it does not take
    (a video VAE's frame rule, 1 + 4k frames for Wan; a height or width its spatial factor
    does not divide)."""
    shapes = []
    for i, (f, h, w) in enumerate(config.data.buckets):
        try:  # a folder's clips are RGB
            shapes.append(tuple(autoencoder.latent_shape((3, f, h, w))))
        except ValueError as err:
            raise ConfigError(f"data.buckets[{i}] = {[f, h, w]}: {err}") from None
    return shapes


def check_latent_buckets_fit(cfg, config: RunConfig,
                             shapes: list[tuple[int, int, int, int]]) -> None:
    """Each bucket's latents (`shapes`) fit the backbone config `cfg`: their height and width
    multiples of its ``size_multiple``; a `ConfigError` naming ``data.buckets[i]``."""
    div = cfg.size_multiple
    for i, ((f, h, w), (_, _, lh, lw)) in enumerate(zip(config.data.buckets, shapes,
                                                        strict=True)):
        if lh % div or lw % div:
            raise ConfigError(f"data.buckets[{i}] = {[f, h, w]} encodes to latents of {lh}x{lw}"
                              f", which do not fit the {config.model.preset} "
                              f"{config.model.kind}: their height and width must be multiples "
                              f"of {div} (frames of multiples of {div * h // lh} pixels)")


def _cache_root(config: RunConfig) -> Path:
    d = config.data
    return Path(d.latent_cache) if d.latent_cache else Path(config.train.out) / "latents"


def check_cache_root(config: RunConfig) -> None:
    """The latent cache (whose stale folders a rebuild deletes) is apart from the videos
    and the autoencoder it reads: a `ConfigError` naming ``data.latent_cache`` otherwise."""
    d = config.data
    sources = {"data.path": d.path if d.source == "folder" else None,
               "data.autoencoder": d.autoencoder}
    try:
        check_apart(_cache_root(config), sources, "data.latent_cache")
    except OutputPathError as err:
        raise ConfigError(str(err)) from None


def _latent_cache(config: RunConfig, videos, autoencoder, dist):
    d = config.data
    root = _cache_root(config)
    key = {k: getattr(d, k) for k in ("source", "path", "frames", "size", "stride", "fps",
                                      "num_videos", "seed", "options")}
    progress = config.train.progress and (dist is None or dist.is_main)
    shared = dist is not None and dist.distributed
    if shared and not dist.is_main:
        distributed.barrier(dist)  # rank 0 builds the cache first
    try:
        if d.buckets:  # a cache per bucket; data.frames and data.size do not apply
            for k in ("frames", "size", "num_videos"):
                key.pop(k)
            cache = BucketedLatents(videos, autoencoder, root, key=key, progress=progress)
        else:
            cache = LatentCache(videos, autoencoder, root, key=key, progress=progress)
    except ValueError as err:
        raise ConfigError(f"data.autoencoder: {err}") from None
    if shared and dist.is_main:
        distributed.barrier(dist)
    return cache


@dataclass
class RunNetwork:
    """The network and its wrappers."""

    raw: nn.Module  # the model itself (what checkpoints hold; under FSDP: sharded in place)
    ddp: nn.Module  # raw, or its DistributedDataParallel wrapper
    net: nn.Module  # what the loss calls: ddp, or ddp compiled (train.compile)
    ema: EMA  # the EMA of raw's weights
    backbone: object | None  # the config of the network that takes the conditions (None: by hand)

    @property
    def conditional(self) -> bool:
        """True when the network takes class labels or text."""
        cfg = self.backbone
        return cfg is not None and (cfg.num_classes is not None or bool(cfg.text_dim))


def parallel_of(config: RunConfig, dist: distributed.DistInfo) -> str:
    """How this launch spreads the network (`vidiff.train.sharding`): ``train.parallel``, or
    ddp in a single process (nothing to shard or average)."""
    return config.train.parallel if dist.distributed else "ddp"


def launch_notes(config: RunConfig, dist: distributed.DistInfo) -> list[str]:
    """The parallel settings this launch makes inert, each a sentence (printed as warnings)."""
    t, notes = config.train, []
    if t.parallel != "ddp" and not dist.distributed:
        notes.append(f"train.parallel = {t.parallel!r} has no effect in a single process "
                     f"(launch with torchrun --nproc_per_node N)")
    elif t.offload and dist.device.type != "cuda":
        notes.append("train.offload has no effect on the CPU (the shards are in CPU memory)")
    return notes


def describe_launch(config: RunConfig, dist: distributed.DistInfo) -> str:
    """How the processes share the work, for the banner: "2 process(es) (fsdp, clips split
    over 2)"."""
    parts = [parallel_of(config, dist)] if dist.distributed else []
    if config.train.parallel == "hsdp" and dist.distributed:
        parts[0] += f" in groups of {config.train.shard_size or dist.local_world}"
    if dist.sequence > 1:
        parts.append(f"clips split over {dist.sequence}")
    if config.train.offload and parallel_of(config, dist) != "ddp":
        parts.append("offloaded to CPU")
    return f"{dist.world} process(es)" + (f" ({', '.join(parts)})" if parts else "")


def build_network(config: RunConfig, data: RunData, dist: distributed.DistInfo, *,
                  resumed: bool, model: nn.Module | None = None) -> RunNetwork:
    """The run's network on its device with its EMA, not yet wrapped (`wrap_network` does
    that, after a resumed run's weights are loaded); `model`: one given by hand instead. A
    resumed run gets its weights from the checkpoint, so a vidiff ``model.init_from`` is not
    read then; a diffusers one still is, since its folder defines the architecture (the
    checkpoint's weights replace its weights)."""
    t, backbone = config.train, None
    if model is None:  # model.kind: a U-Net (init_from: inflated) or VideoFusion
        latent = data.channels if data.autoencoder is not None else None
        wanted = resolve_backbone_config(config, len(data.class_names) or None, channels=latent)
        source = config.model.init_from
        architecture = is_imported(source)
        build_config = replace(config, model=replace(config.model, init_from=None)) \
            if resumed and not architecture else config
        model, backbone = build_model(build_config, wanted)
        if not resumed:  # a resumed run's null text is in its checkpoint
            run_kind(config).init_null_text(model, data.text_encoder, config)
        if data.autoencoder is not None and config.data.buckets:
            check_latent_buckets_fit(backbone, config, data.dataset.shapes)
        pixels = None if data.pixels is None else int(data.pixels[0]["video"].shape[1])
        check_data_fits(backbone, data.first, config, clip_frames=pixels)
    raw = model.to(dist.device)
    if t.trainable == "temporal":
        freeze_all_but_temporal(raw)
    # under FSDP the average is a copy of its own (sharded like raw), sharing nothing
    average = copy.deepcopy(raw).float() if parallel_of(config, dist) != "ddp" else None
    ema = EMA(raw, t.ema_decay, t.ema_start, t.ema_warmup, average=average)
    return RunNetwork(raw, raw, raw, ema, backbone)


def wrap_network(network: RunNetwork, config: RunConfig,
                 dist: distributed.DistInfo) -> RunNetwork:
    """`network` wrapped for the launch: DDP, or the model and its EMA sharded in place
    with FSDP2 (``train.parallel``); then compiled with ``train.compile``."""
    t, raw, ema = config.train, network.raw, network.ema
    parallel = parallel_of(config, dist)
    if dist.sequence > 1:  # the trained model alone: the EMA samples whole clips
        try:
            run_kind(config).split_sequence(raw, distributed.sequence_group(dist),
                                            dist.sequence)
        except ValueError as err:
            raise ConfigError(f"train.sequence_parallel = {dist.sequence}: {err}") from None
    ddp: nn.Module = raw
    if parallel != "ddp":
        try:
            mesh = sharding.build_mesh(dist, parallel, t.shard_size)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        offload = t.offload and dist.device.type == "cuda"
        distributed.broadcast_module(raw, dist)  # rank 0's weights everywhere, as DDP does
        distributed.broadcast_module(ema.model, dist)
        sharding.shard(raw, mesh, precision=t.precision, offload=offload)
        sharding.shard(ema.model, mesh, offload=offload, trained=False)
        ema = EMA(raw, t.ema_decay, t.ema_start, t.ema_warmup, average=ema.model)
    elif dist.distributed:
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        ddp = DDP(raw, device_ids=ids)
    net = torch.compile(ddp) if t.compile else ddp
    return replace(network, ddp=ddp, net=net, ema=ema)


def freeze_all_but_temporal(model: nn.Module) -> int:
    """Freeze every parameter outside the temporal blocks (``train.trainable = "temporal"``);
    the number of parameters left to train, a `ConfigError` when there are none."""
    trainable = 0
    for name, p in model.named_parameters():
        p.requires_grad_(is_temporal_parameter(name))
        trainable += p.numel() if p.requires_grad else 0
    if trainable == 0:
        raise ConfigError('train.trainable = "temporal": the model has no temporal layers '
                          "(an image model, model.overrides.temporal = false?)")
    return trainable


@dataclass
class RunOptimization:
    """AdamW, the LR schedule and the fp16 gradient scaler."""

    optimizer: torch.optim.Optimizer
    schedule: WarmupSchedule
    scaler: torch.amp.GradScaler


def build_optimization(raw: nn.Module, config: RunConfig) -> RunOptimization:
    """AdamW over `raw`'s groups (`optimizer_groups`: no decay on vectors, VideoFusion's base
    at its own LR), each group's ``peak_lr`` recorded: the LR of step s is peak_lr times the
    schedule's factor, set every step."""
    t = config.train
    groups = optimizer_groups(raw, config)
    for group in groups:
        group["peak_lr"] = group.get("lr", t.lr)
    optimizer = torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas))
    schedule = WarmupSchedule(warmup_steps(t), t.lr_schedule, t.min_lr_ratio)
    scaler = torch.amp.GradScaler("cuda", enabled=t.precision == "fp16")
    return RunOptimization(optimizer, schedule, scaler)
