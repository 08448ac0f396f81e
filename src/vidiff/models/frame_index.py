"""VideoFusion's residual generator: a video U-Net conditioned on each frame's index.

A learned embedding of the frame index i is added to
the conditioning embedding of frame i, through `UNet.forward(frame_emb=...)`
(`vidiff.models.videofusion` explains the decomposition it serves).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from vidiff.models.config import UNetConfig
from vidiff.models.unet import UNet

if TYPE_CHECKING:
    from vidiff.cond import Cond

__all__ = ["DEFAULT_MAX_FRAMES", "FrameConditionedUNet"]

DEFAULT_MAX_FRAMES = 64  # rows of the frame-index embedding: the longest clip it can condition


class FrameConditionedUNet(nn.Module):
    """A video U-Net conditioned on each frame's index: VideoFusion's residual generator.

    A learned embedding of the index i (a table of `max_frames` rows, `nn.Embedding`'s N(0, 1)
    init, like the class embedding) is added to the conditioning embedding of frame i.

    >>> residual = FrameConditionedUNet(build_unet("tiny"))
    >>> rhat = residual(z, t, frame_index=torch.arange(z.shape[2]))
    """

    def __init__(self, unet: UNet, max_frames: int = DEFAULT_MAX_FRAMES):
        super().__init__()
        if not isinstance(unet, UNet):
            raise TypeError(f"FrameConditionedUNet needs a vidiff UNet, got {type(unet).__name__}")
        if not isinstance(max_frames, int) or max_frames < 1:
            raise ValueError(f"max_frames must be an integer >= 1, got {max_frames!r}")
        self.unet = unet
        self.max_frames = max_frames
        self.frame_embed = nn.Embedding(max_frames, unet.config.emb_dim)

    @property
    def config(self) -> UNetConfig:
        """The wrapped U-Net's config."""
        return self.unet.config

    def forward(
        self, x: Tensor, t: Tensor, cond: Cond | None = None, *,
        frame_index: Tensor | None = None, **keywords
    ) -> Tensor:
        """x (B, C, F, H, W), t int64 (B,); frame_index int64 (F,) or (B, F), default 0..F-1;
        the conditions as one `vidiff.Cond` and / or keywords (`UNet.forward`'s)."""
        if x.ndim != 5:
            raise ValueError(f"x must be (B, C, F, H, W), got {tuple(x.shape)}")
        frames = x.shape[2]
        if frame_index is None:
            frame_index = torch.arange(frames)
        if frame_index.shape[-1] != frames:
            raise ValueError(
                f"frame_index has {frame_index.shape[-1]} entries for {frames} frames"
            )
        # checked where it costs no device sync (a CPU index, as VideoFusion passes)
        if frame_index.device.type == "cpu" and int(frame_index.max()) >= self.max_frames:
            raise ValueError(
                f"frame index {int(frame_index.max())} is beyond the "
                f"{self.max_frames} frames of the frame embedding (max_frames)"
            )
        frame_emb = self.frame_embed(frame_index.to(x.device))  # (F, E) or (B, F, E)
        return self.unet(x, t, cond, frame_emb=frame_emb, **keywords)
