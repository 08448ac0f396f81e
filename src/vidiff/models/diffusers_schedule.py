"""The training schedule of a diffusers model, from its ``scheduler/scheduler_config.json``.

>>> config = diffusion_config_from_scheduler("stable-diffusion-v1-5")   # root or scheduler/
>>> config        # DiffusionConfig(schedule='quadratic', timesteps=1000, prediction='eps', ...)

An imported model is fine-tuned and sampled on the schedule it was trained with: diffusers'
``beta_schedule`` maps to vidiff's schedules exactly (``linear`` -> linear, ``scaled_linear``
(latent diffusion's) -> quadratic, ``squaredcos_cap_v2`` -> cosine), ``beta_start`` /
``beta_end`` and ``num_train_timesteps`` carry over, and ``prediction_type`` maps epsilon /
v_prediction / sample to eps / v / x0 (`tests/test_diffusers_schedule.py`: the cumulative
alphas equal diffusers' `DDPMScheduler`'s). vidiff's linear and quadratic schedules keep their
shape for any T by scaling the betas by 1000 / T; diffusers' do not, so the betas are given
pre-divided by that factor. Settings vidiff has no counterpart for are refused, named.
"""

from __future__ import annotations

import os
from pathlib import Path

from vidiff.diffusion.ddpm import DiffusionConfig
from vidiff.utils.config_io import read_json

__all__ = ["SCHEDULER_CONFIG", "diffusion_config_from_scheduler", "find_scheduler_config"]

SCHEDULER_CONFIG = "scheduler_config.json"
SCHEDULES = {"linear": "linear", "scaled_linear": "quadratic", "squaredcos_cap_v2": "cosine"}
PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}


def find_scheduler_config(path: str | os.PathLike) -> Path | None:
    """The scheduler config of `path`: the file itself, a ``scheduler/`` folder, a pipeline
    root, or the model folder ``unet/`` of a root (its sibling ``scheduler/``); None when
    there is none."""
    path = Path(path)
    if path.is_file():
        return path if path.name == SCHEDULER_CONFIG else None
    for folder in (path, path / "scheduler", path.parent / "scheduler"):
        if (folder / SCHEDULER_CONFIG).is_file():
            return folder / SCHEDULER_CONFIG
    return None


def diffusion_config_from_scheduler(path: str | os.PathLike) -> DiffusionConfig:
    """The `DiffusionConfig` of a diffusers scheduler config (see the module docstring); a
    FileNotFoundError when `path` has none, a ValueError for a setting vidiff cannot follow."""
    file = find_scheduler_config(path)
    if file is None:
        raise FileNotFoundError(f"no {SCHEDULER_CONFIG} in or beside {str(path)!r}")
    return _mapped(read_json(file), file)


def _mapped(raw: dict, file: Path) -> DiffusionConfig:
    if raw.get("trained_betas") is not None:
        raise ValueError(f"{file}: trained_betas (an explicit beta list) is not supported")
    if raw.get("rescale_betas_zero_snr"):
        raise ValueError(f"{file}: rescale_betas_zero_snr is not supported")
    name = raw.get("beta_schedule", "linear")
    if name not in SCHEDULES:
        raise ValueError(f"{file}: beta_schedule {name!r} has no vidiff counterpart; "
                         f"supported: {', '.join(SCHEDULES)}")
    prediction = raw.get("prediction_type", "epsilon")
    if prediction not in PREDICTIONS:
        raise ValueError(f"{file}: prediction_type {prediction!r} is not one of "
                         f"{', '.join(PREDICTIONS)}")
    timesteps = int(raw.get("num_train_timesteps", 1000))
    kwargs = {}
    if SCHEDULES[name] != "cosine":  # vidiff scales these betas by 1000 / T: undo it
        undo = timesteps / 1000.0
        kwargs = {"beta_start": float(raw.get("beta_start", 1e-4)) * undo,
                  "beta_end": float(raw.get("beta_end", 0.02)) * undo}
    return DiffusionConfig(SCHEDULES[name], timesteps, PREDICTIONS[prediction], kwargs)
