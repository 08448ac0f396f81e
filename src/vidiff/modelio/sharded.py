"""Sharded checkpoints: the ``shards/`` folder an FSDP run's checkpoint holds instead of
``model.safetensors`` and ``ema.safetensors``.

Every rank writes its own shards of the weights, the EMA and AdamW's state with
`torch.distributed.checkpoint` (DCP) into ``<checkpoint>/shards/`` (``.metadata`` plus one
``__R_0.distcp`` file per rank); the rest of the checkpoint (``state.pt`` without the
optimizer, ``config.json``) is rank 0's, and the whole folder is moved into place only when
every rank's shards are on disk (`vidiff.modelio.checkpoint`), so an interrupted save never
replaces the last good checkpoint.

The DCP state dict is ``{"model": {fqn: tensor}, "ema": {fqn: tensor}, "optim": ...}``, the
optimizer's by parameter name (`get_optimizer_state_dict`), so it loads into any number of
ranks: DCP reshards. `gather_weights` reads a whole "model" or "ema" in one process with no
process group (every command that reads a model, `vidiff export`, a resume on one process).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = ["SHARDS_DIR", "count_parameters", "gather_weights", "load_shards", "read_metadata",
           "save_shards", "shard_bytes", "shards_intact"]

SHARDS_DIR = "shards"


def _dcp():
    import torch.distributed.checkpoint as dcp  # imported on use: commands rarely need it

    return dcp


def save_shards(folder: Path, state: dict[str, Any]) -> None:
    """Every rank writes its shards of `state` (``{"model": ..., "ema": ..., "optim":
    ...}``, DTensors or plain tensors) into `folder` (a collective: every rank calls it)."""
    _dcp().save(state, checkpoint_id=str(folder))


def load_shards(folder: Path, state: dict[str, Any]) -> None:
    """Fill `state` (DTensors sharded for this launch, or plain tensors) in place from the
    shards in `folder`, whatever number of ranks wrote them (a collective under a process
    group)."""
    _load(folder, state)


def _load(folder: Path, state: dict[str, Any]) -> None:
    """DCP's load, in this process alone when there is no process group (without DCP's
    warning that it assumes so)."""
    import torch.distributed as dist

    alone = not (dist.is_available() and dist.is_initialized())
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process"
        warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        _dcp().load(state, checkpoint_id=str(folder), no_dist=alone)


def read_metadata(folder: Path):
    """The DCP metadata of `folder` (every entry's shape and dtype); OSError / ValueError
    when it is missing or unreadable."""
    dcp = _dcp()
    try:
        return dcp.FileSystemReader(str(folder)).read_metadata()
    except FileNotFoundError:
        raise
    except Exception as err:  # a truncated or foreign .metadata: pickle / EOF errors
        raise ValueError(f"unreadable shard metadata in {folder}: {err}") from None


def shards_intact(folder: Path) -> bool:
    """Whether `folder` holds readable DCP metadata and every shard file it names, each as
    long as the metadata says (a half-copied checkpoint is not)."""
    try:
        meta = read_metadata(folder)
    except (OSError, ValueError):
        return False
    ends: dict[str, int] = {}
    for info in (meta.storage_data or {}).values():
        name = str(info.relative_path)
        ends[name] = max(ends.get(name, 0), int(info.offset) + int(info.length))
    for name, end in ends.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size < end:
            return False
    return bool(ends)


def shard_bytes(folder: Path) -> int:
    """The bytes of every file in `folder` (the metadata and each rank's shards)."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def count_parameters(folder: Path, which: str = "model") -> int:
    """The number of values in the ``which`` weights of the shards (from the metadata)."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    prefix = f"{which}."
    return sum(math.prod(info.size) for key, info in read_metadata(folder)
               .state_dict_metadata.items()
               if key.startswith(prefix) and isinstance(info, TensorStorageMetadata))


def gather_weights(folder: Path, which: str) -> dict[str, torch.Tensor]:
    """The whole ``which`` ("model" or "ema") state dict of the shards in `folder`, read in
    this process alone (no process group needed), on the CPU."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    meta = read_metadata(folder)
    prefix = f"{which}."
    full: dict[str, torch.Tensor] = {}
    for key, info in meta.state_dict_metadata.items():
        if key.startswith(prefix) and isinstance(info, TensorStorageMetadata):
            full[key[len(prefix):]] = torch.empty(info.size, dtype=info.properties.dtype)
    if not full:
        raise ValueError(f"the shards in {folder} hold no {which!r} weights")
    state = {which: full}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process"
        warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        _dcp().load(state, checkpoint_id=str(folder), no_dist=True)  # every rank: whole
    return state[which]
