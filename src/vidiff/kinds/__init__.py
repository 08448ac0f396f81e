"""Model kinds: each model family in one class, found by name through `MODEL_KINDS`.

``"unet"`` (the factorized space-time U-Net), ``"videofusion"`` (VideoFusion's base + residual
generators), ``"dit"`` (the factorized space-time diffusion transformer) and the open video
models ``"wan"``, ``"ltx"``, ``"cogvideox"`` (diffusers' transformers, `vidiff.kinds.video`).
A new family is one module with a `ModelKind` subclass and one registration here (docs/DESIGN.md).
"""

from vidiff.kinds.base import (
    MODEL_KINDS,
    ModelKind,
    architecture_mismatch,
    is_diffusers_dir,
    is_imported,
    kind_of,
)
from vidiff.kinds.dit import DiTKind
from vidiff.kinds.unet import UNetKind
from vidiff.kinds.video import CogVideoXKind, LTXKind, VideoModelKind, WanKind
from vidiff.kinds.videofusion import VideoFusionKind

for _kind in (UNetKind, VideoFusionKind, DiTKind, WanKind, LTXKind, CogVideoXKind):
    MODEL_KINDS.register(_kind.name)(_kind)

__all__ = ["MODEL_KINDS", "CogVideoXKind", "DiTKind", "LTXKind", "ModelKind", "UNetKind",
           "VideoFusionKind", "VideoModelKind", "WanKind",
           "architecture_mismatch", "is_diffusers_dir", "is_imported", "kind_of"]
