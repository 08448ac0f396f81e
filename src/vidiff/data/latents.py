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

Bucketed data (a `vidiff.data.buckets.BucketedFolder`) gets one cache per bucket,
`BucketedLatents`: ``root/<F>x<H>x<W>/<fingerprint>/``, each keyed by the caller's key, the
bucket's shape, the dataset's classes and the bucket's videos (for each: its path, label,
and the size and modification time of the file and of its caption), with the autoencoder's
fingerprint. A changed bucket (its shape, or the videos it gets) rebuilds that bucket's
cache alone; a changed autoencoder rebuilds them all.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from vidiff.data.buckets import BucketedFolder

__all__ = ["BucketedLatents", "LatentCache", "autoencoder_fingerprint", "bucket_folder"]

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
                 key: dict, batch_size: int = 16, progress: bool = False,
                 desc: str = "encoding latents"):
        self.dataset, self.autoencoder = dataset, autoencoder
        self.batch_size, self.progress, self.desc = int(batch_size), progress, desc
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
        bar = tqdm(total=len(todo), desc=self.desc, unit="clip",
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
        """The folder's classes."""
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


def bucket_folder(bucket: Sequence[int]) -> str:
    """The subfolder of a bucket's cache: ``"<F>x<H>x<W>"``."""
    return "x".join(str(int(v)) for v in bucket)


def _stamp(path: Path | None) -> list[int] | None:
    """[size, modification time in ns] of `path` (None: no file): a replaced or edited video
    or caption changes it."""
    if path is None or not os.path.exists(path):
        return None
    st = os.stat(path)
    return [int(st.st_size), int(st.st_mtime_ns)]


def _videos(view) -> list[list]:
    """What decides a bucket's clips beside the settings: each of its videos' relative path,
    label and file stamps (its video's and caption's)."""
    return [[e.rel, int(e.label), _stamp(e.path), _stamp(e.caption_file)]
            for e in view.entries]


class BucketedLatents(Dataset):
    """The latents of a `vidiff.data.buckets.BucketedFolder`: one `LatentCache` per bucket
    under ``root/<F>x<H>x<W>/`` (module docstring), items numbered bucket after bucket as the
    folder's are (``bucket_sizes``, ``offsets``, ``locate``), so `BucketOrder` draws batches of
    one bucket's latents. ``shapes[b]``: bucket b's latent (c, f, h, w), from the
    autoencoder's ``latent_shape`` (a ValueError naming the bucket, before any encoding, when
    a bucket does not fit it). A bucket without videos gets no cache. Items: a
    `LatentCache` item with ``"bucket"`` added."""

    def __init__(self, folder: BucketedFolder, autoencoder, root: str | os.PathLike, *,
                 key: dict, batch_size: int = 16, progress: bool = False):
        self.folder, self.autoencoder, self.cache_root = folder, autoencoder, Path(root)
        self.shapes: list[tuple[int, int, int, int]] = []
        for b, (f, h, w) in enumerate(folder.buckets):
            try:  # a folder's clips are RGB
                self.shapes.append(tuple(autoencoder.latent_shape((3, f, h, w))))
            except ValueError as err:
                raise ValueError(f"bucket {b} ({f}x{h}x{w}): {err}") from None
        self.caches: list[LatentCache | None] = []
        for b, (bucket, view) in enumerate(zip(folder.buckets, folder.views, strict=True)):
            if len(view) == 0:
                self.caches.append(None)
                continue
            bucket_key = {**key, "bucket": list(bucket), "classes": list(folder.class_names),
                          "videos": _videos(view)}
            self.caches.append(LatentCache(
                view, autoencoder, self.cache_root / bucket_folder(bucket), key=bucket_key,
                batch_size=batch_size, progress=progress,
                desc=f"encoding latents, bucket {b} ({bucket_folder(bucket)})"))
        self.bucket_sizes = list(folder.bucket_sizes)  # clips per bucket, the folder's
        self.offsets = list(folder.offsets)

    @property
    def root(self) -> Path:
        """The folder of videos (the caches are under ``cache_root``)."""
        return self.folder.root

    @property
    def buckets(self):
        """(frames, height, width) of each bucket, the folder's."""
        return self.folder.buckets

    @property
    def report(self):
        """The folder's `BucketReport` (the banner, ``buckets.json``)."""
        return self.folder.report

    @property
    def class_names(self) -> list[str]:
        return list(self.folder.class_names)

    @property
    def entries(self):
        """The folder's videos in use."""
        return self.folder.entries

    @property
    def bad_paths(self):
        """The folder's unreadable videos (relative path -> why)."""
        return self.folder.bad_paths

    @property
    def clip_fps(self) -> float | None:
        """The clips' frame rate (the folder's)."""
        return self.folder.clip_fps

    @property
    def folders(self) -> list[Path]:
        """The cache folder of each bucket that has videos."""
        return [c.folder for c in self.caches if c is not None]

    def locate(self, index: int) -> tuple[int, int]:
        """(bucket, index within the bucket) of flat item `index`."""
        return self.folder.locate(index)

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, index: int) -> dict[str, Any]:
        b, k = self.locate(index)
        item = self.caches[b][k]
        item["bucket"] = b
        return item

    def prune(self) -> list[Path]:
        """Delete the other caches under ``cache_root``: each bucket's stale ones, the folders of
        buckets no longer configured and one-shape caches (`LatentCache.prune`'s)."""
        mine = {c.folder.parent for c in self.caches if c is not None}
        removed = [p for c in self.caches if c is not None for p in c.prune()]
        for other in self.cache_root.iterdir():
            if not other.is_dir() or other in mine:
                continue
            inner = [p for p in other.iterdir() if (p / "meta.json").is_file()] \
                if not (other / "meta.json").is_file() else [other]
            if inner:  # a cache, or a folder of a bucket's caches: never anything else
                shutil.rmtree(other)
                removed.append(other)
        return removed
