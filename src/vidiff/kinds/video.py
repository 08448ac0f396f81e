"""The open video model kinds: ``wan`` (Wan 2.1), ``ltx`` (LTX-Video), ``cogvideox``.

Each is diffusers' transformer behind vidiff's model(x, t, cond)
(`vidiff.models.video_transformer.VideoTransformer`). ``model.init_from`` a local diffusers
pipeline root (``Wan2.1-T2V-1.3B-Diffusers``, ``LTX-Video``, ``CogVideoX-2b``) brings the
pretrained transformer (its architecture wins over the preset), the empty prompt's embedding
as the null text of guidance, and, through `pipeline_parts`, the VAE, the T5 text encoder and
its tokenizer (`vidiff.text.t5`) and the scheduler's settings (``model.init_schedule``).
Without it the preset builds a network from scratch (the ``*-tiny`` presets: tests; the
others: the published architectures, for memory counts and training from scratch).

Wan and LTX-Video are flow-matching models, CogVideoX a v-prediction DDPM (zero terminal SNR,
SNR shift 3): `processes` says which, and the priors are all of vidiff's (the noise of the
latent frames; docs/VIDEO_MODELS.md says how the causal first latent frame enters).
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path

from torch import nn

from vidiff.kinds.base import ModelKind, config_from_dict, network_type
from vidiff.models.diffusers_files import read_config
from vidiff.models.lora import lora_weights
from vidiff.models.video_sequence_parallel import enable_video_sequence_parallel
from vidiff.models.video_transformer import (
    FAMILIES,
    VideoTransformer,
    VideoTransformerConfig,
    diffusers_transformer_class,
)
from vidiff.text.t5 import is_t5_root, load_t5
from vidiff.utils.config_io import ConfigError
from vidiff.utils.quiet import quiet_loading
from vidiff.utils.registry import Registry

__all__ = ["CogVideoXKind", "LTXKind", "VideoModelKind", "WanKind"]

# the published transformer configs (config.json of each checkpoint's transformer/)
_WAN_13B = dict(patch_size=[1, 2, 2], num_attention_heads=12, attention_head_dim=128,
                in_channels=16, out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960,
                num_layers=30, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                eps=1e-6, rope_max_seq_len=1024)  # Wan-AI/Wan2.1-T2V-1.3B-Diffusers
_WAN_14B = {**_WAN_13B, "num_attention_heads": 40, "ffn_dim": 13824,
            "num_layers": 40}  # Wan-AI/Wan2.1-T2V-14B-Diffusers
_LTX_2B = dict(in_channels=128, out_channels=128, patch_size=1, patch_size_t=1,
               num_attention_heads=32, attention_head_dim=64, cross_attention_dim=2048,
               num_layers=28, activation_fn="gelu-approximate",
               qk_norm="rms_norm_across_heads", norm_elementwise_affine=False, norm_eps=1e-6,
               caption_channels=4096, attention_bias=True,
               attention_out_bias=True)  # Lightricks/LTX-Video (0.9)
_COG_2B = dict(num_attention_heads=30, attention_head_dim=64, in_channels=16, out_channels=16,
               time_embed_dim=512, text_embed_dim=4096, num_layers=30, sample_width=90,
               sample_height=60, sample_frames=49, patch_size=2, max_text_seq_length=226,
               use_rotary_positional_embeddings=False)  # THUDM/CogVideoX-2b
_COG_5B = {**_COG_2B, "num_attention_heads": 48, "num_layers": 42,
           "use_rotary_positional_embeddings": True}  # THUDM/CogVideoX-5b
# the smallest that run the real code paths (pixel or latent channels set by the run)
_TINY = {
    "wan": dict(patch_size=[1, 2, 2], num_attention_heads=2, attention_head_dim=8,
                in_channels=3, out_channels=3, text_dim=16, freq_dim=16, ffn_dim=32,
                num_layers=2, rope_max_seq_len=64),
    "ltx": dict(in_channels=3, out_channels=3, patch_size=1, patch_size_t=1,
                num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
                num_layers=2, caption_channels=16),
    "cogvideox": dict(num_attention_heads=2, attention_head_dim=16, in_channels=3,
                      out_channels=3, time_embed_dim=16, text_embed_dim=16, num_layers=2,
                      sample_width=8, sample_height=8, sample_frames=5, patch_size=2,
                      max_text_seq_length=8, use_rotary_positional_embeddings=True),
}

# data-derived settings (`vidiff.train.build.resolve_backbone_config`), diffusers' keys too
_DATA_KEYS = ("in_channels", "out_channels")


def _presets(family: str, published: dict[str, dict]) -> Registry:
    presets: Registry[dict] = Registry(f"{family} preset")
    presets.register(f"{family}-tiny")(_TINY[family])
    for name, config in published.items():
        presets.register(name)(config)
    return presets


class VideoModelKind(ModelKind):
    """A diffusers video transformer family (see the module docstring); subclasses set the
    family and its presets."""

    family: str  # a `vidiff.models.video_transformer.FAMILIES` key
    network_class = VideoTransformer
    config_class = VideoTransformerConfig
    diffusers_subfolder = "transformer"
    guidance_settings = ()  # diffusers' transformers have no guidance-scale input here
    processes = ("flow",)
    negative_prompts = True
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0")  # diffusers' attention projections
    no_sequence_parallel = ""  # diffusers' context-parallel plan (Wan, LTX-Video)

    @classmethod
    def split_sequence(cls, model: nn.Module, group, degree: int) -> None:
        enable_video_sequence_parallel(model.transformer, group, degree)

    @classmethod
    def pipeline_class(cls) -> str:
        """The diffusers pipeline class of this family's folders (model_index.json)."""
        return FAMILIES[cls.family].pipeline

    @classmethod
    def owns(cls, model: nn.Module) -> bool:
        return network_type(model) is VideoTransformer and model.config.family == cls.family

    @classmethod
    def describe(cls, network: dict) -> str:
        cfg, d = cls.backbone_config(network), cls.backbone_config(network).diffusers
        return (f"{FAMILIES[cls.family].class_name}: {d.get('num_layers')} blocks, "
                f"{cfg.heads} heads x {d.get('attention_head_dim')}, patch "
                f"{d.get('patch_size')}, {cfg.in_channels} latent channels, text width "
                f"{cfg.text_dim}")

    @classmethod
    def describe_settings(cls, model: dict) -> str:
        if model.get("init_from"):  # the root's architecture, not the preset's
            return f"{cls.name}, from {model['init_from']}"
        return super().describe_settings(model)

    @classmethod
    def architecture(cls, network: dict) -> dict:
        """The base's, without the null text's length: the empty prompt's embedding is set
        after the network is built, and its weights bring it (a resumed run's, a checkpoint's)."""
        arch = super().architecture(network)
        arch.pop("null_tokens", None)
        return arch

    @classmethod
    def resolve(cls, preset: str, overrides: dict) -> VideoTransformerConfig:
        overrides = dict(overrides)
        for key in ("num_classes", "cond_channels"):
            if overrides.pop(key, None) is not None:
                raise ValueError(f"a {cls.name} model takes text only ({key} is not one of its "
                                 f"inputs)")
        if overrides.pop("temporal", True) is not True:
            raise ValueError(f"a {cls.name} model is a video model (temporal = true)")
        diffusers = {**cls.presets.get(preset), **overrides.pop("diffusers", {})}
        if "text_dim" in overrides:  # the run's text encoder's width (from scratch)
            diffusers[FAMILIES[cls.family].text_key] = overrides.pop("text_dim")
        for key in _DATA_KEYS:
            if key in overrides:
                diffusers[key] = overrides.pop(key)
        return VideoTransformerConfig(cls.family, diffusers, **overrides)

    @classmethod
    def validate(cls, config) -> None:
        super().validate(config)
        d = config.data
        refused = {"data.lowres_size": d.lowres_size is not None, "data.use_labels = true":
                   bool(d.use_labels), "data.num_images": bool(d.num_images)}
        for key, bad in refused.items():
            if bad:
                raise ConfigError(f"{key}: a {cls.name} model is a text-to-video transformer "
                                  f"(no super-resolution, class labels or joint images)")
        if config.train.trainable == "temporal":
            raise ConfigError(f'train.trainable = "temporal": a {cls.name} model attends over '
                              f"space and time at once, it has no temporal layers apart; "
                              f'train adapters (train.lora.rank) or train.trainable = "all"')

    @classmethod
    def build_for_run(cls, config, backbone, image: nn.Module | None) -> nn.Module:
        if image is None:
            return cls.network_class(backbone)
        checks = [("latent channels", backbone.in_channels, image.config.in_channels)]
        if config.data.use_captions:
            checks.append(("text width", backbone.text_dim, image.config.text_dim))
        for what, ours, theirs in checks:
            if ours != theirs:
                raise ConfigError(f"model.init_from {str(config.model.init_from)!r}: its "
                                  f"transformer takes {what} {theirs}, the data gives {ours}")
        extra = set(config.model.overrides) - {"gradient_checkpointing", "frame_rate"}
        if extra:
            raise ConfigError(f"model.overrides {sorted(extra)}: model.init_from "
                              f"{str(config.model.init_from)!r} fixes the architecture (only "
                              f"gradient_checkpointing and frame_rate may be set)")
        settings = dict(config.model.overrides)
        if config.data.fps is not None and "frame_rate" not in settings:
            settings["frame_rate"] = float(config.data.fps)
        if not settings:
            return image
        net = VideoTransformer(replace(image.config, **settings), image.transformer)
        net.load_state_dict(image.state_dict())  # the null text buffers
        return net

    @classmethod
    def init_null_text(cls, model: nn.Module, text_encoder, config) -> None:
        """The empty prompt's embedding, as the pipelines guide: by the run's text encoder,
        or without captions by the T5 of ``model.init_from`` (loaded for it, then freed)."""
        root = config.model.init_from
        encoder = text_encoder
        if encoder is None and root is not None and is_t5_root(root):
            encoder = load_t5(root)
        if encoder is None:
            return  # from scratch without text: a zero null text
        emb, mask = encoder([""])
        model.set_null_text(emb[0].cpu(), mask[0].cpu())
        if encoder is not text_encoder:
            encoder.free()

    @classmethod
    def write_diffusers_lora(cls, model: nn.Module, lora, folder: Path) -> None:
        """``pytorch_lora_weights.safetensors`` through the family's pipeline class
        (``save_lora_weights``, with the adapter's rank, alpha and targets as metadata), so
        that ``<Pipeline>.load_lora_weights(folder)`` gives this model."""
        pipeline = getattr(diffusers_module(), cls.pipeline_class())
        layers = lora_weights(model, prefix="transformer.")  # diffusers' transformer names
        targets = sorted({k.rsplit(".lora_", 1)[0] for k in layers})
        meta = {"r": lora.rank, "lora_alpha": lora.rank if lora.alpha is None else lora.alpha,
                "target_modules": targets, "lora_dropout": lora.dropout}
        with quiet_loading():
            pipeline.save_lora_weights(folder, transformer_lora_layers=layers,
                                       transformer_lora_adapter_metadata=meta)

    # -- diffusers folders ---------------------------------------------------------------------
    @classmethod
    def import_image(cls, path: Path) -> nn.Module:
        """The pretrained transformer of a pipeline root (or its transformer/ folder)."""
        root = path if (path / "transformer").is_dir() else path.parent
        folder = path / "transformer" if (path / "transformer").is_dir() else path
        _, raw = read_config(folder)
        cls.check_diffusers_config(raw, str(folder / "config.json"))
        with quiet_loading():
            module = diffusers_transformer_class(cls.family).from_pretrained(
                folder, local_files_only=True)
        config = VideoTransformerConfig(cls.family, _public(dict(module.config)),
                                        **_vae_factors(root, cls.family))
        return VideoTransformer(config, module)  # the null text: init_null_text

    @classmethod
    def check_diffusers_config(cls, config: dict, source: str) -> None:
        want = FAMILIES[cls.family].class_name
        if config.get("_class_name") != want:
            raise ValueError(f"{source}: a {config.get('_class_name')} is not a {want}")
        try:
            parsed = config_from_dict(VideoTransformerConfig, {"family": cls.family,
                                                               "diffusers": _public(config)})
            _ = parsed.in_channels, parsed.text_dim, parsed.size_multiple
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from None

    @classmethod
    def is_video(cls, network: dict) -> bool:
        return True


def _public(config: dict) -> dict:
    """A diffusers config without its private ("_"-prefixed) keys, lists for tuples."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()
            if not k.startswith("_")}


def diffusers_module():
    """diffusers (an optional dependency)."""
    import diffusers

    return diffusers


def diffusers_vae_class(name: str):
    """diffusers' VAE class `name`."""
    return getattr(diffusers_module(), name)


def _vae_factors(root: Path, family: str) -> dict:
    """LTX-Video's rope scale needs its VAE's compression factors (from root/vae)."""
    if family != "ltx" or not (root / "vae" / "config.json").is_file():
        return {}
    _, vae = read_config(root / "vae")
    defaults = {k: v.default for k, v in inspect.signature(
        diffusers_vae_class("AutoencoderKLLTXVideo").__init__).parameters.items()}
    get = lambda key: vae.get(key, defaults[key])  # noqa: E731
    patch, patch_t = int(get("patch_size")), int(get("patch_size_t"))
    scalings = get("spatio_temporal_scaling")  # AutoencoderKLLTXVideo.__init__'s ratios
    return {"vae_spatial": patch * 2 ** sum(map(bool, scalings)),
            "vae_temporal": patch_t * 2 ** sum(map(bool, scalings))}


class WanKind(VideoModelKind):
    """Wan 2.1 text-to-video (flow matching, UMT5 text, causal 3D VAE)."""

    name = family = "wan"
    presets = _presets("wan", {"wan-1.3b": _WAN_13B, "wan-14b": _WAN_14B})
    default_preset, tiny_preset, image_kind = "wan-1.3b", "wan-tiny", "wan"
    diffusers_classes = (FAMILIES["wan"].class_name,)
    summary = "Wan 2.1's text-to-video diffusion transformer (diffusers WanTransformer3DModel)"


class LTXKind(VideoModelKind):
    """LTX-Video (flow matching, T5 text, a 32x / 8x compressing VAE)."""

    name = family = "ltx"
    presets = _presets("ltx", {"ltx-2b": _LTX_2B})
    default_preset, tiny_preset, image_kind = "ltx-2b", "ltx-tiny", "ltx"
    diffusers_classes = (FAMILIES["ltx"].class_name,)
    summary = "LTX-Video's diffusion transformer (diffusers LTXVideoTransformer3DModel)"


class CogVideoXKind(VideoModelKind):
    """CogVideoX (v-prediction DDPM with zero terminal SNR, T5 text, causal 3D VAE)."""

    name = family = "cogvideox"
    presets = _presets("cogvideox", {"cogvideox-2b": _COG_2B, "cogvideox-5b": _COG_5B})
    default_preset, tiny_preset, image_kind = "cogvideox-2b", "cogvideox-tiny", "cogvideox"
    diffusers_classes = (FAMILIES["cogvideox"].class_name,)
    processes = ("ddpm",)
    summary = "CogVideoX's expert diffusion transformer (diffusers CogVideoXTransformer3DModel)"
    no_sequence_parallel = ("diffusers' CogVideoXTransformer3DModel has no context-parallel "
                            "plan (its text and video tokens share one attention)")

    @classmethod
    def tiny_settings(cls, process: str) -> tuple[str, ...]:
        return (*super().tiny_settings(process), "diffusion.prediction=v")
