"""Import of diffusers `UNet2DConditionModel`s: the U-Nets of Stable Diffusion 1.x and 2.x.

The network is the DDPM/ADM U-Net of `vidiff.models.unet` with LDM's spatial transformer at
the attention resolutions (`UNetConfig(spatial_block="transformer")`, see
`vidiff.models.transformer`) and SD's conditioning: no pooled text, the text encoder's
hidden states as the cross-attention context (`text_pooling=False`). What differs between the
SD generations is expressed by config fields: SD 1's conv `proj_in` / `proj_out` (1x1 convs,
the same map as SD 2's linear ones, stored as linear weights here), SD 1's single head count
against SD 2's heads per block (`level_heads`; diffusers calls both `attention_head_dim`),
SD 2's `upcast_attention` (`attention_fp32`). `vidiff.models.diffusers_io` reads the folder
and maps the resnets, resamplers and embeddings, which are those of `UNet2DModel`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vidiff.models.config import UNetConfig
from vidiff.models.diffusers_fields import attention_levels, check_fields, check_widths

CLASS_NAME = "UNet2DConditionModel"
_SD1 = {
    "_class_name": CLASS_NAME, "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "in_channels": 4,
    "out_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 64,
}
# the unet/config.json of the released SD models (the fields that matter), to build their
# architecture without their weights: memory estimates (benchmarks/sd_memory.py), tests
RELEASED_CONFIGS = {
    "sd-1.5": _SD1,
    "sd-2.1": {**_SD1, "attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024,
               "use_linear_projection": True, "upcast_attention": True, "sample_size": 96},
}
_DOWN_TYPES = {"DownBlock2D": False, "CrossAttnDownBlock2D": True}
_UP_TYPES = {"UpBlock2D": False, "CrossAttnUpBlock2D": True}
_IGNORED = {"sample_size", "_class_name", "_diffusers_version", "_name_or_path",
            "_use_default_values", "addition_embed_type_num_heads"}
# field -> value vidiff requires (diffusers' default): what SD 1.x / 2.x use
_REQUIRED = {
    "center_input_sample": False,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "dual_cross_attention": False,
    "resnet_time_scale_shift": "default",
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "time_embedding_type": "positional",
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "attention_type": "default",
    "class_embeddings_concat": False,
}
_MAPPED = {"in_channels", "out_channels", "flip_sin_to_cos", "freq_shift", "down_block_types",
           "up_block_types", "only_cross_attention", "block_out_channels", "layers_per_block",
           "downsample_padding", "dropout", "norm_num_groups", "norm_eps",
           "cross_attention_dim", "transformer_layers_per_block", "attention_head_dim",
           "num_attention_heads", "use_linear_projection", "num_class_embeds",
           "upcast_attention", "time_embedding_dim"}


def _unsupported(source, field, value, why) -> ValueError:
    return ValueError(f"{source}: unsupported {CLASS_NAME} config {field}={value!r} ({why})")


def _one_value(source, field, value, levels: int):
    """A field given once for all levels or as a list per level: the list per level."""
    if isinstance(value, (list, tuple)):
        if len(value) != levels:
            raise _unsupported(source, field, value, f"needs one entry per level ({levels})")
        return list(value)
    return [value] * levels


def sd_config_to_unet_config(config: dict, source: str = "config") -> UNetConfig:
    """The image `UNetConfig` equivalent to a diffusers `UNet2DConditionModel` config dict;
    a ValueError naming `source` and the field for anything vidiff cannot express (SDXL's
    added embeddings, dual cross-attention, ...)."""
    for field in ("addition_embed_type", "encoder_hid_dim"):  # named before any width
        if config.get(field) is not None:
            raise _unsupported(source, field, config[field], "SDXL's added embeddings: vidiff "
                               "imports the U-Nets of SD 1.x and 2.x")
    check_fields(config, source, _unsupported, ignored=_IGNORED, mapped=_MAPPED,
                 required=_REQUIRED)
    get = config.get
    channels = list(get("block_out_channels", (320, 640, 1280, 1280)))
    levels = len(channels)
    attention = attention_levels(
        list(get("down_block_types", ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",))),
        list(get("up_block_types", ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)),
        _DOWN_TYPES, _UP_TYPES, levels, source, _unsupported)
    if any(_one_value(source, "only_cross_attention", get("only_cross_attention", False),
                      levels)):
        raise _unsupported(source, "only_cross_attention", get("only_cross_attention"),
                           "the transformer blocks need their self-attention")
    heads = _one_value(source, "attention_head_dim",
                       get("num_attention_heads") or get("attention_head_dim", 8), levels)
    depth = set(_one_value(source, "transformer_layers_per_block",
                           get("transformer_layers_per_block", 1), levels))
    nrb = set(_one_value(source, "layers_per_block", get("layers_per_block", 2), levels))
    cross = get("cross_attention_dim", 1280)
    for field, values in (("transformer_layers_per_block", depth), ("layers_per_block", nrb),
                          ("cross_attention_dim", {cross} if isinstance(cross, int) else cross)):
        if len(set(values)) != 1 or not all(isinstance(v, int) for v in values):
            raise _unsupported(source, field, get(field), "one int for every level")
    base, pad = channels[0], get("downsample_padding", 1)
    check_widths(channels, pad, source, _unsupported)
    try:
        return UNetConfig(
            in_channels=get("in_channels", 4), out_channels=get("out_channels", 4),
            model_channels=base, channel_mult=tuple(c // base for c in channels),
            num_res_blocks=nrb.pop(),
            attention_ds=tuple(2**i for i, a in enumerate(attention) if a),
            mid_attention=True, level_heads=tuple(heads),
            spatial_block="transformer", transformer_depth=depth.pop(),
            attention_fp32=bool(get("upcast_attention", False)),
            dropout=float(get("dropout", 0.0)), norm_groups=get("norm_num_groups", 32),
            norm_eps=float(get("norm_eps", 1e-5)), use_scale_shift_norm=False,
            resblock_updown=False, conv_resample=True,
            downsample_padding="same" if pad == 0 else "symmetric",
            time_embed_dim=get("time_embedding_dim"),
            time_flip_sin_to_cos=bool(get("flip_sin_to_cos", True)),
            time_freq_shift=float(get("freq_shift", 0)),
            num_classes=get("num_class_embeds"), text_dim=int(cross), text_pooling=False,
            temporal=False)
    except ValueError as err:  # e.g. widths that the group count does not divide
        raise ValueError(f"{source}: {err}") from None


def convert_transformer(sd: dict[str, Tensor], src: str, dst: str, depth: int) -> dict:
    """A diffusers `Transformer2DModel`'s weights (popped from `sd`, prefix `src`) under
    `SpatialTransformer`'s names (prefix `dst`): 1x1 conv projections become linear ones,
    q / k / v are fused (self-attention) and k / v (cross-attention)."""
    out: dict[str, Tensor] = {}

    def take(key: str) -> Tensor:
        if f"{src}.{key}" not in sd:
            raise KeyError(f"missing transformer weight {src}.{key}")
        return sd.pop(f"{src}.{key}")

    for p in ("weight", "bias"):
        out[f"{dst}.norm.{p}"] = take(f"norm.{p}")
    for name in ("proj_in", "proj_out"):
        w = take(f"{name}.weight")
        out[f"{dst}.{name}.weight"] = w.reshape(w.shape[0], w.shape[1])  # (C, C[, 1, 1])
        out[f"{dst}.{name}.bias"] = take(f"{name}.bias")
    for i in range(depth):
        s, d = f"transformer_blocks.{i}", f"{dst}.blocks.{i}"
        for norm in ("norm1", "norm2", "norm3"):
            for p in ("weight", "bias"):
                out[f"{d}.{norm}.{p}"] = take(f"{s}.{norm}.{p}")
        q, k, v = (take(f"{s}.attn1.to_{n}.weight") for n in "qkv")
        out[f"{d}.attn1.qkv.weight"] = torch.cat([q, k, v])  # (3C, C)
        out[f"{d}.attn2.q.weight"] = take(f"{s}.attn2.to_q.weight")
        out[f"{d}.attn2.kv.weight"] = torch.cat([take(f"{s}.attn2.to_k.weight"),
                                                 take(f"{s}.attn2.to_v.weight")])  # (2C, D)
        for attn in ("attn1", "attn2"):
            for p in ("weight", "bias"):
                out[f"{d}.{attn}.proj.{p}"] = take(f"{s}.{attn}.to_out.0.{p}")
        for a, b in (("net.0.proj", "proj_in"), ("net.2", "proj_out")):
            for p in ("weight", "bias"):
                out[f"{d}.ff.{b}.{p}"] = take(f"{s}.ff.{a}.{p}")
    return out


