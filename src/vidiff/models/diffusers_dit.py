"""Import of diffusers' image transformers into vidiff's `DiT`, without diffusers.

- `DiTTransformer2DModel` (the facebook/DiT-XL-2 layout): class-conditional, adaLN-Zero per
  block. diffusers keeps a copy of the timestep and class embedders in every block: equal in
  the released checkpoints (vidiff's DiT then has one), they differ in a DiT fine-tuned in
  diffusers, which is imported exactly with per-block embedders (`DiTConfig.block_embedders`;
  the final layer uses block 0's, as diffusers does).
- `PixArtTransformer2DModel` (PixArt-alpha): text through a caption projection and
  cross-attention, adaLN-single (one shared modulation map plus a table per block).

Learned sigma (DiT-XL-2 predicts 2C channels: the noise and the variance interpolation of
improved DDPM): vidiff's diffusion uses fixed variances, so the variance channels are dropped
at import (the noise channels are unchanged) and `load_diffusers_transformer` says so in the
returned model's `import_notes`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from vidiff.models.diffusers_files import model_folder, read_config, read_weights
from vidiff.models.dit import DiT, inflate_dit
from vidiff.models.dit_config import DiTConfig

__all__ = ["diffusers_transformer_config", "load_diffusers_transformer"]

CLASSES = ("DiTTransformer2DModel", "PixArtTransformer2DModel")
_IGNORED = {"_class_name", "_diffusers_version", "_name_or_path", "_use_default_values",
            "norm_num_groups", "use_linear_projection", "num_vector_embeds", "sample_size",
            "interpolation_scale", "caption_channels", "cross_attention_dim",
            "num_embeds_ada_norm", "in_channels", "out_channels", "num_layers",
            "num_attention_heads", "attention_head_dim", "patch_size", "attention_bias",
            "norm_eps", "use_additional_conditions"}
_REQUIRED = {"dropout": 0.0, "activation_fn": "gelu-approximate", "upcast_attention": False,
             "norm_elementwise_affine": False, "attention_type": "default"}


def _bad(source, field, value, why) -> ValueError:
    return ValueError(f"{source}: unsupported config {field}={value!r} ({why})")


def diffusers_transformer_config(raw: dict, source: str = "config") -> tuple[DiTConfig, int]:
    """(the image `DiTConfig`, the checkpoint's output channels) of a diffusers DiT or PixArt
    config; a ValueError naming the field for anything vidiff cannot express."""
    cls = raw.get("_class_name")
    if cls not in CLASSES:
        raise _bad(source, "_class_name", cls, f"vidiff imports {' and '.join(CLASSES)}")
    pixart = cls == "PixArtTransformer2DModel"
    for field, value in raw.items():
        if field in _REQUIRED and value != _REQUIRED[field] and value is not None:
            raise _bad(source, field, value, f"vidiff needs {_REQUIRED[field]!r}")
        if field not in _REQUIRED and field not in _IGNORED and value is not None:
            if not (field == "norm_type"
                    and value == ("ada_norm_single" if pixart else "ada_norm_zero")):
                raise _bad(source, field, value, "not supported")
    get = raw.get
    heads, head_dim = get("num_attention_heads", 16), get("attention_head_dim", 72)
    hidden, patch = heads * head_dim, get("patch_size", 2)
    sample = get("sample_size", 128 if pixart else 32)
    cin = get("in_channels", 4)
    cout = get("out_channels") or (8 if pixart and "out_channels" not in raw else cin)
    if cout not in (cin, 2 * cin):
        raise _bad(source, "out_channels", cout, f"must be in_channels ({cin}) or twice it "
                   f"(learned sigma)")
    common = dict(in_channels=cin, out_channels=cin, patch_size=patch, hidden=hidden,
                  depth=get("num_layers", 28), heads=heads,
                  attention_bias=bool(get("attention_bias", True)), pos_base=sample // patch,
                  temporal=False)
    if not pixart:
        return DiTConfig(**common, adaln="block", time_freq_shift=1.0, norm_eps=1e-6,
                         mlp_norm_eps=float(get("norm_eps", 1e-5)),
                         num_classes=get("num_embeds_ada_norm", 1000)), cout
    extra = get("use_additional_conditions")
    if extra or (extra is None and sample == 128):
        raise _bad(source, "use_additional_conditions", True, "PixArt's resolution and "
                   "aspect-ratio embeddings (1024-pixel models) are not supported")
    if get("cross_attention_dim", hidden) != hidden:
        raise _bad(source, "cross_attention_dim", get("cross_attention_dim"),
                   f"must equal the width {hidden}")
    if not get("caption_channels"):
        raise _bad(source, "caption_channels", None, "a PixArt model needs its text width")
    scale = get("interpolation_scale") or max(sample // 64, 1)
    eps = float(get("norm_eps", 1e-6))
    return DiTConfig(**common, adaln="single", time_freq_shift=0.0, norm_eps=eps,
                     mlp_norm_eps=eps, text_dim=int(get("caption_channels")),
                     pos_scale=float(scale)), cout


def _convert(sd: dict[str, Tensor], cfg: DiTConfig, cout: int) -> dict[str, Tensor]:
    """diffusers' state dict -> `DiT`'s (the module docstring's mappings)."""
    sd, out = dict(sd), {}

    def take(key: str) -> Tensor:
        if key not in sd:
            raise KeyError(f"missing weight {key}")
        return sd.pop(key)

    def pair(src: str, dst: str) -> None:
        for p in ("weight", "bias"):
            out[f"{dst}.{p}"] = take(f"{src}.{p}")

    pair("pos_embed.proj", "patch")
    for i in range(cfg.depth):
        s, d = f"transformer_blocks.{i}", f"blocks.{i}"
        for p in ("weight", "bias"):
            out[f"{d}.attn.qkv.{p}"] = torch.cat([take(f"{s}.attn1.to_{n}.{p}") for n in "qkv"])
        pair(f"{s}.attn1.to_out.0", f"{d}.attn.proj")
        pair(f"{s}.ff.net.0.proj", f"{d}.mlp.fc1")
        pair(f"{s}.ff.net.2", f"{d}.mlp.fc2")
        if cfg.adaln == "block":
            pair(f"{s}.norm1.linear", f"{d}.ada")
        else:
            out[f"{d}.table"] = take(f"{s}.scale_shift_table")
            pair(f"{s}.attn2.to_q", f"{d}.cross.q")
            for p in ("weight", "bias"):
                out[f"{d}.cross.kv.{p}"] = torch.cat([take(f"{s}.attn2.to_k.{p}"),
                                                      take(f"{s}.attn2.to_v.{p}")])
            pair(f"{s}.attn2.to_out.0", f"{d}.cross.proj")
    if cfg.adaln == "block":
        _embedders(sd, out, cfg)
        pair("proj_out_1", "final.ada")
        final = "proj_out_2"
    else:
        pair("adaln_single.emb.timestep_embedder.linear_1", "time_embed.linear_1")
        pair("adaln_single.emb.timestep_embedder.linear_2", "time_embed.linear_2")
        pair("adaln_single.linear", "adaln")
        pair("caption_projection.linear_1", "text_proj.linear_1")
        pair("caption_projection.linear_2", "text_proj.linear_2")
        out["final.table"] = take("scale_shift_table")
        final = "proj_out"
    w, b = take(f"{final}.weight"), take(f"{final}.bias")  # (p*p*C_out, D), (p*p*C_out,)
    pp = cfg.patch_size**2
    # outputs are ordered (p, q, C_out): keep the first C (the noise), drop learned sigma's
    out["final.linear.weight"] = w.view(pp, cout, -1)[:, :cfg.in_channels].reshape(
        pp * cfg.in_channels, -1)
    out["final.linear.bias"] = b.view(pp, cout)[:, :cfg.in_channels].reshape(-1)
    if sd:
        raise KeyError(f"weights with no vidiff counterpart: {sorted(sd)[:8]}")
    return out


# diffusers' per-block embedder (transformer_blocks.{i}.norm1.emb.*) -> vidiff's names
_EMBEDDER = {"timestep_embedder.linear_1.weight": "time_embed.linear_1.weight",
             "timestep_embedder.linear_1.bias": "time_embed.linear_1.bias",
             "timestep_embedder.linear_2.weight": "time_embed.linear_2.weight",
             "timestep_embedder.linear_2.bias": "time_embed.linear_2.bias",
             "class_embedder.embedding_table.weight": "class_embed.weight"}


def _embedder_copies(sd: dict[str, Tensor], depth: int, src: str) -> list[Tensor]:
    keys = [f"transformer_blocks.{i}.norm1.emb.{src}" for i in range(depth)]
    missing = [k for k in keys if k not in sd]
    if missing:
        raise KeyError(f"missing weight {missing[0]}")
    return [sd[k] for k in keys]


def _embedders_differ(sd: dict[str, Tensor], depth: int) -> bool:
    """Whether a diffusers DiT state dict's per-block embedder copies differ (a DiT
    fine-tuned in diffusers) rather than all equal block 0's (the released checkpoints)."""
    for src in _EMBEDDER:
        copies = _embedder_copies(sd, depth, src)
        if any(not torch.equal(c, copies[0]) for c in copies[1:]):
            return True
    return False


def _embedders(sd: dict, out: dict, cfg: DiTConfig) -> None:
    """DiT's per-block copies of the timestep and class embedders -> block 0's as the
    model's, and with `cfg.block_embedders` blocks 1..'s as `embedders.{i - 1}`; without it
    the copies must be equal (`_embedders_differ` decides)."""
    for src, dst in _EMBEDDER.items():
        copies = _embedder_copies(sd, cfg.depth, src)
        for i in range(cfg.depth):
            sd.pop(f"transformer_blocks.{i}.norm1.emb.{src}")
        if not cfg.block_embedders and any(not torch.equal(c, copies[0]) for c in copies[1:]):
            raise KeyError(f"the blocks' copies of norm1.emb.{src} differ; import with "
                           f"DiTConfig.block_embedders=True")
        for i, copy in enumerate(copies if cfg.block_embedders else copies[:1]):
            name = dst if i == 0 else f"embedders.{i - 1}.{dst}"
            out[name] = _with_null_row(copy, cfg) if dst.startswith("class") else copy


def _with_null_row(table: Tensor, cfg: DiTConfig) -> Tensor:
    """A class table (classes + 1 with diffusers' dropout row, D); without the dropout row a
    zero null row is added (no class offset)."""
    if table.shape[0] == cfg.num_classes:
        return torch.cat([table, table.new_zeros(1, table.shape[1])])
    return table


def load_diffusers_transformer(path: str | Path, inflate: bool = True, *,
                               subfolder: str | None = None, **options) -> DiT:
    """Load a diffusers `DiTTransformer2DModel` or `PixArtTransformer2DModel` folder (or a
    pipeline root with transformer/) as a vidiff `DiT`: float32, CPU, eval mode. With
    `inflate` (default) a video DiT whose temporal blocks start as the identity; `options`
    are `inflate_dit`'s. Its output equals diffusers' (the noise channels of a learned-sigma
    model) per frame: `model(x, t, class_labels=y)` / `model(x, t, text_emb=E)`. What was
    changed at import is listed in `model.import_notes`."""
    folder = model_folder(Path(path), subfolder, "transformer")
    config_file, raw = read_config(folder)
    cfg, cout = diffusers_transformer_config(raw, str(config_file))
    state, weights_file = read_weights(folder)
    try:
        untied = cfg.adaln == "block" and _embedders_differ(state, cfg.depth)
        cfg = replace(cfg, block_embedders=untied)
        converted = _convert(state, cfg, cout)
    except KeyError as err:
        raise ValueError(f"{weights_file}: {err.args[0]}") from None
    model = DiT(cfg)
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in converted.items()},
                                                strict=False)
    missing = [k for k in missing if k != "text_cond.null_token"]  # vidiff's own
    if missing or unexpected:
        raise ValueError(f"{weights_file} does not fit {config_file}: missing {missing[:8]}, "
                         f"unexpected {unexpected[:8]}")
    notes = []
    if untied:
        notes.append("the blocks' timestep and class embedders differ (a DiT fine-tuned in "
                     "diffusers): each block keeps its own (DiTConfig.block_embedders)")
    if cout != cfg.in_channels:
        notes.append(f"learned sigma: the {cout - cfg.in_channels} variance channels were "
                     f"dropped (vidiff samples with fixed variances)")
    model.eval()
    model = inflate_dit(model, **options) if inflate else model
    model.import_notes = notes
    return model
