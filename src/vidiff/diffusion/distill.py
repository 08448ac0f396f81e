"""Distillation targets for any noising path: progressive distillation (Salimans & Ho 2022,
algorithm 2), distilled guidance (Meng et al. 2023) and consistency distillation (Song et al.
2023).

A student that takes k deterministic steps is taught to land, in one of its steps, where two
of the teacher's land. With x_t = a x0 + s eps, the deterministic DDIM step from (a, s) to
(a', s') given an estimate x0_hat is (Song et al. 2021, eq. 12 with sigma = 0)

    x' = a' x0_hat + (s' / s) (x_t - a x0_hat),

the same for DDPM's variance-preserving path and for rectified flow (a = 1 - t, s = t: then it
is the Euler step x_t + (t' - t) v). Two teacher steps t -> t' -> t'' give x''; the x0 that
makes the student's single step t -> t'' land on x'' solves the step for x0_hat:

    x0_target = (x'' - (s'' / s) x_t) / (a'' - (s'' / s) a)        (Salimans & Ho, alg. 2)

(at the last step, s'' = 0 and a'' = 1, the target is x'' itself). The student's grid is
every other point of the teacher's (`halve`): DDPM's "trailing" respacing and the flow's
grids nest, so a student of k steps evaluates exactly the teacher's even times.

Consistency distillation teaches the student the map from any point of the teacher's
deterministic trajectory to that trajectory's end, f(x_{t_i}, t_i) = x0 (Song et al. 2023,
eq. 7): with one teacher step x_{t_i} -> x^_{t_{i+1}} the target is the student's own
(stop-gradient) f(x^_{t_{i+1}}, t_{i+1}), and at the last step the step's landing itself
(f(x, 0) = x, the boundary condition). A student that holds f exactly samples, in one call,
the end of the teacher's N-step trajectory from the same x_T (`consistency_target`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vidiff.diffusion.process import Grid, NoisingProcess

__all__ = ["METHODS", "coefficients", "consistency_loss", "consistency_target", "ddim_to", "halve",
           "landing_x0", "progressive_loss", "progressive_target"]

# the distillation methods (distill.method, `vidiff distill --method`): the targets here,
# their objectives in `vidiff.train.student`
METHODS = ("progressive", "guided", "consistency")

X0Fn = Callable[[torch.Tensor, int], torch.Tensor]  # (x at grid time i, i) -> x0 estimate


def ddim_to(x: torch.Tensor, x0: torch.Tensor, a, s, a_next, s_next) -> torch.Tensor:
    """The deterministic DDIM step from x = a x0 + s eps (s > 0) to (a', s') given `x0`
    (Song et al. 2021, eq. 12, sigma = 0): a' x0 + (s' / s) (x - a x0). The coefficients are
    floats or per-sample tensors broadcastable against x."""
    return a_next * x0 + (s_next / s) * (x - a * x0)


def landing_x0(x: torch.Tensor, x_target: torch.Tensor, a, s, a_next, s_next) -> torch.Tensor:
    """The x0 whose DDIM step from x at (a, s) lands on `x_target` at (a', s') (Salimans &
    Ho 2022, algorithm 2: x~ = (z'' - (s''/s) z) / (a'' - (s''/s) a))."""
    ratio = s_next / s
    return (x_target - ratio * x) / (a_next - ratio * a)


def halve(grid: Grid) -> Grid:
    """The student's grid: the teacher's even-indexed times (N = 2k evaluations -> k), ending
    at clean data like every grid."""
    if len(grid) % 2:
        raise ValueError(f"a grid of {len(grid)} steps cannot be halved (it needs an even "
                         f"number)")
    return Grid(grid.t[0::2], grid.a[0::2], grid.s[0::2])


def coefficients(grid: Grid, i, like: torch.Tensor):
    """(a, s) at grid index `i`: floats for an int, (B, 1, ...) tensors for a (B,) index."""
    if isinstance(i, int):
        return grid.a[i], grid.s[i]
    shape = (-1,) + (1,) * (like.ndim - 1)
    a = torch.tensor(grid.a, dtype=like.dtype, device=like.device)[i].view(shape)
    s = torch.tensor(grid.s, dtype=like.dtype, device=like.device)[i].view(shape)
    return a, s


def progressive_target(x0_of: X0Fn, x: torch.Tensor, teacher: Grid, j) -> torch.Tensor:
    """The student's x0 target at its step j (teacher times 2j -> 2j + 1 -> 2j + 2) for x at
    teacher time 2j: two teacher DDIM steps from x, then `landing_x0`. `j`: an int, or a
    (B,) index, one per sample; `x0_of(x, i)` is the teacher's x0 estimate at its grid
    time(s) i (with guidance, if it is guided)."""
    i = 2 * j
    (a0, s0), (a1, s1), (a2, s2) = (coefficients(teacher, k, x) for k in (i, i + 1, i + 2))
    mid = ddim_to(x, x0_of(x, i), a0, s0, a1, s1)  # teacher step 1
    end = ddim_to(mid, x0_of(mid, i + 1), a1, s1, a2, s2)  # teacher step 2
    return landing_x0(x, end, a0, s0, a2, s2)


def progressive_loss(student, process: NoisingProcess, x0_of: X0Fn, teacher: Grid,
                     x0: torch.Tensor, j: torch.Tensor, noise: torch.Tensor,
                     cond: dict) -> torch.Tensor:
    """Per-sample loss (B,) of progressive distillation at the student's steps `j` (B,):
    x_t = a x0 + s eps at teacher time 2j (eps from the noise prior), the target
    `progressive_target` expressed in the process's prediction (v: the x0 error weighted by
    SNR + 1, the paper's choice; a flow: the velocity), the mean squared error of
    `student(x_t, network time, **cond)` against it."""
    a, s = coefficients(teacher, 2 * j, x0)
    xt = a * x0 + s * noise
    with torch.no_grad():
        target_x0 = progressive_target(x0_of, xt, teacher, j)
    t = teacher.t.to(x0.device)[2 * j]  # (B,) the process times
    target = process.target(target_x0, (xt - a * target_x0) / s, t)
    out = student(xt, process.network_time(t), **cond)
    return (out.float() - target.float()).square().flatten(1).mean(1)


def consistency_target(x0_of: X0Fn, f_of: X0Fn, x: torch.Tensor, teacher: Grid,
                       i: torch.Tensor) -> torch.Tensor:
    """The consistency target at the teacher's grid times `i` (B,) for x there: one teacher
    DDIM / Euler step to t_{i+1} (`x0_of`, the teacher's x0), then `f_of` there, the
    target network's consistency function (Song et al. 2023, eq. 7); at the last step
    (t_{i+1} clean) the landing itself, f(x, clean) = x."""
    a, s = coefficients(teacher, i, x)
    a1, s1 = coefficients(teacher, i + 1, x)
    landed = ddim_to(x, x0_of(x, i), a, s, a1, s1)  # x^_{t_{i+1}}
    last = (i + 1 == len(teacher)).view((-1,) + (1,) * (x.ndim - 1))
    inner = torch.clamp(i + 1, max=len(teacher) - 1)  # the clean end has no network time
    return torch.where(last, landed, f_of(landed, inner))


def consistency_loss(student, process: NoisingProcess, x0_of: X0Fn, teacher: Grid,
                     x0: torch.Tensor, i: torch.Tensor, noise: torch.Tensor,
                     cond: dict, target=None) -> torch.Tensor:
    """Per-sample loss (B,) of consistency distillation at the teacher's grid times `i`
    (B,): x_t = a x0 + s eps (eps from the noise prior), the student's consistency function
    f(x_t, t_i) (its x0 estimate) against `consistency_target` with `target` (the target
    network theta^-, an EMA of the student, Song et al. 2023 eq. 8; None: the student
    itself), without gradient, squared error on x0 (uniform weight, as LCM)."""
    a, s = coefficients(teacher, i, x0)
    xt = a * x0 + s * noise
    t_of = teacher.t.to(x0.device)

    def f_with(net):
        def f_of(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            ak, sk = coefficients(teacher, k, x)
            out = net(x, process.network_time(t_of[k]), **cond).to(x.dtype)
            return process.x0_eps(out, x, ak, sk)[0]

        return f_of

    with torch.no_grad():
        theta_minus = f_with(student if target is None else target)
        goal = consistency_target(x0_of, theta_minus, xt, teacher, i)
    f = f_with(student)(xt, i)
    return (f.float() - goal.float()).square().flatten(1).mean(1)
