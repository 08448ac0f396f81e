"""The schedules and sampling grids of the video pipelines' diffusers schedulers, reproduced.

CogVideoX (CogVideoXDDIMScheduler: SNR shift, zero terminal SNR, v prediction, trailing) and
DDIMScheduler(rescale_betas_zero_snr): vidiff's ``ddim`` trajectory equals the scheduler's
loop. Wan 2.1 and LTX-Video (FlowMatchEulerDiscreteScheduler, UniPC's flow sigmas): vidiff's
flow grid equals the scheduler's ``sigmas``, its network time the scheduler's ``timesteps``,
and its ``euler`` trajectory the scheduler's loop. Zero terminal SNR (abar_T = 0) is handled
wherever vidiff divides by sqrt(abar) or takes a log-SNR, and refused for eps models.
"""

import json
import math

import numpy as np
import pytest
import torch
from _tolerance import ONE_OP, assert_close_to, assert_parity

import vidiff
from vidiff.diffusion.ddpm import Diffusion, DiffusionConfig
from vidiff.diffusion.flow import FlowMatching
from vidiff.diffusion.likelihood import quantize_256, vlb_terms
from vidiff.diffusion.losses import LossConfig, snr_weight
from vidiff.diffusion.process import build_process
from vidiff.diffusion.schedules import respace
from vidiff.modelio.spec import ModelSpec
from vidiff.models.diffusers_schedule import diffusion_config_from_scheduler
from vidiff.sampling.samplers import sample

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (2, 1, 2, 1, 3)  # (B, C, F, H, W): the trajectories' tiny clips
COGVIDEOX = {"_class_name": "CogVideoXDDIMScheduler", "beta_schedule": "scaled_linear",
             "beta_start": 0.00085, "beta_end": 0.012, "clip_sample": False,
             "prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
             "set_alpha_to_one": True, "timestep_spacing": "trailing"}  # CogVideoX-2b's
LTX = {"_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 1024,
       "base_shift": 0.95, "max_image_seq_len": 4096, "max_shift": 2.05, "shift": 1.0,
       "shift_terminal": 0.1, "use_dynamic_shifting": True}  # LTX-Video's
WAN_UNIPC = {"_class_name": "UniPCMultistepScheduler", "flow_shift": 3.0,
             "prediction_type": "flow_prediction", "use_flow_sigmas": True,
             "final_sigmas_type": "zero"}  # Wan 2.1's


def _config(tmp_path, raw, **keywords):
    """vidiff's DiffusionConfig of the scheduler config `raw`, through the file."""
    (tmp_path / "scheduler").mkdir(exist_ok=True)
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps(raw))
    return diffusion_config_from_scheduler(tmp_path, **keywords)


def _scheduler(raw):
    config = {k: v for k, v in raw.items() if k != "_class_name"}
    return getattr(diffusers, raw["_class_name"])(**config)


def _linear_model(seed=0):
    """A fixed deterministic network of (x, t): a linear map of x that depends on t too, so a
    wrong time or a wrong step shows."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 6, generator=g) * 0.3  # not diffusion noise

    def model(x, t):
        tb = t.float().view(-1, *([1] * (x.dim() - 1)))  # (B, 1, ...)
        return (x.reshape(x.shape[0], -1) @ w.T).view(x.shape) * (1 + tb / 1000) + tb / 1000

    return model


def _x_T(seed=1):
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))  # the noise x_T


# -- DDPM: CogVideoX and zero terminal SNR ------------------------------------------------------
@pytest.mark.parametrize("raw", [
    COGVIDEOX,
    {**COGVIDEOX, "snr_shift_scale": 1.0},  # CogVideoX-5b's
    {"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
     "beta_end": 0.012, "clip_sample": False, "prediction_type": "v_prediction",
     "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"},
], ids=["cogvideox-2b", "cogvideox-5b", "ddim-zero-snr"])
@pytest.mark.parametrize("steps", [4, 10])
def test_ddim_trajectory_equals_the_schedulers_loop(tmp_path, raw, steps):
    diffusion = build_process(_config(tmp_path, raw))
    theirs = _scheduler(raw)
    # float32 tolerance: DDIMScheduler's table is float32, CogVideoX's float64
    assert_close_to(diffusion.alphas_cumprod.float(), theirs.alphas_cumprod.float(), k=ONE_OP)
    assert diffusion.alphas_cumprod[-1] == 0 and diffusion.betas[-1] == 1  # abar_T = 0
    model, x_T = _linear_model(), _x_T()
    ours = sample(model, SHAPE, diffusion=diffusion, sampler="ddim", steps=steps,
                  spacing="trailing", clip_x0=False, x_T=x_T)
    theirs.set_timesteps(steps)
    assert respace(1000, steps, "trailing").tolist() == theirs.timesteps.tolist()
    x = x_T.clone()
    for t in theirs.timesteps:
        x = theirs.step(model(x, t.expand(SHAPE[0])), t, x).prev_sample
    assert torch.isfinite(ours).all()
    assert_parity(ours, x)


def test_zero_terminal_snr_everywhere_abar_is_divided_or_logged():
    with pytest.raises(ValueError, match="zero_terminal_snr needs prediction 'v' or 'x0'"):
        Diffusion("quadratic", 1000, "eps", zero_terminal_snr=True)
    diffusion = build_process(DiffusionConfig("quadratic", 50, "v", snr_shift=3.0,
                                              zero_terminal_snr=True))
    assert diffusion.snr(torch.tensor([49])).item() == 0
    # the SNR shift divides every SNR by 3 (before the rescale, which keeps abar_0)
    plain = Diffusion("quadratic", 50, "v")
    assert diffusion.snr(torch.tensor([0])).item() == pytest.approx(
        plain.snr(torch.tensor([0])).item() / 3, rel=1e-12)
    # log-SNR spacing reaches t = T-1 (log-SNR -inf) and stays strictly decreasing
    ts = respace(50, 8, "logsnr", diffusion.alphas_cumprod)
    assert ts[0] == 49 and ts[-1] == 0 and (ts[:-1] > ts[1:]).all()
    # the Gaussian oracle predicts v at abar = 0 without dividing by sqrt(abar): v = -x0 = 0
    cov = torch.eye(6, dtype=torch.float64) * 0.5
    oracle = vidiff.GaussianOracle(cov, SHAPE[1:], diffusion, vidiff.noise_prior("independent"))
    x = _x_T().double()
    t_last = torch.full((2,), 49, dtype=torch.int64)
    assert (oracle(x, t_last) == 0).all()  # a eps - s x0 = 0 - E[x0 | pure noise] = 0
    t_mid = torch.full((2,), 20, dtype=torch.int64)  # elsewhere: x0 as from eps
    assert_close_to(oracle.x0(x, t_mid), diffusion.predict_x0(x, t_mid, oracle.eps(x, t_mid)))
    for sampler, spacing in (("ddim", "trailing"), ("dpmpp_2m", None), ("ddpm", "trailing")):
        out = sample(oracle, SHAPE, diffusion=diffusion, sampler=sampler, steps=8,
                     spacing=spacing, clip_x0=False, x_T=x.float(), dtype=torch.float64,
                     generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(out).all() and out.abs().max() > 0, sampler
    weights = snr_weight(diffusion, torch.tensor([0, 49]), LossConfig("min_snr"))
    assert torch.isfinite(weights).all() and weights[1] == 0  # v: min(SNR, g) / (SNR + 1)
    clip = quantize_256(torch.rand(SHAPE, dtype=torch.float64) - 0.5)  # not diffusion noise
    terms = vlb_terms(oracle, diffusion, clip, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(terms["total"]).all() and (terms["prior"] == 0).all()


# -- flow: Wan 2.1 and LTX-Video ------------------------------------------------------------------
def _set(scheduler, raw, steps, seq_len):
    """The scheduler's sigmas as the pipeline sets them: WanPipeline set_timesteps(N);
    LTXPipeline sigmas = linspace(1, 1/N, N) and mu = calculate_shift(seq_len, ...)."""
    if not raw.get("use_dynamic_shifting"):
        return scheduler.set_timesteps(steps)
    from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift

    c = scheduler.config
    mu = calculate_shift(seq_len, c.base_image_seq_len, c.max_image_seq_len, c.base_shift,
                         c.max_shift)
    return scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)


GRIDS = [({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": s}, n, None)
         for s in (1.0, 3.0, 5.0) for n in (1, 4, 50)]
GRIDS += [(LTX, n, 8 * 16 * 16) for n in (2, 4, 50)]
GRIDS += [({**LTX, "time_shift_type": "linear", "shift_terminal": None}, 4, 3000)]


@pytest.mark.parametrize("raw,steps,seq_len", GRIDS)
def test_flow_grid_and_network_time_equal_the_schedulers(tmp_path, raw, steps, seq_len):
    flow = build_process(_config(tmp_path, raw, seq_len=seq_len))
    theirs = _scheduler(raw)
    _set(theirs, raw, steps, seq_len)
    ours = torch.tensor(flow.times(steps), dtype=torch.float32)  # (N + 1,) ending at 0
    assert_close_to(ours, theirs.sigmas, k=ONE_OP)
    # diffusers gives the network sigma * num_train_timesteps; vidiff 1000 t
    assert_close_to(flow.network_time(flow.grid(steps).t), theirs.timesteps, k=ONE_OP)


def test_unipc_flow_grid_is_wans():
    """Wan 2.1's UniPC flow sigmas, but the 1e-6 UniPC takes off t = 1 for its log (vidiff
    evaluates at t = 1) and the int timesteps UniPC passes (vidiff passes 1000 t)."""
    flow = FlowMatching(shift=3.0, time_grid="unipc")
    for steps in (1, 4, 50):
        theirs = _scheduler(WAN_UNIPC)
        theirs.set_timesteps(steps)
        ours = torch.tensor(flow.times(steps), dtype=torch.float32)
        torch.testing.assert_close(ours, theirs.sigmas, atol=2e-6, rtol=0)
        assert (flow.network_time(flow.grid(steps).t).floor() - theirs.timesteps).abs().max() <= 1


@pytest.mark.parametrize("raw,seq_len", [({"_class_name": "FlowMatchEulerDiscreteScheduler",
                                           "shift": 5.0}, None), (LTX, 4 * 8 * 8)])
@pytest.mark.parametrize("steps", [4, 12])
def test_euler_trajectory_equals_flow_match_euler(tmp_path, raw, seq_len, steps):
    flow = build_process(_config(tmp_path, raw, seq_len=seq_len))
    network = _linear_model(seed=2)  # called with the network time, 1000 t either way
    x_T = _x_T(seed=3)
    ours = sample(flow.denoiser_of(network), SHAPE, diffusion=flow, sampler="euler",
                  steps=steps, clip_x0=False, x_T=x_T)
    theirs = _scheduler(raw)
    _set(theirs, raw, steps, seq_len)
    x = x_T.clone()
    for t in theirs.timesteps:
        x = theirs.step(network(x, t.expand(SHAPE[0])), t, x).prev_sample
    assert_parity(ours, x)


def test_flow_defaults_and_terminal_steps():
    """The default grid is today's; a terminal stretch needs two steps (diffusers gives NaN)."""
    old = FlowMatching(shift=3.0).shifted(torch.linspace(1.0, 0.0, 9, dtype=torch.float64))
    assert FlowMatching(shift=3.0).times(8) == old.tolist()
    assert build_process(DiffusionConfig(process="flow")) == FlowMatching()
    stretched = FlowMatching(shift=2.0, time_grid="ltx", shift_terminal=0.1)
    assert stretched.times(3)[-2] == pytest.approx(0.1) and stretched.times(3)[0] == 1.0
    assert "nothing to stretch" in stretched.steps_problem(1)
    with pytest.raises(ValueError, match="nothing to stretch"):
        stretched.times(1)
    for bad, match in (({"time_grid": "karras"}, "flow grid='karras'"),
                       ({"shift_terminal": 1.0}, "shift_terminal=1.0 must be in")):
        with pytest.raises(ValueError, match=match):
            FlowMatching(**bad)


def test_spec_round_trip_carries_the_new_fields():
    for diffusion in (DiffusionConfig("quadratic", 1000, "v", snr_shift=3.0,
                                      zero_terminal_snr=True),
                      DiffusionConfig(process="flow", flow_shift=math.e, flow_grid="ltx",
                                      flow_shift_terminal=0.1)):
        again = ModelSpec.from_json(ModelSpec(diffusion=diffusion).to_json())
        assert again.diffusion == diffusion
        built = again.build_diffusion()
        if diffusion.process == "flow":
            assert built == FlowMatching(shift=math.e, time_grid="ltx", shift_terminal=0.1)
        else:
            assert built.alphas_cumprod[-1] == 0 and built.config == diffusion
    old = ModelSpec().to_dict()
    for key in ("snr_shift", "zero_terminal_snr", "flow_grid", "flow_shift_terminal"):
        del old["diffusion"][key]  # a spec written before these fields
    assert ModelSpec.from_dict(old).diffusion == DiffusionConfig()
