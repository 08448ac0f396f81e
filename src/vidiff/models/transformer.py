"""The spatial transformer of latent diffusion (Rombach et al. 2022) and Stable Diffusion.

At the attention resolutions LDM replaces the U-Net's self-attention block by a small
transformer over the H*W pixels of each frame:

    x + proj_out(blocks(proj_in(GroupNorm(x))))                       (LDM, appendix, fig. 3)
    block(h) = h + SelfAttn(LN(h)); h + CrossAttn(LN(h), text); h + GEGLU-MLP(LN(h))

The cross-attention's keys and values are the text encoder's hidden states as they are (SD:
CLIP's last hidden state, (B, L, D)); the MLP is GEGLU (Shazeer 2020) with 4x width.
`UNetConfig(spatial_block="transformer")` puts it where `SpatialAttention` would be, so the
video U-Net adds its temporal attention after each one (VDM) and an imported SD U-Net is
inflated exactly like a DDPM one. On channels-last activations (B*F, C, H, W) the token view
(B*F, H*W, C) is free; the text is shared by a clip's frames, so the cross-attention runs on
(B, F*H*W) queries against (B, L) keys without copying the text per frame.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vidiff.models.context import Context
from vidiff.models.norm import GroupNorm32, zero_


def _attend(q: Tensor, k: Tensor, v: Tensor, heads: int, mask: Tensor | None,
            fp32: bool) -> Tensor:
    """Multi-head attention of tokens: q (N, Lq, C), k and v (N, Lk, C) -> (N, Lq, C)."""
    n, lq, c = q.shape
    d = c // heads
    # (N, L, C) -> (N, heads, L, d)
    q, k, v = (z.view(n, -1, heads, d).transpose(1, 2) for z in (q, k, v))
    dtype = q.dtype
    if fp32:  # SD 2's upcast_attention: logits and softmax in float32
        q, k, v = q.float(), k.float(), v.float()
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, heads, Lq, d)
    return o.to(dtype).transpose(1, 2).reshape(n, lq, c)


class SelfAttention(nn.Module):
    """Self-attention of a frame's pixels; fused q/k/v without bias (SD's attn1)."""

    def __init__(self, channels: int, heads: int, fp32: bool = False):
        super().__init__()
        self.heads, self.fp32 = heads, fp32
        self.qkv = nn.Linear(channels, 3 * channels, bias=False)
        self.proj = nn.Linear(channels, channels)

    def forward(self, h: Tensor) -> Tensor:
        """(N, HW, C) -> (N, HW, C)."""
        q, k, v = self.qkv(h).chunk(3, dim=-1)  # 3 x (N, HW, C)
        return self.proj(_attend(q, k, v, self.heads, None, self.fp32))


class CrossAttention(nn.Module):
    """Attention of the pixels to the text tokens (SD's attn2): q from the pixels, fused k/v
    from the text, no bias."""

    def __init__(self, channels: int, heads: int, text_dim: int, fp32: bool = False):
        super().__init__()
        self.heads, self.fp32 = heads, fp32
        self.q = nn.Linear(channels, channels, bias=False)
        self.kv = nn.Linear(text_dim, 2 * channels, bias=False)
        self.proj = nn.Linear(channels, channels)

    def forward(self, h: Tensor, text: Tensor, text_mask: Tensor | None) -> Tensor:
        """h (N, HW, C), text (B, L, D) with N = B*F -> (N, HW, C)."""
        n, length, c = h.shape
        b = text.shape[0]
        # (N, HW, C) -> (B, F*HW, C): a clip's frames share its text
        q = self.q(h).view(b, (n // b) * length, c)
        k, v = self.kv(text).chunk(2, dim=-1)  # 2 x (B, L, C)
        mask = None if text_mask is None else text_mask[:, None, None, :]  # (B, 1, 1, L)
        o = _attend(q, k, v, self.heads, mask, self.fp32)  # (B, F*HW, C)
        return self.proj(o.view(n, length, c))


class GEGLU(nn.Module):
    """The transformer's MLP: proj_out(a * GELU(g)) with (a, g) = proj_in(h) (GEGLU)."""

    def __init__(self, channels: int, mult: int = 4):
        super().__init__()
        self.proj_in = nn.Linear(channels, 2 * mult * channels)
        self.proj_out = nn.Linear(mult * channels, channels)

    def forward(self, h: Tensor) -> Tensor:
        """(N, L, C) -> (N, L, C)."""
        a, gate = self.proj_in(h).chunk(2, dim=-1)  # 2 x (N, L, 4C)
        return self.proj_out(a * F.gelu(gate))


class TransformerBlock(nn.Module):
    """Pre-LN block: self-attention, cross-attention to the text (when the model has text),
    GEGLU MLP, each residual (SD's BasicTransformerBlock)."""

    def __init__(self, channels: int, heads: int, text_dim: int | None, fp32: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(channels)
        self.attn1 = SelfAttention(channels, heads, fp32)
        self.norm2 = nn.LayerNorm(channels) if text_dim else None
        self.attn2 = CrossAttention(channels, heads, text_dim, fp32) if text_dim else None
        self.norm3 = nn.LayerNorm(channels)
        self.ff = GEGLU(channels)

    def forward(self, h: Tensor, ctx: Context) -> Tensor:
        """(N, HW, C) -> (N, HW, C)."""
        h = h + self.attn1(self.norm1(h))
        if self.attn2 is not None:
            h = h + self.attn2(self.norm2(h), ctx.text, ctx.text_mask)
        return h + self.ff(self.norm3(h))


class SpatialTransformer(nn.Module):
    """LDM's spatial transformer (module docstring); proj_out starts at zero, so a new block
    starts as the identity."""

    def __init__(self, channels: int, heads: int, *, groups: int, text_dim: int | None = None,
                 depth: int = 1, fp32: bool = False):
        super().__init__()
        self.norm = GroupNorm32(groups, channels, eps=1e-6)  # LDM's Normalize: eps 1e-6
        self.proj_in = nn.Linear(channels, channels)
        self.blocks = nn.ModuleList(
            TransformerBlock(channels, heads, text_dim, fp32) for _ in range(depth))
        self.proj_out = zero_(nn.Linear(channels, channels))

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        """(B*F, C, H, W) -> (B*F, C, H, W)."""
        n, c, hh, ww = x.shape
        if self.blocks[0].attn2 is not None and ctx.text is None:
            raise ValueError("this transformer block cross-attends to text: the model needs "
                             "text_dim and a text (or its null text)")
        h = self.norm(x).permute(0, 2, 3, 1).reshape(n, hh * ww, c)  # (N, HW, C): a view
        h = self.proj_in(h)
        for block in self.blocks:
            h = block(h, ctx)
        h = self.proj_out(h)  # (N, HW, C)
        # (N, HW, C) -> (N, C, H, W) in channels-last memory: a view
        return x + h.view(n, hh, ww, c).permute(0, 3, 1, 2)
