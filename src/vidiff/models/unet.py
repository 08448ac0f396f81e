"""`UNet`: the DDPM/ADM image U-Net and its factorized space-time version (VDM).

Layout (DDPM, Ho et al. 2020, and ADM, Dhariwal & Nichol 2021): conv_in; per level,
`num_res_blocks` residual blocks (each followed by self-attention at the attention
resolutions) and a downsampling; a middle of resblock, attention, resblock; per level on the
way up, `num_res_blocks + 1` residual blocks, each taking one skip connection; GroupNorm,
SiLU, conv_out.

Video (VDM, Ho et al. 2022, section 3): frames are folded into the batch, (B, C, F, H, W) ->
(B*F, C, H, W), so every spatial layer acts on each frame alone ("space-only 3D convolutions",
spatial attention with frames as batch); after every spatial attention block a temporal
attention block attends over the frames at each pixel. Every temporal block starts as the
identity, so at initialization the video U-Net is exactly its image U-Net applied per frame,
and `inflate` turns a trained image U-Net into a video U-Net.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vidiff.cond import call_conditions
from vidiff.models.attention import SpatialAttention, TemporalAttention, relative_position_buckets
from vidiff.models.blocks import Downsample, ResBlock, TemporalConv, Upsample
from vidiff.models.config import UNetConfig
from vidiff.models.context import Context
from vidiff.models.embeddings import (
    GuidanceEmbedding,
    TextConditioner,
    TimestepMLP,
    embed_guidance,
    timestep_embedding,
)
from vidiff.models.norm import GroupNorm32, zero_
from vidiff.models.rows import class_embedding, condition_rows, joint_frame_mask
from vidiff.models.transformer import SpatialTransformer

if TYPE_CHECKING:
    from vidiff.cond import Cond


class Stage(nn.Module):
    """One step of the U-Net: [resblock] [temporal conv] [attention, temporal attention]
    [resampling], each optional, in this order. Each down stage produces one skip connection
    and each up stage consumes one.

    Named slots (rather than a list) keep the image weights' names identical in the image and
    video U-Nets, which is what makes inflation a plain state-dict copy.
    """

    def __init__(
        self,
        res: nn.Module | None = None,
        tconv: nn.Module | None = None,
        attn: nn.Module | None = None,
        tattn: nn.Module | None = None,
        resample: nn.Module | None = None,
    ):
        super().__init__()
        self.res = res  # ResBlock
        self.tconv = tconv  # TemporalConv (video, temporal_conv=True)
        self.attn = attn  # SpatialAttention
        self.tattn = tattn  # TemporalAttention (video)
        self.resample = resample  # Downsample, Upsample or a resampling ResBlock
        self.layers = [m for m in (res, tconv, attn, tattn, resample) if m is not None]
        self.checkpointing = False

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        """(B*F, C, H, W) -> (B*F, C', H', W')."""
        for layer in self.layers:
            if self.checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, x, ctx, use_reentrant=False)
            else:
                x = layer(x, ctx)
        return x


class UNet(nn.Module):
    """Image (`config.temporal=False`) or factorized space-time video U-Net.

    Call it as `model(x, t, class_labels=..., text_emb=..., text_mask=..., cond_mask=...,
    num_images=K, lowres=...)` or `model(x, t, vidiff.Cond(...))`; see `forward`. Build one
    from a preset with
    `vidiff.models.build_unet`.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise TypeError(f"UNet needs a UNetConfig, got {type(config).__name__}")
        self.config = cfg = config
        ch0, emb_dim, last = cfg.model_channels, cfg.emb_dim, cfg.num_levels - 1

        self.time_embed = TimestepMLP(ch0, emb_dim)
        # one more row than classes: row `num_classes` is the learned null label
        self.class_embed = (
            nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes is not None else None
        )
        self.text_cond = TextConditioner(
            cfg.text_dim, emb_dim, pooled=cfg.text_pooling, null_tokens=cfg.null_text_tokens
        ) if cfg.text_dim else None
        self.guidance_embed = GuidanceEmbedding(emb_dim) if cfg.guidance_embed else None
        self.conv_in = nn.Conv2d(cfg.in_channels + cfg.cond_channels, ch0, 3, padding=1)

        ch, skips = ch0, [ch0]
        self.down = nn.ModuleList()
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                self.down.append(self._stage(ch, ch0 * mult, level))
                ch = ch0 * mult
                skips.append(ch)
            if level != last:
                self.down.append(Stage(resample=self._resample(ch, "down")))
                skips.append(ch)
        self.mid = nn.ModuleList(
            [
                self._stage(ch, ch, last, attention=cfg.mid_attention),
                self._stage(ch, ch, last, False),
            ]
        )
        self.up = nn.ModuleList()
        for level in reversed(range(cfg.num_levels)):
            out = ch0 * cfg.channel_mult[level]
            for i in range(cfg.num_res_blocks + 1):
                up = self._resample(out, "up") if level > 0 and i == cfg.num_res_blocks else None
                self.up.append(self._stage(ch + skips.pop(), out, level, resample=up))
                ch = out
        self.norm_out = GroupNorm32(cfg.norm_groups, ch, eps=cfg.norm_eps)
        self.conv_out = zero_(nn.Conv2d(ch, cfg.out_channels, 3, padding=1))
        self.set_gradient_checkpointing(cfg.gradient_checkpointing)

    # -- construction helpers -----------------------------------------------------------------
    def _stage(self, cin, cout, level, attention=None, resample=None) -> Stage:
        cfg = self.config
        norm = {"groups": cfg.norm_groups, "eps": cfg.norm_eps}
        res = ResBlock(
            cin,
            cout,
            cfg.emb_dim,
            dropout=cfg.dropout,
            scale_shift=cfg.use_scale_shift_norm,
            **norm,
        )
        tconv = attn = tattn = None
        if cfg.temporal and cfg.temporal_conv:
            tconv = TemporalConv(cout, kernel=cfg.temporal_conv_kernel, **norm)
        if cfg.level_has_attention(level) if attention is None else attention:
            heads = cfg.heads(cout, level)
            if cfg.spatial_block == "transformer":
                attn = SpatialTransformer(cout, heads, groups=cfg.norm_groups,
                                          text_dim=cfg.text_dim, depth=cfg.transformer_depth,
                                          fp32=cfg.attention_fp32)
            else:
                attn = SpatialAttention(cout, heads, text_dim=cfg.text_dim, **norm)
            if cfg.temporal:
                tattn = TemporalAttention(cout, heads, table_size=cfg.rel_pos_table_size, **norm)
        return Stage(res, tconv, attn, tattn, resample)

    def _resample(self, ch: int, direction: str) -> nn.Module:
        cfg = self.config
        if cfg.resblock_updown:
            return ResBlock(
                ch,
                ch,
                cfg.emb_dim,
                groups=cfg.norm_groups,
                eps=cfg.norm_eps,
                dropout=cfg.dropout,
                scale_shift=cfg.use_scale_shift_norm,
                resample=direction,
            )
        if direction == "down":
            return Downsample(ch, conv=cfg.conv_resample, padding=cfg.downsample_padding)
        return Upsample(ch, conv=cfg.conv_resample)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each layer in the backward pass (torch.utils.checkpoint, non-reentrant)."""
        for m in self.modules():
            if isinstance(m, Stage):
                m.checkpointing = bool(enabled)

    # -- forward ------------------------------------------------------------------------------
    def forward(
        self,
        x: Tensor,
        t: Tensor,
        cond: Cond | None = None,
        *,
        class_labels: Tensor | None = None,
        text_emb: Tensor | None = None,
        text_mask: Tensor | None = None,
        cond_mask: Tensor | None = None,
        num_images: int = 0,
        frame_emb: Tensor | None = None,
        lowres: Tensor | None = None,
        guidance: Tensor | None = None,
    ) -> Tensor:
        """Predict (eps, x0 or v, whatever it was trained for) for the noisy input x.

        Args:
            x: (B, C, F, H, W) video, or (B, C, H, W) image (a one-frame video). H and W must
                be divisible by 2 ** (levels - 1).
            t: int64 (B,) timesteps on the training scale 0..T-1.
            cond: the conditions below as one `vidiff.Cond` (instead of, or with, keywords).
            class_labels: int64 (B,) in [0, num_classes); None = the null label for all.
            text_emb: float (B, L, text_dim); None = the learned null text for all.
            text_mask: bool (B, L), True = real token; None = all tokens real.
            cond_mask: bool (B,); False = replace that sample's class and text with the learned
                null condition (condition dropout, classifier-free guidance). None = all True.
            num_images: K; the last K of the F frames are independent images (VDM joint
                training): temporal layers keep them apart from the video and each other.
            frame_emb: float (F, emb_dim) or (B, F, emb_dim), added to the conditioning
                embedding of each frame (per-frame conditioning, e.g. VideoFusion's frame
                index, see `vidiff.models.videofusion`); None = the same embedding for all.
            lowres: (B, cond_channels, F, h, w) low-resolution video (or (B, cond_channels,
                h, w) for a 4D x) of a super-resolution model (`cond_channels` > 0), required
                there: upsampled (nearest) to H x W and concatenated to x's channels.
            guidance: float (B,) guidance scales, the input of a guidance-distilled model
                (`guidance_embed`); None = scale 1.

        Returns:
            (B, out_channels, F, H, W), or (B, out_channels, H, W) for a 4D x.
        """
        (class_labels, text_emb, text_mask, cond_mask, num_images, lowres,
         guidance) = call_conditions(
            cond, class_labels=class_labels, text_emb=text_emb, text_mask=text_mask,
            cond_mask=cond_mask, num_images=num_images, lowres=lowres, guidance=guidance)
        cfg = self.config
        if x.ndim == 4:
            b, c, hh, ww = x.shape
            frames = 1
            # (B, C, H, W) -> (B, C, H, W) channels-last
            h = x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x
        elif x.ndim == 5:
            b, c, frames, hh, ww = x.shape
            if cfg.channels_last:
                # (B, C, F, H, W) -> (B, F, H, W, C) -> (B*F, C, H, W) channels-last: one copy
                h = x.permute(0, 2, 3, 4, 1).contiguous().view(b * frames, hh, ww, c)
                h = h.permute(0, 3, 1, 2)
            else:
                # (B, C, F, H, W) -> (B*F, C, H, W)
                h = x.transpose(1, 2).reshape(b * frames, c, hh, ww)
        else:
            raise ValueError(f"x must be (B, C, F, H, W) or (B, C, H, W), got {tuple(x.shape)}")
        self._check_inputs(x, c, hh, ww, frames, t, num_images)
        ctx = self._context(
            t,
            b,
            frames,
            num_images,
            class_labels,
            text_emb,
            text_mask,
            cond_mask,
            x.device,
            frame_emb,
            guidance,
        )

        h = self.conv_in(self._with_lowres(h, lowres, b, frames, x.ndim))
        skips = [h]
        for stage in self.down:
            h = stage(h, ctx)
            skips.append(h)
        for stage in self.mid:
            h = stage(h, ctx)
        for stage in self.up:
            h = stage(torch.cat([h, skips.pop()], dim=1), ctx)
        h = self.conv_out(F.silu(self.norm_out(h)))  # (B*F, C_out, H, W)
        if x.ndim == 4:
            return h.contiguous()
        # (B*F, C_out, H, W) -> (B, C_out, F, H, W)
        return h.view(b, frames, -1, hh, ww).transpose(1, 2).contiguous()

    def _with_lowres(self, h: Tensor, lowres: Tensor | None, b: int, frames: int,
                     ndim: int) -> Tensor:
        """(B*F, C, H, W) -> (B*F, C + cond_channels, H, W): the low-res video upsampled to
        H x W (nearest: each low-res pixel covers its block) after x's channels."""
        cc = self.config.cond_channels
        if cc == 0:
            if lowres is not None:
                raise ValueError("lowres given to a model built with cond_channels=0")
            return h
        if lowres is None:
            raise ValueError(f"this super-resolution model (cond_channels={cc}) needs lowres")
        want = (b, cc, frames) if ndim == 5 else (b, cc)
        if lowres.ndim != ndim or tuple(lowres.shape[:ndim - 2]) != want:
            raise ValueError(f"lowres must be {(*want, 'h', 'w')}, got {tuple(lowres.shape)}")
        if ndim == 5:
            # (B, Cc, F, h, w) -> (B*F, Cc, h, w)
            lowres = lowres.transpose(1, 2).reshape(b * frames, cc, *lowres.shape[-2:])
        up = F.interpolate(lowres.to(h.dtype), size=h.shape[-2:], mode="nearest")
        return torch.cat([h, up], dim=1)  # (B*F, C + Cc, H, W)

    def _check_inputs(self, x, c, hh, ww, frames, t, num_images):
        cfg = self.config
        if c != cfg.in_channels:
            raise ValueError(f"x has {c} channels, the model takes {cfg.in_channels}")
        div = 2 ** (cfg.num_levels - 1)
        if hh % div or ww % div:
            raise ValueError(f"H and W must be divisible by {div}, got {hh}x{ww}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape (B,)=({x.shape[0]},), got {tuple(t.shape)}")
        if not 0 <= num_images <= frames:
            raise ValueError(f"num_images={num_images} must be in [0, F={frames}]")

    def _context(
        self,
        t,
        b,
        frames,
        num_images,
        labels,
        text_emb,
        text_mask,
        cond_mask,
        device,
        frame_emb=None,
        guidance=None,
    ):
        cfg = self.config
        # timestep embedding (DDPM): sinusoid -> MLP; class and pooled text are added to it
        emb = timestep_embedding(
            t,
            cfg.model_channels,
            flip_sin_to_cos=cfg.time_flip_sin_to_cos,
            freq_shift=cfg.time_freq_shift,
        )
        emb = self.time_embed(emb.to(self.conv_in.weight.dtype))  # (B, emb_dim)
        rows, labels, text_emb, text_mask, cond_mask = condition_rows(
            b, frames, labels, text_emb, text_mask, cond_mask)
        if rows != b:  # per-frame conditions: (B, E) -> (B*F, E), each frame its own
            emb = emb[:, None].expand(b, frames, emb.shape[-1]).reshape(rows, -1)
        classes = class_embedding(self.class_embed, labels, cond_mask, rows, cfg.num_classes,
                                  device)
        if classes is not None:
            emb = emb + classes
        scale = embed_guidance(self.guidance_embed, guidance, b, rows, device, emb.dtype)
        emb = emb if scale is None else emb + scale  # (rows, E)
        tokens = tmask = None
        if self.text_cond is not None:
            tokens, tmask, pooled = self.text_cond(text_emb, text_mask, cond_mask, rows)
            if pooled is not None:
                emb = emb + pooled
        elif text_emb is not None:
            raise ValueError("text_emb given to a model built with text_dim=None")
        if frame_emb is not None:
            if frame_emb.ndim == 2:
                frame_emb = frame_emb.expand(b, *frame_emb.shape)  # (F, E) -> (B, F, E)
            if frame_emb.shape != (b, frames, cfg.emb_dim):
                raise ValueError(
                    f"frame_emb must be (F, emb_dim) or (B, F, emb_dim) = "
                    f"({b}, {frames}, {cfg.emb_dim}), got {tuple(frame_emb.shape)}"
                )
            # (B, 1 or F, E) + (B, F, E) -> (B*F, E): each frame its own embedding
            emb = emb.view(b, -1, emb.shape[-1]) + frame_emb.to(emb.dtype)
            emb = emb.reshape(b * frames, -1)

        buckets = frame_mask = None
        if cfg.temporal and frames > 1:
            buckets = relative_position_buckets(
                frames,
                kind=cfg.rel_pos,
                num_buckets=cfg.rel_pos_num_buckets,
                max_distance=cfg.rel_pos_max_distance,
                device=device,
            )
            frame_mask = joint_frame_mask(frames, num_images, device)  # VDM joint training
        return Context(F.silu(emb), b, num_images, tokens, tmask, buckets, frame_mask)
