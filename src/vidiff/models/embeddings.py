"""Conditioning embeddings: sinusoidal timestep features, the timestep MLP, text tokens.

Class labels are a plain `nn.Embedding` with one extra row for the learned null label (see
`UNet`); text conditioning lives here because it needs a little more machinery.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(
    t: Tensor,
    dim: int,
    *,
    flip_sin_to_cos: bool = False,
    freq_shift: float = 1.0,
    max_period: float = 10000.0,
) -> Tensor:
    """Sinusoidal features of the timesteps `t` (B,) -> float32 (B, dim).

    DDPM (Ho et al. 2020, after the Transformer's positional encoding): with half = dim // 2,
    freq_i = max_period^(-i / (half - freq_shift)) for i < half and the features are
    [sin(t freq), cos(t freq)] (DDPM: freq_shift=1, sin first; ADM: freq_shift=0, cos first).
    """
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=t.device)
    exponent = exponent * (-math.log(max_period) / (half - freq_shift))
    args = t.float()[:, None] * torch.exp(exponent)[None]  # (B, half)
    if flip_sin_to_cos:
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    else:
        emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb  # (B, dim)


class TimestepMLP(nn.Module):
    """The timestep embedding: sinusoid (in_dim) -> Linear -> SiLU -> Linear (out_dim)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_dim) -> (B, out_dim)."""
        return self.linear_2(F.silu(self.linear_1(x)))


class TextConditioner(nn.Module):
    """Prepares text embeddings (B, L, D) for the U-Net.

    Two paths, as in GLIDE / Imagen: the masked mean of the (layer-normed) tokens goes through
    an MLP and is added to the timestep embedding (the pooled path), and the tokens themselves
    are returned for every spatial attention block to attend to (the cross-attention path, see
    `SpatialAttention`). A sample whose `cond_mask` is False sees a single learned null token
    instead of its text, whatever the text and mask were: that is the null condition of
    classifier-free guidance.
    """

    def __init__(self, text_dim: int, emb_dim: int):
        super().__init__()
        self.null_token = nn.Parameter(torch.zeros(text_dim))
        nn.init.normal_(self.null_token, std=text_dim**-0.5)
        self.norm = nn.LayerNorm(text_dim)
        self.pool = TimestepMLP(text_dim, emb_dim)

    def forward(
        self,
        text_emb: Tensor | None,
        text_mask: Tensor | None,
        cond_mask: Tensor | None,
        batch: int,
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """Returns (tokens (B, L, D), key mask (B, L) bool or None, pooled (B, emb_dim)).

        `text_emb=None` means "no text" for the whole batch: every sample gets the null token.
        """
        null = self.null_token.to(self.norm.weight.dtype)
        if text_emb is None:
            tokens = null.expand(batch, 1, -1)  # (B, 1, D)
            mask = None
        else:
            if text_emb.ndim != 3 or text_emb.shape[0] != batch:
                raise ValueError(
                    f"text_emb must be (B={batch}, L, D), got {tuple(text_emb.shape)}"
                )
            tokens, mask = text_emb, text_mask
            if mask is not None and mask.shape != text_emb.shape[:2]:
                raise ValueError(
                    f"text_mask must be (B, L)={tuple(text_emb.shape[:2])}, "
                    f"got {tuple(mask.shape)}"
                )
            if cond_mask is not None:
                keep = cond_mask.view(batch, 1)  # (B, 1)
                tokens = torch.where(keep[..., None], tokens, null.to(tokens.dtype))
                first = torch.zeros_like(keep.expand(batch, tokens.shape[1]))  # (B, L)
                first[:, 0] = True
                mask = torch.where(keep, mask if mask is not None else True, first)
        tokens = self.norm(tokens)  # (B, L, D)
        if mask is None:
            pooled = tokens.mean(dim=1)  # (B, D)
        else:
            w = mask.to(tokens.dtype)[..., None]  # (B, L, 1)
            pooled = (tokens * w).sum(1) / w.sum(1).clamp(min=1.0)  # (B, D)
        return tokens, mask, self.pool(pooled)
