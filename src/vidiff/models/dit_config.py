"""`DiTConfig`: every architectural choice of the diffusion transformer, and its presets.

The defaults are DiT-S/2 (Peebles & Xie 2023, table 1: 12 blocks of width 384, 6 heads,
patch 2) made into a video model the VDM way: a temporal block after every spatial block.
`DiTConfig(temporal=False)` is the image DiT; `vidiff.models.dit.inflate_dit` makes it a video
DiT that starts as the image model on every frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from vidiff.models.attention import relative_position_table_size
from vidiff.utils.registry import Registry

ADALN = ("block", "single")
_REL_POS = ("t5", "clip")


@dataclass(frozen=True)
class DiTConfig:
    """Architecture of a (video) diffusion transformer."""

    # -- input / output ------------------------------------------------------------------------
    in_channels: int = 3  # channels of x (RGB 3, SD latents 4)
    out_channels: int = 3  # channels of the prediction, = in_channels
    patch_size: int = 2  # each frame is cut into patch x patch squares (1, 2, 4, 8)
    # -- width and depth -----------------------------------------------------------------------
    hidden: int = 384  # token width D (DiT-S 384, B 768, L 1024, XL 1152)
    depth: int = 12  # spatial blocks (each followed by a temporal block in a video DiT)
    heads: int = 6  # attention heads (D / heads = 64 in every DiT preset)
    mlp_ratio: float = 4.0  # MLP width / D
    attention_bias: bool = True  # biases on the q, k, v projections (DiT, PixArt: yes)
    norm_eps: float = 1e-6  # LayerNorm epsilon before attention (and everywhere else)
    mlp_norm_eps: float | None = None  # before the MLP; None = norm_eps (diffusers' DiT: 1e-5)
    # -- conditioning --------------------------------------------------------------------------
    # adaLN-Zero modulation: "block" (DiT: each block maps the conditioning to its 6 shifts,
    # scales and gates) or "single" (PixArt-alpha: one shared map, plus a learned table per
    # block)
    adaln: str = "block"
    # adaln "block" only: blocks 1.. get their own timestep and class embedders (a diffusers
    # DiT whose per-block copies differ, e.g. one fine-tuned in diffusers); block 0 and the
    # final layer use the model's. False: one shared embedder (the DiT paper's)
    block_embedders: bool = False
    time_freq_shift: float = 1.0  # timestep sinusoid: freq_i = 10000^(-i / (128 - shift))
    num_classes: int | None = None  # class-conditional: labels + a learned null label row
    text_dim: int | None = None  # text width: projected to D, cross-attended in every block
    null_text_tokens: int = 1  # tokens of the learned null text (guidance's null condition)
    # positional embedding of the patches: fixed 2D sin-cos on a grid of this many patches per
    # side, interpolated for other sizes (diffusers' base_size); None = the input's own grid
    pos_base: int | None = None
    pos_scale: float = 1.0  # positions divided by this (PixArt's interpolation_scale)
    # the classifier-free guidance scale as an input (`Cond.guidance`, added to the timestep
    # embedding): a guidance-distilled student (docs/DISTILL.md, "guided")
    guidance_embed: bool = False
    # -- video (VDM) ---------------------------------------------------------------------------
    temporal: bool = True  # a temporal block (attention over frames) after every block
    rel_pos: str = "t5"  # temporal attention bias: "t5" log-spaced buckets, "clip" distances
    rel_pos_num_buckets: int = 32  # "t5": buckets for both directions together
    rel_pos_max_distance: int = 64  # "t5": distance of the last bucket; "clip": the clip
    # -- execution (no effect on the math) -----------------------------------------------------
    gradient_checkpointing: bool = False  # recompute each block in the backward pass

    def __post_init__(self):
        self._validate()

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def size_multiple(self) -> int:
        """Frame height and width must be multiples of this (the patch)."""
        return self.patch_size

    @property
    def rel_pos_table_size(self) -> int:
        """Rows of each temporal attention's relative position bias table."""
        return relative_position_table_size(self.rel_pos, self.rel_pos_num_buckets,
                                            self.rel_pos_max_distance)

    def _validate(self):
        def bad(name, why):
            raise ValueError(f"DiTConfig.{name}={getattr(self, name)!r}: {why}")

        for name in ("in_channels", "out_channels", "patch_size", "hidden", "depth", "heads",
                     "null_text_tokens"):
            if getattr(self, name) < 1:
                bad(name, "must be >= 1")
        if self.hidden % self.heads or self.head_dim % 2:
            bad("heads", f"must divide hidden={self.hidden} into an even head width")
        if self.hidden % 4:
            bad("hidden", "must be a multiple of 4 (the 2D sin-cos embedding)")
        if self.adaln not in ADALN:
            bad("adaln", f"must be one of {ADALN}")
        if self.block_embedders and self.adaln != "block":
            bad("block_embedders", "per-block embedders need adaln='block' (DiT's adaLN-Zero)")
        if self.rel_pos not in _REL_POS:
            bad("rel_pos", f"must be one of {_REL_POS}")
        if self.num_classes is not None and self.num_classes < 1:
            bad("num_classes", "must be >= 1 or None")
        if self.text_dim is not None and self.text_dim < 1:
            bad("text_dim", "must be >= 1 or None")
        if self.mlp_ratio <= 0:
            bad("mlp_ratio", "must be > 0")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def dit_config_to_dict(config: DiTConfig) -> dict:
    """The JSON form of a `DiTConfig`."""
    return asdict(config)


def dit_config_from_dict(data: dict) -> DiTConfig:
    """A `DiTConfig` from its JSON form; unknown fields are an error naming them."""
    unknown = sorted(set(data) - set(DiTConfig.field_names()))
    if unknown:
        raise ValueError(f"unknown DiTConfig fields (written by a newer vidiff?): {unknown}")
    return DiTConfig(**data)


DIT_PRESETS: Registry[dict] = Registry("DiT preset")
# DiT's table 1 (patch 2), and a tiny one for the CPU and the tests
DIT_PRESETS.register("dit-tiny")({"hidden": 64, "depth": 2, "heads": 2})
DIT_PRESETS.register("dit-mini")({"hidden": 128, "depth": 4, "heads": 2})
DIT_PRESETS.register("dit-s")({"hidden": 384, "depth": 12, "heads": 6})
DIT_PRESETS.register("dit-b")({"hidden": 768, "depth": 12, "heads": 12})
DIT_PRESETS.register("dit-l")({"hidden": 1024, "depth": 24, "heads": 16})
DIT_PRESETS.register("dit-xl")({"hidden": 1152, "depth": 28, "heads": 16})


def dit_config(preset: str = "dit-s", **overrides) -> DiTConfig:
    """The `DiTConfig` of a preset (dit-tiny, dit-mini, dit-s, dit-b, dit-l, dit-xl; patch 2)
    with `overrides` (DiTConfig fields)."""
    base = DIT_PRESETS.get(preset)
    unknown = sorted(set(overrides) - set(DiTConfig.field_names()))
    if unknown:
        raise ValueError(f"unknown DiT config fields {unknown}; fields: "
                         f"{', '.join(DiTConfig.field_names())}")
    return DiTConfig(**{**base, **overrides})
