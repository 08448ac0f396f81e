"""Resuming a run: which checkpoint, which settings may change, and leftovers of crashes.

A resumed run takes every setting from its new config. The settings that define the trained
model cannot change, since the weights would mean something else; a change there is refused,
naming the field and both values (`FIXED`). The rest (learning rate and its schedule, the step
horizon, batch, EMA, precision, logging, the data's source and order, the loss weighting, ...)
may change; the trainer prints what changed. ``model.init_from`` is read at step 0 only.

`restore_point` picks the newest checkpoint whose files all read back (a truncated
``state.pt`` or safetensors file is skipped with a warning naming it), and
`remove_leftovers` deletes the ``.tmp-*`` / ``.old-*`` folders of saves that were killed.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidiff.kinds import architecture_mismatch, kind_of
from vidiff.modelio.checkpoint import (
    CHECKPOINTS_DIR,
    Checkpoint,
    CheckpointError,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
)
from vidiff.modelio.spec import spec_from_checkpoint
from vidiff.models.videofusion import VideoFusion
from vidiff.train.build import optimizer_groups
from vidiff.train.config import RunConfig
from vidiff.train.setup import freeze_all_but_temporal
from vidiff.utils.config_io import ConfigError

__all__ = ["FIXED", "IGNORED", "Restored", "check_restored_model", "check_same_model",
           "config_changes", "load_optimizer_state", "optimizer_param_names", "remove_leftovers",
           "restore_rng", "training_state",
           "restore_point", "resume_point", "trained_names"]

# fields (section.key, or a whole section) whose change would change what the weights mean.
# model.preset, model.overrides and VideoFusion's base_preset / base_overrides are checked on
# the built network's architecture instead (`ModelKind.architecture`, `check_restored_model`):
# execution fields such as dropout may change
FIXED = (
    "model.kind",
    "diffusion", "prior",
    "data.frames", "data.size", "data.lowres_size", "data.use_labels", "data.use_captions",
    "data.autoencoder", "train.lora", "distill",
)
FIXED_WITH_CAPTIONS = ("data.text_encoder", "data.text_dim")  # the text the model learned
IGNORED = ("model.init_from",)  # only read when a run starts at step 0


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped because one of its files does not read back."""


@dataclass
class Restored:
    """A checkpoint read back whole: its description, weights and training state."""

    checkpoint: Checkpoint
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    state: dict[str, Any]


def _read_whole(path: Path) -> Restored:
    ckpt = load_checkpoint(path)
    state = ckpt.state()
    return Restored(ckpt, ckpt.weights("model"), ckpt.weights("ema"), state)


def restore_point(resume: str, out: Path) -> Restored | None:
    """The checkpoint a run resumes from: ``resume = "auto"``: the newest readable one in
    `out` (None when there is none); a path: that checkpoint, which must read back."""
    if resume == "never":
        return None
    if resume != "auto":
        return _read_whole(find_checkpoint(resume))
    bad = []
    for path in reversed(list_checkpoints(out)):
        try:
            restored = _read_whole(path)
        except CheckpointError as err:
            bad.append(path)
            warnings.warn(f"skipping unreadable checkpoint {path}: {err}", CheckpointWarning,
                          stacklevel=2)
            continue
        if bad:
            warnings.warn(f"resuming from {path} instead of the newer, unreadable "
                          f"{', '.join(p.name for p in bad)}", CheckpointWarning, stacklevel=2)
        return restored
    if bad:
        raise CheckpointError(f"no checkpoint in {str(out)!r} reads back (tried "
                              f"{', '.join(p.name for p in bad)}); resume from another run "
                              f"with --resume PATH, or pick a new --out")
    return None


def remove_leftovers(out: Path) -> list[Path]:
    """Delete the temporary folders of interrupted checkpoint saves; returns them."""
    root = out / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    stale = [p for p in root.iterdir() if p.name.startswith((".tmp-", ".old-"))]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def _flat(config: dict) -> dict[str, Any]:
    """section.key -> value; dict fields (model.overrides, prior.params) one level deeper."""
    flat = {}
    for section, values in config.items():
        for key, value in (values.items() if isinstance(values, dict) else ()):
            if isinstance(value, dict):
                flat.update({f"{section}.{key}.{k}": v for k, v in value.items()})
            else:
                flat[f"{section}.{key}"] = value
    return flat


def _is_fixed(key: str, captions: bool) -> bool:
    parts = key.split(".")
    if any(".".join(parts[:n]) in FIXED for n in (1, 2)):
        return True
    return captions and key in FIXED_WITH_CAPTIONS


def _norm(value):
    return list(value) if isinstance(value, tuple) else value


def config_changes(saved: dict, new: dict) -> tuple[list[str], list[str]]:
    """(allowed, refused) differences between a checkpoint's run config and a new one, each
    as ``"key: old -> new"``. Keys the checkpoint lacks (added to vidiff since) count as
    their defaults."""
    try:
        saved = RunConfig.from_dict(saved).to_dict()  # fills fields added since
    except ValueError:
        pass
    old, cur = _flat(saved), _flat(new)
    captions = bool(cur.get("data.use_captions"))
    allowed, refused = [], []
    for key in sorted(set(old) | set(cur)):
        if key in IGNORED or key == "train.resume" or _norm(old.get(key)) == _norm(cur.get(key)):
            continue
        change = f"{key}: {old.get(key)!r} -> {cur.get(key)!r}"
        (refused if _is_fixed(key, captions) else allowed).append(change)
    return allowed, refused


def resume_point(config, out: Path) -> tuple[Restored | None, list[str]]:
    """(the checkpoint a run of `config` resumes from or None, the allowed setting changes).
    A change of a model-defining setting, or checkpoints in `out` with ``resume = "never"``,
    is a `ConfigError`."""
    resume = config.train.resume
    if resume == "never":
        found = list_checkpoints(out)
        if found:
            raise ConfigError(f"{out} already has checkpoints ({found[-1].name}); continue it "
                              f"with train.resume=auto, or pick a new --out")
        return None, []
    restored = restore_point(resume, out)
    if restored is None:
        return None, []
    return restored, check_same_model(restored.checkpoint, config)


def check_same_model(checkpoint, config) -> list[str]:
    """The allowed setting changes from `checkpoint`'s run config to `config` (a `RunConfig`,
    validated or not); a change of a model-defining setting is a `ConfigError` naming every
    one. Checked before the new config is validated too: a resume with another process is
    named as that, not as a setting the new process would not read."""
    allowed, refused = config_changes(checkpoint.config, config.to_dict())
    if refused:
        raise ConfigError(
            f"cannot resume {checkpoint.path} with other model settings: "
            f"{'; '.join(refused)}. These define the trained model (docs/TRAINING.md, "
            f"Resuming); keep the checkpoint's values or pick a new --out"
        )
    return allowed


def check_restored_model(restored: Restored, model: nn.Module, class_names: list[str],
                         use_labels: bool) -> None:
    """The checkpoint holds a network of `model`'s kind and architecture (its kind's
    `architecture`: every defining field, execution fields aside), and this run's classes. A
    network of no registered kind (passed by hand) is checked by its weights' names and
    shapes only, when they are loaded."""
    ckpt = restored.checkpoint
    spec = spec_from_checkpoint(ckpt.config, ckpt.meta)
    try:
        kind = kind_of(model)
    except TypeError:
        kind = None
    if kind is not None and spec.kind != kind.name:
        raise CheckpointError(f"checkpoint {ckpt.path} holds a {spec.kind} model and this run "
                              f"builds a {kind.name} (model.kind); keep model.kind = "
                              f"{spec.kind!r} or use a new --out")
    if kind is not None:
        diff = architecture_mismatch(kind.architecture(spec.network),
                                     kind.architecture(kind.network_config(model)))
        if diff:
            raise CheckpointError(
                f"checkpoint {ckpt.path} was trained with another model architecture; "
                f"differences: {'; '.join(diff)}. Use the checkpoint's model settings or a "
                f"new --out"
            )
    old_classes = spec.conditioning.class_names
    if use_labels and old_classes != class_names:
        raise ConfigError(f"cannot resume {ckpt.path}: its classes {old_classes} differ from "
                          f"the data's {class_names}")


def training_state(optimizer: torch.optim.Optimizer, model: nn.Module, scaler,
                   device: torch.device, *, lr_horizon: int, position: int, world: int,
                   with_optimizer: bool) -> dict[str, Any]:
    """What a checkpoint's state.pt holds besides the weights (the trainer's resume reads it
    back): the optimizer (unless its state is in an FSDP run's shards), the names of its
    parameter groups, the LR horizon, the grad scaler, the RNG, the data position."""
    rng = {"torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        rng["torch_cuda"] = torch.cuda.get_rng_state(device)
    state = {
        # each group's parameter names: a resume that trains another set maps by them
        "optimizer_params": optimizer_param_names(optimizer, model),
        "lr_horizon": lr_horizon,  # where the LR decay ends (time budgets)
        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
        "rng": rng,
        "data_position": position,  # videos consumed, over all processes
        "world_size": world,
    }
    if with_optimizer:
        state["optimizer"] = optimizer.state_dict()
    return state


def restore_rng(rng: dict, device: torch.device) -> None:
    """The global RNG state a checkpoint saved (`training_state`), where it has one."""
    if "torch_cpu" in rng:
        torch.set_rng_state(rng["torch_cpu"])
    if device.type == "cuda" and rng.get("torch_cuda"):
        torch.cuda.set_rng_state(rng["torch_cuda"], device)


def optimizer_param_names(optimizer: torch.optim.Optimizer, model: nn.Module
                          ) -> list[list[str]]:
    """The names of each optimizer group's parameters, in order (what a checkpoint records
    as ``"optimizer_params"``, to match its moments to parameters on resume)."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [[names.get(id(p), "?") for p in g["params"]] for g in optimizer.param_groups]


def trained_names(model: nn.Module, config: dict) -> list[list[str]] | None:
    """The optimizer groups' parameter names a run of `config` (a checkpoint's run config)
    had on `model`: for checkpoints that did not record them. None when unknown."""
    try:
        old = RunConfig.from_dict(config)
    except ValueError:
        return None
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    frozen = getattr(model, "base_frozen", None)
    try:  # the requires_grad pattern of the old run, as the trainer set it up
        model.requires_grad_(True)
        if isinstance(model, VideoFusion):
            model.freeze_base(old.model.freeze_base)
        if old.train.trainable == "temporal":
            freeze_all_but_temporal(model)
        names = {id(p): name for name, p in model.named_parameters()}
        return [[names[id(p)] for p in g["params"]] for g in optimizer_groups(model, old)]
    except (ConfigError, KeyError):
        return None
    finally:
        if frozen is not None:
            model.freeze_base(frozen)
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict, path: Path, *,
                         names: list[list[str]] | None = None,
                         saved: list[list[str]] | None = None) -> str | None:
    """The optimizer's moments from a checkpoint; its hyperparameters (lr, betas, weight
    decay, peak_lr) stay those of this run's config: what the user sets on resume holds.

    With the parameter `names` of this run's groups and those the checkpoint's groups had
    (`saved`), a run that trains another set of parameters (``train.trainable``,
    ``model.freeze_base`` changed) keeps the moments of the parameters that stay trained and
    starts the others fresh; returns a line saying so (None when nothing changed)."""
    hyper = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    changed = names is not None and saved is not None and names != saved
    message = None
    if changed:
        state, message = _remapped(optimizer, state, names, saved)
    try:
        optimizer.load_state_dict(state)
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path}: its optimizer state does not fit this model "
                              f"({err})") from None
    for group, h in zip(optimizer.param_groups, hyper, strict=True):
        group.pop("initial_lr", None)  # left by the LambdaLR of older checkpoints
        group.update(h)
    return message


def _remapped(optimizer: torch.optim.Optimizer, state: dict, names: list[list[str]],
              saved: list[list[str]]) -> tuple[dict, str]:
    """`state` (a saved optimizer state dict) moved onto this optimizer's parameters by name:
    the moments of parameters in both, none for the new ones."""
    old_index = [name for group in saved for name in group]
    moments = {old_index[i]: s for i, s in state.get("state", {}).items()
               if isinstance(i, int) and i < len(old_index)}
    fresh = optimizer.state_dict()  # this run's groups, no moments yet
    params = [p for g in optimizer.param_groups for p in g["params"]]
    kept = {}
    for index, name in enumerate(n for group in names for n in group):
        moment = moments.get(name)
        if moment is not None and _fits(moment, params[index]):
            kept[index] = moment
    now, before = {n for g in names for n in g}, set(old_index)
    new, dropped = len(now - before), len(before - now)
    message = (f"the trained parameters changed: kept the optimizer moments of {len(kept)} "
               f"tensors that stay trained, fresh moments for {len(now) - len(kept)} "
               f"({new} newly trained), dropped those of {dropped} no longer trained")
    return {"state": kept, "param_groups": fresh["param_groups"]}, message


def _fits(moment: dict, param: torch.Tensor) -> bool:
    """An AdamW moment entry whose tensors have the parameter's shape."""
    return all(v.shape == param.shape for k, v in moment.items()
               if torch.is_tensor(v) and k != "step")
