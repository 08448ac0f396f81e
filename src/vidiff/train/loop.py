"""The training loop of a `Trainer`: steps, logs, checkpoints, samples, the time budget, and
stopping cleanly on SIGINT / SIGTERM (`vidiff.train.interrupt`). The loop knows the trainer
only through `LoopRun`, the members it uses, so the trainer imports the loop and not back."""

from __future__ import annotations

import json
import os
import platform
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from vidiff.models.lora import is_adapted
from vidiff.train import distributed
from vidiff.train.budget import TimeBudget
from vidiff.train.data import describe_dataset
from vidiff.train.interrupt import StopSignals
from vidiff.train.logger import RunLogger, StepMeter, peak_rss_gib
from vidiff.train.result import TrainResult
from vidiff.train.setup import describe_launch
from vidiff.train.trackers import build_trackers
from vidiff.utils.machine import cpu_model

__all__ = ["LoopRun", "run"]


class LoopRun(Protocol):
    """What the loop needs of a run (`vidiff.train.trainer.Trainer` is one)."""

    config: Any  # the RunConfig: train.steps, log_every, ckpt_every, sample_every, ...
    step: int  # optimizer steps taken
    lr_horizon: int  # the step where the LR decay ends (a time budget re-aims it)
    dist: distributed.DistInfo
    device: torch.device
    out: Path
    last_checkpoint: Path | None
    dataset: Any
    class_names: list[str] | None
    num_params: int
    num_trained: int
    global_batch: int
    tokens_per_clip: int  # f x h x w of the model's clips
    threads: Any  # a ThreadCount: count, poll(), describe()
    raw: torch.nn.Module  # the model, unwrapped
    optimizer: torch.optim.Optimizer
    schedule: Any  # the LR schedule: warmup

    def say(self, message: str) -> None: ...
    def batches(self) -> Iterator[dict[str, Any]]: ...
    def train_step(self, batches: Iterator[dict[str, Any]]) -> tuple[float, float]: ...
    def loss_levels(self) -> dict: ...
    def validate(self) -> dict: ...
    def save(self) -> Path | None: ...
    def write_samples(self, cutting: Callable[[], AbstractContextManager] | None = None
                      ) -> list[Path]: ...


def _spend(trainer: LoopRun, budget: TimeBudget) -> bool:
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


def run(trainer: LoopRun, until: int | None = None) -> TrainResult:
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
        (trainer.out / "environment.json").write_text(json.dumps(_environment(trainer),
                                                                 indent=2))
    report = getattr(trainer.dataset, "report", None)  # data.buckets: clips per bucket
    if report is not None and trainer.dist.is_main:
        report.write(trainer.out / "buckets.json")
    if trainer.step >= end:
        trainer.say(f"already at step {trainer.step} of {t.steps}: nothing to train "
                    f"(raise --steps to go on)")
        result.seconds = time.perf_counter() - start_time
        return result
    trainer.say(_banner(trainer))
    for line in report.lines() if report is not None else ():
        trainer.say(line)
    logger = None
    if trainer.dist.is_main:  # rank 0 alone logs, to the file and the trackers
        trackers = build_trackers(t.report_to, trainer.out, trainer.step, t.wandb_project,
                                  trainer.say)
        logger = RunLogger(trainer.out, trainer.step, trackers)
        logger.config(trainer.config.to_dict())
    stop = StopSignals("finishing this step, then writing a checkpoint (again: stop now)",
                       "cutting the sample grid, then writing a checkpoint (again: stop now)")
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


def _environment(trainer: LoopRun) -> dict:
    """The machine of this start (`vidiff report` shows it)."""
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "platform": platform.platform(), "processor": cpu_model(),
           "cpu_count": os.cpu_count(), "device": str(trainer.device),
           "processes": trainer.dist.world, "threads": trainer.threads.describe()}
    if trainer.device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(trainer.device)
    return env


def _banner(trainer: LoopRun) -> str:
    """The line a run starts with: the data found, the model, the batch, the warmup."""
    d = trainer.config.data
    shape = f"{d.frames}{f'+{d.num_images}' if d.num_images else ''}x{d.size}x{d.size}"
    if d.buckets:
        shape = f"one of {len(d.buckets)} bucket shapes (below)"
    trained = trainer.num_trained
    share = "" if trained == trainer.num_params else f" ({_count(trained)} trained)"
    if trainer.config.train.lora.rank:
        layers = sum(is_adapted(m) for m in trainer.raw.modules())
        share = (f" ({_count(trained)} trained: LoRA rank {trainer.config.train.lora.rank} on "
                 f"{layers} layers)")
    return (f"data: {describe_dataset(trainer.dataset, trainer.class_names)}; "
            f"{trainer.num_params / 1e6:.2f}M parameters{share}, "
            f"{describe_launch(trainer.config, trainer.dist)} on "
            f"{trainer.device} with {trainer.threads.describe()}, {trainer.global_batch} "
            f"videos per step of {shape}, warmup "
            f"{trainer.schedule.warmup} steps, out: {trainer.out}")


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 10_000 else f"{n:,}"


def _throughput(record: dict, trainer: LoopRun, steps: int) -> dict:
    """Tokens per second (the positions f x h x w of the model's clips), the ETA of
    train.steps at the interval's rate, and this process's peak resident memory."""
    rate = record["it_s"]
    return {"tokens_s": record["videos_s"] * trainer.tokens_per_clip,
            "eta_s": (steps - record["step"]) / rate if rate > 0 else None,
            "rss_gib": peak_rss_gib()}


def _progress_line(record: dict, steps: int) -> str:
    """The plain progress line of a non-interactive terminal."""
    eta = record["eta_s"]
    left = "" if eta is None else f", ETA {eta / 60:.1f} min"
    held = f", val_loss {record['val_loss']:.4f}" if "val_loss" in record else ""
    return (f"step {record['step']}/{steps}: loss {record['loss']:.4f}{held}, "
            f"{record['videos_s']:.1f} videos/s{left}")


def _validation(trainer: LoopRun, meter: StepMeter) -> dict:
    """The held-out loss record (every rank), its seconds kept out of the step rate."""
    start = time.perf_counter()
    held_out = trainer.validate()
    if held_out:
        held_out["val_s"] = time.perf_counter() - start
        meter.exclude(held_out["val_s"])
    return held_out


def _samples(trainer: LoopRun, result: TrainResult, stop: StopSignals,
             logger: RunLogger | None) -> bool:
    """The sample grid of this step, cut short by a stop request (to the trackers too);
    True when one came (on any rank)."""
    trainer.raw.eval()
    paths = trainer.write_samples(stop.cutting)
    result.samples += paths
    if logger is not None:
        logger.videos(paths, trainer.step)
    trainer.raw.train()
    return distributed.any_rank(stop.requested is not None, trainer.dist)


def _loop(trainer: LoopRun, end: int, result: TrainResult, logger: RunLogger | None,
          stop: StopSignals) -> None:
    """Steps until `end`, the time budget or a signal; logs, checkpoints and samples at their
    intervals and after the last step. A signal skips the samples (or cuts a grid short)
    and the step's checkpoint is written before the loop ends."""

    t = trainer.config.train
    sample_every = t.ckpt_every if t.sample_every is None else t.sample_every
    batches = trainer.batches()
    budget = TimeBudget(t.max_seconds, t.budget_clock) if t.max_seconds else None
    meter = StepMeter(trainer.global_batch)
    # a terminal gets the bar; a log file (SLURM's, a pipe) a plain line per log record
    lines = trainer.dist.is_main and t.progress and not sys.stderr.isatty()
    bar = tqdm(total=t.steps, initial=trainer.step, desc="train", unit="step",
               disable=not (trainer.dist.is_main and t.progress) or lines, dynamic_ncols=True)
    trainer.raw.train()
    try:
        while trainer.step < end:
            meter.add(*trainer.train_step(batches))
            bar.update(1)
            trainer.threads.poll()  # train.threads = 0: the idle cores, re-checked
            out_of_time = budget is not None and _spend(trainer, budget)
            signalled = distributed.any_rank(stop.requested is not None, trainer.dist)
            last = trainer.step == end or out_of_time or signalled
            validating = (bool(t.val_every and trainer.step % t.val_every == 0)
                          or (last and not signalled))
            if trainer.step % max(1, t.log_every) == 0 or last or validating:
                held_out = _validation(trainer, meter) if validating else {}
                record = meter.record(trainer.step, trainer.optimizer.param_groups[0]["lr"])
                record["threads"] = trainer.threads.count
                record.update(trainer.loss_levels())  # a collective: every rank calls it
                record.update(held_out)
                record.update(_throughput(record, trainer, t.steps))
                result.loss = record["loss"]
                if lines:
                    trainer.say(_progress_line(record, t.steps))
                bar.set_postfix(loss=f"{record['loss']:.4f}",
                                vid_s=f"{record['videos_s']:.1f}")
                if logger is not None:
                    logger.log(record)
            saved = bool(t.ckpt_every and trainer.step % t.ckpt_every == 0) or last
            if saved:
                trainer.save()
            final = trainer.step == t.steps or out_of_time
            if not signalled and ((sample_every and trainer.step % sample_every == 0)
                                  or final):
                signalled = _samples(trainer, result, stop, logger)
                if signalled and not saved:  # stopped during the grid: checkpoint now
                    trainer.save()
            if signalled:
                result.interrupted = stop.requested or signal.SIGTERM
                trainer.say(f"stopped by a signal after step {trainer.step}; checkpoint "
                            f"{trainer.last_checkpoint}. Run the same command again to "
                            f"resume")
                break
            if out_of_time:
                trainer.say(f"time budget of {t.max_seconds:g} s spent at step "
                            f"{trainer.step} (train.max_seconds)")
                break
    finally:
        bar.close()
        del batches
