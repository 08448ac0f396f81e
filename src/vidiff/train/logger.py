"""The run log: ``log.jsonl`` (one JSON record per logged step), plus the trackers of
``train.report_to`` (TensorBoard, W&B: `vidiff.train.trackers`). A resumed run first cuts
the log back to its checkpoint (`truncate_log`), so every step appears once and in order,
whatever happened after the checkpoint it resumes from."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["RunLogger", "StepMeter", "peak_rss_gib", "truncate_log"]

LOG_FILE = "log.jsonl"


def truncate_log(path: str | os.PathLike, step: int) -> int:
    """Drop the records of ``log.jsonl`` after `step` (and lines that are not whole JSON
    records, e.g. one cut by a kill); returns how many lines were dropped. Atomic."""
    path = Path(path)
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            keep = isinstance(record, dict) and int(record.get("step", 0)) <= step
        except (ValueError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)
    return dropped


class RunLogger:
    """Appends records to ``<out>/log.jsonl`` and hands them to the run's trackers
    (`vidiff.train.trackers`), each with the config once and the sample videos."""

    def __init__(self, out: Path, start_step: int = 0, trackers: list | None = None):
        self.path = out / LOG_FILE
        truncate_log(self.path, start_step)
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self.trackers = list(trackers or [])

    def config(self, config: dict) -> None:
        """The run's config, to every tracker."""
        for tracker in self.trackers:
            tracker.config(config)

    def log(self, record: dict[str, Any]) -> None:
        """Write one record (it must have an int ``"step"``)."""
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        for tracker in self.trackers:
            tracker.log(record)

    def videos(self, paths: list[Path], step: int) -> None:
        """The sample files written at `step`, to every tracker."""
        for tracker in self.trackers:
            for path in paths:
                tracker.video(Path(path), step)

    def close(self) -> None:
        """Flush and close the files."""
        self.file.close()
        for tracker in self.trackers:
            tracker.close()


def peak_rss_gib() -> float | None:
    """This process's peak resident memory in GiB (None where the OS does not tell)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 * (1 if sys.platform == "darwin" else 1024)  # bytes / KiB


class StepMeter:
    """Losses and timing of the steps since the last log record."""

    def __init__(self, global_batch: int):
        self.global_batch = global_batch
        self.start_wall, self.start_cpu = time.perf_counter(), time.process_time()
        self._reset()

    def _reset(self) -> None:
        self.losses: list[float] = []
        self.norm, self.since = 0.0, time.perf_counter()

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` (a validation's) out of the interval's step rate."""
        self.since += seconds

    def add(self, loss: float, norm: float) -> None:
        self.losses.append(loss)
        self.norm = norm

    def record(self, step: int, lr: float) -> dict[str, Any]:
        """The log record of the interval, which then starts anew."""
        seconds = max(time.perf_counter() - self.since, 1e-9)
        n = len(self.losses)
        record = {
            "step": step,
            "loss": sum(self.losses) / max(1, n),
            "lr": lr,
            "grad_norm": self.norm,
            "it_s": n / seconds,
            "videos_s": n * self.global_batch / seconds,
            "elapsed_s": time.perf_counter() - self.start_wall,
            "cpu_s": time.process_time() - self.start_cpu,  # this process, all threads
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            record["gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30  # peak so far
        self._reset()
        return record
