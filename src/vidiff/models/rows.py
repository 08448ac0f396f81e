"""Conditions per sample or per frame: the rows of a model's conditioning embedding.

Shared by the U-Net and the DiT: VDM's joint image+video batches give each of the K images
its own clip's label or caption, so a condition may come per frame.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["class_embedding", "condition_rows", "joint_frame_mask"]


def class_embedding(table: nn.Embedding | None, labels: Tensor | None, cond_mask: Tensor | None,
                    rows: int, num_classes: int | None, device) -> Tensor | None:
    """The class embedding (rows, E) to add to a model's conditioning, or None without a
    class table: labels None -> the null label (row `num_classes`) for all, labels whose
    `cond_mask` is False -> the null label (condition dropout, guidance's null)."""
    if table is None:
        if labels is not None:
            raise ValueError("class_labels given to a model built with num_classes=None")
        return None
    null = torch.full((rows,), num_classes, dtype=torch.long, device=device)
    if labels is None:
        labels = null
    elif cond_mask is not None:
        labels = torch.where(cond_mask, labels, null)  # dropped: the null label
    return table(labels)


def joint_frame_mask(frames: int, num_images: int, device) -> Tensor | None:
    """VDM joint training's temporal mask (F, F) bool: video frames attend video frames, each
    of the last `num_images` frames (independent images) only itself; None without images."""
    if num_images <= 0:
        return None
    idx = torch.arange(frames, device=device)
    video = idx < frames - num_images
    return (video[:, None] & video[None, :]) | (idx[:, None] == idx)


def condition_rows(b: int, frames: int, labels: Tensor | None, text_emb: Tensor | None,
                   text_mask: Tensor | None, cond_mask: Tensor | None):
    """The conditions as rows of the embedding: per sample (B rows), or per frame (B*F rows)
    when any of them is given per frame: class_labels (B, F), cond_mask (B, F), text_emb
    (B, F, L, D) with text_mask (B, F, L). VDM's joint image+video batches need the latter:
    each of the K images carries its own clip's label or caption. Returns (rows, labels,
    text_emb, text_mask, cond_mask) flattened to those rows."""
    per_frame = ((labels is not None and labels.ndim == 2)
                 or (cond_mask is not None and cond_mask.ndim == 2)
                 or (text_emb is not None and text_emb.ndim == 4))
    if cond_mask is not None and cond_mask.shape not in ((b,), (b, frames)):
        raise ValueError(f"cond_mask must be bool (B,) or (B, F) = ({b}, {frames}), got "
                         f"{tuple(cond_mask.shape)}")
    if labels is not None and labels.shape not in ((b,), (b, frames)):
        raise ValueError(f"class_labels must be (B,) or (B, F) = ({b}, {frames}), got "
                         f"{tuple(labels.shape)}")
    if not per_frame:
        return b, labels, text_emb, text_mask, cond_mask
    rows = b * frames

    def frame_rows(value, per_sample_ndim):  # (B, ...) or (B, F, ...) -> (B*F, ...)
        if value is None:
            return None
        if value.ndim == per_sample_ndim:
            value = value[:, None].expand(b, frames, *value.shape[1:])
        if tuple(value.shape[:2]) != (b, frames):
            raise ValueError(f"a per-frame condition must be (B, F, ...) = ({b}, {frames}, "
                             f"...), got {tuple(value.shape)}")
        return value.reshape(rows, *value.shape[2:])

    return (rows, frame_rows(labels, 1), frame_rows(text_emb, 3), frame_rows(text_mask, 2),
            frame_rows(cond_mask, 1))
