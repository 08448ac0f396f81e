"""Checks shared by the importers of diffusers U-Net configs (`diffusers_io`: UNet2DModel,
`diffusers_sd`: UNet2DConditionModel). Each takes `bad(source, field, value, why)`, the
importer's own ValueError naming its class, so every refusal names the file and the field."""

from __future__ import annotations

from collections.abc import Callable, Mapping

Bad = Callable[[str, str, object, str], ValueError]


def check_fields(config: Mapping, source: str, bad: Bad, *, ignored: set, mapped: set,
                 required: Mapping) -> None:
    """Every field is ignored, mapped, or has the value vidiff requires (`required`)."""
    for field, value in config.items():
        if field in ignored or field in mapped:
            continue
        if field in required:
            if value != required[field]:
                raise bad(source, field, value, f"vidiff needs {required[field]!r}")
        elif value is not None:
            raise bad(source, field, value, "not supported")


def attention_levels(down: list[str], up: list[str], down_types: Mapping[str, bool],
                     up_types: Mapping[str, bool], levels: int, source: str,
                     bad: Bad) -> list[bool]:
    """Whether each level has attention, from the block types (one per level, of the known
    types, the up blocks mirroring the down blocks)."""
    if len(down) != levels or len(up) != levels:
        raise bad(source, "down_block_types", down, "one block type per channel entry, in "
                  "down_block_types and up_block_types")
    for name, types, allowed in (("down_block_types", down, down_types),
                                 ("up_block_types", up, up_types)):
        for t in types:
            if t not in allowed:
                raise bad(source, name, t, f"supported: {sorted(allowed)}")
    attn_down = [down_types[d] for d in down]
    if attn_down != [up_types[u] for u in reversed(up)]:  # up blocks run from the bottom
        raise bad(source, "up_block_types", up, "attention must mirror down_block_types")
    return attn_down


def check_widths(channels: list[int], padding, source: str, bad: Bad) -> None:
    """Widths that are multiples of the first (vidiff's channel_mult), padding 0 or 1."""
    if any(c % channels[0] for c in channels):
        raise bad(source, "block_out_channels", channels, "must be multiples of the first")
    if padding not in (0, 1):
        raise bad(source, "downsample_padding", padding, "must be 0 or 1")
