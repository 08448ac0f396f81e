"""The run log: ``log.jsonl`` (one JSON record per logged step), plus TensorBoard when it is
installed. A resumed run first cuts the log back to its checkpoint (`truncate_log`), so every
step appears once and in order, whatever happened after the checkpoint it resumes from."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["RunLogger", "truncate_log"]

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
    """Appends records to ``<out>/log.jsonl`` (and TensorBoard scalars, purged past
    `start_step` so a resumed run does not draw its steps twice)."""

    def __init__(self, out: Path, tensorboard: bool, start_step: int = 0):
        self.path = out / LOG_FILE
        truncate_log(self.path, start_step)
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start_step + 1)
            except Exception:  # tensorboard not installed (or broken): JSONL only
                pass

    def log(self, record: dict[str, Any]) -> None:
        """Write one record (it must have an int ``"step"``)."""
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        """Flush and close the files."""
        self.file.close()
        if self.tb is not None:
            self.tb.close()
