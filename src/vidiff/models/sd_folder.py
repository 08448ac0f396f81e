"""Reading a Stable Diffusion pipeline folder: where its U-Net is, whether it is a latent
(text-conditioned) U-Net, the pipeline root, and the empty prompt's embedding."""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor

from vidiff.text.clip import is_clip_root, load_clip

__all__ = ["empty_prompt", "is_latent_unet", "pipeline_root", "unet_folder", "unet_json"]


def unet_folder(path: Path) -> Path:
    """The folder of the U-Net's config: `path`/unet when there is one, else `path`."""
    return path / "unet" if (path / "unet" / "config.json").is_file() else path


def unet_json(path: Path) -> dict:
    """The U-Net's config.json at `path` ({} when it is missing or unreadable)."""
    try:
        return json.loads((unet_folder(path) / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def is_latent_unet(path: Path) -> bool:
    """Whether `path` (a folder or pipeline root) holds a diffusers UNet2DConditionModel."""
    return unet_json(path).get("_class_name") == "UNet2DConditionModel"


def pipeline_root(path: Path) -> Path | None:
    """The pipeline root of a diffusers U-Net at `path` (the root itself, or the parent of a
    unet/ folder that has a model_index.json beside it); None for a lone U-Net folder."""
    if (path / "unet").is_dir():
        return path
    if path.name == "unet" and (path.parent / "model_index.json").is_file():
        return path.parent
    return None


def empty_prompt(path: Path) -> Tensor | None:
    """(L, D) the pipeline's text encoder's embedding of "" (None without a text encoder)."""
    root = pipeline_root(path)
    if root is None or not is_clip_root(root):
        return None
    emb, _ = load_clip(root)([""])
    return emb[0]
