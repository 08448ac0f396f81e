"""Flow matching: the path, its training times, and Euler / Heun driven by the exact velocity
of Gaussian data under every noise prior.

For x0 ~ N(0, C) and x_t = (1 - t) x0 + t eps, eps ~ N(0, S) (S the prior's covariance), the
exact velocity E[eps - x0 | x_t] is linear in x_t (`GaussianOracle.velocity`), so Euler and
Heun are linear maps x_0 = M x_1 of the prior noise and the covariance they produce is
exactly M S M^T (propagated through the basis, no sampling). As in test_samplers_oracle.py:

1. discretization bias: M S M^T, whitened by C, is within BIAS of the identity. Whitened,
   the ODE decouples into dz/dt = z (s - a lam) / (a^2 lam + s^2) per eigenvalue lam of
   L^-1 C L^-T (a = 1 - t, s = t), whose exact flow takes variance 1 to lam; Euler's product
   of (1 + h f(t_i)) misses it by O(h) (first order), Heun's by O(h^2). The bounds are about
   1.5x the errors measured on this data (Euler 100 steps: 0.033-0.038 over the priors;
   Heun 25: 0.012-0.014; Heun 25 evaluates the model 49 times, Euler 100 times;
   DPM-Solver++(2M) in the flow's parameterisation, 20 calls: 0.015-0.019, where Euler's 20
   calls give 0.15-0.18).
2. implementation: N samples of `vidiff.sample(..., diffusion=FlowMatching(), sampler=...)`
   (the noise from the prior) have a sample covariance within z SE of M S M^T entrywise (the
   exact standard error of a Gaussian sample covariance, Bonferroni over the D(D+1)/2
   entries: a chance failure has probability < 0.001).
"""

import math
from statistics import NormalDist

import pytest
import torch
from _tolerance import ONE_OP, assert_close_to
from oracle_utils import moving_pattern_covariance

import vidiff
from vidiff.diffusion.flow import FlowMatching, resolution_shift
from vidiff.diffusion.oracle import noise_covariance

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (2, 4, 2, 2)  # (C, F, H, W), D = 32
D = math.prod(SHAPE)
C = moving_pattern_covariance(SHAPE)
PRIORS = ["independent", "mixed", "progressive", "decomposed"]
# sampler, steps, bias bound
SAMPLERS = [("euler", 100, 0.06), ("heun", 25, 0.022), ("dpmpp_2m", 20, 0.03)]


def _oracle(prior):
    diffusion = vidiff.Diffusion(schedule="linear", timesteps=1000, prediction="eps")
    return vidiff.GaussianOracle(C, SHAPE, diffusion, prior)


def _whitened(sigma):
    chol = torch.linalg.cholesky(C)
    w = torch.linalg.solve_triangular(chol, sigma, upper=False)
    return torch.linalg.solve_triangular(chol, w.T, upper=False)


def exact_covariance(oracle, prior, sampler, steps, flow):
    s = noise_covariance(prior, SHAPE)
    basis = torch.linalg.cholesky(s).T.reshape(D, *SHAPE)  # row i = column i of L_S
    out = vidiff.sample(oracle.velocity, (D, *SHAPE), diffusion=flow, sampler=sampler,
                        steps=steps, x_T=basis, clip_x0=False, dtype=torch.float64)
    y = out.reshape(D, D)  # row i = M l_i
    return y.T @ y


def test_the_path_its_velocity_and_training_times():
    flow = FlowMatching(shift=3.0)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 2, 4, 4, generator=g), torch.randn(4, 3, 2, 4, 4, generator=g)
    t = torch.tensor([0.0, 0.25, 0.7, 1.0])
    xt = flow.q_sample(x0, t, eps)
    torch.testing.assert_close(xt[0], x0[0])
    torch.testing.assert_close(xt[3], eps[3])
    v = flow.target(x0, eps)
    x0_hat, eps_hat = flow.split(v, xt, t)  # the true velocity recovers both exactly
    assert_close_to(x0_hat, x0, ONE_OP)  # float32, |x0| up to 4: 1e-6 is a few roundings
    assert_close_to(eps_hat, eps, ONE_OP)
    # SD3's shift: t' = s t / (1 + (s - 1) t); 1/2 -> s / (1 + s); the grid runs 1 -> 0
    assert flow.shifted(torch.tensor(0.5)).item() == pytest.approx(0.75)
    grid = flow.times(4)
    assert grid[0] == 1.0 and grid[-1] == 0.0
    assert all(a > b for a, b in zip(grid, grid[1:], strict=False))
    assert resolution_shift(512 * 512) == 2.0
    # logit-normal times: median 1/2 before the shift, in (0, 1)
    times = FlowMatching().sample_t(20000, torch.Generator().manual_seed(1))
    assert 0 < times.min() and times.max() < 1 and abs(times.median().item() - 0.5) < 0.02
    uniform = FlowMatching(time_sampling="uniform").sample_t(20000,
                                                             torch.Generator().manual_seed(1))
    assert abs(uniform.mean().item() - 0.5) < 0.01
    with pytest.raises(ValueError, match="time_sampling"):
        FlowMatching(time_sampling="cosine")


@pytest.mark.parametrize("prior_name", PRIORS)
@pytest.mark.parametrize("sampler,steps,bias", SAMPLERS, ids=[s[0] for s in SAMPLERS])
def test_flow_sampler_reproduces_data_covariance(prior_name, sampler, steps, bias):
    prior = vidiff.noise_prior(prior_name)
    oracle = _oracle(prior)
    flow = FlowMatching()
    sigma = exact_covariance(oracle, prior, sampler, steps, flow)
    err = (_whitened(sigma) - torch.eye(D, dtype=torch.float64)).abs().max().item()
    assert err <= bias, f"{sampler} {steps} steps under {prior_name}: bias {err:.4f}"

    n = 4000
    g = torch.Generator().manual_seed(7)
    samples = vidiff.sample(oracle.velocity, (n, *SHAPE), diffusion=flow, prior=prior,
                            sampler=sampler, steps=steps, generator=g, clip_x0=False,
                            dtype=torch.float64)
    flat = samples.reshape(n, D)
    m = D * (D + 1) // 2
    z = NormalDist().inv_cdf(1 - 0.001 / (2 * m))
    diag = sigma.diagonal()
    assert (flat.mean(0).abs() <= z * (diag / n).sqrt()).all()
    cov = flat.T @ flat / n
    se = ((diag[:, None] * diag[None, :] + sigma**2) / n).sqrt()
    assert ((cov - sigma).abs() <= z * se).all()


def test_heun_converges_at_second_order_and_euler_at_first():
    prior = vidiff.noise_prior("progressive")
    oracle, flow = _oracle(prior), FlowMatching()
    errs = {}
    for sampler in ("euler", "heun"):
        for steps in (10, 20):
            sigma = exact_covariance(oracle, prior, sampler, steps, flow)
            errs[sampler, steps] = (_whitened(sigma) - torch.eye(D, dtype=torch.float64)
                                    ).abs().max().item()
    assert 1.6 < errs["euler", 10] / errs["euler", 20] < 2.5  # halving h halves the error
    assert 3.0 < errs["heun", 10] / errs["heun", 20] < 5.0  # ... and quarters Heun's


def test_the_loss_regresses_the_velocity_and_the_network_sees_1000_t():
    from vidiff.diffusion.losses import diffusion_loss

    seen = {}

    def net(xt, t, **cond):
        seen["t"] = t
        return torch.zeros_like(xt)

    flow = FlowMatching()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 3, 2, 4, 4, generator=g), torch.randn(3, 3, 2, 4, 4, generator=g)
    t = torch.tensor([0.1, 0.5, 0.9])
    loss = diffusion_loss(net, flow, x0, t, eps)
    torch.testing.assert_close(seen["t"], t * 1000)
    torch.testing.assert_close(loss, (eps - x0).square().flatten(1).mean(1))
    from vidiff.diffusion.losses import LossConfig

    with pytest.raises(ValueError, match="SNR weighting of DDPM's"):
        diffusion_loss(net, flow, x0, t, eps, LossConfig(weighting="min_snr"))


def test_a_flow_run_trains_samples_exports_and_refuses_what_it_cannot_do(tmp_path, capsys):
    from pathlib import Path

    import numpy as np
    from _train_helpers import TINY, cli_error

    from vidiff import Pipeline
    from vidiff.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "flow_balls.toml"
    out = tmp_path / "flow"
    tiny = [s for s in TINY if not s.startswith(("sample.sampler", "data.use_labels"))]
    assert main(["train", "-c", str(config), "--out", str(out), "--steps", "3", "--set",
                 *tiny, "data.num_images=1"]) == 0  # class-conditional, joint images
    pipe = Pipeline.from_pretrained(out)
    assert isinstance(pipe.diffusion, FlowMatching) and pipe.spec.sampling.sampler == "euler"
    assert pipe.spec.num_classes == 8  # guidance wraps the velocity function
    videos = pipe(2, generator=torch.Generator().manual_seed(0))  # a 3-step model's
    assert videos.abs().max() <= 1  # in [-1, 1] as promised: clip_x0 holds in the flow too
    npy = tmp_path / "s.npy"
    assert main(["sample", str(out), "-n", "2", "--sampler", "heun", "--steps", "3",
                 "--out", str(npy)]) == 0
    assert np.load(npy).shape == (2, 4, 16, 16, 3)
    exported = tmp_path / "exported"
    assert main(["export", str(out), str(exported)]) == 0
    g = [torch.Generator().manual_seed(2) for _ in range(2)]
    assert_close_to(Pipeline.from_pretrained(exported)(1, generator=g[0]),
                    pipe(1, generator=g[1]))
    err = cli_error(capsys, ["sample", str(out), "--sampler", "ddim", "--out",
                             str(tmp_path / "x.npy")])
    assert ("--sampler 'ddim': a flow-matching model samples with euler, heun, dpmpp_2m or "
            "consistency") in err
    for argv, frames in ((["extend", "--frames", "6"], 6), (["interpolate", "--factor", "2"], 7)):
        assert main([argv[0], str(out), "--input", str(npy), *argv[1:], "--steps", "3",
                     "--out", str(tmp_path / f"{argv[0]}.npy")]) == 0  # guidance in flow
        assert np.load(tmp_path / f"{argv[0]}.npy").shape == (2, frames, 16, 16, 3)
    small = tmp_path / "small.npy"
    np.save(small, np.load(npy)[:, :, ::2, ::2])  # 8x8: upsampled by guidance in the flow
    assert main(["upsample", str(out), "--input", str(small), "--steps", "3",
                 "--out", str(tmp_path / "u.npy")]) == 0
    assert np.load(tmp_path / "u.npy").shape == (2, 4, 16, 16, 3)
    assert main(["eval", "-c", str(out), "--num", "4", "--steps", "3", "-r",
                 "bouncing_balls", "--reference-num", "4", "--frames", "4", "--size", "16",
                 "--no-progress", "-o", str(tmp_path / "e.json")]) == 0
    assert "fvd_lite" in (tmp_path / "e.json").read_text()
    err = cli_error(capsys, ["eval", "-c", str(out), "--nll", "-r", "bouncing_balls"])
    assert "--nll: flow-matching models have no variational bound" in err
    for setting, words in (("sample.sampler=ddpm", "set sample.sampler"),
                           ("loss.weighting=min_snr", "loss.weighting"),
                           ("diffusion.flow_time=cosine", "time_sampling")):
        err = cli_error(capsys, ["train", "-c", str(config), "--out", str(tmp_path / "r"),
                                 "--set", *tiny, setting])
        assert words in err
