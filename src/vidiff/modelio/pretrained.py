"""Reading a trained model: its `ModelSpec` and weights from a run folder, a checkpoint
folder or file, or a folder written by `vidiff export` (``config.json`` +
``model.safetensors``). Loading never runs pickled code; `vidiff.Pipeline` builds on it."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from vidiff.modelio.checkpoint import CheckpointError, load_checkpoint, read_safetensors
from vidiff.modelio.spec import SPEC_FORMAT, ModelSpec, spec_from_checkpoint

__all__ = ["EXPORT_CONFIG", "EXPORT_WEIGHTS", "WEIGHT_SETS", "Pretrained", "is_exported",
           "read_pretrained", "read_spec"]

EXPORT_CONFIG = "config.json"  # an exported folder's spec
EXPORT_WEIGHTS = "model.safetensors"  # an exported folder's weights


@dataclass
class Pretrained:
    """What `read_pretrained` found: the spec, the weights and where they came from."""

    spec: ModelSpec
    weights: dict[str, torch.Tensor]
    source: Path  # the checkpoint folder or file, or the exported folder
    root: Path | None = None  # an exported folder (its bundled files), else None
    kind: str | None = None  # which weights: "ema" | "model" (None: not recorded or not read)


WEIGHT_SETS = ("ema", "model")  # the weights a checkpoint holds, the default first


def is_exported(path: Path) -> bool:
    """True for a folder written by `vidiff export`."""
    config = path / EXPORT_CONFIG
    if not (path.is_dir() and config.is_file() and (path / EXPORT_WEIGHTS).is_file()):
        return False
    try:
        return json.loads(config.read_text()).get("format") == SPEC_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_spec(path: str | os.PathLike) -> ModelSpec:
    """The `ModelSpec` at `path` (see `read_pretrained`) without reading any weights."""
    return _read(Path(path), None, load=False).spec


def read_pretrained(path: str | os.PathLike, weights: str | None = None) -> Pretrained:
    """The spec and weights at `path` (see the module docstring): `weights` "ema" or "model"
    of a checkpoint; None (default): the EMA weights, or the only set a file or an exported
    folder holds. Asking for weights that `path` does not hold is a `CheckpointError` naming
    the ones it holds; so is anything else wrong with it."""
    if weights is not None and weights not in WEIGHT_SETS:
        raise CheckpointError(f"weights={weights!r}: choose one of {', '.join(WEIGHT_SETS)}")
    return _read(Path(path), weights, load=True)


def _read(path: Path, weights: str | None, load: bool) -> Pretrained:
    if is_exported(path):
        try:
            spec = ModelSpec.from_json((path / EXPORT_CONFIG).read_text())
        except ValueError as err:
            raise CheckpointError(f"{str(path / EXPORT_CONFIG)!r}: {err}") from None
        kind = _export_weights(path, spec, weights)
        tensors = read_safetensors(path / EXPORT_WEIGHTS)[0] if load else {}
        return Pretrained(spec, tensors, path, root=path, kind=kind)
    ckpt = load_checkpoint(path)
    try:
        spec = spec_from_checkpoint(ckpt.config, ckpt.meta)
    except ValueError as err:
        raise CheckpointError(f"checkpoint {str(ckpt.path)!r}: {err}") from None
    kind = _checkpoint_weights(ckpt, weights) if load else None
    spec = replace(spec, provenance=replace(spec.provenance, step=ckpt.step, weights=kind))
    return Pretrained(spec, ckpt.weights(kind) if load else {}, ckpt.path, kind=kind)


def _export_weights(path: Path, spec: ModelSpec, asked: str | None) -> str | None:
    """The weights an exported folder holds (its spec's ``provenance.weights``), refusing a
    request for the other set."""
    held = spec.provenance.weights
    if asked is not None and held is not None and asked != held:
        raise CheckpointError(f"{str(path)!r} is an export of the {held} weights only; ask for "
                              f"{held!r} (--weights {held}) or export the run again with "
                              f"--weights {asked}")
    if asked is not None and held is None:
        warnings.warn(f"{str(path)!r} does not record which weights it holds (exported by an "
                      f"earlier vidiff); weights={asked!r} cannot be checked", stacklevel=3)
    return held


def _checkpoint_weights(ckpt, asked: str | None) -> str:
    """Which weights of `ckpt` to read: `asked`, or the first of `WEIGHT_SETS` it holds."""
    held = [w for w in WEIGHT_SETS if ckpt.holds(w)]
    if not held:
        raise CheckpointError(f"checkpoint {str(ckpt.path)!r} has no weights")
    if asked is not None and asked not in held:
        raise CheckpointError(f"{str(ckpt.path)!r} holds only the {' and '.join(held)} "
                              f"weights, not the {asked} ones; ask for {held[0]!r} "
                              f"(--weights {held[0]})")
    return asked or held[0]
