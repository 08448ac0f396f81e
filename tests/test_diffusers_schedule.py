"""An imported model's schedule from its scheduler_config.json equals diffusers' own."""

import json

import pytest
import torch

from vidiff.diffusion.ddpm import Diffusion
from vidiff.models.diffusers_schedule import (
    diffusion_config_from_scheduler,
    find_scheduler_config,
)

diffusers = pytest.importorskip("diffusers")


def _write(root, **config):
    (root / "scheduler").mkdir(parents=True, exist_ok=True)
    file = root / "scheduler" / "scheduler_config.json"
    file.write_text(json.dumps({"_class_name": "DDPMScheduler", **config}))
    return file


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
