"""What a training run returns, and the error that stops it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["NonFiniteLossError", "TrainResult"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped before the optimizer step."""

    def __init__(self, step: int, loss: float, last_checkpoint: Path | None):
        self.step, self.loss, self.last_checkpoint = step, loss, last_checkpoint
        where = (f"the last good checkpoint is {last_checkpoint}" if last_checkpoint
                 else "no checkpoint was written yet")
        super().__init__(
            f"the loss is {loss} at step {step}: training stopped before that step's update; "
            f"{where}. Try a lower train.lr, train.grad_clip, or train.precision=fp32"
        )


@dataclass
class TrainResult:
    """What a run produced."""

    step: int  # optimizer steps done
    loss: float | None  # mean loss of the last logged interval
    out: Path  # the run folder
    checkpoint: Path | None  # the newest checkpoint
    samples: list[Path] = field(default_factory=list)  # sample files written by this call
    seconds: float = 0.0  # wall time of the call
    interrupted: int | None = None  # the signal (SIGINT, SIGTERM) that stopped the run early
