"""Training checkpoints: safetensors weights plus a weights-only state file, written atomically.

A checkpoint is a folder ``<run>/checkpoints/step_00001500/`` holding

- ``model.safetensors``: the trained weights;
- ``ema.safetensors``: the EMA weights (what sampling uses by default);
- ``state.pt``: optimizer, LR scheduler, GradScaler, step and RNG states (tensors and plain
  Python values only, read back with ``torch.load(..., weights_only=True)``);
- ``config.json``: the run config and facts about the model (step, U-Net config, classes).

An FSDP run's checkpoint holds ``shards/`` instead of the two safetensors files: every rank's
shards of the weights, the EMA and the optimizer state (`vidiff.modelio.sharded`), the
optimizer left out of ``state.pt``; `Checkpoint.weights` gathers them into whole tensors, so
every reader takes either form.

Each safetensors file also carries the run config and facts in its metadata, so a single
``ema.safetensors`` is enough to sample. Loading never runs pickled code: weights come from
safetensors, and the state file is refused if it holds anything but tensors and plain values.

The folder is written under a hidden temporary name next to its final place (every file
fsynced), then moved into place with `os.replace`: a crash leaves either the old checkpoint
or the new one, never half of one. Rotation (`rotate_checkpoints`) keeps the newest ``keep``
checkpoints whose files are whole: an unreadable one never counts, so it never pushes out the
older good checkpoint a resume fell back to, and the checkpoint just written always stays.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import secrets
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from vidiff.modelio.sharded import SHARDS_DIR, gather_weights, shards_intact

__all__ = [
    "CHECKPOINTS_DIR",
    "Checkpoint",
    "CheckpointError",
    "find_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_weights",
    "checkpoint_intact",
    "read_safetensors",
    "rotate_checkpoints",
    "save_checkpoint",
    "stage_checkpoint",
]

CHECKPOINTS_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"
FORMAT = "vidiff-checkpoint-1"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(ValueError):
    """A missing, unreadable, unsafe or mismatched checkpoint."""


# -- writing ---------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot open folders
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}


def _metadata(config: dict, meta: dict, kind: str) -> dict[str, str]:
    return {"format": FORMAT, "kind": kind, "vidiff_config": json.dumps(config),
            "vidiff_meta": json.dumps(meta)}


def step_dir_name(step: int) -> str:
    """The folder name of the checkpoint at `step`."""
    return f"step_{step:08d}"


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    *,
    model: nn.Module | Mapping[str, torch.Tensor],
    ema: nn.Module | Mapping[str, torch.Tensor] | None,
    state: dict[str, Any],
    config: dict,
    meta: dict | None = None,
    keep: int = 2,
    staged: Path | None = None,
) -> Path:
    """Write the checkpoint of `step` under ``run_dir/checkpoints`` atomically; returns its
    folder. `staged`: the `stage_checkpoint` folder the ranks wrote their ``shards/`` into
    (then `model` and `ema` are None). Older checkpoints beyond the newest `keep` are removed
    afterwards."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    meta = {**(meta or {}), "step": int(step)}
    final = root / step_dir_name(step)
    tmp = staged or stage_checkpoint(run_dir, step)
    try:
        for name, weights, kind in ((MODEL_FILE, model, "model"), (EMA_FILE, ema, "ema")):
            if weights is None:  # none, or in the staged shards
                continue
            sd = weights.state_dict() if isinstance(weights, nn.Module) else weights
            _write_bytes(tmp / name, st_save(_tensors(sd), _metadata(config, meta, kind)))
        buffer = io.BytesIO()
        torch.save({**state, "step": int(step)}, buffer)
        _write_bytes(tmp / STATE_FILE, buffer.getvalue())
        text = json.dumps({"format": FORMAT, "meta": meta, "config": config}, indent=2)
        _write_bytes(tmp / CONFIG_FILE, text.encode())
        _fsync_dir(tmp)
        old = None
        if final.exists():  # the same step saved again: move the old one aside first
            old = root / f".old-{final.name}-{secrets.token_hex(4)}"
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep > 0:
        rotate_checkpoints(run_dir, keep, keep_paths=(final,))
    return final


def stage_checkpoint(run_dir: str | os.PathLike, step: int) -> Path:
    """A new hidden folder next to where the checkpoint of `step` goes: `save_checkpoint`
    fills it and moves it into place (a leftover is removed by the next run's start)."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{step_dir_name(step)}-{secrets.token_hex(4)}"
    tmp.mkdir()
    return tmp


def rotate_checkpoints(run_dir: str | os.PathLike, keep: int, *,
                       keep_paths: tuple[Path, ...] = ()) -> list[Path]:
    """Delete a run's checkpoints beyond the newest `keep` that are whole
    (`checkpoint_intact`); returns the deleted folders. Those in `keep_paths` stay (and
    count). An unreadable checkpoint never counts: it is deleted only once `keep` whole
    checkpoints newer than it exist, so it never pushes out an older loadable one."""
    kept = {Path(p).resolve() for p in keep_paths}
    whole, deleted = 0, []
    for path in reversed(list_checkpoints(run_dir)):
        intact = checkpoint_intact(path)
        if path.resolve() in kept or (intact and whole < keep):
            whole += intact
            continue
        if intact or whole >= keep:
            shutil.rmtree(path, ignore_errors=True)
            deleted.append(path)
    return deleted


def checkpoint_intact(path: str | os.PathLike) -> bool:
    """Whether the checkpoint folder `path` is whole: its state file a complete archive and
    every safetensors file as long as its header says, its config JSON (a truncated or
    half-copied checkpoint is not; reading headers only, no tensors)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path / STATE_FILE) as archive:
            size = (path / STATE_FILE).stat().st_size
            if any(i.header_offset + i.compress_size > size for i in archive.infolist()):
                return False
        names = [n for n in (MODEL_FILE, EMA_FILE) if (path / n).exists()]
        if (path / SHARDS_DIR).is_dir():
            if names or not shards_intact(path / SHARDS_DIR):
                return False
        elif not names or not all(_safetensors_whole(path / n) for n in names):
            return False
        if (path / CONFIG_FILE).exists():
            json.loads((path / CONFIG_FILE).read_text())
    except (OSError, ValueError, zipfile.BadZipFile, KeyError, TypeError, AttributeError,
            IndexError):
        return False
    return True


def _safetensors_whole(path: Path) -> bool:
    """The file holds its whole header and every tensor's bytes."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return False
        header = json.loads(f.read(int.from_bytes(head, "little")))
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return path.stat().st_size >= 8 + int.from_bytes(head, "little") + max(ends, default=0)


# -- finding ---------------------------------------------------------------------------------
def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The complete checkpoint folders of a run, oldest first (by step)."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and (child / STATE_FILE).exists():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def find_checkpoint(path: str | os.PathLike) -> Path:
    """Resolve `path` to a checkpoint: a checkpoint folder, a run folder (its newest
    checkpoint) or a ``.safetensors`` file. A missing path is a `CheckpointError` naming it."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; give a run folder "
                              f"(--out of vidiff train), a checkpoint folder or a .safetensors "
                              f"file")
    if path.is_file():
        return path
    if any((path / name).exists() for name in (MODEL_FILE, EMA_FILE, SHARDS_DIR)):
        return path
    found = list_checkpoints(path)
    if not found:
        raise CheckpointError(f"no checkpoint in {str(path)!r}: it holds neither "
                              f"{MODEL_FILE} nor {SHARDS_DIR}/ nor a {CHECKPOINTS_DIR}/step_* "
                              f"folder")
    return found[-1]


# -- reading ---------------------------------------------------------------------------------
def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; anything else is a `CheckpointError`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read {str(path)!r}: {err}") from None
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
    except (SafetensorError, ValueError, json.JSONDecodeError) as err:
        raise CheckpointError(
            f"{str(path)!r} is not a safetensors file ({err}); vidiff only loads weights from "
            f"safetensors (it never unpickles weight files)"
        ) from None
    return tensors, dict(header.get("__metadata__") or {})


def load_state_file(path: str | os.PathLike) -> dict[str, Any]:
    """A state file read with ``torch.load(weights_only=True)``: no pickled code runs. A file
    that holds other Python objects, or that is truncated or corrupt, is a `CheckpointError`
    naming it (never advice to unpickle it)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint state {str(path)!r} does not exist") from None
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "weights_only" in str(err):
            raise CheckpointError(
                f"refusing to load {str(path)!r}: it holds pickled Python objects, not only "
                f"tensors and plain values, and vidiff never unpickles code; it was not "
                f"written by vidiff train"
            ) from None
        raise CheckpointError(f"{str(path)!r} is corrupt or truncated ({_first_line(err)}); "
                              f"resume from an older checkpoint") from None
    except Exception as err:  # truncated zip, OSError from the reader, bad magic, ...
        raise CheckpointError(f"{str(path)!r} is corrupt or truncated ({_first_line(err)}); "
                              f"resume from an older checkpoint") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{str(path)!r} does not hold a state dict")
    return state


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


@dataclass
class Checkpoint:
    """A checkpoint found on disk: its files, run config and facts."""

    path: Path  # the checkpoint folder, or the single .safetensors file
    config: dict  # the run config (`RunConfig.to_dict()`)
    meta: dict  # step, unet_config, class_names, num_parameters, ...
    # "model", "ema", "state", "config"; an FSDP run's: "shards" instead of "model" and "ema"
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def step(self) -> int:
        """The optimizer step the checkpoint was taken after."""
        return int(self.meta.get("step", 0))

    @property
    def sharded(self) -> bool:
        """Whether the weights are an FSDP run's shards (`vidiff.modelio.sharded`)."""
        return "shards" in self.files

    def holds(self, which: str) -> bool:
        """Whether the checkpoint has the "ema" or "model" weights (an FSDP run's shards
        have both)."""
        return which in self.files or self.sharded

    def weights(self, which: str = "ema") -> dict[str, torch.Tensor]:
        """The "ema" or "model" weights (falls back to the other one when missing); an FSDP
        run's shards gathered into whole tensors."""
        order = [which] + [w for w in ("ema", "model") if w != which]
        for name in order:
            if name in self.files:
                return read_safetensors(self.files[name])[0]
            if self.sharded:
                try:
                    return gather_weights(self.files["shards"], name)
                except (OSError, ValueError, RuntimeError) as err:
                    if name == order[-1]:
                        raise CheckpointError(f"cannot read the shards of {str(self.path)!r}: "
                                              f"{_first_line(err)}") from None
        raise CheckpointError(f"checkpoint {str(self.path)!r} has no weights")

    def state(self) -> dict[str, Any]:
        """Optimizer, scheduler, step and RNG states (weights-only load)."""
        if "state" not in self.files:
            raise CheckpointError(f"checkpoint {str(self.path)!r} has no {STATE_FILE}: it can "
                                  f"be sampled from but not resumed")
        return load_state_file(self.files["state"])


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Find and describe the checkpoint at `path` (see `find_checkpoint`); weights and state
    are read on demand."""
    path = find_checkpoint(path)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(
                f"{str(path)!r} is not a .safetensors file; vidiff checkpoints are folders "
                f"with {MODEL_FILE}, {EMA_FILE} and {STATE_FILE} (never pickled weights)"
            )
        _, metadata = read_safetensors(path)
        files = {metadata.get("kind", "model"): path}
    else:
        files = {
            key: path / name
            for key, name in (("model", MODEL_FILE), ("ema", EMA_FILE), ("state", STATE_FILE),
                              ("config", CONFIG_FILE), ("shards", SHARDS_DIR))
            if (path / name).exists()
        }
        if "config" in files:
            try:
                doc = json.loads(files["config"].read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise CheckpointError(f"cannot read {str(files['config'])!r}: {err}") from None
            return Checkpoint(path, doc.get("config", {}), doc.get("meta", {}), files)
        weights = files.get("ema") or files.get("model")
        if weights is None:
            raise CheckpointError(f"checkpoint folder {str(path)!r} has no weights")
        _, metadata = read_safetensors(weights)
    if "vidiff_config" not in metadata:
        raise CheckpointError(
            f"{str(path)!r} is a safetensors file without a vidiff config in its metadata; "
            f"it was not written by vidiff train"
        )
    try:
        config = json.loads(metadata["vidiff_config"])
        meta = json.loads(metadata.get("vidiff_meta", "{}"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"bad vidiff metadata in {str(path)!r}: {err}") from None
    return Checkpoint(path, config, meta, files)


# -- matching weights to a model ---------------------------------------------------------------
# U-Net config fields that change how the network runs, not what its weights are
def load_weights(model: nn.Module, tensors: Mapping[str, torch.Tensor], source: str = "") -> None:
    """Load `tensors` into `model` exactly; any missing, unexpected or reshaped entry is a
    `CheckpointError` that names them (not a state_dict traceback)."""
    for name, module in model.named_modules():  # lengths the weights decide: a video
        fit = getattr(module, "fit_null_text", None)  # transformer's null text
        if fit is not None:
            fit(tensors, f"{name}." if name else "")
    own = model.state_dict()
    missing = [k for k in own if k not in tensors]
    unexpected = sorted(k for k in tensors if k not in own)
    reshaped = [
        f"{k} {tuple(tensors[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in tensors and tuple(tensors[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or reshaped:
        parts = []
        for name, items in (("missing", missing), ("unexpected", unexpected),
                            ("different shapes (checkpoint vs model)", reshaped)):
            if items:
                more = f" and {len(items) - 5} more" if len(items) > 5 else ""
                parts.append(f"{name}: {', '.join(items[:5])}{more}")
        where = f" {source}" if source else ""
        raise CheckpointError(
            f"the checkpoint{where} is for another model architecture; " + "; ".join(parts)
        )
    model.load_state_dict(dict(tensors), strict=True)
