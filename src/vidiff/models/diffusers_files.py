"""Reading a diffusers model folder: where its files are, its config.json, its weights
(safetensors, .bin through `torch.load(weights_only=True)`, sharded indexes, variants).
Shared by the U-Net importers and the transformer importer; nothing here needs diffusers."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

__all__ = ["CONFIG_NAME", "WEIGHTS_NAMES", "model_folder", "read_config", "read_weights"]

CONFIG_NAME = "config.json"
WEIGHTS_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def model_folder(path: Path, subfolder: str | None, component: str) -> Path:
    """The model folder of `path` (or path/subfolder): itself, or its `component` subfolder
    (unet/, transformer/) when `path` is a pipeline root."""
    if subfolder:
        path = path / subfolder
    if not path.exists():
        raise FileNotFoundError(f"no such diffusers model directory: {path}")
    if not path.is_dir():
        raise NotADirectoryError(f"expected a diffusers model directory, got the file {path}")
    if not (path / CONFIG_NAME).is_file() and (path / component / CONFIG_NAME).is_file():
        return path / component  # a pipeline root: the model lives in its subfolder
    return path


def read_config(folder: Path) -> tuple[Path, dict]:
    """(config file, its contents) of a model folder; a clear error when missing or bad."""
    config_file = folder / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"missing diffusers config file {config_file}")
    try:
        return config_file, json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_file}: not valid JSON ({err})") from None


def read_weights(folder: Path, variant: str | None = None) -> tuple[dict[str, Tensor], Path]:
    """(state dict on the CPU, the file it came from) of a model folder."""
    names = list(WEIGHTS_NAMES)
    if variant:
        names = [n.replace("model.", f"model.{variant}.") for n in names]
    for name in names:
        f = folder / name
        if f.is_file():
            return _read_weight_file(f), f
        index = folder / f"{name}.index.json"
        if index.is_file():  # sharded checkpoint
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            sd: dict[str, Tensor] = {}
            for shard in shards:
                sd.update(_read_weight_file(folder / shard))
            return sd, index
    raise FileNotFoundError(f"no diffusers weights in {folder}: expected {' or '.join(names)}")


def _read_weight_file(f: Path) -> dict[str, Tensor]:
    if not f.is_file():
        raise FileNotFoundError(f"missing weight file {f}")
    if f.suffix == ".safetensors":
        return load_file(str(f), device="cpu")
    return torch.load(f, map_location="cpu", weights_only=True)
