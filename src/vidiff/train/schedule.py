"""The learning-rate schedule: linear warmup, then constant or cosine decay."""

from __future__ import annotations

import math

__all__ = ["WarmupSchedule"]


class WarmupSchedule:
    """The LR factor of each optimizer step: a function of the step and the horizon (the
    step where the decay ends), both given, so a time-budget run can re-aim the horizon
    without touching the schedule.

    At optimizer step s (0-based): (s + 1) / warmup during warmup; then 1 ("constant") or
    min_ratio + (1 - min_ratio) (1 + cos(pi p)) / 2 with p the fraction of the steps from
    warmup to the horizon done ("cosine").
    """

    def __init__(self, warmup: int, kind: str = "cosine", min_ratio: float = 0.1):
        self.warmup, self.kind, self.min_ratio = warmup, kind, min_ratio

    def __call__(self, step: int, horizon: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, horizon - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
