"""`UNetConfig`: every architectural choice of the U-Net, with its default, in one place.

The defaults are the DDPM CIFAR-10 network (Ho et al. 2020, 35.7M parameters) made into a video
network the VDM way (Ho et al. 2022): `UNetConfig(temporal=False)` *is* the DDPM CIFAR-10 U-Net.
Presets (`vidiff.models.presets`) override what they need.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from vidiff.models.attention import relative_position_table_size

_PADDINGS = ("same", "symmetric")
SPATIAL_BLOCKS = ("attention", "transformer")
_REL_POS = ("t5", "clip")


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a DDPM/ADM-family U-Net, and of its VDM factorized space-time version.

    Resolutions are given as downsample factors (1 = input resolution, 2 = half, ...), so that
    the same config serves any input size; DDPM's "attention at 16x16" on 32x32 CIFAR-10 images
    is `attention_ds=(2,)`.
    """

    # -- input / output ------------------------------------------------------------------------
    in_channels: int = 3  # channels of x (3 for RGB)
    out_channels: int = 3  # channels of the prediction (eps, x0 or v), usually = in_channels
    # -- widths and depth ----------------------------------------------------------------------
    model_channels: int = 128  # base width: channels of level 0 (DDPM CIFAR-10: 128)
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)  # width of level i = model_channels * mult[i]
    num_res_blocks: int = 2  # residual blocks per level on the way down (up: one more)
    # -- attention -----------------------------------------------------------------------------
    attention_ds: tuple[int, ...] = (2,)  # downsample factors whose levels get attention
    mid_attention: bool = True  # self-attention between the two middle residual blocks
    num_heads: int = 1  # attention heads (used when head_dim is None; DDPM: 1)
    head_dim: int | None = None  # channels per head; set: heads = channels // head_dim (ADM: 64)
    level_heads: tuple[int, ...] = ()  # heads per level (SD 2's per-block heads); () = above
    # the spatial block at the attention resolutions: "attention" (DDPM/ADM self-attention,
    # text keys and values prepended as in GLIDE) or "transformer" (LDM / Stable Diffusion:
    # GroupNorm, proj_in, [self-attention, cross-attention to the text, GEGLU MLP] x depth,
    # proj_out; see vidiff.models.transformer)
    spatial_block: str = "attention"
    transformer_depth: int = 1  # "transformer": transformer blocks per spatial block (SD: 1)
    attention_fp32: bool = False  # "transformer": attention in float32 (SD 2's upcast_attention)
    # -- residual blocks -----------------------------------------------------------------------
    dropout: float = 0.1  # dropout before the second conv of each residual block (DDPM: 0.1)
    norm_groups: int = 32  # GroupNorm groups, everywhere (DDPM/ADM: 32)
    norm_eps: float = 1e-6  # GroupNorm epsilon (DDPM TF code and its diffusers port: 1e-6)
    use_scale_shift_norm: bool = False  # ADM: norm(h) * (1 + s) + b; False: DDPM h + proj(emb)
    resblock_updown: bool = False  # ADM/BigGAN: resample inside residual blocks
    conv_resample: bool = True  # conv after nearest upsampling / stride-2 conv to downsample
    downsample_padding: str = "same"  # "same": TF SAME (DDPM), pad bottom/right; "symmetric"
    # -- timestep embedding --------------------------------------------------------------------
    time_embed_dim: int | None = None  # width of the embedding MLP; None = 4 * model_channels
    time_flip_sin_to_cos: bool = False  # sinusoid order: False [sin, cos] (DDPM), True [cos, sin]
    time_freq_shift: float = 1.0  # freq_i = 10000^(-i / (half - shift)); DDPM 1, ADM 0
    # -- conditioning --------------------------------------------------------------------------
    num_classes: int | None = None  # class-conditional with this many classes; None = no labels
    text_dim: int | None = None  # text width D; pooled into emb + attended by attention blocks
    # layer-norm the text and add its pooled mean to emb (GLIDE / Imagen). False (SD): the
    # tokens are the cross-attention context as they are, and nothing else
    text_pooling: bool = True
    # tokens of the null text (classifier-free guidance's null condition), a learned
    # parameter: 1 learned token, or a Stable Diffusion import's 77, which start as the
    # embedding of the empty prompt (SD's null condition)
    null_text_tokens: int = 1
    # super-resolution (VDM/Imagen Video cascades): channels of a low-res video, upsampled
    # (nearest) to x's size and concatenated to x before conv_in; 0 = no low-res input
    cond_channels: int = 0
    # the classifier-free guidance scale as an input (`Cond.guidance`, embedded and added to
    # the timestep embedding): a guidance-distilled student (docs/DISTILL.md, "guided")
    guidance_embed: bool = False
    # -- video (VDM) ---------------------------------------------------------------------------
    temporal: bool = True  # False: image U-Net, frames independent; True: factorized video U-Net
    temporal_conv: bool = False  # 1D conv over frames after every residual block (zero-init)
    temporal_conv_kernel: int = 3  # frames seen by the temporal conv (odd)
    rel_pos: str = "t5"  # temporal attention bias: "t5" log-spaced buckets, "clip" distances
    rel_pos_num_buckets: int = 32  # "t5": buckets for both directions together
    rel_pos_max_distance: int = 64  # "t5": distance of the last bucket; "clip": clip distance
    # -- execution (no effect on the math) -----------------------------------------------------
    channels_last: bool = True  # run the network in channels-last memory format
    gradient_checkpointing: bool = False  # recompute each block in backward to save memory

    def __post_init__(self):
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))
        object.__setattr__(self, "attention_ds", tuple(int(d) for d in self.attention_ds))
        object.__setattr__(self, "level_heads", tuple(int(h) for h in self.level_heads))
        self._validate()

    # ------------------------------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        """Number of resolutions (levels) of the U-Net."""
        return len(self.channel_mult)

    @property
    def size_multiple(self) -> int:
        """Frame height and width must be multiples of this (2 ** (levels - 1))."""
        return 2 ** (self.num_levels - 1)

    @property
    def emb_dim(self) -> int:
        """Width of the conditioning embedding (timestep, class and pooled text)."""
        return self.time_embed_dim or 4 * self.model_channels

    def level_channels(self, level: int) -> int:
        """Channels of the feature maps at `level` (0 = input resolution)."""
        return self.model_channels * self.channel_mult[level]

    def level_has_attention(self, level: int) -> bool:
        """Whether the residual blocks of `level` are followed by attention."""
        return 2**level in self.attention_ds

    def heads(self, channels: int, level: int | None = None) -> int:
        """Attention heads for a block of `level` with `channels` channels."""
        if self.level_heads and level is not None:
            return self.level_heads[level]
        return channels // self.head_dim if self.head_dim else self.num_heads

    @property
    def rel_pos_table_size(self) -> int:
        """Rows of each temporal attention's relative position bias table."""
        return relative_position_table_size(self.rel_pos, self.rel_pos_num_buckets,
                                            self.rel_pos_max_distance)

    # ------------------------------------------------------------------------------------------
    def _validate(self):
        def bad(name, why):
            raise ValueError(f"UNetConfig.{name}={getattr(self, name)!r}: {why}")

        for name in ("in_channels", "out_channels", "model_channels", "norm_groups"):
            if getattr(self, name) < 1:
                bad(name, "must be >= 1")
        if not self.channel_mult or min(self.channel_mult) < 1:
            bad("channel_mult", "needs at least one level, all multipliers >= 1")
        if self.num_res_blocks < 1:
            bad("num_res_blocks", "must be >= 1")
        valid_ds = [2**i for i in range(self.num_levels)]
        for d in self.attention_ds:
            if d not in valid_ds:
                bad("attention_ds", f"factors must be among the levels' factors {valid_ds}")
        for level in range(self.num_levels):
            c = self.level_channels(level)
            if c % self.norm_groups:
                bad("norm_groups", f"must divide every level's width ({c} at level {level})")
        self._validate_attention(bad)
        if not 0.0 <= self.dropout < 1.0:
            bad("dropout", "must be in [0, 1)")
        if self.downsample_padding not in _PADDINGS:
            bad("downsample_padding", f"must be one of {_PADDINGS}")
        if self.rel_pos not in _REL_POS:
            bad("rel_pos", f"must be one of {_REL_POS}")
        if self.rel_pos == "t5" and (self.rel_pos_num_buckets < 4 or self.rel_pos_num_buckets % 2):
            bad("rel_pos_num_buckets", "must be even and >= 4")
        if self.rel_pos_max_distance < 1:
            bad("rel_pos_max_distance", "must be >= 1")
        if self.rel_pos == "t5" and self.rel_pos_max_distance <= self.rel_pos_num_buckets // 4:
            bad("rel_pos_max_distance", "must exceed the exact range num_buckets // 4")
        if self.temporal_conv_kernel < 1 or self.temporal_conv_kernel % 2 == 0:
            bad("temporal_conv_kernel", "must be odd and >= 1")
        if self.num_classes is not None and self.num_classes < 1:
            bad("num_classes", "must be >= 1 or None")
        if self.text_dim is not None and self.text_dim < 1:
            bad("text_dim", "must be >= 1 or None")
        if self.cond_channels < 0:
            bad("cond_channels", "must be >= 0 (0: no low-res input)")
        if self.time_embed_dim is not None and self.time_embed_dim < 1:
            bad("time_embed_dim", "must be >= 1 or None")

    def _validate_attention(self, bad):
        if self.level_heads and len(self.level_heads) != self.num_levels:
            bad("level_heads", f"needs one entry per level ({self.num_levels})")
        if self.head_dim is None and not self.level_heads and self.num_heads < 1:
            bad("num_heads", "must be >= 1")
        name = "level_heads" if self.level_heads else (
            "head_dim" if self.head_dim else "num_heads")
        for level in range(self.num_levels):
            c = self.level_channels(level)
            if not (self.level_has_attention(level) or level == self.num_levels - 1):
                continue
            heads = self.heads(c, level)
            if heads < 1 or c % heads or (self.head_dim and c % self.head_dim):
                bad(name, f"must divide the width of attention blocks ({c})")
        if self.spatial_block not in SPATIAL_BLOCKS:
            bad("spatial_block", f"must be one of {SPATIAL_BLOCKS}")
        if self.transformer_depth < 1:
            bad("transformer_depth", "must be >= 1")
        if self.null_text_tokens < 1:
            bad("null_text_tokens", "must be >= 1")

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of all config fields (what `unet_config(..., **overrides)` accepts)."""
        return [f.name for f in fields(cls)]


def unet_config_to_dict(config: UNetConfig) -> dict:
    """The JSON form of a `UNetConfig` (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def unet_config_from_dict(data: dict) -> UNetConfig:
    """A `UNetConfig` from its JSON form (lists for tuples), e.g. a checkpoint's record."""
    names = {f.name for f in fields(UNetConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown UNetConfig fields (written by a newer vidiff?): {unknown}")
    return UNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
