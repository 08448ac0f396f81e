"""The training loop of a `Trainer`: steps, logs, checkpoints, samples, the time budget, and
stopping cleanly on SIGINT / SIGTERM (`vidiff.train.interrupt`)."""

from __future__ import annotations

import json
import signal
import time
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from vidiff.train import distributed
from vidiff.train.budget import TimeBudget
from vidiff.train.data import describe_dataset
from vidiff.train.interrupt import StopSignals
from vidiff.train.logger import RunLogger, StepMeter
from vidiff.train.result import TrainResult

if TYPE_CHECKING:
    from vidiff.train.trainer import Trainer

__all__ = ["run"]


def _spend(trainer: Trainer, budget: TimeBudget) -> bool:
    """Count a step against `budget`; past warmup, aim the end of the LR decay at the
    step where the budget will end (the mean rate so far, re-estimated every step). True
    when the budget allows no further step (rank 0 decides, so every process stops at
    the same step with the same LR)."""
    budget.done_step()
    t = trainer.config.train
    # rank 0's clock decides for all: [stop, LR horizon] (float64 holds any step exactly)
    decision = torch.tensor([float(not budget.another()),
                             float(budget.horizon(trainer.step, cap=t.steps))],
                            dtype=torch.float64, device=trainer.device)
    if trainer.dist.distributed:
        torch.distributed.broadcast(decision, 0)
    if trainer.step >= trainer.schedule.warmup:
        trainer.lr_horizon = int(decision[1])
    return bool(decision[0])


def run(trainer: Trainer, until: int | None = None) -> TrainResult:
    """Train to ``train.steps`` (or stop after step `until`, with a checkpoint, as an
    interruption would); checkpoints, samples and logs along the way. SIGINT or SIGTERM
    ends the current step, writes a checkpoint and returns (`TrainResult.interrupted`);
    a second one stops at once."""
    t = trainer.config.train
    end = t.steps if until is None else min(until, t.steps)
    start_time = time.perf_counter()
    result = TrainResult(trainer.step, None, trainer.out, trainer.last_checkpoint)
    if trainer.dist.is_main:
        (trainer.out / "config.json").write_text(json.dumps(trainer.config.to_dict(), indent=2))
    if trainer.step >= end:
        trainer.say(f"already at step {trainer.step} of {t.steps}: nothing to train "
                    f"(raise --steps to go on)")
        result.seconds = time.perf_counter() - start_time
        return result
    trainer.say(_banner(trainer))
    logger = RunLogger(trainer.out, t.tensorboard, trainer.step) if trainer.dist.is_main else None
    stop = StopSignals("finishing this step, then writing a checkpoint (again: stop now)")
    try:
        with stop:
            _loop(trainer, end, result, logger, stop)
    finally:
        if logger is not None:
            logger.close()
    result.step, result.checkpoint = trainer.step, trainer.last_checkpoint
    result.seconds = time.perf_counter() - start_time
    trainer.say(f"done: step {trainer.step}, {result.seconds:.0f} s, checkpoint "
                f"{trainer.last_checkpoint}")
    return result


def _banner(trainer: Trainer) -> str:
    """The line a run starts with: the data found, the model, the batch, the warmup."""
    d = trainer.config.data
    shape = f"{d.frames}{f'+{d.num_images}' if d.num_images else ''}x{d.size}x{d.size}"
    trained = trainer.num_trained
    share = "" if trained == trainer.num_params else f" ({trained / 1e6:.2f}M trained)"
    return (f"data: {describe_dataset(trainer.dataset, trainer.class_names)}; "
            f"{trainer.num_params / 1e6:.2f}M parameters{share}, {trainer.dist.world} "
            f"process(es) on "
            f"{trainer.device}, {trainer.global_batch} videos per step of {shape}, warmup "
            f"{trainer.schedule.warmup} steps, out: {trainer.out}")


def _loop(trainer: Trainer, end: int, result: TrainResult, logger: RunLogger | None,
          stop: StopSignals) -> None:
    """Steps until `end`, the time budget or a signal; logs, checkpoints and samples at their
    intervals and after the last step (no samples after a signal: exit quickly)."""
    t = trainer.config.train
    sample_every = t.ckpt_every if t.sample_every is None else t.sample_every
    batches = trainer.batches()
    budget = TimeBudget(t.max_seconds, t.budget_clock) if t.max_seconds else None
    meter = StepMeter(trainer.global_batch)
    bar = tqdm(total=t.steps, initial=trainer.step, desc="train", unit="step",
               disable=not (trainer.dist.is_main and t.progress), dynamic_ncols=True)
    trainer.raw.train()
    try:
        while trainer.step < end:
            meter.add(*trainer.train_step(batches))
            bar.update(1)
            out_of_time = budget is not None and _spend(trainer, budget)
            signalled = distributed.any_rank(stop.requested is not None, trainer.dist)
            last = trainer.step == end or out_of_time or signalled
            if trainer.step % max(1, t.log_every) == 0 or last:
                record = meter.record(trainer.step, trainer.optimizer.param_groups[0]["lr"])
                result.loss = record["loss"]
                bar.set_postfix(loss=f"{record['loss']:.4f}",
                                vid_s=f"{record['videos_s']:.1f}")
                if logger is not None:
                    logger.log(record)
            if (t.ckpt_every and trainer.step % t.ckpt_every == 0) or last:
                trainer.save()
            if signalled:
                result.interrupted = stop.requested or signal.SIGTERM
                trainer.say(f"stopped by a signal after step {trainer.step}; checkpoint "
                            f"{trainer.last_checkpoint}. Run the same command again to "
                            f"resume")
                break
            final = trainer.step == t.steps or out_of_time
            if (sample_every and trainer.step % sample_every == 0) or final:
                trainer.raw.eval()
                result.samples += trainer.write_samples()
                trainer.raw.train()
            if out_of_time:
                trainer.say(f"time budget of {t.max_seconds:g} s spent at step "
                            f"{trainer.step} (train.max_seconds)")
                break
    finally:
        bar.close()
        del batches
