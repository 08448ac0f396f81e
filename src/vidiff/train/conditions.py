"""The model's conditions for a training batch. In joint image+video batches (VDM) they are
per frame slot: the F frames of a clip take the clip's label or caption, each of the K
appended images its own clip's, and each slot's condition is dropped independently."""

from __future__ import annotations

from typing import Any

import torch

from vidiff.cond import Cond
from vidiff.sampling.conditional import downsample_to
from vidiff.train.config import RunConfig

__all__ = ["batch_conditions", "frame_slots", "per_slot"]


def batch_conditions(batch: dict[str, Any], drops: torch.Tensor, config: RunConfig,
                     backbone, text_encoder, device: torch.device) -> Cond:
    """The model's conditions for `batch` (`vidiff.train.data.collate`'s form).

    drops: (B, 1 + K) uniforms, the clip's then each image's; a slot whose uniform is below
    ``train.cond_drop_prob`` gets the null condition. `backbone` None: an unconditional
    model (only num_images and an upsampler's low-res clip are passed)."""
    d = config.data
    cond: dict[str, Any] = {}
    if d.num_images:
        cond["num_images"] = d.num_images
    if d.lowres_size is not None:  # upsampler: the clip's average pooling
        cond["lowres"] = downsample_to(batch["video"].to(device), d.lowres_size)
    if backbone is None:
        return Cond(**cond)
    slots = frame_slots(d.frames, d.num_images, device)  # (F + K,) -> 0 .. K
    keep = drops >= config.train.cond_drop_prob  # (B, 1 + K) False: dropped
    if backbone.num_classes is not None and d.use_labels:
        labels = batch["label"].to(device)  # (B, 1 + K)
        keep = keep & (labels >= 0)  # unlabelled items (-1) train the null condition
        cond["class_labels"] = per_slot(labels.clamp(min=0), slots)
    if text_encoder is not None:
        captions = [c for row in batch["caption"] for c in row]  # B x (1 + K), row-major
        emb, mask = text_encoder(captions, device)  # (B (1 + K), L, D)
        b = len(batch["caption"])
        emb, mask = emb.view(b, -1, *emb.shape[1:]), mask.view(b, -1, mask.shape[-1])
        cond["text_emb"], cond["text_mask"] = per_slot(emb, slots), per_slot(mask, slots)
    cond["cond_mask"] = per_slot(keep, slots)
    return Cond(**cond)


def frame_slots(frames: int, num_images: int, device: torch.device) -> torch.Tensor:
    """(F + K,) int64: which condition each frame slot takes (0: the clip's, j: image j's)."""
    return torch.cat([torch.zeros(frames, dtype=torch.long),
                      torch.arange(1, num_images + 1)]).to(device)


def per_slot(values: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """(B, 1 + K, ...) per clip and image -> (B,  ...) without images, else (B, F + K, ...)."""
    if values.shape[1] == 1:
        return values[:, 0]  # one condition per sample: the model's (B, ...) form
    return values.index_select(1, slots)
