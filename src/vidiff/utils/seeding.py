"""Seeds mixed from several integers, and generators seeded with them.

Every random stream of vidiff that depends on more than one number (a dataset item on
``(seed, index)``, a folder clip on ``(seed, epoch, index)``, a training sample on ``(seed,
position)``) is seeded through `mixed_seed`: numpy's SeedSequence hashes the keys, so nearby
tuples such as ``(0, 1)`` and ``(1, 0)`` give unrelated streams.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["mixed_seed", "seeded_generator"]


def mixed_seed(*keys: int) -> int:
    """A 64-bit seed (``[0, 2**64)``) mixed from ``keys`` (non-negative integers)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0])


def seeded_generator(*keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded with ``mixed_seed(*keys)``."""
    return torch.Generator(device=device).manual_seed(mixed_seed(*keys))
