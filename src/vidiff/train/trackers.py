"""Experiment trackers: where a run's log goes besides ``log.jsonl`` (``train.report_to``).

Each tracker gets the same three things from `vidiff.train.logger.RunLogger` (rank 0 only):
the config once, every log record (scalars, the loss by level as a histogram, the held-out
loss), and each sample grid the run writes (as a video). A tracker whose package is missing
is skipped with one line that says how to install it; the run goes on.

    tensorboard  <out>/tensorboard: scalars ``train/<key>``, ``loss_by_level/<a>-<b>``,
                 ``val_loss_by_level/<u>``; the histogram ``loss_by_level``; samples as
                 animated GIFs (the Images tab); the config as text
    wandb        a W&B run named after train.out in project train.wandb_project (its id kept
                 in <out>/wandb_id, so a resumed run continues it): the same scalars,
                 ``wandb.Histogram``, ``wandb.Video`` and the config; ``WANDB_MODE=offline``
                 writes <out>/wandb/offline-run-* with no network (``wandb sync`` uploads it)
"""

from __future__ import annotations

import json
import struct
import uuid
from pathlib import Path
from typing import Any

from vidiff.utils.registry import Registry

__all__ = ["TRACKERS", "TensorBoardTracker", "Tracker", "WandbTracker", "build_trackers",
           "level_edges", "level_scalars"]


def level_edges(bins: int) -> list[float]:
    """The bins + 1 edges of `bins` equal bins of the level in [0, 1]."""
    return [k / bins for k in range(bins + 1)]


def level_scalars(record: dict[str, Any]) -> dict[str, float]:
    """A record's losses by level as named scalars: each non-empty bin of n as
    ``loss_by_level/0-0.1`` (the first of 10), each held-out level u as
    ``val_loss_by_level/0.1``."""
    out = {}
    losses = record.get("loss_by_level") or []
    n = len(losses)
    for k, v in enumerate(losses):
        if v is not None:
            out[f"loss_by_level/{k / n:.2g}-{(k + 1) / n:.2g}"] = v
    val = record.get("val_loss_by_level") or []
    for k, v in enumerate(val):
        out[f"val_loss_by_level/{(k + 0.5) / len(val):.3g}"] = v
    return out


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The record's plain numbers, step left out."""
    return {k: v for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class Tracker:
    """One tracker of a run in `out` that resumes at `start_step`."""

    def config(self, config: dict) -> None:
        """The run's config (once, at the start)."""

    def log(self, record: dict[str, Any]) -> None:
        """One log record (it has an int "step")."""

    def video(self, path: Path, step: int) -> None:
        """A sample grid the run wrote at `step` (an .mp4 or .gif file)."""

    def close(self) -> None:
        """Flush and close."""


TRACKERS: Registry[type[Tracker]] = Registry("train.report_to")


def _gif_size(data: bytes) -> tuple[int, int]:
    """(height, width) of a GIF from its logical screen descriptor."""
    width, height = struct.unpack("<HH", data[6:10])
    return height, width


@TRACKERS.register("tensorboard")
class TensorBoardTracker(Tracker):
    """TensorBoard event files in <out>/tensorboard (module doc); purged past `start_step`
    so a resumed run does not draw its steps twice."""

    package = "tensorboard"

    def __init__(self, out: Path, start_step: int, project: str):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=start_step + 1)

    def config(self, config: dict) -> None:
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", 0)

    def log(self, record: dict[str, Any]) -> None:
        step = record["step"]
        for key, value in scalars(record).items():
            self.writer.add_scalar(f"train/{key}", value, step)
        for key, value in level_scalars(record).items():
            self.writer.add_scalar(key, value, step)
        losses = record.get("loss_by_level")
        if losses:  # the histogram's heights are the bins' mean losses (0: empty)
            heights = [v or 0.0 for v in losses]
            self.writer.add_histogram_raw(
                "loss_by_level", min=0.0, max=1.0, num=sum(record["samples_by_level"]),
                sum=sum(heights), sum_squares=sum(h * h for h in heights),
                bucket_limits=level_edges(len(losses))[1:], bucket_counts=heights,
                global_step=step)

    def video(self, path: Path, step: int) -> None:
        if path.suffix != ".gif":
            return  # TensorBoard shows animated GIFs; the mp4 of the same grid is skipped
        from tensorboard.compat.proto.summary_pb2 import Summary

        data = path.read_bytes()
        height, width = _gif_size(data)
        image = Summary.Image(height=height, width=width, colorspace=3,
                              encoded_image_string=data)
        summary = Summary(value=[Summary.Value(tag="samples", image=image)])
        self.writer._get_file_writer().add_summary(summary, step)

    def close(self) -> None:
        self.writer.close()


@TRACKERS.register("wandb")
class WandbTracker(Tracker):
    """A W&B run (module doc); WANDB_MODE and the other WANDB_ variables apply."""

    package = "wandb"

    def __init__(self, out: Path, start_step: int, project: str):
        import wandb

        id_file = out / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:16]
        id_file.write_text(run_id + "\n")
        self.wandb = wandb
        self.run = wandb.init(project=project, name=out.name, id=run_id, dir=str(out),
                              resume="allow", settings=wandb.Settings(console="off"))

    def config(self, config: dict) -> None:
        self.run.config.update(config, allow_val_change=True)

    def log(self, record: dict[str, Any]) -> None:
        values: dict[str, Any] = {f"train/{k}": v for k, v in scalars(record).items()}
        values.update(level_scalars(record))
        losses = record.get("loss_by_level")
        if losses:
            heights = [v or 0.0 for v in losses]
            values["loss_by_level"] = self.wandb.Histogram(
                np_histogram=(heights, level_edges(len(losses))))
        self.run.log(values, step=record["step"])

    def video(self, path: Path, step: int) -> None:
        if path.suffix == ".mp4":  # W&B plays the mp4; its GIF of the same grid is skipped
            self.run.log({"samples": self.wandb.Video(str(path), format="mp4")}, step=step)

    def close(self) -> None:
        self.run.finish()


def build_trackers(names: list[str], out: Path, start_step: int, project: str,
                   say=print) -> list[Tracker]:
    """The trackers of `names` for a run in `out`; one whose package is missing is skipped
    with a line through `say` (the run goes on with the others)."""
    trackers = []
    for name in names:
        cls = TRACKERS.get(name)
        try:
            trackers.append(cls(out, start_step, project))
        except ImportError:
            say(f"warning: train.report_to {name!r}: the {cls.package} package is not "
                f"installed (pip install {cls.package}); logging without it")
    return trackers
