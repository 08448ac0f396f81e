"""Import of diffusers U-Net directories (config.json + weights) without diffusers.

Two classes: `UNet2DModel`, the format of the DDPM paper's released models
(google/ddpm-cifar10-32, google/ddpm-celebahq-256, ...), and `UNet2DConditionModel`, Stable
Diffusion 1.x / 2.x's latent U-Net (its config mapping and transformer weights:
`vidiff.models.diffusers_sd`). `load_diffusers_unet` maps the config to a `UNetConfig`, the
weights to vidiff's names and layout, and (by default) inflates the result into a video
U-Net, which is where PYoCo fine-tuning starts.

The mapping follows diffusers' `UNet2DModel` semantics: DDPM sinusoid (freq_shift,
flip_sin_to_cos), timestep MLP, pre-norm residual blocks with an additive ("default") time
embedding, single-group-norm attention blocks with a residual connection, nearest + conv
upsampling, stride-2 conv downsampling (downsample_padding=0 is TensorFlow's asymmetric
SAME padding).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from vidiff.models.config import UNetConfig
from vidiff.models.diffusers_fields import attention_levels, check_fields, check_widths
from vidiff.models.diffusers_files import model_folder, read_config, read_weights
from vidiff.models.diffusers_sd import CLASS_NAME as SD_CLASS
from vidiff.models.diffusers_sd import convert_transformer, sd_config_to_unet_config
from vidiff.models.inflate import inflate as _inflate
from vidiff.models.unet import UNet

_DOWN_TYPES = {"DownBlock2D": False, "AttnDownBlock2D": True}
_UP_TYPES = {"UpBlock2D": False, "AttnUpBlock2D": True}
# fields that do not change the network, or only its use
_IGNORED = {
    "sample_size",
    "num_train_timesteps",
    "_class_name",
    "_diffusers_version",
    "_name_or_path",
    "_use_default_values",
}
# field -> value vidiff requires (the value diffusers uses when the field is absent)
_REQUIRED = {
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "mid_block_type": "UNetMidBlock2D",
    "mid_block_scale_factor": 1,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "act_fn": "silu",
    "resnet_time_scale_shift": "default",
    "class_embed_type": None,
}
_MAPPED = {
    "in_channels",
    "out_channels",
    "freq_shift",
    "flip_sin_to_cos",
    "down_block_types",
    "up_block_types",
    "block_out_channels",
    "layers_per_block",
    "downsample_padding",
    "dropout",
    "attention_head_dim",
    "norm_num_groups",
    "attn_norm_num_groups",
    "norm_eps",
    "add_attention",
    "num_class_embeds",
    "time_embedding_dim",
}


def _unsupported(source, field, value, why) -> ValueError:
    return ValueError(f"{source}: unsupported UNet2DModel config {field}={value!r} ({why})")


def diffusers_config_to_unet_config(config: dict, source: str = "config") -> UNetConfig:
    """The `UNetConfig` (temporal=False) equivalent to a diffusers `UNet2DModel` or
    `UNet2DConditionModel` config dict.

    Raises ValueError naming `source` and the field for anything vidiff cannot express.
    """
    cls = config.get("_class_name", "UNet2DModel")
    if cls == SD_CLASS:
        return sd_config_to_unet_config(config, source)
    if cls in ("DiTTransformer2DModel", "PixArtTransformer2DModel"):
        raise _unsupported(source, "_class_name", cls, "a transformer: model.kind = dit reads "
                           "it (vidiff.models.load_diffusers_transformer)")
    if cls != "UNet2DModel":
        raise _unsupported(source, "_class_name", cls, f"vidiff imports UNet2DModel and "
                           f"{SD_CLASS}")
    check_fields(config, source, _unsupported, ignored=_IGNORED, mapped=_MAPPED,
                 required=_REQUIRED)

    get = config.get
    channels = list(get("block_out_channels", (224, 448, 672, 896)))
    down = list(get("down_block_types", ("DownBlock2D",) + ("AttnDownBlock2D",) * 3))
    up = list(get("up_block_types", ("AttnUpBlock2D",) * 3 + ("UpBlock2D",)))
    down = [d.removeprefix("UNetRes") for d in down]
    up = [u.removeprefix("UNetRes") for u in up]
    attn_down = attention_levels(down, up, _DOWN_TYPES, _UP_TYPES, len(channels), source,
                                 _unsupported)
    pad = get("downsample_padding", 1)
    check_widths(channels, pad, source, _unsupported)
    base = channels[0]
    groups = get("norm_num_groups", 32)
    if groups is None:
        raise _unsupported(source, "norm_num_groups", None, "needs an explicit group count")
    attn_groups = get("attn_norm_num_groups")
    if attn_groups is not None and attn_groups != groups:
        raise _unsupported(
            source, "attn_norm_num_groups", attn_groups, "must equal norm_num_groups"
        )
    head_dim = get("attention_head_dim", 8)
    n_classes = get("num_class_embeds")
    try:
        return _unet_config(get, base, channels, attn_down, head_dim, groups, pad, n_classes)
    except ValueError as err:  # e.g. widths that the group count does not divide
        raise ValueError(f"{source}: {err}") from None


def _unet_config(get, base, channels, attn_down, head_dim, groups, pad, n_classes):
    return UNetConfig(
        in_channels=get("in_channels", 3),
        out_channels=get("out_channels", 3),
        model_channels=base,
        channel_mult=tuple(c // base for c in channels),
        num_res_blocks=get("layers_per_block", 2),
        attention_ds=tuple(2**i for i, a in enumerate(attn_down) if a),
        mid_attention=bool(get("add_attention", True)),
        num_heads=1,
        head_dim=head_dim,  # None: one head as wide as the block, as diffusers does
        dropout=float(get("dropout", 0.0)),
        norm_groups=groups,
        norm_eps=float(get("norm_eps", 1e-5)),
        use_scale_shift_norm=False,
        resblock_updown=False,
        conv_resample=True,
        downsample_padding="same" if pad == 0 else "symmetric",
        time_embed_dim=get("time_embedding_dim"),  # None: 4 * base, as in diffusers
        time_flip_sin_to_cos=bool(get("flip_sin_to_cos", True)),
        time_freq_shift=float(get("freq_shift", 0)),
        num_classes=n_classes,
        temporal=False,
    )


def _resnet_map(src: str, dst: str) -> dict[str, str]:
    names = {
        "norm1": "norm1",
        "conv1": "conv1",
        "time_emb_proj": "emb_proj",
        "norm2": "norm2",
        "conv2": "conv2",
        "conv_shortcut": "skip",
    }
    return {
        f"{src}.{a}.{p}": f"{dst}.{b}.{p}" for a, b in names.items() for p in ("weight", "bias")
    }


def _key_plan(cfg: UNetConfig) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(direct renames diffusers -> vidiff, attention blocks (diffusers prefix, vidiff prefix))."""
    rename = {}
    attns = []
    for p in ("weight", "bias"):
        rename[f"conv_in.{p}"] = f"conv_in.{p}"
        rename[f"time_embedding.linear_1.{p}"] = f"time_embed.linear_1.{p}"
        rename[f"time_embedding.linear_2.{p}"] = f"time_embed.linear_2.{p}"
        rename[f"conv_norm_out.{p}"] = f"norm_out.{p}"
        rename[f"conv_out.{p}"] = f"conv_out.{p}"
    last, nrb = cfg.num_levels - 1, cfg.num_res_blocks
    s = 0
    for level in range(cfg.num_levels):
        for j in range(nrb):
            rename.update(_resnet_map(f"down_blocks.{level}.resnets.{j}", f"down.{s}.res"))
            if cfg.level_has_attention(level):
                attns.append((f"down_blocks.{level}.attentions.{j}", f"down.{s}.attn"))
            s += 1
        if level != last:
            for p in ("weight", "bias"):
                rename[f"down_blocks.{level}.downsamplers.0.conv.{p}"] = (
                    f"down.{s}.resample.conv.{p}"
                )
            s += 1
    rename.update(_resnet_map("mid_block.resnets.0", "mid.0.res"))
    rename.update(_resnet_map("mid_block.resnets.1", "mid.1.res"))
    if cfg.mid_attention:
        attns.append(("mid_block.attentions.0", "mid.0.attn"))
    s = 0
    for i, level in enumerate(reversed(range(cfg.num_levels))):
        for j in range(nrb + 1):
            rename.update(_resnet_map(f"up_blocks.{i}.resnets.{j}", f"up.{s}.res"))
            if cfg.level_has_attention(level):
                attns.append((f"up_blocks.{i}.attentions.{j}", f"up.{s}.attn"))
            if level > 0 and j == nrb:
                for p in ("weight", "bias"):
                    rename[f"up_blocks.{i}.upsamplers.0.conv.{p}"] = f"up.{s}.resample.conv.{p}"
            s += 1
    return rename, attns


def convert_diffusers_state_dict(state_dict: dict[str, Tensor], cfg: UNetConfig) -> dict:
    """Rename and re-layout a `UNet2DModel` state dict into the image `UNet(cfg)`'s.

    Handles both attention key styles (to_q/to_k/to_v/to_out.0 and the legacy
    query/key/value/proj_attn); q, k and v are fused into one qkv projection. A class
    embedding gets vidiff's extra null-label row, initialized to zero (no class offset).
    Raises KeyError listing diffusers keys that have no place in vidiff's model.
    """
    sd = dict(state_dict)
    out: dict[str, Tensor] = {}
    rename, attns = _key_plan(cfg)
    for src, dst in rename.items():
        if src in sd:
            out[dst] = sd.pop(src)

    def take(prefix: str, new: str, old: str) -> Tensor:
        key = f"{prefix}.{new}" if f"{prefix}.{new}" in sd else f"{prefix}.{old}"
        if key not in sd:
            raise KeyError(f"missing attention weight {prefix}.{new}")
        return sd.pop(key)

    for src, dst in attns:
        if cfg.spatial_block == "transformer":
            out.update(convert_transformer(sd, src, dst, cfg.transformer_depth))
            continue
        for p in ("weight", "bias"):
            out[f"{dst}.norm.{p}"] = take(src, f"group_norm.{p}", f"group_norm.{p}")
            q, k, v = (
                take(src, f"{new}.{p}", f"{old}.{p}")
                for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"))
            )
            out[f"{dst}.qkv.{p}"] = torch.cat([q, k, v], dim=0)  # (3C, C) / (3C,)
            out[f"{dst}.proj.{p}"] = take(src, f"to_out.0.{p}", f"proj_attn.{p}")
    if "class_embedding.weight" in sd:
        w = sd.pop("class_embedding.weight")  # (classes, emb_dim)
        out["class_embed.weight"] = torch.cat([w, w.new_zeros(1, w.shape[1])])
    if sd:
        raise KeyError(f"diffusers weights with no vidiff counterpart: {sorted(sd)[:8]}")
    return out


def load_diffusers_unet(
    path: str | Path,
    inflate: bool = True,
    *,
    subfolder: str | None = None,
    variant: str | None = None,
    null_text: Tensor | None = None,
    **options,
) -> UNet:
    """Load a diffusers `UNet2DModel` or `UNet2DConditionModel` directory as a vidiff `UNet`,
    without diffusers.

    Args:
        path: directory holding config.json and diffusion_pytorch_model.safetensors (or .bin,
            read with `torch.load(weights_only=True)`, or a sharded index); a pipeline
            directory with a unet/ subfolder works too.
        inflate: True (default): a video U-Net whose temporal blocks (after every spatial
            attention or transformer block) start as the identity; False: the image U-Net.
        subfolder: look in path/subfolder.
        variant: weights variant, e.g. "fp16" for diffusion_pytorch_model.fp16.safetensors.
        null_text: (L, D) the text model's embedding of the empty prompt: the null condition
            of classifier-free guidance (SD's convention), a parameter that training may
            move. None: one learned null token, randomly initialised.
        options: execution or temporal-block config fields (dropout, temporal_conv, ...).

    The model comes back in float32 on the CPU, in eval mode; its output equals diffusers'
    `model(x, t).sample`, or for a `UNet2DConditionModel` `model(x, t,
    encoder_hidden_states=E).sample` against vidiff's `model(x, t, text_emb=E)` (per frame,
    for the video model).
    """
    directory = model_folder(Path(path), subfolder, "unet")
    config_file, raw = read_config(directory)
    cfg = diffusers_config_to_unet_config(raw, source=str(config_file))
    image_options = {
        k: options.pop(k)
        for k in ("dropout", "channels_last", "gradient_checkpointing")
        if k in options
    }
    if not inflate and options:
        raise ValueError(f"options {sorted(options)} apply only to inflate=True")
    if null_text is not None:
        if cfg.text_dim is None or null_text.ndim != 2 or null_text.shape[1] != cfg.text_dim:
            raise ValueError(f"null_text must be (L, text_dim={cfg.text_dim}), got "
                             f"{tuple(null_text.shape)}")
        image_options["null_text_tokens"] = int(null_text.shape[0])
    cfg = replace(cfg, **image_options)
    model = _with_weights(UNet(cfg), directory, variant, config_file)
    if null_text is not None:
        model.text_cond.null_token.data.copy_(null_text)
    model.eval()
    return _inflate(model, **options) if inflate else model


def _with_weights(model: UNet, directory: Path, variant: str | None, config_file: Path):
    """`model` holding the diffusers weights of `directory` (its own null text aside)."""
    state_dict, weights_file = read_weights(directory, variant)
    try:
        converted = convert_diffusers_state_dict(state_dict, model.config)
    except KeyError as err:
        raise ValueError(f"{weights_file}: {err.args[0]}") from None
    try:
        missing, unexpected = model.load_state_dict(
            {k: v.float() for k, v in converted.items()}, strict=False
        )
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{weights_file} does not fit {config_file}: {err}") from None
    missing = [k for k in missing if k != "text_cond.null_token"]  # vidiff's own
    if missing or unexpected:
        raise ValueError(
            f"{weights_file} does not fit {config_file}: missing {missing[:8]}, "
            f"unexpected {unexpected[:8]}"
        )
    return model


def load_diffusers_unet2d(path: str | Path, temporal: bool = True, **keywords) -> UNet:
    """`load_diffusers_unet` under its first name (`temporal` is its `inflate`)."""
    return load_diffusers_unet(path, inflate=temporal, **keywords)
