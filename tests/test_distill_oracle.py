"""Progressive distillation's target, exact: with the Gaussian oracle as teacher, a student
that outputs the target at each of its k steps reproduces the teacher's 2k-step DDIM (DDPM)
and Euler (flow) trajectory under every noise prior, to float64 precision; a linear student
fitted to the targets reaches the data covariance within the teacher's own discretization
error plus the sampling error of the covariance estimate."""

import math
from statistics import NormalDist

import pytest
import torch
from _tolerance import ONE_OP, assert_close_to
from oracle_utils import moving_pattern_covariance

from vidiff.diffusion.ddpm import Diffusion
from vidiff.diffusion.distill import coefficients, halve, progressive_target
from vidiff.diffusion.flow import FlowMatching
from vidiff.diffusion.oracle import GaussianOracle, noise_covariance
from vidiff.diffusion.priors import noise_prior
from vidiff.sampling.samplers import sample_ddim

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (1, 4, 2, 2)  # (C, F, H, W), D = 16
D = math.prod(SHAPE)
C = moving_pattern_covariance(SHAPE)
PRIORS = ["independent", "mixed", "progressive", "decomposed"]


def teacher_of(process_name, prior):
    """(process, teacher grid of 2k steps, x0_of(x, i) of the oracle on that grid)."""
    if process_name == "ddpm":
        process = Diffusion("cosine", 1000, "v")
        grid = process.grid(16, "trailing")
    else:
        process = FlowMatching()
        grid = process.grid(16)
    oracle = GaussianOracle(C, SHAPE, Diffusion("cosine", 1000, "v"), prior)
    net = oracle.velocity if process_name == "flow" else GaussianOracle(C, SHAPE, process,
                                                                           prior)

    def x0_of(x, i):  # i: an int or one grid index per sample
        t = grid.t[i].expand(x.shape[0])
        return process.x0_eps(net(x, t), x, *coefficients(grid, i, x))[0]

    return process, grid, x0_of


def run(denoise, x, grid):
    return sample_ddim(denoise, x, grid, noise=lambda: None)


@pytest.mark.parametrize("process_name", ["ddpm", "flow"])
@pytest.mark.parametrize("prior_name", PRIORS)
def test_a_student_on_the_target_lands_where_two_teacher_steps_land(process_name, prior_name):
    prior = noise_prior(prior_name)
    process, grid, x0_of = teacher_of(process_name, prior)
    student = halve(grid)
    if process_name == "ddpm":  # trailing respacing nests: the student's own 8-step grid
        assert torch.equal(student.t, process.grid(8, "trailing").t)
    else:
        assert_close_to(student.t, process.grid(8).t, k=ONE_OP)  # float32 times of float64
    x = prior.sample((6, *SHAPE), generator=torch.Generator().manual_seed(0),
                     dtype=torch.float64)
    seen_teacher, seen_student = [], []

    def teacher(x, i):
        seen_teacher.append(x)
        x0 = x0_of(x, i)
        return x0, None if grid.s[i] == 0 else (x - grid.a[i] * x0) / grid.s[i]

    def pupil(x, j):
        seen_student.append(x)
        x0 = progressive_target(x0_of, x, grid, j)
        return x0, (x - student.a[j] * x0) / student.s[j]

    out_teacher = run(teacher, x, grid)
    out_student = run(pupil, x, student)
    scale = float(out_teacher.abs().max())
    assert torch.allclose(out_student, out_teacher, rtol=0, atol=1e-12 * scale)
    for j, xs in enumerate(seen_student):  # every step of the student: an even teacher point
        assert torch.allclose(xs, seen_teacher[2 * j], rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("prior_name", ["independent", "progressive"])
def test_a_linear_student_reaches_the_data_covariance(prior_name):
    """At each of its k steps the student is a linear map x0 = M_j x fitted by least squares
    to the targets of n draws of x_t. The targets are linear in x_t (the oracle is), so the fit
    recovers the two-step map (to rounding); its samples then have the covariance of the
    teacher's 2k-step trajectory, Sigma = Phi S Phi^T, whose distance to the data covariance
    C is the teacher's discretization error. The bound: |S_hat - C| <= |Sigma - C| + z SE,
    SE the standard error of a Gaussian sample covariance (Bonferroni z, p < 0.001)."""
    prior = noise_prior(prior_name)
    process, grid, x0_of = teacher_of("ddpm", prior)
    student = halve(grid)
    g = torch.Generator().manual_seed(1)
    maps = []
    for j in range(len(student)):  # fit M_j on x_t = a x0 + s eps, the training marginal
        x0 = torch.linalg.cholesky(C) @ torch.randn(D, 4 * D, generator=g, dtype=torch.float64)
        eps = prior.sample((4 * D, *SHAPE), generator=g, dtype=torch.float64)
        xt = student.a[j] * x0.T.reshape(-1, *SHAPE) + student.s[j] * eps
        target = progressive_target(x0_of, xt, grid, j).reshape(4 * D, D)
        maps.append(torch.linalg.lstsq(xt.reshape(4 * D, D), target).solution.T)  # (D, D)

    def pupil(x, j):
        x0 = (x.reshape(x.shape[0], D) @ maps[j].T).reshape(x.shape)
        return x0, (x - student.a[j] * x0) / student.s[j]

    s = noise_covariance(prior, SHAPE)
    basis = torch.linalg.cholesky(s).T.reshape(D, *SHAPE)  # x_0 = Phi x_T: Sigma = Y^T Y
    y = run(pupil, basis, student).reshape(D, D)
    sigma = y.T @ y
    teacher = run(lambda x, i: (x0_of(x, i), (x - grid.a[i] * x0_of(x, i)) / grid.s[i]),
                  basis, grid).reshape(D, D)
    assert torch.allclose(sigma, teacher.T @ teacher, rtol=0, atol=1e-9)  # the fit is exact
    n = 4000
    draws = run(pupil, prior.sample((n, *SHAPE), generator=g, dtype=torch.float64),
                student).reshape(n, D)
    # the teacher's 16 first-order steps shrink the variance (18% of it at most, here)
    assert_covariance_near_data(draws, sigma)


def assert_covariance_near_data(draws: torch.Tensor, sigma: torch.Tensor) -> None:
    """The covariance of `draws` (n, D), samples of a zero-mean Gaussian of covariance
    `sigma`, is within |sigma - C| + z SE of the data covariance C entrywise (the sampling
    error of a Gaussian covariance estimate, z from a Bonferroni bound over the D (D + 1) / 2
    entries, p < 0.001), and sigma's own error is under 20% of C's smallest variance."""
    n = draws.shape[0]
    s_hat = draws.T @ draws / n
    se = ((sigma.diag()[:, None] * sigma.diag()[None] + sigma**2) / n).sqrt()
    z = NormalDist().inv_cdf(1 - 0.001 / (2 * D * (D + 1) / 2))
    bias = (sigma - C).abs()
    assert ((s_hat - C).abs() <= bias + z * se).all()
    assert float(bias.max()) < 0.2 * float(C.diag().min())
    assert math.isfinite(float(s_hat.sum()))


@pytest.mark.parametrize("process_name", ["ddpm", "flow"])
def test_the_loss_is_zero_for_a_student_that_predicts_the_target(process_name):
    """A batch of mixed student steps: each sample's coefficients and network time are its
    own (a student computing the target from its inputs scores 0, one step off does not)."""
    from vidiff.diffusion.distill import progressive_loss

    prior = noise_prior("progressive")
    process, grid, x0_of = teacher_of(process_name, prior)
    student_grid = halve(grid)
    g = torch.Generator().manual_seed(2)
    x0 = (torch.linalg.cholesky(C) @ torch.randn(D, 8, generator=g, dtype=torch.float64)
          ).T.reshape(8, *SHAPE)
    noise = prior.sample((8, *SHAPE), generator=g, dtype=torch.float64)
    j = torch.tensor([0, 7, 3, 3, 1, 6, 2, 5])
    times = student_grid.t.to(torch.float64)

    def student(shift):
        def net(xt, t_net):
            t = t_net.double() / (1000.0 if process_name == "flow" else 1.0)
            k = (times[None] - t[:, None]).abs().argmin(1)  # the step of each sample
            k = (k + shift).clamp(max=len(student_grid) - 1)
            a = torch.tensor(student_grid.a, dtype=xt.dtype)[k].view(-1, 1, 1, 1, 1)
            s = torch.tensor(student_grid.s, dtype=xt.dtype)[k].view(-1, 1, 1, 1, 1)
            target = progressive_target(x0_of, xt, grid, k)
            return process.target(target, (xt - a * target) / s, student_grid.t[k])
        return net

    exact = progressive_loss(student(0), process, x0_of, grid, x0, j, noise, {})
    assert float(exact.max()) < 1e-20
    off = progressive_loss(student(1), process, x0_of, grid, x0, j, noise, {})
    assert float(off[j < 7].min()) > 1e-6
