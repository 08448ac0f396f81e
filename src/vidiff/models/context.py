"""`Context`: what every layer of the U-Net may need besides its input, computed once per call.

Inside the U-Net, activations are (B*F, C, H, W): frames folded into the batch, so spatial
layers see frames as independent images (VDM: "space-only 3D convolutions"). Layers that need
the video structure (temporal attention and convolution, the per-sample embedding) unfold it
with `batch`.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class Context(NamedTuple):
    """Per-forward inputs shared by the layers (a NamedTuple: cheap, torch.compile friendly)."""

    emb: Tensor  # (B, emb_dim) SiLU of the conditioning embedding (timestep + class + text);
    # (B*F, emb_dim) when a per-frame embedding was added (UNet's frame_emb)
    batch: int  # B; the number of frames is F = N // B for activations with N = B*F rows
    num_images: int  # K: the last K of the F frames are independent images (joint training)
    # (B, L, text_dim) layer-normed text tokens, (B*F, L, text_dim) with per-frame text, or None
    text: Tensor | None
    text_mask: Tensor | None  # (B, L) or (B*F, L) bool, True = real token; None = all real
    rel_buckets: Tensor | None  # (F, F) int64 relative position bucket of (query i, key j)
    frame_mask: Tensor | None  # (F, F) bool, True = frame i may attend frame j; None = all
