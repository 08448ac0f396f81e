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


class GuidanceEmbedding(nn.Module):
    """The guidance scale as a network input (guidance distillation, Meng et al. 2023, stage
    one): a sinusoid of the scale -> Linear -> SiLU -> Linear, plus (w - 1) times a learned
    vector, added to the timestep embedding. Both start at zero, so a student built from its
    teacher computes the teacher's conditional prediction at every scale until it learns
    otherwise; the linear term gets gradients from the first step (guidance is linear in w
    at the output), where the zero-initialized MLP alone starts at a saddle (measured: 40
    steps of a tiny run reached 1% of the guidance effect without it)."""

    features: int = 256  # sinusoid width
    scale: float = 100.0  # the scale times this is the sinusoid's "timestep" (1 -> 100)

    def __init__(self, out_dim: int):
        super().__init__()
        self.mlp = TimestepMLP(self.features, out_dim)
        nn.init.zeros_(self.mlp.linear_2.weight)
        nn.init.zeros_(self.mlp.linear_2.bias)
        self.slope = nn.Parameter(torch.zeros(out_dim))

    def forward(self, guidance: Tensor, dtype: torch.dtype) -> Tensor:
        """Scales (B,) -> (B, out_dim)."""
        sinusoid = timestep_embedding(guidance.float() * self.scale, self.features,
                                      flip_sin_to_cos=True, freq_shift=0.0)
        linear = (guidance.to(dtype) - 1)[:, None] * self.slope.to(dtype)  # (B, out_dim)
        return self.mlp(sinusoid.to(dtype)) + linear


def embed_guidance(embedding: GuidanceEmbedding | None, guidance: Tensor | None, b: int,
                   rows: int, device, dtype: torch.dtype) -> Tensor | None:
    """The guidance scales' embedding (rows, D) by a model's `embedding` (Meng et al. 2023:
    w is an input), None for a model without one; a ValueError when such a model is given
    scales (classifier-free guidance wraps it instead)."""
    if embedding is None:
        if guidance is not None:
            raise ValueError("guidance given to a model built with guidance_embed=False "
                             "(classifier-free guidance wraps such a model instead)")
        return None
    return embedding(guidance_rows(guidance, b, rows, device), dtype)


def guidance_rows(guidance: Tensor | None, b: int, rows: int, device) -> Tensor:
    """Each sample's guidance scale (B,) repeated over the rows (B or B*F) of the
    conditioning; None: scale 1 (the conditional model, what no guidance means)."""
    if guidance is None:
        return torch.ones(rows, device=device)
    if guidance.shape != (b,):
        raise ValueError(f"guidance must be one scale per sample (B,)=({b},), got "
                         f"{tuple(guidance.shape)}")
    return guidance.to(device).repeat_interleave(rows // b)


class TextConditioner(nn.Module):
    """Prepares text embeddings (B, L, D) for the U-Net.

    Two paths, as in GLIDE / Imagen: the masked mean of the (layer-normed) tokens goes through
    an MLP and is added to the timestep embedding (the pooled path), and the tokens themselves
    are returned for every spatial attention block to attend to (the cross-attention path, see
    `SpatialAttention`). `pooled=False` is Stable Diffusion's conditioning: the tokens, as
    they are, are the cross-attention context and nothing else. A sample whose `cond_mask` is
    False sees the learned null text instead of its text, whatever the text and mask were:
    that is the null condition of classifier-free guidance. The null text has `null_tokens`
    tokens: one, or an SD import's 77 that start as the empty prompt's embedding (SD's null).
    """

    def __init__(self, text_dim: int, emb_dim: int, *, pooled: bool = True,
                 null_tokens: int = 1):
        super().__init__()
        self.null_token = nn.Parameter(torch.zeros(null_tokens, text_dim))  # (L0, D)
        nn.init.normal_(self.null_token, std=text_dim**-0.5)
        self.norm = nn.LayerNorm(text_dim) if pooled else None
        self.pool = TimestepMLP(text_dim, emb_dim) if pooled else None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "null_token"
        if key in state_dict and state_dict[key].ndim == 1:  # one token, written as (D,)
            state_dict[key] = state_dict[key][None]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(
        self,
        text_emb: Tensor | None,
        text_mask: Tensor | None,
        cond_mask: Tensor | None,
        batch: int,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Returns (tokens (B, L, D), key mask (B, L) bool or None, pooled (B, emb_dim), or
        None without the pooled path).

        `text_emb=None` means "no text" for the whole batch: every sample gets the null text.
        """
        null = self.null_token  # (L0, D)
        if text_emb is None:
            tokens = null.expand(batch, *null.shape)  # (B, L0, D)
            mask = None
        else:
            tokens, mask = text_emb, text_mask
            self._check(text_emb, text_mask, batch)
            if cond_mask is not None:
                tokens, mask = self._with_null(tokens, mask, cond_mask.view(batch, 1), null)
        if self.norm is None:
            return tokens, mask, None
        tokens = self.norm(tokens)  # (B, L, D)
        if mask is None:
            pooled = tokens.mean(dim=1)  # (B, D)
        else:
            w = mask.to(tokens.dtype)[..., None]  # (B, L, 1)
            pooled = (tokens * w).sum(1) / w.sum(1).clamp(min=1.0)  # (B, D)
        return tokens, mask, self.pool(pooled)

    def _check(self, text_emb: Tensor, text_mask: Tensor | None, batch: int) -> None:
        if text_emb.ndim != 3 or text_emb.shape[0] != batch:
            raise ValueError(f"text_emb must be (B={batch}, L, D), got {tuple(text_emb.shape)}")
        if text_mask is not None and text_mask.shape != text_emb.shape[:2]:
            raise ValueError(f"text_mask must be (B, L)={tuple(text_emb.shape[:2])}, "
                             f"got {tuple(text_mask.shape)}")
        n0, length = self.null_token.shape[0], text_emb.shape[1]
        if n0 > 1 and length != n0:
            raise ValueError(f"text_emb has {length} tokens; this model's null text has {n0} "
                             f"(its text encoder's length)")

    @staticmethod
    def _with_null(tokens: Tensor, mask: Tensor | None, keep: Tensor, null: Tensor):
        """Rows with keep (B, 1) False get the null text: its tokens first, the rest masked."""
        b, length = tokens.shape[:2]
        n0 = null.shape[0]
        if n0 < length:  # (L0, D) -> (L, D), padded with tokens that the mask hides
            null = torch.cat([null, null[:1].expand(length - n0, -1)])
        tokens = torch.where(keep[..., None], tokens, null.to(tokens.dtype))
        real = torch.arange(length, device=tokens.device)[None] < n0  # (1, L)
        mask = torch.where(keep, mask if mask is not None else True, real.expand(b, length))
        return tokens, mask
