"""One noising-process interface for DDPM and rectified flow (`vidiff.diffusion.process`):
the grid and its coefficients, the conversions, one sampler registry whose samplers serve both
processes, and clip_x0 in the flow."""

import re
from pathlib import Path

import pytest
import torch
from _tolerance import ONE_OP, assert_close_to

import vidiff
from vidiff.diffusion.process import NoisingProcess, build_process
from vidiff.sampling.samplers import SAMPLERS, sampler_steps

PROCESSES = [vidiff.Diffusion(timesteps=100), vidiff.FlowMatching(shift=3.0)]
IDS = ["ddpm", "flow"]


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_the_grid_carries_the_paths_coefficients_and_ends_on_clean_data(process):
    assert isinstance(process, NoisingProcess)
    grid = process.grid(7, sampler="ddim" if "ddim" in process.samplers else "euler")
    assert len(grid) == 7 and len(grid.a) == len(grid.s) == 8
    assert (grid.a[-1], grid.s[-1]) == (1.0, 0.0)  # clean data after the last step
    assert all(s > s_next for s, s_next in zip(grid.s, grid.s[1:], strict=False))
    x = torch.zeros(7, 1, 2, 2, 2, dtype=torch.float64)
    a, s = process.alpha_sigma(grid.t, x)  # the grid's coefficients are the process's own
    torch.testing.assert_close(a.flatten(), torch.tensor(grid.a[:-1], dtype=torch.float64))
    torch.testing.assert_close(s.flatten(), torch.tensor(grid.s[:-1], dtype=torch.float64))
    # x_t = a x0 + s eps; split(target) gives (x0, eps) back, whatever the prediction
    g = torch.Generator().manual_seed(0)
    x0, eps = (torch.randn(x.shape, generator=g, dtype=torch.float64) for _ in range(2))
    xt = process.q_sample(x0, grid.t, eps)
    torch.testing.assert_close(xt, a * x0 + s * eps)
    x0_hat, eps_hat = process.split(process.target(x0, eps, grid.t), xt, grid.t)
    torch.testing.assert_close(x0_hat, x0)
    torch.testing.assert_close(eps_hat, eps)
    times = process.sample_t(5, generator=torch.Generator().manual_seed(1))
    assert times.shape == (5,)


def test_build_process_gives_each_process_and_names_a_bad_one():
    assert isinstance(build_process(vidiff.DiffusionConfig()), vidiff.Diffusion)
    flow = build_process(vidiff.DiffusionConfig(process="flow", flow_shift=2.0))
    assert isinstance(flow, vidiff.FlowMatching) and flow.shift == 2.0
    with pytest.raises(ValueError, match="diffusion.process='vp'.*ddpm, flow"):
        build_process(vidiff.DiffusionConfig(process="vp"))


def test_one_registry_and_each_process_names_the_samplers_that_apply():
    assert set(SAMPLERS.names()) == {"ddpm", "ddim", "dpmpp_2m", "euler", "heun", "consistency"}
    ddpm, flow = PROCESSES
    shape = (1, 1, 2, 2, 2)
    with pytest.raises(ValueError, match=r"sampler 'ddpm': a flow-matching model samples with "
                                         r"euler, heun, dpmpp_2m or consistency$"):
        vidiff.sample(lambda x, t: x, shape, diffusion=flow, sampler="ddpm")
    with pytest.raises(ValueError, match="sampler 'heun': euler and heun sample flow"):
        vidiff.sample(lambda x, t: x, shape, diffusion=ddpm, sampler="heun")
    with pytest.raises(ValueError, match="unknown sampler 'plms'; valid names"):
        vidiff.sample(lambda x, t: x, shape, diffusion=ddpm, sampler="plms")
    with pytest.raises(ValueError, match="option 'eta' does not apply to sampler 'euler'"):
        vidiff.sample(lambda x, t: x, shape, diffusion=flow, sampler="euler", eta=0.5)
    with pytest.raises(ValueError, match="spacing='logsnr' respaces DDPM's timesteps"):
        vidiff.sample(lambda x, t: x, shape, diffusion=flow, sampler="euler", spacing="logsnr")
    assert sampler_steps(flow, "heun") == 25 and sampler_steps(ddpm, "ddpm") == 100
    assert sampler_steps(ddpm, "dpmpp_2m", 7) == 7


def test_euler_is_ddims_step_on_ddpm_and_the_flows_step_in_the_flow():
    """One Euler for both: x' = a' x0 + s' eps, which is DDIM (eta 0) on DDPM's grid and
    x + (t' - t) v in the flow."""
    ddpm, flow = PROCESSES
    den = lambda x, t: 0.3 * x  # noqa: E731
    x = torch.randn(2, 1, 3, 2, 2, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)  # float64: the two forms agree to its rounding
    grid = ddpm.grid(6, sampler="ddim")
    noise = lambda: None  # noqa: E731
    d = lambda y, i: ddpm.split(den(y, grid.t[i].expand(2)), y, grid.t[i].expand(2))  # noqa: E731
    euler, ddim = SAMPLERS.get("euler").fn, SAMPLERS.get("ddim").fn
    assert torch.equal(euler(d, x, grid, noise), ddim(d, x, grid, noise))
    grid = flow.grid(5)
    v = lambda y, i: flow.split(den(y, grid.t[i]), y, grid.t[i].expand(2))  # noqa: E731
    out, ref = euler(v, x, grid, noise), x
    for i in range(len(grid)):
        ref = ref + (grid.s[i + 1] - grid.s[i]) * den(ref, None)  # t = s in the flow
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12 * ref.abs().max().item() + 1e-15)


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m"])
def test_flow_sampling_clips_x0_and_its_result_to_the_data_range(sampler):
    """A velocity whose x0 estimate is 3 everywhere (x0 = x_t - t v): the flow's samplers land
    on the clamped estimate 1 with clip_x0 (the default; data in [-1, 1]) and on 3 without."""
    flow = vidiff.FlowMatching()

    def velocity(x, t):  # x0_hat = x - t v = 3; finite at t = 1, never called at t = 0
        return (x - 3.0) / t.to(x.dtype).view(-1, 1, 1, 1, 1)

    shape, g = (2, 3, 4, 8, 8), torch.Generator().manual_seed(0)
    clipped = vidiff.sample(velocity, shape, diffusion=flow, sampler=sampler, steps=6,
                            generator=g)
    free = vidiff.sample(velocity, shape, diffusion=flow, sampler=sampler, steps=6,
                         generator=g, clip_x0=False)
    assert_close_to(clipped, torch.ones_like(clipped), k=ONE_OP)  # float32 roundings of 1
    torch.testing.assert_close(free, torch.full_like(free, 3.0), atol=1e-5, rtol=0)
    wild = vidiff.sample(lambda x, t: 40 * torch.randn_like(x), shape, diffusion=flow,
                         sampler=sampler, steps=6, generator=g)
    assert wild.abs().max() <= 1.0  # whatever the network does, the promised range holds


def test_no_process_branches_outside_the_process_classes():
    """Samplers, guidance, the loss, the pipeline, the commands and the trainer go through
    the `NoisingProcess` interface: no `is_flow`, no isinstance test on FlowMatching, no
    comparison with the "velocity" prediction outside diffusion.py / flow.py / process.py."""
    src = Path(vidiff.__file__).parent
    pattern = re.compile(r"is_flow|isinstance\([^)]*FlowMatching|[\"']velocity[\"']")
    own = {"diffusion.py", "flow.py", "process.py"}
    hits = [f"{p.relative_to(src)}:{n}" for p in sorted(src.rglob("*.py")) if p.name not in own
            for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
