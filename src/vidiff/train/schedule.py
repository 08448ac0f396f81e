"""The learning-rate schedule: linear warmup, then constant or cosine decay."""

from __future__ import annotations

import math

__all__ = ["WarmupSchedule"]


class WarmupSchedule:
    """LR factor for `torch.optim.lr_scheduler.LambdaLR`, a plain object so that its state
    (numbers and a string) goes into the checkpoint's weights-only state file.

    At optimizer step s (0-based): (s + 1) / warmup during warmup; then 1 ("constant") or
    min_ratio + (1 - min_ratio) (1 + cos(pi p)) / 2 with p the fraction of the remaining
    steps done ("cosine").
    """

    def __init__(self, warmup: int, total: int, kind: str = "cosine", min_ratio: float = 0.1):
        self.warmup, self.total, self.kind, self.min_ratio = warmup, total, kind, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
