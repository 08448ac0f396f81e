"""Open video transformers (Wan 2.1, LTX-Video, CogVideoX) behind vidiff's model(x, t, cond).

>>> net = VideoTransformer(VideoTransformerConfig("wan", diffusers=wan_config))
>>> v = net(x, t, Cond(text_emb=emb, text_mask=mask))       # x (B, C, f, h, w) latents

The networks are diffusers' own (`WanTransformer3DModel`, `LTXVideoTransformer3DModel`,
`CogVideoXTransformer3DModel`, held as ``net.transformer``: the reference, and the module
names diffusers' LoRA format uses); what each family's pipeline does around its transformer
is done here, once per family (`FAMILIES`):

- **layout**: vidiff's latents are (B, C, f, h, w). Wan takes them so; LTX-Video takes
  patchified tokens (B, f h w / p^2, C p^2) with the post-patch sizes and a rope scale of
  (vae_temporal / frame_rate, vae_spatial, vae_spatial) (`LTXPipeline._pack_latents`, its
  ``rope_interpolation_scale``); CogVideoX takes (B, f, C, h, w) and, when its config uses
  rotary embeddings, their 3D table (`CogVideoXPipeline._prepare_rotary_positional_embeddings`).
- **time**: the process's network time as given (flow: 1000 t, float, as the flow-matching
  pipelines' ``timestep = sigma * 1000``; DDPM: the integer step, as CogVideoX's).
- **text**: (text_emb, text_mask) from the family's T5 encoder (`vidiff.text.t5`); only
  LTX-Video's transformer takes the mask (``encoder_attention_mask``).
- **the null condition** of classifier-free guidance (``cond_mask`` False) is a fixed text,
  the family's empty or negative prompt, as the pipelines guide: the buffers ``null_emb`` /
  ``null_mask`` (the embedding of "" when imported), or a negative prompt passed as
  ``Cond.null_emb`` / ``null_mask``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from vidiff.cond import Cond

__all__ = ["FAMILIES", "TransformerFamily", "VideoTransformer", "VideoTransformerConfig",
           "diffusers_transformer_class"]


@dataclass
class VideoTransformerConfig:
    """A diffusers video transformer and what its pipeline adds (the module docstring)."""

    family: str = "wan"  # wan | ltx | cogvideox (FAMILIES)
    diffusers: dict = field(default_factory=dict)  # the transformer's config.json ("_" keys out)
    frame_rate: float = 25.0  # ltx: the clips' frame rate (its rope scale; LTXPipeline's 25)
    vae_temporal: int = 8  # ltx: frames per latent frame (its rope scale)
    vae_spatial: int = 32  # ltx: pixels per latent pixel (rope scale); cogvideox: none
    null_tokens: int = 0  # L of the null text buffers (0: a zero null text of one token)
    gradient_checkpointing: bool = False  # diffusers' per-block activation checkpointing

    @property
    def spec(self) -> TransformerFamily:
        """The family's `TransformerFamily`."""
        if self.family not in FAMILIES:
            raise ValueError(f"unknown video transformer family {self.family!r}; valid: "
                             f"{', '.join(FAMILIES)}")
        return FAMILIES[self.family]

    @property
    def in_channels(self) -> int:
        return int(self.diffusers.get("in_channels", self.spec.defaults["in_channels"]))

    @property
    def out_channels(self) -> int:
        out = self.diffusers.get("out_channels", self.spec.defaults["out_channels"])
        return self.in_channels if out is None else int(out)

    @property
    def text_dim(self) -> int:
        """The width of the T5 embeddings the transformer projects."""
        return int(self.diffusers.get(self.spec.text_key, self.spec.defaults[self.spec.text_key]))

    @property
    def heads(self) -> int:
        return int(self.diffusers.get("num_attention_heads",
                                      self.spec.defaults["num_attention_heads"]))

    @property
    def size_multiple(self) -> int:
        """The latent frames' height and width must be multiples of the spatial patch."""
        patch = self.diffusers.get("patch_size", self.spec.defaults["patch_size"])
        return int(patch[-1] if isinstance(patch, list | tuple) else patch)

    num_classes = None  # these models take text, no class labels
    temporal = True  # every one is a video model
    cond_channels = None  # no super-resolution input


@dataclass(frozen=True)
class TransformerFamily:
    """One diffusers transformer class and its pipeline's call (see the module docstring)."""

    class_name: str  # the diffusers class
    pipeline: str  # the diffusers pipeline class of its folders
    text_key: str  # the config key of the text width
    defaults: dict  # the class's defaults of the keys read above
    call: Callable  # (transformer, config, x, t, text, mask) -> the prediction, x's layout


def _wan(net, cfg, x, t, text, mask):
    # WanPipeline.__call__: transformer(hidden_states=latents, timestep, encoder_hidden_states)
    return net(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]


def _ltx(net, cfg, x, t, text, mask):
    p, pt = net.config.patch_size, net.config.patch_size_t
    b, c, f, h, w = x.shape
    if f % pt or h % p or w % p:
        raise ValueError(f"latents {tuple(x.shape)} do not fit LTX-Video's patches ({pt}, {p}, "
                         f"{p})")
    # LTXPipeline._pack_latents: (B, C, F, H, W) -> (B, F/pt H/p W/p, C pt p p)
    tokens = x.reshape(b, c, f // pt, pt, h // p, p, w // p, p)
    tokens = tokens.permute(0, 2, 4, 6, 1, 3, 5, 7).flatten(4, 7).flatten(1, 3)
    scale = (cfg.vae_temporal / cfg.frame_rate, cfg.vae_spatial, cfg.vae_spatial)
    out = net(hidden_states=tokens, encoder_hidden_states=text, timestep=t,
              encoder_attention_mask=mask.to(text.dtype), num_frames=f // pt, height=h // p,
              width=w // p, rope_interpolation_scale=scale, return_dict=False)[0]
    # LTXPipeline._unpack_latents: (B, S, C pt p p) -> (B, C, F, H, W)
    out = out.reshape(b, f // pt, h // p, w // p, -1, pt, p, p)
    return out.permute(0, 4, 1, 5, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(2, 3)


def _crop_region(grid: tuple[int, int], width: int, height: int):
    """diffusers' get_resize_crop_region_for_grid (pipeline_cogvideox.py): the centred crop
    of the base grid (height x width) that the latent grid covers."""
    th, tw = grid
    r = th / tw
    rh, rw = (height, int(round(height / r))) if r > height / width else (
        int(round(width * r)), width)
    top, left = int(round((height - rh) / 2.0)), int(round((width - rw) / 2.0))
    return (top, left), (top + rh, left + rw)


def _cogvideox(net, cfg, x, t, text, mask):
    from diffusers.models.embeddings import get_3d_rotary_pos_embed  # diffusers: optional

    c = net.config
    rotary = None
    if c.use_rotary_positional_embeddings:
        if c.patch_size_t is not None:
            raise ValueError("CogVideoX 1.5 (patch_size_t) is not supported")
        p = c.patch_size
        grid = (x.shape[-2] // p, x.shape[-1] // p)
        crops = _crop_region(grid, c.sample_width // p, c.sample_height // p)
        rotary = get_3d_rotary_pos_embed(embed_dim=c.attention_head_dim, crops_coords=crops,
                                         grid_size=grid, temporal_size=x.shape[2],
                                         device=x.device)
    frames = x.transpose(1, 2)  # (B, C, F, H, W) -> (B, F, C, H, W), CogVideoX's layout
    out = net(hidden_states=frames, encoder_hidden_states=text, timestep=t,
              image_rotary_emb=rotary, return_dict=False)[0]
    return out.transpose(1, 2)


FAMILIES: dict[str, TransformerFamily] = {
    "wan": TransformerFamily(
        "WanTransformer3DModel", "WanPipeline", "text_dim", call=_wan,
        defaults={"in_channels": 16, "out_channels": 16, "text_dim": 4096,
                  "patch_size": (1, 2, 2), "num_attention_heads": 40}),
    "ltx": TransformerFamily(
        "LTXVideoTransformer3DModel", "LTXPipeline", "caption_channels", call=_ltx,
        defaults={"in_channels": 128, "out_channels": 128, "caption_channels": 4096,
                  "patch_size": 1, "num_attention_heads": 32}),
    "cogvideox": TransformerFamily(
        "CogVideoXTransformer3DModel", "CogVideoXPipeline", "text_embed_dim", call=_cogvideox,
        defaults={"in_channels": 16, "out_channels": 16, "text_embed_dim": 4096,
                  "patch_size": 2, "num_attention_heads": 30}),
}


def diffusers_transformer_class(family: str) -> type[nn.Module]:
    """The diffusers class of `family` (diffusers is an optional dependency)."""
    try:
        import diffusers
    except ImportError:
        raise ImportError("video transformers need diffusers: pip install 'vidiff[video]' "
                          "(after torch, under the torch constraint)") from None
    return getattr(diffusers, FAMILIES[family].class_name)


class VideoTransformer(nn.Module):
    """A diffusers video transformer as a vidiff network (see the module docstring).
    `transformer`: an already built diffusers module of the config (else one is made)."""

    def __init__(self, config: VideoTransformerConfig, transformer: nn.Module | None = None):
        super().__init__()
        family = config.spec
        self.config = config
        if transformer is None:
            transformer = diffusers_transformer_class(config.family)(**config.diffusers)
        if type(transformer).__name__ != family.class_name:
            raise ValueError(f"a {config.family} network holds a {family.class_name}, got "
                             f"{type(transformer).__name__}")
        self.transformer = transformer
        if config.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        tokens = max(int(config.null_tokens), 1)
        self.register_buffer("null_emb", torch.zeros(tokens, config.text_dim))  # (L0, D)
        self.register_buffer("null_mask", torch.ones(tokens, dtype=torch.bool))  # (L0,)

    def set_null_text(self, emb: Tensor, mask: Tensor) -> None:
        """The null condition's text: `emb` (L0, D) and `mask` (L0,) (the empty prompt's)."""
        if emb.ndim != 2 or emb.shape[1] != self.config.text_dim or mask.shape != emb.shape[:1]:
            raise ValueError(f"the null text must be (L0, {self.config.text_dim}) with a mask "
                             f"(L0,), got {tuple(emb.shape)} and {tuple(mask.shape)}")
        self.config.null_tokens = int(emb.shape[0])
        with torch.no_grad():  # in place: the buffers stay the same tensors (an EMA holds them)
            self.null_emb.resize_(emb.shape).copy_(emb.detach())
            self.null_mask.resize_(mask.shape).copy_(mask.detach().bool())

    def fit_null_text(self, tensors: Mapping[str, Tensor], prefix: str = "") -> None:
        """Take the null text's length from weights about to load (`tensors`, this module's
        names after `prefix`): a resumed run builds its network before any null text is set."""
        emb, mask = tensors.get(prefix + "null_emb"), tensors.get(prefix + "null_mask")
        if emb is not None and mask is not None and emb.shape != self.null_emb.shape:
            self.set_null_text(emb, mask)

    def forward(self, x: Tensor, t: Tensor, cond: Cond | None = None, **keywords) -> Tensor:
        """The prediction (velocity or v) for latents x (B, C, f, h, w) at the process's
        network time t (B,), with the text of `cond` (or keywords of the same names)."""
        cond = Cond.of(cond).merged(**keywords)
        if cond.class_labels is not None or cond.lowres is not None or cond.num_images:
            raise ValueError(f"a {self.config.family} transformer takes text only (no class "
                             f"labels, lowres or joint images)")
        if x.ndim != 5 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"x must be latents (B, {self.config.in_channels}, f, h, w), got "
                             f"{tuple(x.shape)}")
        text, mask = self._text(cond, x.shape[0])
        dtype = next(self.transformer.parameters()).dtype
        t = t.to(x.device).expand(x.shape[0])
        out = self.config.spec.call(self.transformer, self.config, x.to(dtype), t,
                                    text.to(dtype), mask)
        return out.to(x.dtype)

    def _text(self, cond: Cond, batch: int) -> tuple[Tensor, Tensor]:
        """(text (B, L, D), mask (B, L)): the captions' tokens, the null text where cond_mask
        is False (a negative prompt's when given), everywhere without captions."""
        null, null_mask = cond.null_emb, cond.null_mask
        if null is None:
            null = self.null_emb.expand(batch, *self.null_emb.shape)
            null_mask = self.null_mask.expand(batch, -1)
        if cond.text_emb is None:
            return null, null_mask
        text, mask = cond.text_emb, cond.text_mask
        if mask is None:
            mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
        if cond.cond_mask is None:
            return text, mask
        if null.shape[1] != text.shape[1] and cond.null_emb is None and not \
                self.config.null_tokens:  # no null text set: zeros as long as the captions
            null, null_mask = text.new_zeros(text.shape), torch.ones_like(mask)
        if null.shape[1] != text.shape[1]:
            raise ValueError(f"the null text has {null.shape[1]} tokens, the captions "
                             f"{text.shape[1]}: encode both with the model's text encoder")
        keep = cond.cond_mask.view(-1, 1)  # (B, 1)
        text = torch.where(keep[..., None], text, null.to(text))  # (B, L, D)
        return text, torch.where(keep, mask, null_mask.to(mask.device))
