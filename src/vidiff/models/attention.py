"""Self-attention over space (per frame) and over time (per pixel), VDM's factorization.

Both blocks are pre-norm residual: x + proj(attention(norm(x))), with a fused qkv projection
and `F.scaled_dot_product_attention`. On channels-last activations (B*F, C, H, W) the token
views (B*F, H*W, C) and (B, F, H*W, C) are free: no copy before the projections.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidiff.models.context import Context
from vidiff.models.lora import is_adapted
from vidiff.models.norm import GroupNorm32, zero_


def relative_position_buckets(
    frames: int, *, kind: str, num_buckets: int, max_distance: int, device=None
) -> Tensor:
    """Bucket of the relative position j - i of key frame j for query frame i: (F, F) int64.

    "t5" (Raffel et al. 2020, bidirectional): half of the buckets per direction; within one,
    distances below a quarter of the buckets have their own bucket, larger ones share
    log-spaced buckets up to `max_distance`, and everything farther shares the last one.
    "clip": one bucket per distance, clipped to [-max_distance, max_distance].
    Either way the attention depends only on frame offsets: VDM's "relative position
    embedding, so the network needs no absolute notion of time".
    """
    pos = torch.arange(frames, device=device)
    rel = pos[None, :] - pos[:, None]  # (F, F): rel[i, j] = j - i
    if kind == "clip":
        return rel.clamp(-max_distance, max_distance) + max_distance
    half = num_buckets // 2
    exact = half // 2
    n = rel.abs()
    scale = (half - exact) / math.log(max_distance / exact)
    far = exact + (torch.log(n.clamp(min=exact).float() / exact) * scale).long()
    far = far.clamp(max=half - 1)
    return (rel > 0).long() * half + torch.where(n < exact, n, far)


def relative_position_table_size(kind: str, num_buckets: int, max_distance: int) -> int:
    """Rows of a relative-position bias table: the buckets ("t5"), or every clipped distance
    in [-max_distance, max_distance] ("clip")."""
    return num_buckets if kind == "t5" else 2 * max_distance + 1


class SpatialAttention(nn.Module):
    """Multi-head self-attention over the H*W pixels of each frame (DDPM/ADM attention block).

    With `text_dim`, the text tokens are projected to keys and values and prepended to the
    pixels' keys and values (GLIDE's encoder_kv), so every attention block at the attention
    resolutions also cross-attends to the text; padded tokens are masked out.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        *,
        groups: int,
        eps: float,
        text_dim: int | None = None,
    ):
        super().__init__()
        self.heads = heads
        self.norm = GroupNorm32(groups, channels, eps=eps)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.text_kv = nn.Linear(text_dim, 2 * channels) if text_dim else None
        self.proj = zero_(nn.Linear(channels, channels))

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        """(B*F, C, H, W) -> (B*F, C, H, W)."""
        n, c, hh, ww = x.shape
        heads, length = self.heads, hh * ww
        d = c // heads
        h = self.norm(x).permute(0, 2, 3, 1).reshape(n, length, c)  # (N, HW, C): a view
        # (N, HW, 3C) -> 3 x (N, heads, HW, d)
        q, k, v = self.qkv(h).view(n, length, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0)
        mask = None
        if self.text_kv is not None and ctx.text is not None:
            b, lt = ctx.text.shape[:2]  # b = B, or N when the text is per frame
            frames = n // b
            kv = self.text_kv(ctx.text)  # (B, L, 2C)
            # (B, L, 2C) -> (B, F, L, 2, heads, d) -> 2 x (N, heads, L, d)
            kv = kv.view(b, 1, lt, 2, heads, d).expand(b, frames, lt, 2, heads, d)
            kt, vt = kv.reshape(n, lt, 2, heads, d).permute(2, 0, 3, 1, 4).unbind(0)
            k = torch.cat([kt, k], dim=2)  # (N, heads, L + HW, d)
            v = torch.cat([vt, v], dim=2)
            if ctx.text_mask is not None:
                m = ctx.text_mask[:, None].expand(b, frames, lt).reshape(n, 1, 1, lt)
                mask = torch.cat([m, m.new_ones(n, 1, 1, length)], dim=-1)  # (N, 1, 1, L+HW)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, heads, HW, d)
        o = self.proj(o.transpose(1, 2).reshape(n, length, c))  # (N, HW, C)
        # (N, HW, C) -> (N, C, H, W) in channels-last memory: a view
        return x + o.view(n, hh, ww, c).permute(0, 3, 1, 2)


class TemporalAttention(nn.Module):
    """Multi-head self-attention over the F frames at each pixel (VDM's temporal attention).

    The attention logits get a learned bias per head and relative-position bucket (no
    absolute time). `ctx.frame_mask` restricts which frames see which: in joint image+video
    batches an image attends only to itself. The output projection starts at zero, so the
    block starts as the identity and a video U-Net starts as its image U-Net, frame by frame.
    """

    def __init__(self, channels: int, heads: int, *, groups: int, eps: float, table_size: int):
        super().__init__()
        self.heads = heads
        self.norm = GroupNorm32(groups, channels, eps=eps)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.rel_bias = nn.Parameter(torch.zeros(table_size, heads))
        nn.init.normal_(self.rel_bias, std=0.02)
        self.proj = zero_(nn.Linear(channels, channels))

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        """(B*F, C, H, W) -> (B*F, C, H, W)."""
        n, c, hh, ww = x.shape
        b, heads, length = ctx.batch, self.heads, hh * ww
        frames, d = n // b, c // heads
        h = self.norm(x).permute(0, 2, 3, 1).reshape(b, frames, length, c)  # (B, F, HW, C)
        if frames == 1 and is_adapted(self.qkv):  # LoRA's B A adds to the whole q, k, v
            o = self.qkv(h)[..., 2 * c :]  # (B, 1, HW, C): the value
        elif frames == 1:
            # one frame attends to itself alone: the softmax is 1 and the output is its value
            o = F.linear(h, self.qkv.weight[2 * c :], self.qkv.bias[2 * c :])  # (B, 1, HW, C)
        else:
            qkv = self.qkv(h).view(b, frames, length, 3, heads, d)  # (B, F, HW, 3, heads, d)
            # -> (3, B, HW, heads, F, d) -> 3 x (B*HW, heads, F, d): pixels become the batch
            qkv = qkv.permute(3, 0, 2, 4, 1, 5).reshape(3, b * length, heads, frames, d)
            q, k, v = qkv.unbind(0)
            bias = self.rel_bias[ctx.rel_buckets].permute(2, 0, 1)  # (heads, F, F)
            if ctx.frame_mask is not None:
                bias = bias.masked_fill(~ctx.frame_mask, float("-inf"))
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
            # (B*HW, heads, F, d) -> (B, F, HW, C)
            o = o.view(b, length, heads, frames, d).permute(0, 3, 1, 2, 4)
            o = o.reshape(b, frames, length, c)
        o = self.proj(o)  # (B, F, HW, C)
        # (B, F, HW, C) -> (B*F, C, H, W) in channels-last memory: a view
        return x + o.view(n, hh, ww, c).permute(0, 3, 1, 2)
