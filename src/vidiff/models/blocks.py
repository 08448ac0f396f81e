"""Convolutional blocks: the timestep-conditioned residual block, resampling, temporal conv.

Every layer has the signature `layer(x, ctx) -> Tensor` with x of shape (B*F, C, H, W): spatial
layers treat the frames as a batch of images. All of them keep channels-last memory format.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidiff.models.context import Context
from vidiff.models.lora import is_adapted
from vidiff.models.norm import GroupNorm32, zero_


def _per_frame(e: Tensor, rows: int) -> Tensor:
    """Broadcast a per-sample vector to the frames: (B, C) -> (B*F, C, 1, 1), rows = B*F.

    An embedding that is already per frame, (B*F, C) (`UNet.forward(frame_emb=...)`), is
    only reshaped.
    """
    b, c = e.shape
    if b != rows:
        e = e[:, None].expand(b, rows // b, c)  # (B, F, C)
    return e.reshape(rows, c, 1, 1)


def _down2(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, kernel_size=2, stride=2)


def _up2(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class Conv1x1(nn.Conv2d):
    """A 1x1 convolution computed as a matrix product over the channels of a channels-last
    input. Same parameters (and state-dict keys) as ``nn.Conv2d(cin, cout, 1)``, but its weight
    gradient comes out contiguous, the layout of the parameter: the convolution's own backward
    returns it channels-last, which DDP's gradient buckets do not match (every rank warned
    "Grad strides do not match bucket view strides" and copied the gradient every step)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, H, W), channels-last in, channels-last out."""
        if not x.is_contiguous(memory_format=torch.channels_last) or x.is_contiguous():
            return super().forward(x)
        # (N, C, H, W) channels-last -> (N, H, W, C): a view; linear over C; back: a view
        w = self.weight.view(self.out_channels, self.in_channels)
        return F.linear(x.permute(0, 2, 3, 1), w, self.bias).permute(0, 3, 1, 2)


class ResBlock(nn.Module):
    """Residual block with timestep (and class/text) conditioning (DDPM, ADM).

    h = conv1(SiLU(norm1(x))); then DDPM adds the embedding, h = norm2(h + W e), while ADM's
    scale-shift norm modulates, h = norm2(h) (1 + s) + b with (s, b) = W e; finally
    out = skip(x) + conv2(dropout(SiLU(h))). conv2 starts at zero (DDPM's init_scale=0), so the
    block starts as its skip path. With `resample` ("up" / "down") it is ADM's (BigGAN's)
    resampling residual block: nearest-upsampling or 2x2 average pooling of both paths, applied
    after the first norm.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_dim: int,
        *,
        groups: int,
        eps: float,
        dropout: float = 0.0,
        scale_shift: bool = False,
        resample: str | None = None,
    ):
        super().__init__()
        if resample not in (None, "up", "down"):
            raise ValueError(f"resample must be None, 'up' or 'down', got {resample!r}")
        self.scale_shift = scale_shift
        self.resample = {None: None, "up": _up2, "down": _down2}[resample]
        self.norm1 = GroupNorm32(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_channels * (2 if scale_shift else 1))
        self.norm2 = GroupNorm32(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = Conv1x1(in_channels, out_channels) if in_channels != out_channels else None

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        """(B*F, C_in, H, W) -> (B*F, C_out, H', W')."""
        h = F.silu(self.norm1(x))
        if self.resample is not None:
            h, x = self.resample(h), self.resample(x)
        h = self.conv1(h)
        e = _per_frame(self.emb_proj(ctx.emb), x.shape[0])  # (B*F, C or 2C, 1, 1)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = torch.addcmul(shift, self.norm2(h), 1 + scale)  # ADM scale-shift norm
        else:
            h = self.norm2(h + e)  # DDPM: add the embedding, then normalize
        h = self.conv2(self.dropout(F.silu(h)))
        return (x if self.skip is None else self.skip(x)) + h


class Downsample(nn.Module):
    """Halve H and W: a stride-2 3x3 conv, or 2x2 average pooling when `conv` is False.

    `padding="same"` pads one row and column at the bottom/right only: TensorFlow's SAME for
    even sizes, which the DDPM code used (diffusers: downsample_padding=0); "symmetric" pads
    one on every side (PyTorch ports, ADM).
    """

    def __init__(self, channels: int, *, conv: bool = True, padding: str = "symmetric"):
        super().__init__()
        self.same = padding == "same"
        self.conv = None
        if conv:
            self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0 if self.same else 1)

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        """(N, C, H, W) -> (N, C, H/2, W/2)."""
        if self.conv is None:
            return _down2(x)
        if self.same:
            x = F.pad(x, (0, 1, 0, 1))  # (N, C, H+1, W+1)
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling, then a 3x3 conv when `conv` is True."""

    def __init__(self, channels: int, *, conv: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if conv else None

    def forward(self, x: Tensor, ctx: Context | None = None) -> Tensor:
        """(N, C, H, W) -> (N, C, 2H, 2W)."""
        x = _up2(x)
        return x if self.conv is None else self.conv(x)


class TemporalConv(nn.Module):
    """Residual 1D convolution over frames at every pixel: x + conv_t(SiLU(norm(x))).

    The conv starts at zero, so the block starts as the identity. Zero padding at the clip's
    ends. Independent images of a joint batch are each a clip of one frame: they see only the
    kernel's centre tap, so nothing flows between images and video frames.
    """

    def __init__(self, channels: int, *, groups: int, eps: float, kernel: int = 3):
        super().__init__()
        self.norm = GroupNorm32(groups, channels, eps=eps)
        self.conv = zero_(
            nn.Conv3d(channels, channels, (kernel, 1, 1), padding=(kernel // 2, 0, 0))
        )

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        """(B*F, C, H, W) -> (B*F, C, H, W)."""
        n, c, hh, ww = x.shape
        b = ctx.batch
        frames = n // b
        video = frames - ctx.num_images
        h = F.silu(self.norm(x))
        # (B*F, C, H, W) -> (B, C, F, H, W); channels-last memory (B, F, H, W, C) stays put
        h = h.view(b, frames, c, hh, ww).transpose(1, 2)
        if ctx.num_images == 0:
            o = self.conv(h)
        elif is_adapted(self.conv):  # LoRA on the conv: each image a clip of one frame
            k = ctx.num_images
            # (B, C, K, H, W) -> (B*K, C, 1, H, W): the zero padding leaves the centre tap
            images = h[:, :, video:].transpose(1, 2).reshape(b * k, c, 1, hh, ww)
            images = self.conv(images).view(b, k, c, hh, ww).transpose(1, 2)
            o = torch.cat([self.conv(h[:, :, :video]), images], dim=2) if video > 0 else images
        else:
            k = self.conv.kernel_size[0] // 2
            centre = self.conv.weight[:, :, k : k + 1]  # (C, C, 1, 1, 1)
            parts = [self.conv(h[:, :, :video])] if video > 0 else []
            parts.append(F.conv3d(h[:, :, video:], centre, self.conv.bias))
            o = torch.cat(parts, dim=2)  # (B, C, F, H, W)
        # (B, C, F, H, W) -> (B*F, C, H, W)
        return x + o.transpose(1, 2).reshape(n, c, hh, ww)
