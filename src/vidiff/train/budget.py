"""A time budget for training: stop when the next step would overrun, and say how many steps
fit so that the learning-rate decay can end with the budget.

>>> budget = TimeBudget(300)                  # 5 minutes of wall-clock time
>>> while budget.another():
...     trainer.train_step(batches)
...     budget.done_step()
...     trainer.lr_horizon = budget.horizon(trainer.step, cap=config.train.steps)

``clock="cpu"`` counts this process's CPU time (all its threads) instead of wall time: the
measure of compute that stays fair when other processes share the cores (benchmarks).
"""

from __future__ import annotations

import time

__all__ = ["CLOCKS", "TimeBudget"]

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


class TimeBudget:
    """`seconds` of training on `clock` ("wall" or "cpu"), counted from construction.

    `another()` is True while one more step, at the mean step time so far, would end at most
    half a step past the budget, so the time spent is the budget on average (the first step
    always runs). `horizon(step)` estimates the step at which the budget ends.
    """

    def __init__(self, seconds: float, clock: str = "wall"):
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
        if not seconds > 0:
            raise ValueError(f"the time budget must be > 0 seconds, got {seconds}")
        self.seconds, self.clock = float(seconds), clock
        self._now = CLOCKS[clock]
        self.start, self.steps = self._now(), 0

    @property
    def elapsed(self) -> float:
        """Seconds spent so far on this budget's clock."""
        return self._now() - self.start

    def another(self) -> bool:
        """Whether to start another step."""
        if self.steps == 0:
            return True
        return self.elapsed + 0.5 * self.elapsed / self.steps <= self.seconds

    def done_step(self) -> None:
        """Count a finished step."""
        self.steps += 1

    def horizon(self, step: int, cap: int | None = None) -> int:
        """The step the budget should end at: `step` (the trainer's current step) plus the
        steps the mean rate of this budget fits into the time left, at most `cap`."""
        if self.steps == 0:
            return cap if cap is not None else step + 1
        left = max(0.0, self.seconds - self.elapsed)
        end = max(step + 1, int(step + left * self.steps / max(self.elapsed, 1e-9)))
        return end if cap is None else min(cap, end)
