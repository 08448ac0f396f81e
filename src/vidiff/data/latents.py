"""Latents of a video dataset, encoded once and memory-mapped on disk.

>>> cache = LatentCache(dataset, vae, "cache/", key={"source": "folder", "frames": 16, ...})
>>> item = cache[3]      # {"video": latents (c, f, h, w) float32, "label": ..., "caption": ...}

Training a latent model encodes every clip with the autoencoder; doing that every epoch would
cost more than the training. `LatentCache` encodes each clip of `dataset` once (item ``i``
as the dataset gives it: use fixed crops and clip offsets, e.g. ``offset="first"`` and
``crop="center"`` for a folder) into a float16 array under ``root/<fingerprint>/``,
memory-mapped, so epochs read latents only. The fingerprint hashes the caller's ``key`` (the
clip settings: source, frames, size, stride, crop, seed, ...), the dataset's length and the
autoencoder (`autoencoder_fingerprint`: its classes, config, weights and the settings that
change its latents, such as a video VAE's normalisation and tiling): change any of them and
another cache is built (the old one is left for `prune`); nothing stale is reused. An
interrupted build resumes where it stopped: encoded batches are flushed and marked done as
they are written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

__all__ = ["LatentCache", "autoencoder_fingerprint"]

FORMAT = "vidiff-latents-1"
CAPTIONS = "captions.jsonl"  # one [index, caption] line per encoded clip


# config entries that say where or how a VAE was saved, not what it computes
_UNSAVED = ("_name_or_path", "_use_default_values")


def autoencoder_fingerprint(autoencoder: torch.nn.Module) -> str:
    """A SHA-256 of what decides the autoencoder's latents: its class and its VAE's, the VAE's
    config (not the folder it was read from), the settings its ``encode_settings()`` reports
    (a video VAE's normalisation and tiling) and its weights and buffers (names, shapes,
    dtypes, values)."""
    vae = getattr(autoencoder, "vae", autoencoder)
    h = hashlib.sha256(type(autoencoder).__qualname__.encode())
    h.update(type(vae).__qualname__.encode())
    config = getattr(vae, "config", None)
    if config is not None:
        kept = {k: v for k, v in dict(config).items() if k not in _UNSAVED}
        h.update(json.dumps(kept, sort_keys=True, default=str).encode())
    settings = getattr(autoencoder, "encode_settings", None)
    if callable(settings):
        h.update(json.dumps(settings(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(autoencoder.state_dict().items()):
        h.update(name.encode())
        h.update(f"{tuple(tensor.shape)} {tensor.dtype}".encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


class LatentCache(Dataset):
    """The latents of every item of `dataset` (see the module docstring)."""

    def __init__(self, dataset: Dataset, autoencoder, root: str | os.PathLike, *,
                 key: dict, batch_size: int = 16, progress: bool = False):
        self.dataset, self.autoencoder = dataset, autoencoder
        self.batch_size, self.progress = int(batch_size), progress
        identity = {"format": FORMAT, "key": key, "length": len(dataset),
                    "autoencoder": autoencoder_fingerprint(autoencoder)}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
        self.folder = Path(root) / digest.hexdigest()[:16]
        self.identity = identity
        self._open()

    # -- building ---------------------------------------------------------------------------
    def _open(self) -> None:
        meta_file = self.folder / "meta.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else None
        if meta is not None and meta.get("identity") != self.identity:
            shutil.rmtree(self.folder)  # a hash collision or a damaged cache: start over
            meta = None
        if meta is None:
            self._create()
        self.latents = np.load(self.folder / "latents.npy", mmap_mode="r+")
        self.done = np.load(self.folder / "done.npy", mmap_mode="r+")
        self.labels = np.load(self.folder / "labels.npy", mmap_mode="r+")
        if not self.done.all():
            self._build()
        self.captions = self._read_captions()
        self.latents = np.load(self.folder / "latents.npy", mmap_mode="r")

    def _create(self) -> None:
        first = self.dataset[0]["video"]
        shape = self.autoencoder.latent_shape(tuple(first.shape))  # (c, f, h, w)
        self.folder.mkdir(parents=True, exist_ok=True)
        n = len(self.dataset)
        np.lib.format.open_memmap(self.folder / "latents.npy", "w+", np.float16, (n, *shape))
        np.save(self.folder / "done.npy", np.zeros(n, dtype=bool))
        np.save(self.folder / "labels.npy", np.full(n, -1, dtype=np.int64))
        (self.folder / CAPTIONS).touch()
        meta = {"identity": self.identity, "shape": list(shape), "dtype": "float16"}
        (self.folder / "meta.json").write_text(json.dumps(meta, indent=2))

    def _build(self) -> None:
        """Encode the items not done yet, a batch at a time, flushing as it goes."""
        todo = np.flatnonzero(~self.done)
        bar = tqdm(total=len(todo), desc="encoding latents", unit="clip",
                   disable=not self.progress)
        with bar:
            for start in range(0, len(todo), self.batch_size):
                idx = todo[start:start + self.batch_size]
                items = [self.dataset[int(i)] for i in idx]
                videos = torch.stack([it["video"] for it in items])
                latents = self.autoencoder.encode(videos)  # (B, c, f, h, w)
                self.latents[idx] = latents.float().cpu().numpy().astype(np.float16)
                self.labels[idx] = [int(it.get("label", -1)) for it in items]
                self.latents.flush()
                self.labels.flush()
                with open(self.folder / CAPTIONS, "a") as f:  # one line per clip, appended
                    f.writelines(json.dumps([int(i), str(it.get("caption", ""))]) + "\n"
                                 for i, it in zip(idx, items, strict=True))
                self.done[idx] = True  # only after the batch is on disk
                self.done.flush()
                bar.update(len(idx))

    def _read_captions(self) -> list[str]:
        """The captions file's lines (index, caption) as a list; a line cut by a stop in the
        middle of a write is skipped (its batch was not marked done, and was encoded again)."""
        captions = [""] * len(self.done)
        for line in (self.folder / CAPTIONS).read_text().splitlines():
            try:
                i, caption = json.loads(line)
            except ValueError:
                continue
            captions[i] = caption
        return captions

    # -- reading ----------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return list(getattr(self.dataset, "class_names", []) or [])

    def __len__(self) -> int:
        return len(self.done)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} cached clips")
        index %= n
        return {"video": torch.from_numpy(np.array(self.latents[index], dtype=np.float32)),
                "label": int(self.labels[index]), "caption": self.captions[index]}

    def prune(self) -> list[Path]:
        """Delete the other caches under the same root (other keys or autoencoders)."""
        removed = []
        for other in self.folder.parent.iterdir():
            if other.is_dir() and other != self.folder and (other / "meta.json").is_file():
                shutil.rmtree(other)
                removed.append(other)
        return removed
