"""What every folder dataset shares: the entry list, per-item generators, and skipping
unreadable entries.

An unreadable file (corrupt, empty, truncated before the clip) never stops an epoch: the item
is replaced by the next readable index (deterministically), and a `SkippedVideoWarning` names
the file and the running count of unreadable files; the bad paths are kept in
``dataset.bad_paths`` (per process: each DataLoader worker keeps its own). Randomness (clip
start, crop position, sampled frame) comes from a private `torch.Generator` seeded from
``(seed, epoch, index)`` (`set_epoch` changes the epoch), never from global random state.
"""

from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from typing import Any

import av
import torch
from torch.utils.data import Dataset

from vidiff.data.scan import Entry, check_root
from vidiff.io import IMAGE_SUFFIXES, VideoReadError
from vidiff.utils.seeding import seeded_generator

__all__ = ["PaddedVideoWarning", "SkippedVideoWarning", "epoch_generator"]

# What reading a broken file may raise (VideoReadError is a ValueError).
_READ_ERRORS = (VideoReadError, OSError, av.error.FFmpegError, EOFError, SyntaxError)


class SkippedVideoWarning(RuntimeWarning):
    """An unreadable video or image was skipped; the message names it."""


class PaddedVideoWarning(RuntimeWarning):
    """Videos shorter than a clip are padded with their last frame (said once, with a count)."""


def epoch_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, epoch, index)``, well mixed (numpy's SeedSequence)."""
    return seeded_generator(seed, epoch, index)


class _FolderDataset(Dataset, ABC):
    """Shared machinery: the entry list, per-item generators, skipping unreadable entries."""

    kind = "video"
    suffixes: tuple[str, ...] = ()

    def __init__(self, root: str | os.PathLike, seed: int):
        self.root = check_root(root)
        self.seed = int(seed)
        self.epoch = 0
        self.entries: list[Entry] = []
        self.class_names: list[str] = []
        self.bad_paths: dict[str, str] = {}  # path relative to root -> why it is unreadable

    @property
    def num_classes(self) -> int:
        """The number of classes (labels are ``0 .. num_classes - 1``; -1 means none)."""
        return len(self.class_names)

    def set_epoch(self, epoch: int) -> None:
        """Draw different random clips / crops in each epoch (call it before each epoch;
        DataLoader workers see it when they start, so not with ``persistent_workers``)."""
        self.epoch = int(epoch)

    def _empty_error(self, what: str) -> ValueError:
        accepted = ", ".join(self.suffixes)
        return ValueError(
            f"no readable {self.kind}s in {str(self.root)!r} ({what}); accepted: files ending "
            f"in {accepted}"
            + (
                f", or folders of image frames ({', '.join(IMAGE_SUFFIXES)})"
                if self.kind == "video"
                else ""
            )
        )

    def _mark_bad(self, entry: Entry, error: BaseException) -> None:
        reason = error.reason if isinstance(error, VideoReadError) else str(error) or repr(error)
        self.bad_paths[entry.rel] = reason
        n = len(self.bad_paths)
        warnings.warn(
            f"skipped {entry.rel} ({n} unreadable file{'s' if n != 1 else ''} so far): {reason}",
            SkippedVideoWarning,
            stacklevel=3,
        )

    @abstractmethod
    def _entry_of(self, index: int) -> Entry:
        """The entry (file or frame folder) that item `index` comes from."""

    @abstractmethod
    def _load(self, index: int, generator: torch.Generator) -> dict[str, Any]:
        """Item `index` (may raise a read error: `__getitem__` skips the entry)."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} {self.kind}s")
        index %= n
        for step in range(n):  # the item, else the next readable one
            j = (index + step) % n
            entry = self._entry_of(j)
            if entry.rel in self.bad_paths:
                continue
            try:
                return self._load(j, epoch_generator(self.seed, self.epoch, j))
            except _READ_ERRORS as e:
                self._mark_bad(entry, e)
        raise self._empty_error(f"all {len(self.entries)} found are unreadable")
