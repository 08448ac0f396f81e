"""`DiT`: the diffusion transformer (Peebles & Xie 2023) as a factorized space-time video model.

Each frame is cut into p x p patches, linearly embedded, given a fixed 2D sin-cos position, and
run through `depth` spatial blocks (`vidiff.models.dit_blocks`), each followed in a video DiT
by a temporal block over the frames at every patch position (VDM's factorization, as in Latte
variant 1). The timestep (and class) embedding conditions every block through adaLN-Zero;
text is projected to the width and cross-attended (PixArt-alpha). The final layer maps every
token back to its p*p*C outputs.

Like the U-Net, it takes (B, C, F, H, W) videos or (B, C, H, W) images and the same
conditions (`vidiff.Cond`, class labels with a null label, text with a learned null text,
`cond_mask`, `num_images` for joint training with an image-only temporal mask, per-frame
conditions); temporal blocks start as the identity, so `inflate_dit` turns an image DiT into a
video DiT that denoises every frame exactly as the image model did.
`DiT.enable_sequence_parallel` splits each frame's tokens over a process group (Ulysses,
`vidiff.models.sequence_parallel`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from vidiff.cond import call_conditions
from vidiff.models.attention import relative_position_buckets
from vidiff.models.dit_blocks import CaptionProjection, FinalLayer, SpatialBlock, TemporalBlock
from vidiff.models.dit_config import DiTConfig
from vidiff.models.embeddings import (
    GuidanceEmbedding,
    TextConditioner,
    TimestepMLP,
    embed_guidance,
    timestep_embedding,
)
from vidiff.models.rows import class_embedding, condition_rows, joint_frame_mask
from vidiff.models.sequence_parallel import SequenceGroup, gather_tokens, split_tokens

if TYPE_CHECKING:
    from vidiff.cond import Cond

__all__ = ["DiT", "inflate_dit", "sincos_2d"]

TIME_FEATURES = 256  # width of the timestep sinusoid (DiT, PixArt)


def sincos_2d(dim: int, h: int, w: int, base: int | None, scale: float = 1.0) -> Tensor:
    """Fixed 2D sin-cos positions of an h x w patch grid, (h*w, dim) float32, row-major.

    The first half encodes the column, the second the row (MAE / DiT's layout as diffusers
    computes it); positions are scaled to a `base`-patch grid (diffusers' base_size) and
    divided by `scale`, so a model sees positions in the range it was trained on.
    """
    def axis(n: int, features: int) -> Tensor:  # (n,) positions -> (n, features)
        pos = torch.arange(n, dtype=torch.float64) / (n / (base or n)) / scale
        omega = 1.0 / 10000 ** (torch.arange(features // 2, dtype=torch.float64)
                                / (features / 2))
        out = pos[:, None] * omega[None]  # (n, features / 2)
        return torch.cat([out.sin(), out.cos()], dim=1)

    half = dim // 2
    cols = axis(w, half)[None].expand(h, w, half)  # (h, w, D/2): the column's features
    rows = axis(h, half)[:, None].expand(h, w, half)
    return torch.cat([cols, rows], dim=-1).reshape(h * w, dim).float()


class BlockEmbedder(nn.Module):
    """One block's own timestep MLP and class table (`DiTConfig.block_embedders`)."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.time_embed = TimestepMLP(TIME_FEATURES, cfg.hidden)
        self.class_embed = nn.Embedding(cfg.num_classes + 1, cfg.hidden) \
            if cfg.num_classes else None


class DiT(nn.Module):
    """Image (`config.temporal=False`) or factorized space-time video diffusion transformer.

    Call it like the U-Net: `model(x, t, class_labels=..., text_emb=..., text_mask=...,
    cond_mask=..., num_images=K)` or `model(x, t, vidiff.Cond(...))`.
    """

    sequence_group: SequenceGroup | None = None  # `enable_sequence_parallel`

    def __init__(self, config: DiTConfig):
        super().__init__()
        if not isinstance(config, DiTConfig):
            raise TypeError(f"DiT needs a DiTConfig, got {type(config).__name__}")
        self.config = cfg = config
        d, p = cfg.hidden, cfg.patch_size
        self.patch = nn.Conv2d(cfg.in_channels, d, p, stride=p)
        self.time_embed = TimestepMLP(TIME_FEATURES, d)
        # one more row than classes: row `num_classes` is the learned null label
        self.class_embed = nn.Embedding(cfg.num_classes + 1, d) if cfg.num_classes else None
        self.text_cond = TextConditioner(cfg.text_dim, d, pooled=False,
                                         null_tokens=cfg.null_text_tokens) \
            if cfg.text_dim else None
        self.text_proj = CaptionProjection(cfg.text_dim, d) if cfg.text_dim else None
        self.guidance_embed = GuidanceEmbedding(d) if cfg.guidance_embed else None
        self.adaln = nn.Linear(d, 6 * d) if cfg.adaln == "single" else None  # PixArt's shared
        # blocks 1.. with their own embedders (an untied diffusers DiT): embedders[i - 1]
        self.embedders = nn.ModuleList(BlockEmbedder(cfg) for _ in range(cfg.depth - 1)) \
            if cfg.block_embedders else None
        self.blocks = nn.ModuleList(SpatialBlock(cfg) for _ in range(cfg.depth))
        self.temporal = nn.ModuleList(TemporalBlock(cfg) for _ in range(cfg.depth)) \
            if cfg.temporal else None
        self.final = FinalLayer(cfg)
        self._positions: dict[tuple, Tensor] = {}
        self.checkpointing = cfg.gradient_checkpointing

    def _pos(self, h: int, w: int, device, dtype) -> Tensor:
        key = (h, w, device, dtype)
        if key not in self._positions:  # fixed, not a parameter: computed once per grid
            cfg = self.config
            self._positions[key] = sincos_2d(cfg.hidden, h, w, cfg.pos_base,
                                             cfg.pos_scale).to(device, dtype)
        return self._positions[key]

    def forward(self, x: Tensor, t: Tensor, cond: Cond | None = None, *,
                class_labels: Tensor | None = None, text_emb: Tensor | None = None,
                text_mask: Tensor | None = None, cond_mask: Tensor | None = None,
                num_images: int = 0, frame_emb: Tensor | None = None,
                lowres: Tensor | None = None, guidance: Tensor | None = None) -> Tensor:
        """Predict (eps, x0 or v) for the noisy x (B, C, F, H, W) or (B, C, H, W); the
        arguments are the U-Net's (`vidiff.models.UNet.forward`)."""
        (class_labels, text_emb, text_mask, cond_mask, num_images, lowres,
         guidance) = call_conditions(
            cond, class_labels=class_labels, text_emb=text_emb, text_mask=text_mask,
            cond_mask=cond_mask, num_images=num_images, lowres=lowres, guidance=guidance)
        if lowres is not None or frame_emb is not None:
            raise ValueError("a DiT takes no lowres or frame_emb (those are U-Net inputs)")
        cfg, image = self.config, x.ndim == 4
        frames_in = x[:, :, None] if image else x
        if frames_in.ndim != 5:
            raise ValueError(f"x must be (B, C, F, H, W) or (B, C, H, W), got {tuple(x.shape)}")
        b, c, frames, hh, ww = frames_in.shape
        self._check(c, hh, ww, frames, t, b, num_images)
        p = cfg.patch_size
        # (B, C, F, H, W) -> (B*F, C, H, W) -> (B*F, D, H/p, W/p) -> (B*F, N, D)
        h = self.patch(frames_in.transpose(1, 2).reshape(b * frames, c, hh, ww))
        h = h.flatten(2).transpose(1, 2)
        h = h + self._pos(hh // p, ww // p, h.device, h.dtype)
        sp = self.sequence_group
        if sp is not None:  # (B*F, N, D) -> this rank's tokens (B*F, N/P, D)
            h = split_tokens(h, sp)
        c_act, mods, t_emb, text, tmask = self._conditions(
            t, b, frames, class_labels, text_emb, text_mask, cond_mask, h.dtype, guidance)
        buckets, fmask = self._temporal_context(frames, num_images, x.device)
        for i, block in enumerate(self.blocks):  # block i (and its temporal one): mods[i]
            h = self._run(block, h, mods[i], text, tmask, frames)
            if self.temporal is not None:
                h = self._run(self.temporal[i], h, mods[i], buckets, fmask, frames)
        h = self.final(h, c_act, t_emb)  # (B*F, N, p*p*C_out)
        if sp is not None:  # every rank's (B*F, N/P, p*p*C_out) -> (B*F, N, p*p*C_out)
            h = gather_tokens(h, sp)
        out = self._unpatchify(h, b, frames, hh // p, ww // p)  # (B, C_out, F, H, W)
        return out[:, :, 0] if image else out

    def _run(self, block: nn.Module, *args) -> Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def _unpatchify(self, h: Tensor, b: int, frames: int, gh: int, gw: int) -> Tensor:
        p, co = self.config.patch_size, self.config.out_channels
        # (B*F, gh*gw, p*p*C) -> (B, F, gh, gw, p, q, C) -> (B, C, F, gh, p, gw, q)
        h = h.view(b, frames, gh, gw, p, p, co).permute(0, 6, 1, 2, 4, 3, 5)
        return h.reshape(b, co, frames, gh * p, gw * p)

    def _check(self, c, hh, ww, frames, t, b, num_images):
        cfg = self.config
        if c != cfg.in_channels:
            raise ValueError(f"x has {c} channels, the model takes {cfg.in_channels}")
        if hh % cfg.patch_size or ww % cfg.patch_size:
            raise ValueError(f"H and W must be divisible by the patch {cfg.patch_size}, got "
                             f"{hh}x{ww}")
        if t.shape != (b,):
            raise ValueError(f"t must have shape (B,)=({b},), got {tuple(t.shape)}")
        if not 0 <= num_images <= frames:
            raise ValueError(f"num_images={num_images} must be in [0, F={frames}]")
        sp, p = self.sequence_group, cfg.patch_size
        if sp is not None and (hh // p) * (ww // p) % sp.size:
            raise ValueError(f"sequence parallel over {sp.size} ranks needs the patch tokens "
                             f"divisible by {sp.size}: the {hh // p}x{ww // p} grid has "
                             f"{(hh // p) * (ww // p)}")

    def _conditions(self, t, b, frames, labels, text_emb, text_mask, cond_mask, dtype,
                    guidance=None):
        """(SiLU(c), what each block modulates with, c itself, text tokens, mask)."""
        cfg = self.config
        sinusoid = timestep_embedding(t, TIME_FEATURES, flip_sin_to_cos=True,
                                      freq_shift=cfg.time_freq_shift).to(dtype)  # (B, 256)
        rows, labels, text_emb, text_mask, cond_mask = condition_rows(
            b, frames, labels, text_emb, text_mask, cond_mask)
        scale = embed_guidance(self.guidance_embed, guidance, b, rows, t.device,
                               dtype)  # (rows, D) or None

        def embed(time_embed: nn.Module, class_embed: nn.Module | None) -> Tensor:
            emb = time_embed(sinusoid)  # (B, D)
            if rows != b:  # per-frame conditions: (B, D) -> (B*F, D)
                emb = emb.repeat_interleave(frames, dim=0)
            classes = class_embedding(class_embed, labels, cond_mask, rows, cfg.num_classes,
                                      t.device)
            emb = emb if classes is None else emb + classes
            return emb if scale is None else emb + scale

        emb = embed(self.time_embed, self.class_embed)  # (rows, D)
        text = tmask = None
        if self.text_cond is not None:
            tokens, tmask, _ = self.text_cond(text_emb, text_mask, cond_mask, rows)
            text = self.text_proj(tokens)  # (rows, L, D)
        elif text_emb is not None:
            raise ValueError("text_emb given to a model built with text_dim=None")
        act = F.silu(emb)
        if self.adaln is not None:  # PixArt: one shared modulation for every block
            mods = [self.adaln(act)] * cfg.depth
        elif self.embedders is not None:
            mods = [act] + [F.silu(embed(e.time_embed, e.class_embed)) for e in self.embedders]
        else:
            mods = [act] * cfg.depth
        return act, mods, emb, text, tmask

    def _temporal_context(self, frames, num_images, device):
        cfg = self.config
        if self.temporal is None:
            return None, None
        buckets = relative_position_buckets(frames, kind=cfg.rel_pos,
                                            num_buckets=cfg.rel_pos_num_buckets,
                                            max_distance=cfg.rel_pos_max_distance,
                                            device=device)
        return buckets, joint_frame_mask(frames, num_images, device)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block in the backward pass (torch.utils.checkpoint)."""
        self.checkpointing = bool(enabled)

    def enable_sequence_parallel(self, group) -> None:
        """Split every frame's patch tokens over the ranks of the process group `group`,
        which all hold the same batch and weights (Ulysses attention,
        `vidiff.models.sequence_parallel`); None turns it off. The output is whole on every
        rank; each rank's gradients are the part from its tokens, to be summed over `group`.
        """
        sp = None if group is None else SequenceGroup.of(group)
        if sp is not None and self.config.heads % sp.size:
            raise ValueError(f"sequence parallel over {sp.size} ranks needs the heads "
                             f"divisible by {sp.size}, the model has {self.config.heads}")
        self.sequence_group = sp
        for block in self.blocks:
            block.attn.sequence_group = sp


def inflate_dit(image: DiT, **options) -> DiT:
    """A video DiT holding a copy of every weight of the image DiT `image`; its temporal
    blocks start as the identity, so it computes the image model on every frame. `options`:
    temporal and execution fields (rel_pos, rel_pos_num_buckets, rel_pos_max_distance,
    gradient_checkpointing)."""
    allowed = {"rel_pos", "rel_pos_num_buckets", "rel_pos_max_distance",
               "gradient_checkpointing"}
    if not isinstance(image, DiT) or image.config.temporal:
        raise ValueError("inflate_dit needs an image DiT (config.temporal=False)")
    bad = sorted(set(options) - allowed)
    if bad:
        raise ValueError(f"inflate_dit cannot change {bad}; it can set {sorted(allowed)}")
    param = next(image.parameters())
    video = DiT(replace(image.config, temporal=True, **options)).to(param.device, param.dtype)
    missing, unexpected = video.load_state_dict(image.state_dict(), strict=False)
    if unexpected or any(not k.startswith("temporal.") for k in missing):
        raise RuntimeError(f"image and video DiT differ: {missing[:5]}, {unexpected[:5]}")
    return video.train(image.training)
