"""An imported model's schedule from its scheduler_config.json equals diffusers' own."""

import json
import math

import pytest
import torch
from _tolerance import ONE_OP, assert_close_to

from vidiff.diffusion.ddpm import Diffusion, DiffusionConfig
from vidiff.models.diffusers_schedule import (
    diffusion_config_from_scheduler,
    dynamic_flow_shift,
    find_scheduler_config,
    shift_for_tokens,
)

diffusers = pytest.importorskip("diffusers")


def _write(root, **config):
    (root / "scheduler").mkdir(parents=True, exist_ok=True)
    file = root / "scheduler" / "scheduler_config.json"
    file.write_text(json.dumps({"_class_name": "DDPMScheduler", **config}))
    return file


def _mapped(root, cls, seq_len=None, **config):
    """diffusion_config_from_scheduler of a `cls` config holding `config`."""
    _write(root, _class_name=cls, **config)
    return diffusion_config_from_scheduler(root, seq_len=seq_len)


@pytest.mark.parametrize("timesteps", [1000, 500])
@pytest.mark.parametrize("schedule,start,end", [("linear", 1e-4, 0.02),
                                                ("scaled_linear", 0.00085, 0.012),
                                                ("squaredcos_cap_v2", 1e-4, 0.02)])
def test_schedules_equal_diffusers(tmp_path, schedule, start, end, timesteps):
    config = {"beta_schedule": schedule, "beta_start": start, "beta_end": end,
              "num_train_timesteps": timesteps, "prediction_type": "v_prediction"}
    _write(tmp_path, **config)
    ours = diffusion_config_from_scheduler(tmp_path)  # a pipeline root
    assert ours.timesteps == timesteps and ours.prediction == "v"
    theirs = diffusers.DDPMScheduler(**config)
    abar = Diffusion.from_config(ours).alphas_cumprod
    torch.testing.assert_close(abar.float(), theirs.alphas_cumprod, rtol=1e-5, atol=1e-7)


def test_predictions_places_and_refusals(tmp_path):
    file = _write(tmp_path, beta_schedule="scaled_linear", prediction_type="epsilon")
    (tmp_path / "unet").mkdir()
    for place in (tmp_path, tmp_path / "scheduler", file, tmp_path / "unet"):
        assert find_scheduler_config(place) == file
    assert diffusion_config_from_scheduler(tmp_path / "unet").schedule == "quadratic"
    _write(tmp_path, prediction_type="sample")
    assert diffusion_config_from_scheduler(tmp_path).prediction == "x0"
    for bad, match in [({"beta_schedule": "exp"}, "beta_schedule 'exp' has no vidiff"),
                       ({"trained_betas": [0.1, 0.2]}, "trained_betas"),
                       ({"rescale_betas_zero_snr": True}, "rescale_betas_zero_snr"),
                       ({"prediction_type": "flow"}, "prediction_type 'flow'")]:
        _write(tmp_path, **bad)
        with pytest.raises(ValueError, match=match):
            diffusion_config_from_scheduler(tmp_path)
    with pytest.raises(FileNotFoundError, match="no scheduler_config.json"):
        diffusion_config_from_scheduler(tmp_path / "a" / "elsewhere")


@pytest.mark.parametrize("cls,config", [
    ("CogVideoXDDIMScheduler", {"prediction_type": "v_prediction"}),  # snr_shift_scale: 3.0
    ("CogVideoXDDIMScheduler", {"prediction_type": "v_prediction", "snr_shift_scale": 1.0,
                                "rescale_betas_zero_snr": True}),
    ("CogVideoXDPMScheduler", {"prediction_type": "v_prediction", "snr_shift_scale": 2.0,
                               "rescale_betas_zero_snr": True, "num_train_timesteps": 500}),
    ("DDIMScheduler", {"prediction_type": "sample", "rescale_betas_zero_snr": True}),
    ("DDPMScheduler", {"prediction_type": "v_prediction", "beta_schedule": "scaled_linear",
                       "beta_start": 0.00085, "beta_end": 0.012,
                       "rescale_betas_zero_snr": True, "snr_shift_scale": 1.0}),
])
def test_snr_shift_and_zero_terminal_snr_equal_diffusers(tmp_path, cls, config):
    ours = _mapped(tmp_path, cls, **config)
    shift = config.get("snr_shift_scale", 3.0 if cls.startswith("CogVideoX") else 1.0)
    assert ours.snr_shift == shift
    assert ours.zero_terminal_snr == config.get("rescale_betas_zero_snr", False)
    cogvideox = cls.startswith("CogVideoX")  # only CogVideoX's schedulers take the shift
    read = {k: v for k, v in config.items() if k != "snr_shift_scale" or cogvideox}
    theirs = getattr(diffusers, cls)(**read).alphas_cumprod
    abar = Diffusion.from_config(ours).alphas_cumprod
    assert_close_to(abar.float(), theirs.float(), k=ONE_OP)  # diffusers' tables: float32 / 64
    assert (abar[-1] == 0) == ours.zero_terminal_snr


def test_flow_schedulers_mapped(tmp_path):
    wan = _mapped(tmp_path, "FlowMatchEulerDiscreteScheduler", shift=5.0)
    assert wan == DiffusionConfig(process="flow", flow_shift=5.0, flow_grid="diffusers")
    unipc = _mapped(tmp_path, "UniPCMultistepScheduler", prediction_type="flow_prediction",
                    use_flow_sigmas=True, flow_shift=3.0, beta_schedule="linear")
    assert unipc == DiffusionConfig(process="flow", flow_shift=3.0, flow_grid="unipc")
    ltx = {"base_image_seq_len": 1024, "max_image_seq_len": 4096, "base_shift": 0.95,
           "max_shift": 2.05, "shift_terminal": 0.1, "use_dynamic_shifting": True}
    from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift

    mu = calculate_shift(2048, 1024, 4096, 0.95, 2.05)
    config = _mapped(tmp_path, "FlowMatchEulerDiscreteScheduler", seq_len=2048, **ltx)
    assert config.flow_grid == "ltx" and config.flow_shift_terminal == 0.1
    assert config.flow_shift == pytest.approx(math.exp(mu), rel=1e-12)
    assert dynamic_flow_shift(2048, {**ltx, "time_shift_type": "linear"}) == pytest.approx(mu)
    assert dynamic_flow_shift(256, {}) == pytest.approx(math.exp(0.5))  # diffusers' defaults
    unresolved = _mapped(tmp_path, "FlowMatchEulerDiscreteScheduler", **ltx)  # no seq_len
    assert unresolved.flow_shift == 1.0 and unresolved.flow_dynamic_shift["max_shift"] == 2.05
    assert shift_for_tokens(unresolved, 2048) == config  # resolved per clip, as LTXPipeline
    with pytest.raises(ValueError, match="seq_len = 0 must be a positive integer"):
        dynamic_flow_shift(0, ltx)


@pytest.mark.parametrize("cls,config,match", [
    ("FlowMatchEulerDiscreteScheduler", {"use_karras_sigmas": True}, "use_karras_sigmas"),
    ("FlowMatchEulerDiscreteScheduler", {"use_exponential_sigmas": True},
     "use_exponential_sigmas"),
    ("FlowMatchEulerDiscreteScheduler", {"use_beta_sigmas": True}, "use_beta_sigmas"),
    ("FlowMatchEulerDiscreteScheduler", {"invert_sigmas": True}, "invert_sigmas"),
    ("FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": True}, "stochastic_sampling"),
    ("FlowMatchEulerDiscreteScheduler", {"num_train_timesteps": 500}, "num_train_timesteps"),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 0.0}, "flow shift=0.0 must be > 0"),
    ("FlowMatchEulerDiscreteScheduler", {"use_dynamic_shifting": True,
                                         "time_shift_type": "cubic"}, "time_shift_type"),
    ("UniPCMultistepScheduler", {"prediction_type": "flow_prediction"}, "use_flow_sigmas"),
    ("UniPCMultistepScheduler", {"prediction_type": "flow_prediction", "use_flow_sigmas": True,
                                 "final_sigmas_type": "sigma_min"}, "final_sigmas_type"),
    ("FlowMatchHeunDiscreteScheduler", {}, "FlowMatchHeunDiscreteScheduler's flow schedule"),
    ("DPMSolverMultistepScheduler", {"use_flow_sigmas": True}, "is not mapped"),
    ("DDIMScheduler", {"snr_shift_scale": 3.0}, "snr_shift_scale = 3.0, but DDIMScheduler"),
    ("CogVideoXDDIMScheduler", {"snr_shift_scale": -1.0, "prediction_type": "v_prediction"},
     "snr_shift = -1.0 must be > 0"),
])
def test_video_scheduler_refusals(tmp_path, cls, config, match):
    with pytest.raises(ValueError, match=match):
        _mapped(tmp_path, cls, seq_len=1024, **config)
