"""The trainer: `Trainer(config).run()` (the loop itself: `vidiff.train.loop`).

Per optimizer step: ``grad_accum`` micro-batches of ``data.batch_size`` videos per process,
the loss of `vidiff.diffusion.losses.diffusion_loss` (noise from the noise prior, t uniform),
AdamW with linear warmup then constant or cosine LR, gradient clipping, an EMA of the weights,
optional bf16/fp16 autocast (GradScaler for fp16), condition dropout for classifier-free guidance.

Randomness: every training sample's t, noise and condition dropout come from a generator
seeded by its global position in the stream of samples (`vidiff.train.step`), and the data
order is a function of the same position (`vidiff.train.data.ShardedOrder`). So under DDP
the union over ranks is the single-process batch of the same global size, draw for draw
(tested to 1e-5), and a resumed run continues the trajectory of an uninterrupted one
(tested bitwise). The learning rate is a function of the step, the horizon and the config.

Rank 0 alone writes logs (``log.jsonl``, TensorBoard when installed), checkpoints and samples;
every rank waits at a barrier around checkpoints and samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from vidiff.cond import Cond
from vidiff.diffusion.process import build_process
from vidiff.io import OutputPathError, check_output_dir
from vidiff.kinds import is_imported
from vidiff.modelio.checkpoint import load_weights, save_checkpoint, stage_checkpoint
from vidiff.modelio.pipeline import Pipeline
from vidiff.models.diffusers_schedule import shift_for_tokens
from vidiff.sampling.samplers import sample
from vidiff.train import distributed
from vidiff.train.build import build_prior, model_spec, resolve_backbone_config
from vidiff.train.conditions import batch_conditions
from vidiff.train.config import RunConfig, inert_settings, validate
from vidiff.train.data import (
    BucketOrder,
    ShardedOrder,
    make_loader,
)
from vidiff.train.heldout import HeldOutLoss
from vidiff.train.init import with_init_schedule, with_pipeline_parts
from vidiff.train.loop import run
from vidiff.train.result import NonFiniteLossError, TrainResult
from vidiff.train.resume import (
    Restored,
    check_restored_model,
    remove_leftovers,
    restore_rng,
    resume_point,
    trained_names,
    training_state,
)
from vidiff.train.runlock import RunLock
from vidiff.train.samples import check_sample_conditions, lowres_condition, write_grid
from vidiff.train.setup import (
    build_data,
    build_network,
    build_optimization,
    launch_notes,
    wrap_network,
)
from vidiff.train.sharded_state import restore_optimizer, write_shards
from vidiff.train.sharding import is_sharded
from vidiff.train.step import Stepper, set_lr
from vidiff.train.student import build_objective, init_from_teacher, student_sampling
from vidiff.utils.config_io import ConfigError
from vidiff.utils.threads import ThreadCount, auto_threads

__all__ = [
    "NonFiniteLossError",
    "TrainResult",
    "Trainer",
    "auto_threads",
    "resolve_backbone_config",
    "train",
]


class Trainer:
    """Trains the model of a `RunConfig`; `run()` goes to ``train.steps`` and returns a
    `TrainResult`.

    `model` replaces the U-Net built from ``config.model`` (any denoiser module taking
    ``(x, t, **cond)``; tests use it). The run folder is ``config.train.out``; with
    ``train.resume = "auto"`` an existing checkpoint there is continued.
    """

    def __init__(self, config: RunConfig, *, model: nn.Module | None = None,
                 echo: bool = True):
        self.config = validate(config)
        self.echo = echo
        try:
            self.dist = distributed.setup(config.train.device)
        except ValueError as err:  # e.g. --device cuda on a machine without CUDA
            raise ConfigError(str(err)) from None
        self.device = self.dist.device
        self.lock: RunLock | None = None
        try:
            self.dist = replace(self.dist, sequence=self._sequence_degree())
            self._take_run_folder()
            self._build(model)
        except BaseException:
            self.close()
            raise

    def _sequence_degree(self) -> int:
        """``train.sequence_parallel``, which must divide this launch's processes."""
        degree, world = self.config.train.sequence_parallel, self.dist.world
        if world % degree:
            raise ConfigError(f"train.sequence_parallel = {degree} must divide the {world} "
                              f"process(es) of this launch (torchrun --nproc_per_node N)")
        return degree

    def _take_run_folder(self) -> None:
        """Rank 0 checks that --out can be written, locks it against a second trainer and
        removes leftovers of killed saves; every rank learns whether that worked."""
        self.out = Path(self.config.train.out)
        error = None
        if self.dist.is_main:
            try:
                check_output_dir(self.out, "train.out (--out)")
                self.lock = RunLock(self.out).acquire()
                remove_leftovers(self.out)
            except (OutputPathError, RuntimeError, OSError) as err:
                error = str(err)
        if distributed.any_rank(error is not None, self.dist):
            raise ConfigError(error or f"rank 0 could not take the run folder {self.out}")

    def _build(self, model: nn.Module | None) -> None:
        """Data, the restore point, network, optimization (`vidiff.train.setup`), in that
        order: the data decides the classes and channels the network is built for, the
        restore point whether ``model.init_from`` is read."""
        t = self.config.train
        # torch's CPU threads: train.threads, or the idle cores re-checked (loop.py polls)
        self.threads = ThreadCount(t.threads, self.dist.local_world)
        if t.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.precision = fp16 needs a CUDA device; use bf16 or fp32")
        for note in inert_settings(self.config) + launch_notes(self.config, self.dist):
            self.say(f"warning: {note}")
        self.config, schedule = with_init_schedule(self.config)  # an imported model's schedule
        self.config, parts = with_pipeline_parts(self.config)  # and its VAE and text encoder
        if self.config.distill.teacher is not None:  # a student samples with its own steps
            self.config = student_sampling(self.config)
        if schedule or parts:  # the replaced sections checked as if they had been written
            validate(replace(self.config, model=replace(self.config.model, init_schedule=False)))
        for note in ([schedule] if schedule else []) + parts:
            self.say(note)
        data = build_data(self.config, self.dist)
        # data.use_labels resolved; a dynamic flow shift (LTX-Video's) for the clips' tokens
        config = data.config
        tokens = data.clip[1] * data.clip[2] * data.clip[3]
        self.tokens_per_clip = tokens
        self.config = config = replace(config, diffusion=shift_for_tokens(config.diffusion,
                                                                          tokens))
        self.dataset, self.train_data = data.dataset, data.train_data
        self.class_names, self.fps = data.class_names, data.fps
        self.text_encoder, self.autoencoder = data.text_encoder, data.autoencoder
        self.clip = data.clip  # (C, F, H, W) of the model's clips (the first bucket's)
        restored = self._restore_point()
        network = build_network(config, data, self.dist, resumed=restored is not None,
                                model=model)
        if restored is not None:  # the weights first: FSDP shards them as they are
            self._restore_weights(restored, network.raw, network.ema.model)
        elif config.distill.teacher is not None:  # a student starts as its teacher
            self.say(init_from_teacher(config, network.raw, network.ema.model))
        network = wrap_network(network, config, self.dist)
        self.raw, self.ddp, self.net, self.ema = (network.raw, network.ddp, network.net,
                                                  network.ema)
        self.backbone, self.conditional = network.backbone, network.conditional
        self.num_params = sum(p.numel() for p in self.raw.parameters())
        self.num_trained = sum(p.numel() for p in self.raw.parameters() if p.requires_grad)
        source = config.model.init_from
        self.imported = is_imported(source)
        self.diffusion = build_process(config.diffusion)
        self.prior = build_prior(config)
        opt = build_optimization(self.raw, config)
        self.optimizer, self.schedule, self.scaler = opt.optimizer, opt.schedule, opt.scaler
        self.lr_horizon = t.steps  # where the LR decay ends; a time budget re-aims it (loop)
        objective = None if config.distill.teacher is None else build_objective(
            config, self.diffusion, self.device, self.ema.model)
        self.stepper = Stepper(config, self.dist, self.raw, self.ddp, self.net, self.ema,
                               self.optimizer, self.scaler, self.diffusion, self.prior,
                               self._cond, objective)
        backbone = self.backbone if self.conditional else None
        check_sample_conditions(config, getattr(backbone, "num_classes", None),
                                self.text_encoder is not None)
        self.heldout = None if data.val is None else HeldOutLoss(
            data.val, config, self.diffusion, self.prior, backbone, self.text_encoder,
            self.device)
        self.step = 0
        self.position = 0  # training videos consumed so far, over all processes
        self.last_checkpoint: Path | None = None
        if restored is not None:
            self._resume(restored)
        set_lr(self.optimizer, self.lr_factor)

    @property
    def lr_factor(self) -> float:
        """The LR factor of the coming step (warmup, then constant or cosine decay to the
        horizon): a function of the step and this run's config alone, so a resumed run
        follows its new settings."""
        return self.schedule(self.step, self.lr_horizon)

    # -- setup helpers ----------------------------------------------------------------------------
    def _restore_point(self) -> Restored | None:
        """The checkpoint to resume from (none for a new run), its settings checked."""
        restored, allowed = resume_point(self.config, self.out)
        if allowed:
            self.say(f"resuming with changed settings: {'; '.join(allowed)}")
        return restored

    def _meta(self, step: int = 0) -> dict[str, Any]:
        d = self.config.data
        spec = model_spec(self.config, self.raw, class_names=self.class_names,
                          clip=self.clip, fps=self.fps, step=step)
        return {
            # what a model is: read by vidiff.Pipeline and every command (vidiff.modelio.spec)
            "model_spec": spec.to_dict() if spec is not None else None,
            # facts about the training, for vidiff info
            "num_parameters": self.num_params,
            "trained_parameters": self.num_trained,
            # the architecture is a diffusers folder's (model.init_from), not the preset's
            "architecture_from": self.config.model.init_from if self.imported else None,
            "num_images": d.num_images,
            "world_size": self.dist.world,
        }

    def _restore_weights(self, restored: Restored, raw: nn.Module, average: nn.Module) -> None:
        """Load a checkpoint's weights and EMA into the network, before it is wrapped."""
        ckpt = restored.checkpoint
        check_restored_model(restored, raw, self.class_names, self.config.data.use_labels)
        # the EMA first: it shares the frozen parameters, which must get the trained weights
        load_weights(average, restored.ema, str(ckpt.path))
        load_weights(raw, restored.model, str(ckpt.path))

    def _resume(self, restored: Restored) -> None:
        """The training state of a checkpoint whose weights are loaded: optimizer, scaler,
        RNG, step and data position."""
        ckpt = restored.checkpoint
        state = restored.state
        saved = state.get("optimizer_params") or trained_names(self.raw, ckpt.config)
        note = restore_optimizer(self.optimizer, self.raw, ckpt.path, state, saved)
        if note:
            self.say(note)
        if self.config.train.max_seconds and state.get("lr_horizon"):
            self.lr_horizon = int(state["lr_horizon"])  # a time-budget run's re-aimed end
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        restore_rng(state.get("rng", {}), self.device)
        self.step = int(state["step"])
        self.position = int(state.get("data_position", self.step * self.global_batch))
        self.last_checkpoint = ckpt.path
        self.say(f"resumed from {ckpt.path} at step {self.step}")

    def say(self, message: str) -> None:
        """Print a `[vidiff train]` line (rank 0, unless the trainer was built with echo=False)."""
        if self.echo and self.dist.is_main:
            tqdm.write(f"[vidiff train] {message}")

    # -- one step ---------------------------------------------------------------------------------
    @property
    def global_batch(self) -> int:
        """Videos per optimizer step over all processes."""
        return self.stepper.batch

    def _cond(self, batch: dict[str, Any], drops: torch.Tensor) -> Cond:
        """The model's conditions for `batch` (`vidiff.train.conditions`)."""
        return batch_conditions(batch, drops, self.config,
                                self.backbone if self.conditional else None,
                                self.text_encoder, self.device)

    def validate(self) -> dict:
        """The held-out validation loss of the EMA weights (`vidiff.train.heldout`; call it on
        every rank); {} without held-out data."""
        return {} if self.heldout is None else self.heldout(self.ema.model)

    def train_step(self, batches) -> tuple[float, float]:
        """One optimizer step over `grad_accum` micro-batches (`vidiff.train.step`); (mean
        loss, grad norm)."""
        loss, norm = self.stepper(batches, step=self.step, position=self.position,
                                  lr_factor=self.lr_factor, last_checkpoint=self.last_checkpoint)
        self.step += 1
        self.position += self.global_batch
        return loss, norm

    def loss_levels(self) -> dict:
        """The loss by noise level since the last call, over every process (call it on
        every rank): `vidiff.train.levels.LevelBins.record`; {} with train.loss_bins = 0."""
        levels = self.stepper.levels
        return {} if levels is None else levels.record(self.dist)

    # -- outputs ----------------------------------------------------------------------------------
    def save(self) -> Path | None:
        """Checkpoint the current step (rank 0 writes; every rank waits)."""
        distributed.barrier(self.dist)
        path, staged = None, None
        if is_sharded(self.raw):  # every rank writes its shards into rank 0's staged folder
            staged = Path(distributed.broadcast_object(
                str(stage_checkpoint(self.out, self.step)) if self.dist.is_main else None,
                self.dist))
            write_shards(staged, self.raw, self.ema.model, self.optimizer)
            distributed.barrier(self.dist)
        if self.dist.is_main:
            whole = staged is None  # an FSDP run's optimizer state is in its shards
            state = training_state(self.optimizer, self.raw, self.scaler, self.device,
                                   lr_horizon=self.lr_horizon, position=self.position,
                                   world=self.dist.world, with_optimizer=whole)
            path = save_checkpoint(
                self.out, self.step, model=self.raw if whole else None,
                ema=self.ema.model if whole else None, state=state,
                config=self.config.to_dict(), meta=self._meta(self.step),
                keep=self.config.train.keep_checkpoints, staged=staged,
            )
        distributed.barrier(self.dist)
        self.last_checkpoint = path or self.last_checkpoint
        return path

    def pipeline(self) -> Pipeline | None:
        """The EMA model as a `vidiff.Pipeline` (what the run's checkpoint will load as);
        None for a network of no registered kind (passed to the trainer by hand)."""
        spec = model_spec(self.config, self.raw, class_names=self.class_names,
                          clip=self.clip, fps=self.fps, step=self.step)
        return None if spec is None else Pipeline(self.ema.model, spec, self.text_encoder,
                                                  autoencoder=self.autoencoder)

    def sample_videos(self, count: int | None = None, seed: int | None = None) -> torch.Tensor:
        """`count` videos (B, C, F, H, W) from the EMA model as the run's [sample] section
        says, with fixed noise (train.sample_seed unless `seed`), in one batch."""
        t, s = self.config.train, self.config.sample
        count = count or t.sample_count
        g = torch.Generator(device=self.device).manual_seed(t.sample_seed if seed is None
                                                            else seed)
        pipe = self.pipeline()
        if pipe is None:  # a hand-made network: unconditional samples
            net = self.diffusion.denoiser_of(self.ema.model)
            return sample(net, (count, *self.clip), diffusion=self.diffusion,
                          prior=self.prior,
                          sampler=s.sampler, steps=s.steps, eta=s.eta, generator=g,
                          device=self.device)
        lowres = lowres_condition(self.dataset, self.config.data.lowres_size, count,
                                  self.device)
        return pipe(count, generator=g, lowres=lowres, batch_size=count,
                    class_labels=t.val_classes or None, captions=t.val_prompts or None)

    def write_samples(self, cutting: Callable[[], AbstractContextManager] | None = None
                      ) -> list[Path]:
        """Sample and write ``samples/step_XXXXXXXX.{mp4,gif,png}`` (rank 0; every rank
        calls it), cut short by a stop request inside `cutting()`: `samples.write_grid`."""
        return write_grid(self.out, self.step, self.sample_videos, fps=self.fps,
                          dist=self.dist, sharded=is_sharded(self.ema.model), say=self.say,
                          cutting=cutting)

    # -- the loop ---------------------------------------------------------------------------------
    def batches(self) -> Iterator[dict[str, Any]]:
        """This rank's training batches from the current step on, in the run's fixed order
        (what `run` feeds to `train_step`; for loops of your own)."""
        d = self.config.data
        if d.buckets:  # each batch from one bucket
            return make_loader(self.train_data, BucketOrder(
                self.dataset.bucket_sizes, d.batch_size, rank=self.dist.data_rank,
                world=self.dist.data_world, seed=d.seed, offset=self.position), d.workers,
                pin_memory=self.device.type == "cuda")
        order = ShardedOrder(len(self.dataset), d.batch_size, rank=self.dist.data_rank,
                             world=self.dist.data_world, seed=d.seed, num_images=d.num_images,
                             num_frames=d.frames, offset=self.position,
                             image_items=len(self.train_data.images or ()))
        return make_loader(self.train_data, order, d.workers,
                           pin_memory=self.device.type == "cuda")

    def run(self, until: int | None = None) -> TrainResult:
        """Train to ``train.steps`` (or stop after step `until`, with a checkpoint, as an
        interruption would); checkpoints, samples and logs along the way. SIGINT or SIGTERM
        ends the current step, writes a checkpoint and returns (`TrainResult.interrupted`);
        a second one stops at once. See `vidiff.train.loop`."""
        return run(self, until)

    def close(self) -> None:
        """Release the run folder's lock and leave the process group if this trainer joined
        it (idempotent)."""
        if self.lock is not None:
            self.lock.release()
        distributed.teardown(self.dist)

    def __del__(self) -> None:  # a trainer that was never closed still frees its run folder
        lock = getattr(self, "lock", None)
        if lock is not None:
            lock.release()


def train(config: RunConfig, *, until: int | None = None, **kwargs) -> TrainResult:
    """Build a `Trainer` for `config` (keywords: see `Trainer`), run it (to `until`, default
    ``train.steps``) and leave the process group afterwards."""
    trainer = Trainer(config, **kwargs)
    try:
        return trainer.run(until)
    finally:
        trainer.close()
