"""Model kinds: each model family in one class, found by name through `MODEL_KINDS`.

``"unet"`` (the factorized space-time U-Net), ``"videofusion"`` (VideoFusion's base + residual
generators) and ``"dit"`` (the factorized space-time diffusion transformer). A new family is
one module with a `ModelKind` subclass and one registration here (docs/DESIGN.md).
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
from vidiff.kinds.videofusion import VideoFusionKind

for _kind in (UNetKind, VideoFusionKind, DiTKind):
    MODEL_KINDS.register(_kind.name)(_kind)

__all__ = ["MODEL_KINDS", "DiTKind", "ModelKind", "UNetKind", "VideoFusionKind",
           "architecture_mismatch", "is_diffusers_dir", "is_imported", "kind_of"]
