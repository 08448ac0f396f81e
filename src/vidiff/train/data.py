"""Training data: the dataset of a `DataConfig`, a deterministic sharded order, joint batches.

The order of the items is a pure function of ``(seed, position)``: epoch ``e`` visits the
videos in the permutation drawn from a generator seeded with ``(seed, e)``, and the global
position of micro-step ``s`` is ``s * global_batch``. Rank ``r`` of ``W`` loads the slice
``[r * B, (r + 1) * B)`` of each global micro-batch (``B`` = per-rank batch), so

- the union over ranks of a micro-step's items is the single-process batch of size ``W * B``;
- resuming at step ``s`` needs nothing but ``s``: no sampler state, any number of workers.

With ``num_images = K`` each video gets ``K`` single frames appended along the frame axis,
drawn from an independent stream over all frames of all videos (`FramesAsImages`), so they
come from other videos (VDM's joint image-video training); the model and the prior get
``num_images = K``.

With ``data.buckets`` (a `vidiff.data.buckets.BucketedFolder`; a latent run's latents of it,
`vidiff.data.latents.BucketedLatents`) every batch comes from one bucket: `BucketOrder` keeps
the same two properties, with global micro-step ``s`` the ``s``-th global batch of a seeded
sequence of whole batches (see its docstring).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from vidiff.data import FramesAsImages, make_synthetic
from vidiff.data.buckets import BucketedFolder
from vidiff.data.folder import VideoFolder
from vidiff.data.split import DatasetView
from vidiff.train.config import DataConfig
from vidiff.train.interrupt import ignore_stop_signals
from vidiff.utils.config_io import ConfigError
from vidiff.utils.seeding import seeded_generator

__all__ = ["BucketOrder", "JointVideoDataset", "ShardedOrder", "build_dataset",
           "describe_dataset", "make_loader"]


def build_dataset(config: DataConfig) -> Dataset:
    """The video dataset of `config` (synthetic by name, or a folder of videos)."""
    opts = dict(config.options)
    if config.source in ("bouncing_balls", "moving_shapes"):
        kwargs = {"frames": config.frames, "size": config.size, "seed": config.seed,
                  "num_videos": config.num_videos, **opts}
        try:
            return make_synthetic(config.source, **kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"data ({config.source}): {err}") from None
    if config.source == "folder":
        # probe every file up front (skipping unreadable ones, with a warning each), so the
        # run starts with the true count and never trains on a folder of broken files
        kwargs = {"frames": config.frames, "size": config.size, "stride": config.stride,
                  "fps": config.fps, "seed": config.seed, "probe": True, **opts}
        if config.buckets:  # every header read too, each video assigned to a bucket
            kwargs = {"stride": config.stride, "fps": config.fps, "seed": config.seed, **opts}
        try:
            if config.buckets:
                return BucketedFolder(config.path, config.buckets, **kwargs)
            return VideoFolder(config.path, **kwargs)
        except FileNotFoundError:
            raise ConfigError(f"data.path {config.path!r} does not exist") from None
        except (TypeError, ValueError) as err:
            raise ConfigError(f"data (folder {config.path!r}): {err}") from None
    raise ConfigError(f"unknown data.source {config.source!r}")


def image_dataset(videos: Dataset, frames: int) -> Dataset:
    """Single frames of `videos` as image items (``"image"`` (C, H, W)), `frames` per video:
    a folder's decode one frame each (`vidiff.data.VideoFolderFrames`, spread over the whole
    video), synthetic data's render their clip (`vidiff.data.FramesAsImages`)."""
    if isinstance(videos, VideoFolder):
        return videos.as_images(per_video=frames)
    return FramesAsImages(videos, frames)


class ShardedOrder:
    """The item indices of each rank's micro-batches: deterministic, resumable, sharded.

    Iterating yields, for micro-steps ``start, start + 1, ...``, a list of ``batch`` index
    tuples ``(epoch, video_index, image_indices)`` for this rank; micro-step s starts at the
    global position ``offset + s * batch * world``. Use it as a DataLoader's ``batch_sampler``
    over a `JointVideoDataset`; ``image_items``: the length of its image dataset (default
    ``num_videos * num_frames``).
    """

    def __init__(self, num_videos: int, batch: int, *, rank: int = 0, world: int = 1,
                 seed: int = 0, num_images: int = 0, num_frames: int = 0, start: int = 0,
                 offset: int = 0, image_items: int | None = None):
        if num_videos < 1:
            raise ConfigError("the dataset is empty")
        self.n, self.batch, self.rank, self.world = num_videos, batch, rank, world
        # the image stream runs over image_items items (default: every frame of every video)
        self.m = num_videos * num_frames if image_items is None else image_items
        self.seed, self.k, self.start = seed, num_images, start
        self.offset = offset  # global position of micro-step 0 (videos consumed before it)
        self._perms: dict[tuple[int, int], torch.Tensor] = {}

    def _perm(self, stream: int, epoch: int, size: int) -> torch.Tensor:
        key = (stream, epoch)
        if key not in self._perms:
            self._perms = {k: v for k, v in self._perms.items() if k[0] != stream}
            g = seeded_generator(self.seed, stream, epoch)
            self._perms[key] = torch.randperm(size, generator=g)
        return self._perms[key]

    def _at(self, stream: int, pos: int, size: int) -> tuple[int, int]:
        epoch, offset = divmod(pos, size)
        return epoch, int(self._perm(stream, epoch, size)[offset])

    def micro_batch(self, step: int) -> list[tuple[int, int, tuple[int, ...]]]:
        """This rank's items of global micro-step `step`."""
        # global position: a resumed run continues at the videos consumed, whatever batch
        # size or number of processes it had before
        first = self.offset + step * self.batch * self.world + self.rank * self.batch
        items = []
        for pos in range(first, first + self.batch):
            epoch, video = self._at(0, pos, self.n)
            images = tuple(self._at(1, pos * self.k + j, self.m)[1] for j in range(self.k))
            items.append((epoch, video, images))
        return items

    def __iter__(self) -> Iterator[list]:
        step = self.start
        while True:
            yield self.micro_batch(step)
            step += 1


class BucketOrder:
    """`ShardedOrder` for bucketed data: every micro-batch from one bucket, deterministic,
    resumable and sharded the same way.

    Epoch ``e``: each bucket's clips in a permutation seeded by ``(seed, e, bucket)``, cut
    into global batches of ``G = batch * world`` (a bucket's last batch wraps round to its
    permutation's start, so no clip is left out and a bucket smaller than G still trains);
    then all buckets' global batches in an order seeded by ``(seed, e)``. Global micro-step
    s is batch ``s - E * e`` of epoch ``e = s // E`` (E: the batches of an epoch, the same
    every epoch), and rank r loads the slice ``[r * batch, (r + 1) * batch)`` of it. So the
    union over ranks is the single-process batch of size G, and a resumed run needs nothing
    but its position: ``offset`` (videos consumed) puts micro-step 0 at global batch
    ``offset // G``; iterating yields micro-steps ``start, start + 1, ...``.

    `sizes`: the clips of each bucket (`BucketedFolder.bucket_sizes`, or a latent run's
    `vidiff.data.latents.BucketedLatents.bucket_sizes`; items numbered bucket after bucket).
    Yields lists of ``(epoch, item, ())`` tuples, the `JointVideoDataset` index form without
    images.
    """

    def __init__(self, sizes: Sequence[int], batch: int, *, rank: int = 0, world: int = 1,
                 seed: int = 0, start: int = 0, offset: int = 0):
        self.sizes = [int(n) for n in sizes]
        if sum(self.sizes) < 1:
            raise ConfigError("the dataset is empty")
        self.batch, self.rank, self.world, self.seed = batch, rank, world, seed
        self.global_batch = batch * world
        self.first = [sum(self.sizes[:b]) for b in range(len(self.sizes))]  # item numbers
        self.per_epoch = [math.ceil(n / self.global_batch) for n in self.sizes]
        self.epoch_batches = sum(self.per_epoch)  # E
        self.start = start  # the first micro-step iteration yields
        self.base = offset // self.global_batch  # micro-step 0's global batch
        self._epoch: tuple[int, list[tuple[int, int]], list[torch.Tensor]] | None = None

    def _plan(self, epoch: int) -> tuple[list[tuple[int, int]], list[torch.Tensor]]:
        """Epoch `epoch`'s (bucket, batch number) sequence and each bucket's permutation."""
        if self._epoch is None or self._epoch[0] != epoch:
            perms = [torch.randperm(n, generator=seeded_generator(self.seed, 2, epoch, b))
                     for b, n in enumerate(self.sizes)]
            batches = [(b, k) for b, n in enumerate(self.per_epoch) for k in range(n)]
            mix = torch.randperm(len(batches), generator=seeded_generator(self.seed, 3, epoch))
            self._epoch = (epoch, [batches[int(j)] for j in mix], perms)
        return self._epoch[1], self._epoch[2]

    def global_items(self, step: int) -> tuple[int, int, list[int]]:
        """(epoch, bucket, the G items) of micro-step `step` (after `offset`'s), over all
        ranks."""
        epoch, j = divmod(self.base + step, self.epoch_batches)
        plan, perms = self._plan(epoch)
        b, k = plan[j]
        n, perm = self.sizes[b], perms[b]
        picks = [int(perm[(k * self.global_batch + i) % n]) for i in range(self.global_batch)]
        return epoch, b, [self.first[b] + p for p in picks]

    def micro_batch(self, step: int) -> list[tuple[int, int, tuple[int, ...]]]:
        """This rank's items of micro-step `step`: its slice of the global batch."""
        epoch, _, items = self.global_items(step)
        mine = items[self.rank * self.batch:(self.rank + 1) * self.batch]
        return [(epoch, item, ()) for item in mine]

    def __iter__(self) -> Iterator[list]:
        step = self.start
        while True:
            yield self.micro_batch(step)
            step += 1


class JointVideoDataset(Dataset):
    """Items for `ShardedOrder` index tuples: the video with its K images appended.

    ``item["video"]`` is ``(C, F + K, H, W)``; ``"labels"`` (1 + K ints) and ``"captions"``
    (1 + K strings) are the video's, then each image's own (its clip's label and caption).
    The epoch of the tuple is passed to datasets with ``set_epoch`` (folder crops).
    """

    def __init__(self, videos: Dataset, images: Dataset | None = None):
        self.videos, self.images = videos, images
        self._epoch: int | None = None

    def __len__(self) -> int:
        return len(self.videos)  # type: ignore[arg-type]

    def __getitem__(self, index: tuple[int, int, tuple[int, ...]]) -> dict[str, Any]:
        epoch, video_index, image_indices = index
        if epoch != self._epoch and hasattr(self.videos, "set_epoch"):
            self.videos.set_epoch(epoch)
            self._epoch = epoch
        item = self.videos[video_index]
        video = item["video"]
        images = [self.images[j] for j in image_indices]
        if images:
            frames = [image["image"] for image in images]  # each (C, H, W)
            video = torch.cat([video, torch.stack(frames, dim=1)], dim=1)  # (C, F + K, H, W)
        sources = [item, *images]
        return {"video": video,
                "labels": [int(it.get("label", -1)) for it in sources],
                "captions": [str(it.get("caption", "")) for it in sources]}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack videos (B, C, F + K, H, W) and labels (B, 1 + K); captions stay lists
    (B lists of 1 + K)."""
    return {
        "video": torch.stack([it["video"] for it in items]),
        "label": torch.tensor([it["labels"] for it in items], dtype=torch.long),
        "caption": [it["captions"] for it in items],
    }


def make_loader(dataset: JointVideoDataset, order: ShardedOrder, workers: int,
                pin_memory: bool = False) -> Iterator[dict[str, Any]]:
    """An endless iterator of collated micro-batches in `order`."""
    loader = DataLoader(dataset, batch_sampler=order, num_workers=workers, collate_fn=collate,
                        pin_memory=pin_memory, persistent_workers=False,
                        prefetch_factor=2 if workers else None,
                        # Ctrl-C reaches the workers too: they leave it to the main process
                        worker_init_fn=ignore_stop_signals if workers else None)
    return iter(loader)


def describe_dataset(dataset, class_names: list[str]) -> str:
    """What the data banner says: videos, classes, unreadable files skipped, held out."""
    if isinstance(dataset, DatasetView):
        held = len(dataset.dataset) - len(dataset)
        return f"{describe_dataset(dataset.dataset, class_names)}, {held} held out"
    entries = getattr(dataset, "entries", None)
    text = (f"{len(entries)} videos" if entries is not None else f"{len(dataset)} clips")
    if entries is not None and len(dataset) != len(entries):
        text += f" ({len(dataset)} clips)"
    if class_names:
        text += f" in {len(class_names)} classes"
    bad = getattr(dataset, "bad_paths", None)
    if bad is not None:
        text += f", {len(bad)} unreadable skipped"
    root = getattr(dataset, "root", None)
    return f"{text} from {root}" if root is not None else f"{text} ({type(dataset).__name__})"
