"""Consistency distillation's target, exact: with the Gaussian oracle as teacher, the end of
the teacher's deterministic trajectory, f*(x, t_i), is the target's fixed point under every
prior and for DDPM (DDIM on trailing timesteps) and flow (Euler) alike; one consistency step
with f* is the teacher's whole N-step trajectory; the loss is 0 for f* and not for the
teacher's own x0; a linear student fitted by least squares, from the last step back,
recovers f* and its one-step samples reach the data covariance within the teacher's
discretization error plus the sampling error."""


import pytest
import torch
from test_distill_oracle import PRIORS, SHAPE, C, D, assert_covariance_near_data, teacher_of

from vidiff.diffusion.distill import coefficients, consistency_loss, consistency_target, ddim_to
from vidiff.diffusion.oracle import noise_covariance
from vidiff.diffusion.priors import noise_prior
from vidiff.sampling.samplers import sample_consistency, sample_ddim

pytestmark = pytest.mark.usefixtures("one_thread")


def trajectory_end(x0_of, x, grid, i):
    """f*(x, t_i): the teacher's DDIM / Euler steps from grid index i (B,) to clean data."""
    for k in range(len(grid)):
        moving = (i <= k).view((-1,) + (1,) * (x.ndim - 1))
        stepped = ddim_to(x, x0_of(x, k), *grid.step(k))
        x = torch.where(moving, stepped, x)
    return x


def data(prior, n, seed):
    g = torch.Generator().manual_seed(seed)
    x0 = (torch.linalg.cholesky(C) @ torch.randn(D, n, generator=g, dtype=torch.float64)
          ).T.reshape(n, *SHAPE)
    return x0, prior.sample((n, *SHAPE), generator=g, dtype=torch.float64)


@pytest.mark.parametrize("process_name", ["ddpm", "flow"])
@pytest.mark.parametrize("prior_name", PRIORS)
def test_the_trajectory_end_is_the_fixed_point_and_one_step_samples_it(process_name,
                                                                        prior_name):
    prior = noise_prior(prior_name)
    process, grid, x0_of = teacher_of(process_name, prior)
    n = len(grid)
    x0, noise = data(prior, 8, 0)
    i = torch.tensor([0, n - 1, 3, 7, n - 2, 11, 1, 5])
    a, s = coefficients(grid, i, x0)
    xt = a * x0 + s * noise

    def f_star(x, k):
        return trajectory_end(x0_of, x, grid, k)

    want = f_star(xt, i)
    got = consistency_target(x0_of, f_star, xt, grid, i)
    scale = float(want.abs().max())
    assert torch.allclose(got, want, rtol=0, atol=1e-12 * scale)
    # one consistency step from x_T: the teacher's whole N-step trajectory
    x_T = prior.sample((6, *SHAPE), generator=torch.Generator().manual_seed(1),
                       dtype=torch.float64)
    first = torch.zeros(6, dtype=torch.long)
    one = process.grid(1, process.nested_spacing)
    assert torch.equal(one.t, grid.t[:1])  # the student's one time is the teacher's first
    student = sample_consistency(lambda x, j: (f_star(x, first), None), x_T, one,
                                 noise=lambda: None)
    teacher = sample_ddim(lambda x, k: (x0_of(x, k), (x - grid.a[k] * x0_of(x, k))
                                        / grid.s[k]), x_T, grid, noise=lambda: None)
    assert torch.allclose(student, teacher, rtol=0, atol=1e-12 * float(teacher.abs().max()))


def network_of(process, process_name, grid, x0_fn):
    """A network (x, network time) whose x0 at each sample's grid time is x0_fn(x, index)."""
    times = grid.t.to(torch.float64)

    def net(xt, t_net):
        t = t_net.double() / (1000.0 if process_name == "flow" else 1.0)
        k = (times[None] - t[:, None]).abs().argmin(1)
        a, s = coefficients(grid, k, xt)
        x0 = x0_fn(xt, k)
        return process.target(x0, (xt - a * x0) / s, grid.t[k])

    return net


@pytest.mark.parametrize("process_name", ["ddpm", "flow"])
def test_the_loss_is_zero_for_the_consistency_function_only(process_name):
    prior = noise_prior("mixed")
    process, grid, x0_of = teacher_of(process_name, prior)
    x0, noise = data(prior, 8, 2)
    i = torch.tensor([0, 15, 3, 3, 9, 6, 2, 12])
    exact = network_of(process, process_name, grid,
                       lambda x, k: trajectory_end(x0_of, x, grid, k))
    loss = consistency_loss(exact, process, x0_of, grid, x0, i, noise, {})
    assert float(loss.max()) < 1e-20
    # the teacher's own x0 is its trajectory's end only at its last step
    teacher = network_of(process, process_name, grid, lambda x, k: x0_of(x, k))
    loss = consistency_loss(teacher, process, x0_of, grid, x0, i, noise, {})
    assert float(loss[i == 15].max()) < 1e-20
    assert float(loss[i < 14].min()) > 1e-6


@pytest.mark.parametrize("prior_name", ["independent", "progressive"])
def test_a_linear_consistency_student_reaches_the_data_covariance(prior_name):
    """The student at grid time i is a linear map x0 = W_i x, fitted by least squares on
    draws of x_t = a x0 + s eps to its consistency target, from the last step back (each
    target uses the W_{i+1} already fitted, the stop-gradient target network). The targets
    are linear in x_t, so the fit recovers f* (the teacher's trajectory map); one step from
    x_T then has the covariance of the teacher's N-step trajectory, Sigma = Phi S Phi^T. The
    bound, as for progressive distillation: |S_hat - C| <= |Sigma - C| + z SE."""
    prior = noise_prior(prior_name)
    process, grid, x0_of = teacher_of("flow", prior)
    n_fit, maps = 4 * D, [None] * len(grid)

    def f_of(x, k):  # the fitted student (the last step's target never reads its own)
        flat = x.reshape(x.shape[0], D)
        out = torch.stack([flat[b] @ maps[int(k[b])].T if maps[int(k[b])] is not None
                           else torch.zeros(D, dtype=x.dtype) for b in range(x.shape[0])])
        return out.reshape(x.shape)

    for i in reversed(range(len(grid))):
        x0, eps = data(prior, n_fit, 10 + i)
        idx = torch.full((n_fit,), i)
        a, s = coefficients(grid, idx, x0)
        xt = a * x0 + s * eps
        target = consistency_target(x0_of, f_of, xt, grid, idx).reshape(n_fit, D)
        maps[i] = torch.linalg.lstsq(xt.reshape(n_fit, D), target).solution.T  # (D, D)
    s_cov = noise_covariance(prior, SHAPE)
    basis = torch.linalg.cholesky(s_cov).T.reshape(D, *SHAPE)  # x_0 = Phi x_T: Y^T Y
    y = (basis.reshape(D, D) @ maps[0].T)
    sigma = y.T @ y
    zero = torch.zeros(D, dtype=torch.long)
    phi = trajectory_end(x0_of, basis, grid, zero).reshape(D, D)
    assert torch.allclose(sigma, phi.T @ phi, rtol=0, atol=1e-9)  # the fit is f*
    n = 4000
    x_T = prior.sample((n, *SHAPE), generator=torch.Generator().manual_seed(5),
                       dtype=torch.float64)
    assert_covariance_near_data(x_T.reshape(n, D) @ maps[0].T, sigma)
