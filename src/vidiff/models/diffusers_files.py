"""Reading a diffusers model folder: where its files are, its config.json, its weights
(safetensors, .bin through `torch.load(weights_only=True)`, sharded indexes, variants).
Shared by the U-Net importers and the transformer importer; nothing here needs diffusers."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor

from vidiff.utils.config_io import read_json

__all__ = ["CONFIG_NAME", "WEIGHTS_NAMES", "check_safetensors", "check_weights",
           "model_folder", "read_config",
           "read_weights", "weight_files"]

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
    return config_file, read_json(config_file)


def weight_files(folder: Path, variant: str | None = None) -> tuple[list[Path], Path]:
    """(the weight files of a model folder, the file that names them: the weights file itself
    or a sharded checkpoint's index); a clear error naming the folder or file when missing."""
    names = list(WEIGHTS_NAMES)
    if variant:
        names = [n.replace("model.", f"model.{variant}.") for n in names]
    for name in names:
        f = folder / name
        if f.is_file():
            return [f], f
        index = folder / f"{name}.index.json"
        if index.is_file():  # sharded checkpoint
            weight_map = read_json(index, required=("weight_map",))["weight_map"]
            if not isinstance(weight_map, dict):
                raise ValueError(f"{index}: weight_map is not a table of weight files")
            shards = sorted(set(map(str, weight_map.values())))
            return [folder / shard for shard in shards], index
    raise FileNotFoundError(f"no diffusers weights in {folder}: expected {' or '.join(names)}")


def read_weights(folder: Path, variant: str | None = None) -> tuple[dict[str, Tensor], Path]:
    """(state dict on the CPU, the file it came from) of a model folder."""
    files, source = weight_files(folder, variant)
    sd: dict[str, Tensor] = {}
    for f in files:
        sd.update(_read_weight_file(f))
    return sd, source


def check_weights(folder: Path, variant: str | None = None) -> Path:
    """The weights file (or index) of a model folder after reading the headers of its
    safetensors files (not their tensors): a truncated or corrupt file is a ValueError
    naming it, before anything is built from it."""
    files, source = weight_files(folder, variant)
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"missing weight file {f} (named by {source})")
        if f.suffix == ".safetensors":
            check_safetensors(f)
    return source


def check_safetensors(f: Path) -> None:
    """Read the header of the safetensors file `f` (its tensors' names, shapes and offsets,
    which must fit the file's length): a truncated or corrupt file is a ValueError naming it."""
    try:
        with safe_open(str(f), "pt"):
            pass
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{f}: not a readable safetensors file ({err})") from None


def _read_weight_file(f: Path) -> dict[str, Tensor]:
    """The tensors of one weight file; a ValueError naming it when it cannot be read."""

    if not f.is_file():
        raise FileNotFoundError(f"missing weight file {f}")
    try:
        if f.suffix == ".safetensors":

            return load_file(str(f), device="cpu")
        return torch.load(f, map_location="cpu", weights_only=True)
    except (SafetensorError, pickle.UnpicklingError, EOFError, RuntimeError, OSError) as err:
        raise ValueError(f"{f}: cannot read its weights ({err})") from None
