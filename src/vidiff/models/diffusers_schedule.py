"""The training schedule of a diffusers model, from its ``scheduler/scheduler_config.json``.

>>> config = diffusion_config_from_scheduler("stable-diffusion-v1-5")   # root or scheduler/
>>> config        # DiffusionConfig(schedule='quadratic', timesteps=1000, prediction='eps', ...)

An imported model is fine-tuned and sampled on the schedule it was trained with.

DDPM schedulers (DDPM, DDIM, PNDM, CogVideoX's ...): diffusers' ``beta_schedule`` maps to
vidiff's schedules exactly (``linear`` -> linear, ``scaled_linear`` (latent diffusion's) ->
quadratic, ``squaredcos_cap_v2`` -> cosine), ``beta_start`` / ``beta_end`` and
``num_train_timesteps`` carry over, and ``prediction_type`` maps epsilon / v_prediction /
sample to eps / v / x0. vidiff's linear and quadratic schedules keep their shape for any T by
scaling the betas by 1000 / T; diffusers' do not, so the betas are given pre-divided by that
factor. ``rescale_betas_zero_snr`` -> ``zero_terminal_snr``; CogVideoX's schedulers'
``snr_shift_scale`` (3.0 when the file leaves it out, as diffusers' default) -> ``snr_shift``.
(diffusers' Euler, DPM-Solver and UniPC schedulers sample a zero-terminal-SNR schedule with
abar_T = 2^-24 instead of 0, for their own arithmetic; vidiff's samplers take abar_T = 0.)

Flow schedulers (Wan 2.1, LTX-Video): ``FlowMatchEulerDiscreteScheduler`` -> process "flow"
with ``flow_shift`` = ``shift``, grid "diffusers" (its ``set_timesteps(N)``, as WanPipeline
calls it) and ``flow_shift_terminal`` = ``shift_terminal``; with ``use_dynamic_shifting`` the
shift depends on the clip's latent token count (`dynamic_flow_shift`, the ``seq_len`` keyword)
and the grid is "ltx" (the sigmas linspace(1, 1/N, N) that LTXPipeline passes).
``UniPCMultistepScheduler`` with ``prediction_type = "flow_prediction"`` and
``use_flow_sigmas`` (what the Wan 2.1 folders ship) -> process "flow" with ``flow_shift`` =
``flow_shift`` and grid "unipc" (UniPC's flow sigmas); vidiff samples it with its own euler,
heun or dpmpp_2m on that grid, not with UniPC's multistep corrector (and passes the network
1000 t, where UniPC passes int(1000 t)).

`tests/test_diffusers_schedule.py` and `tests/test_video_schedules.py` check the cumulative
alphas and the sampling grids against diffusers' schedulers. Settings vidiff has no
counterpart for are refused, named.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

from vidiff.diffusion.ddpm import DiffusionConfig
from vidiff.diffusion.flow import TRAIN_STEPS
from vidiff.diffusion.process import build_process
from vidiff.diffusion.schedules import SPACINGS
from vidiff.utils.config_io import read_json

__all__ = ["SCHEDULER_CONFIG", "diffusion_config_from_scheduler", "dynamic_flow_shift",
           "find_scheduler_config", "scheduler_spacing", "shift_for_tokens"]

SCHEDULER_CONFIG = "scheduler_config.json"
SCHEDULES = {"linear": "linear", "scaled_linear": "quadratic", "squaredcos_cap_v2": "cosine"}
PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
# the schedulers that read snr_shift_scale, and its default there (diffusers 0.42)
SNR_SHIFT_CLASSES = {"CogVideoXDDIMScheduler": 3.0, "CogVideoXDPMScheduler": 3.0}
# the betas of a file that leaves them out: each class's __init__ defaults
BETA_DEFAULTS = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
COGVIDEOX_BETAS = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
FLOW_EULER = "FlowMatchEulerDiscreteScheduler"
UNIPC = "UniPCMultistepScheduler"
# flow settings that reshape diffusers' sigmas or their sampling in ways vidiff does not follow
FLOW_REFUSED = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
                "invert_sigmas", "stochastic_sampling")
# calculate_shift's defaults (pipeline_ltx.py), which the scheduler's __init__ shares
SHIFT_DEFAULTS = {"base_image_seq_len": 256, "max_image_seq_len": 4096, "base_shift": 0.5,
                  "max_shift": 1.15}


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


def diffusion_config_from_scheduler(path: str | os.PathLike, *,
                                    seq_len: int | None = None) -> DiffusionConfig:
    """The `DiffusionConfig` of a diffusers scheduler config (see the module docstring); a
    FileNotFoundError when `path` has none, a ValueError for a setting vidiff cannot follow.

    `seq_len`: the latent token count of the clips to sample (frames x height x width of the
    latents) for a flow scheduler with ``use_dynamic_shifting`` (LTX-Video), whose shift
    depends on it (`dynamic_flow_shift`); None leaves ``flow_shift`` at 1 until
    `shift_for_tokens` resolves it (the config keeps the dynamic settings either way)."""
    file = find_scheduler_config(path)
    if file is None:
        raise FileNotFoundError(f"no {SCHEDULER_CONFIG} in or beside {str(path)!r}")
    config = _mapped(read_json(file), file, seq_len)
    try:
        build_process(config)  # every mapped value checked here, named by the file
    except ValueError as err:
        raise ValueError(f"{file}: {err}") from None
    return config


def scheduler_spacing(path: str | os.PathLike, diffusion: DiffusionConfig) -> str | None:
    """How the scheduler at `path` respaces DDPM's steps for sampling (its
    ``timestep_spacing``: CogVideoX's "trailing"), for `diffusion`, the config mapped from
    it; None for a flow or without one vidiff has."""
    file = find_scheduler_config(path)
    if file is None or diffusion.process != "ddpm":
        return None
    spacing = read_json(file).get("timestep_spacing")
    return spacing if spacing in SPACINGS else None


def shift_for_tokens(config: DiffusionConfig, seq_len: int) -> DiffusionConfig:
    """`config` with its dynamic shift (``flow_dynamic_shift``, LTX-Video's) resolved for
    clips of `seq_len` latent tokens (f h w), as LTXPipeline does for each call; `config`
    itself without one."""
    if not config.flow_dynamic_shift:
        return config
    return replace(config, flow_shift=dynamic_flow_shift(seq_len, config.flow_dynamic_shift))


def dynamic_flow_shift(seq_len: int, scheduler_config: dict) -> float:
    """The SD3 shift equal to a flow scheduler's dynamic time shift for `seq_len` latent
    tokens: mu = calculate_shift(seq_len, base_image_seq_len, max_image_seq_len, base_shift,
    max_shift) (pipeline_ltx.py), then exp(mu) for ``time_shift_type = "exponential"``, since
    e^mu / (e^mu + 1/t - 1) = s t / (1 + (s - 1) t) with s = e^mu, and mu itself for
    "linear" (mu / (mu + 1/t - 1), the same form with s = mu)."""
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len = {seq_len!r} must be a positive integer (latent tokens)")
    values = {}
    for key, default in SHIFT_DEFAULTS.items():
        value = scheduler_config.get(key, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"{key} = {value!r} must be a number for use_dynamic_shifting")
        values[key] = float(value)
    lo, hi = values["base_image_seq_len"], values["max_image_seq_len"]
    if hi == lo:
        raise ValueError(f"max_image_seq_len = base_image_seq_len = {lo:g}: no line to shift on")
    m = (values["max_shift"] - values["base_shift"]) / (hi - lo)  # calculate_shift
    mu = seq_len * m + (values["base_shift"] - m * lo)
    kind = scheduler_config.get("time_shift_type", "exponential")
    if kind == "exponential":
        return math.exp(mu)
    if kind == "linear":
        if not mu > 0:
            raise ValueError(f"time_shift_type 'linear' with mu = {mu:g} <= 0 for seq_len "
                             f"{seq_len}: no shift")
        return mu
    raise ValueError(f"time_shift_type {kind!r} is not one of exponential, linear")


# -- the mappings ------------------------------------------------------------------------------
def _mapped(raw: dict, file: Path, seq_len: int | None) -> DiffusionConfig:
    name = raw.get("_class_name", "")
    flow_keys = raw.get("use_flow_sigmas") or raw.get("prediction_type") == "flow_prediction"
    if name == FLOW_EULER:
        return _flow(raw, file, seq_len, float(raw.get("shift", 1.0)), "diffusers")
    if name == UNIPC and flow_keys:
        for key, want in (("prediction_type", "flow_prediction"), ("use_flow_sigmas", True)):
            if raw.get(key) != want:
                raise ValueError(f"{file}: {key} = {raw.get(key)!r}: UniPC's flow schedule "
                                 f"needs prediction_type 'flow_prediction' and "
                                 f"use_flow_sigmas true together")
        if raw.get("final_sigmas_type", "zero") != "zero":
            raise ValueError(f"{file}: final_sigmas_type {raw['final_sigmas_type']!r}: vidiff's "
                             f"flow grid ends at t = 0 ('zero')")
        return _flow(raw, file, seq_len, float(raw.get("flow_shift", 1.0)), "unipc")
    if "FlowMatch" in name or flow_keys:
        raise ValueError(f"{file}: {name or 'this scheduler'}'s flow schedule is not mapped; "
                         f"vidiff maps {FLOW_EULER}'s and {UNIPC}'s (use_flow_sigmas)")
    return _ddpm(raw, file, name)


def _flow(raw: dict, file: Path, seq_len: int | None, shift: float,
          grid: str) -> DiffusionConfig:
    """A flow scheduler's config (module docstring)."""
    for key in FLOW_REFUSED:
        if raw.get(key):
            raise ValueError(f"{file}: {key} = {raw[key]!r} is not supported (vidiff's flow grid "
                             f"is the shifted linspace of diffusers' defaults)")
    steps = raw.get("num_train_timesteps", TRAIN_STEPS)
    if steps != TRAIN_STEPS:
        raise ValueError(f"{file}: num_train_timesteps = {steps!r}: diffusers gives the network "
                         f"sigma * {steps}, vidiff 1000 t; only {TRAIN_STEPS} is supported")
    if raw.get("use_dynamic_shifting"):
        try:
            shift = 1.0 if seq_len is None else dynamic_flow_shift(seq_len, raw)
        except ValueError as err:
            raise ValueError(f"{file}: {err}") from None
        grid = "ltx" if grid == "diffusers" else grid  # LTXPipeline's (and Flux's) sigmas
        dynamic = {k: raw.get(k, v) for k, v in {**SHIFT_DEFAULTS,
                                                  "time_shift_type": "exponential"}.items()}
    terminal = raw.get("shift_terminal")
    return DiffusionConfig(process="flow", flow_shift=shift, flow_grid=grid,
                           flow_shift_terminal=float(terminal) if terminal else None,
                           flow_dynamic_shift=dynamic if raw.get("use_dynamic_shifting") else {})


def _ddpm(raw: dict, file: Path, name: str) -> DiffusionConfig:
    """A DDPM scheduler's config (module docstring)."""
    if raw.get("trained_betas") is not None:
        raise ValueError(f"{file}: trained_betas (an explicit beta list) is not supported")
    raw = {**(COGVIDEOX_BETAS if name in SNR_SHIFT_CLASSES else BETA_DEFAULTS), **raw}
    schedule = raw["beta_schedule"]
    if schedule not in SCHEDULES:
        raise ValueError(f"{file}: beta_schedule {schedule!r} has no vidiff counterpart; "
                         f"supported: {', '.join(SCHEDULES)}")
    prediction = raw.get("prediction_type", "epsilon")
    if prediction not in PREDICTIONS:
        raise ValueError(f"{file}: prediction_type {prediction!r} is not one of "
                         f"{', '.join(PREDICTIONS)}")
    zero_terminal_snr = bool(raw.get("rescale_betas_zero_snr", False))
    if zero_terminal_snr and prediction == "epsilon":
        raise ValueError(f"{file}: rescale_betas_zero_snr with prediction_type 'epsilon': x0 "
                         f"from eps is undefined at abar_T = 0 (vidiff takes v_prediction or "
                         f"sample there)")
    if name in SNR_SHIFT_CLASSES:
        snr_shift = float(raw.get("snr_shift_scale", SNR_SHIFT_CLASSES[name]))
    else:
        snr_shift = raw.get("snr_shift_scale", 1.0)
        if snr_shift not in (None, 1, 1.0):
            raise ValueError(f"{file}: snr_shift_scale = {snr_shift!r}, but {name or 'this'} "
                             f"scheduler does not read it (only "
                             f"{' and '.join(SNR_SHIFT_CLASSES)} do): which one trained it?")
        snr_shift = 1.0
    timesteps = int(raw.get("num_train_timesteps", 1000))
    kwargs = {}
    if SCHEDULES[schedule] != "cosine":  # vidiff scales these betas by 1000 / T: undo it
        undo = timesteps / 1000.0
        kwargs = {"beta_start": float(raw["beta_start"]) * undo,
                  "beta_end": float(raw["beta_end"]) * undo}
    return DiffusionConfig(SCHEDULES[schedule], timesteps, PREDICTIONS[prediction], kwargs,
                           snr_shift=snr_shift, zero_terminal_snr=zero_terminal_snr)
