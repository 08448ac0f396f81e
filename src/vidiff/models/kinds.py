"""Model kinds: how a `vidiff.ModelSpec`'s network config becomes a network.

``MODEL_KINDS`` maps a spec's ``kind`` to a `ModelKind`: ``"unet"`` (the factorized
space-time U-Net, `UNet`), ``"videofusion"`` (VideoFusion's base + residual generators,
`VideoFusion`) and ``"dit"`` (the factorized space-time diffusion transformer, `DiT`). A new
model family registers one more kind; the spec, the pipeline and the commands need no change.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import nn

from vidiff.registry import Registry

from .config import UNetConfig, unet_config_from_dict, unet_config_to_dict
from .dit import DiT
from .dit_config import DiTConfig, dit_config_from_dict, dit_config_to_dict
from .unet import UNet
from .videofusion import VideoFusion

__all__ = ["MODEL_KINDS", "DiTKind", "ModelKind", "UNetKind", "VideoFusionKind", "kind_of"]


class ModelKind(ABC):
    """A model family: its network config (a JSON-safe dict) to and from a network. The
    registered kinds implement every method; the registry holds the classes."""

    name = "base"

    @staticmethod
    @abstractmethod
    def build(network: dict) -> nn.Module:
        """A freshly initialized network of the config `network` (load its weights next)."""

    @staticmethod
    @abstractmethod
    def network_config(model: nn.Module) -> dict:
        """The JSON-safe config that `build` turns back into `model`'s architecture."""

    @staticmethod
    @abstractmethod
    def unet_config(network: dict) -> UNetConfig | DiTConfig:
        """The config of the network that takes the conditions: its class count, text width,
        channels, `temporal` and `size_multiple` (a U-Net's `UNetConfig`, a `DiTConfig`)."""


MODEL_KINDS: Registry[type[ModelKind]] = Registry("model kind")


@MODEL_KINDS.register("unet")
class UNetKind(ModelKind):
    """An image or video `UNet`; the network config is its `UNetConfig`'s fields."""

    name = "unet"

    @staticmethod
    def build(network: dict) -> nn.Module:
        return UNet(unet_config_from_dict(network))

    @staticmethod
    def network_config(model: nn.Module) -> dict:
        return unet_config_to_dict(model.config)

    @staticmethod
    def unet_config(network: dict) -> UNetConfig:
        return unet_config_from_dict(network)


@MODEL_KINDS.register("videofusion")
class VideoFusionKind(ModelKind):
    """VideoFusion's decomposed model; the network config is `VideoFusion.config_dict()`."""

    name = "videofusion"

    @staticmethod
    def build(network: dict) -> nn.Module:
        return VideoFusion.from_config(network)

    @staticmethod
    def network_config(model: nn.Module) -> dict:
        return model.config_dict()

    @staticmethod
    def unet_config(network: dict) -> UNetConfig:
        return unet_config_from_dict(network["residual"]["unet"])  # it carries the conditions


@MODEL_KINDS.register("dit")
class DiTKind(ModelKind):
    """An image or video `DiT`; the network config is its `DiTConfig`'s fields."""

    name = "dit"

    @staticmethod
    def build(network: dict) -> nn.Module:
        return DiT(dit_config_from_dict(network))

    @staticmethod
    def network_config(model: nn.Module) -> dict:
        return dit_config_to_dict(model.config)

    @staticmethod
    def unet_config(network: dict) -> DiTConfig:
        return dit_config_from_dict(network)


def kind_of(model: nn.Module) -> str:
    """The registered kind name of a network (a TypeError for an unknown network class)."""
    if isinstance(model, VideoFusion):
        return "videofusion"
    if isinstance(model, UNet):
        return "unet"
    if isinstance(model, DiT):
        return "dit"
    raise TypeError(f"no model kind for {type(model).__name__}; kinds: "
                    f"{', '.join(MODEL_KINDS.names())}")
