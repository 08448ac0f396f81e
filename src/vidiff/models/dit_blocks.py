"""The blocks of the video DiT: spatial (DiT / PixArt), temporal (VDM's attention over frames).

Tokens are (B*F, N, D): N = (H/p)(W/p) patches of each frame, frames folded into the batch, so
a spatial block sees each frame alone. Every block is adaLN-Zero (DiT, Peebles & Xie 2023,
section 3.2): from the conditioning c, six vectors (shift, scale, gate) x (attention, MLP):

    x = x + gate_a * Attn(LN(x) * (1 + scale_a) + shift_a)
    x = x + CrossAttn(x, text)                                   (PixArt-alpha, with text)
    x = x + gate_m * MLP(LN(x) * (1 + scale_m) + shift_m)

A temporal block is the same over the F frames at each patch position, with a relative
position bias (no absolute time) and a frame mask for joint image+video batches; its
modulation starts at zero, so its gates are zero and it starts as the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidiff.models.dit_config import DiTConfig
from vidiff.models.sequence_parallel import SequenceGroup, heads_to_tokens, tokens_to_heads


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x (R, N, D) with per-row shift and scale (R, 1, D): adaLN's x (1 + scale) + shift."""
    return torch.addcmul(shift, x, 1 + scale)


class Mlp(nn.Module):
    """Linear -> GELU (tanh) -> Linear, as in DiT."""

    def __init__(self, dim: int, ratio: float):
        super().__init__()
        inner = int(dim * ratio)
        self.fc1 = nn.Linear(dim, inner)
        self.fc2 = nn.Linear(inner, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class CaptionProjection(nn.Module):
    """PixArt-alpha's caption projection: text width -> Linear -> GELU (tanh) -> Linear -> D."""

    def __init__(self, text_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(text_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, tokens: Tensor) -> Tensor:
        """(R, L, text_dim) -> (R, L, D)."""
        return self.linear_2(F.gelu(self.linear_1(tokens), approximate="tanh"))


class Attention(nn.Module):
    """Multi-head self-attention of a token sequence (fused q/k/v), SDPA. With a
    `sequence_group` (`DiT.enable_sequence_parallel`) x is this rank's slice of the tokens and
    the heads are exchanged for the tokens around SDPA (`vidiff.models.sequence_parallel`)."""

    sequence_group: SequenceGroup | None = None

    def __init__(self, dim: int, heads: int, bias: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """(R, L, D) -> (R, L, D); mask broadcastable to (R, heads, L, L)."""
        r, length, dim = x.shape
        sp = self.sequence_group
        # (R, L, 3D) -> (3, R, heads, L, d)
        qkv = self.qkv(x).view(r, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        if sp is not None:  # Ulysses: (3, R, heads, N/P, d) -> (3, R, heads/P, N, d)
            if mask is not None:
                raise ValueError("sequence-parallel attention takes no mask")
            qkv = heads_to_tokens(qkv, sp)
        q, k, v = qkv
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (R, heads, L, d)
        if sp is not None:  # (R, heads/P, N, d) -> (R, heads, N/P, d)
            o = tokens_to_heads(o, sp)
        return self.proj(o.transpose(1, 2).reshape(r, length, dim))


class CrossAttention(nn.Module):
    """Attention of the patches to the (projected) text tokens, PixArt-style (no pre-norm)."""

    def __init__(self, dim: int, heads: int, bias: bool):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, text: Tensor, text_mask: Tensor | None) -> Tensor:
        """x (B*F, N, D), text (B or B*F, L, D) -> (B*F, N, D): a clip's frames share its
        text, so the queries of its F frames attend it together."""
        r, n, dim = x.shape
        b, lt = text.shape[:2]
        heads = self.heads
        q = self.q(x).view(b, (r // b) * n, heads, -1).transpose(1, 2)  # (B, heads, F*N, d)
        k, v = self.kv(text).view(b, lt, 2, heads, -1).permute(2, 0, 3, 1, 4)  # (B, h, L, d)
        mask = None if text_mask is None else text_mask[:, None, None, :]  # (B, 1, 1, L)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, heads, F*N, d)
        return self.proj(o.transpose(1, 2).reshape(r, n, dim))


class SpatialBlock(nn.Module):
    """A DiT block on each frame's patches (module docstring); cross-attention with text."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.hidden
        self.single = cfg.adaln == "single"
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=cfg.norm_eps)
        self.attn = Attention(d, cfg.heads, cfg.attention_bias)
        self.cross = CrossAttention(d, cfg.heads, cfg.attention_bias) if cfg.text_dim else None
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False,
                                  eps=cfg.mlp_norm_eps or cfg.norm_eps)
        self.mlp = Mlp(d, cfg.mlp_ratio)
        if self.single:  # PixArt: a learned table added to the shared modulation
            self.table = nn.Parameter(torch.randn(6, d) / d**0.5)
        else:  # DiT: this block's own map of c to its modulation, zero at init
            self.ada = nn.Linear(d, 6 * d)
            nn.init.zeros_(self.ada.weight)
            nn.init.zeros_(self.ada.bias)

    def forward(self, x: Tensor, c: Tensor, text: Tensor | None, text_mask: Tensor | None,
                frames: int) -> Tensor:
        """x (B*F, N, D); c: (B or B*F, D) SiLU(conditioning) ("block"), or the shared
        (B or B*F, 6D) modulation ("single")."""
        mod = (self.table.flatten() + c) if self.single else self.ada(c)  # (R, 6D)
        mod = _rows(mod, x.shape[0])[:, None]  # (B*F, 1, 6D)
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mod.chunk(6, dim=-1)
        x = x + gate_a * self.attn(modulate(self.norm1(x), shift_a, scale_a))
        if self.cross is not None:
            x = x + self.cross(x, text, text_mask)
        return x + gate_m * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class TemporalBlock(nn.Module):
    """Attention over the frames at each patch position, then an MLP (module docstring),
    modulated like the model's spatial blocks. It starts as the identity: with per-block
    modulation ("block") its map is zero, so its gates are; with PixArt's shared one
    ("single") its attention and MLP output projections are zero (VDM's temporal init)."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.hidden
        self.heads, self.single = cfg.heads, cfg.adaln == "single"
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=cfg.norm_eps)
        self.qkv = nn.Linear(d, 3 * d, bias=cfg.attention_bias)
        self.proj = nn.Linear(d, d)
        self.rel_bias = nn.Parameter(torch.zeros(cfg.rel_pos_table_size, cfg.heads))
        nn.init.normal_(self.rel_bias, std=0.02)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=cfg.norm_eps)
        self.mlp = Mlp(d, cfg.mlp_ratio)
        if self.single:
            self.table = nn.Parameter(torch.randn(6, d) / d**0.5)
            for layer in (self.proj, self.mlp.fc2):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        else:
            self.ada = nn.Linear(d, 6 * d)
            nn.init.zeros_(self.ada.weight)
            nn.init.zeros_(self.ada.bias)

    def forward(self, x: Tensor, c: Tensor, buckets: Tensor | None,
                frame_mask: Tensor | None, frames: int) -> Tensor:
        """x (B*F, N, D); c as for `SpatialBlock` -> (B*F, N, D)."""
        if frames == 1 and buckets is None:
            buckets = torch.zeros(1, 1, dtype=torch.long, device=x.device)
        mod = (self.table.flatten() + c) if self.single else self.ada(c)  # (R, 6D)
        mod = _rows(mod, x.shape[0])[:, None]  # (B*F, 1, 6D)
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mod.chunk(6, dim=-1)
        x = x + gate_a * self._attend(modulate(self.norm1(x), shift_a, scale_a), buckets,
                                      frame_mask, frames)
        return x + gate_m * self.mlp(modulate(self.norm2(x), shift_m, scale_m))

    def _attend(self, h: Tensor, buckets: Tensor, frame_mask: Tensor | None,
                frames: int) -> Tensor:
        r, n, dim = h.shape
        b, heads = r // frames, self.heads
        qkv = self.qkv(h).view(b, frames, n, 3, heads, dim // heads)  # (B, F, N, 3, h, d)
        # -> (3, B, N, heads, F, d) -> 3 x (B*N, heads, F, d): patch positions are the batch
        q, k, v = qkv.permute(3, 0, 2, 4, 1, 5).reshape(3, b * n, heads, frames, -1).unbind(0)
        bias = self.rel_bias[buckets].permute(2, 0, 1)  # (heads, F, F)
        if frame_mask is not None:  # joint training: an image attends only to itself
            bias = bias.masked_fill(~frame_mask, float("-inf"))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        # (B*N, heads, F, d) -> (B, N, heads, F, d) -> (B, F, N, heads, d) -> (B*F, N, D)
        o = o.view(b, n, heads, frames, -1).permute(0, 3, 1, 2, 4).reshape(r, n, dim)
        return self.proj(o)


class FinalLayer(nn.Module):
    """LN, adaLN shift and scale, a linear map to the patch's p*p*C outputs (zero at init)."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.hidden
        self.single = cfg.adaln == "single"
        self.norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        if self.single:
            self.table = nn.Parameter(torch.randn(2, d) / d**0.5)
        else:
            self.ada = nn.Linear(d, 2 * d)
        self.linear = nn.Linear(d, cfg.patch_size**2 * cfg.out_channels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor, c: Tensor, t_emb: Tensor) -> Tensor:
        """x (B*F, N, D) -> (B*F, N, p*p*C). c: SiLU(conditioning); PixArt modulates with
        the timestep embedding itself (before SiLU) plus its table."""
        if self.single:
            shift, scale = (self.table[None] + t_emb[:, None]).unbind(1)  # 2 x (R, D)
        else:
            shift, scale = self.ada(c).chunk(2, dim=-1)
        shift, scale = _rows(shift, x.shape[0])[:, None], _rows(scale, x.shape[0])[:, None]
        return self.linear(modulate(self.norm(x), shift, scale))


def _rows(v: Tensor, rows: int) -> Tensor:
    """A per-sample (B, K) vector for each of the B*F frame rows: (B*F, K); already per
    row: unchanged."""
    if v.shape[0] == rows:
        return v
    return v.repeat_interleave(rows // v.shape[0], dim=0)
