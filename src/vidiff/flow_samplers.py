"""Samplers of flow-matching models: Euler, Heun and DPM-Solver++(2M) on dx/dt = v, from
t = 1 to t = 0.

Every sampler has the signature `sampler(velocity, x, times, noise, callback=None)`:
  velocity(x, t) -> v   the model's velocity at float time t (a python float);
  x                     the starting noise x_1, a draw from the noise prior;
  times                 the grid 1 = t_0 > t_1 > ... > t_N = 0 (`FlowMatching.times`);
  noise()               a fresh prior draw (unused by these deterministic ODE samplers; the
                        signature is the one every sampler shares).
`sample_flow` runs one from a velocity function and x_1; `vidiff.sample` draws x_1 from the
noise prior and calls it when its `diffusion` is a `FlowMatching`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .flow import FlowMatching
from .registry import Registry

__all__ = ["FLOW_DEFAULT_STEPS", "FLOW_SAMPLERS", "sample_euler", "sample_flow", "sample_heun"]

FLOW_SAMPLERS: Registry = Registry("flow sampler")
FLOW_DEFAULT_STEPS = {"euler": 50, "heun": 25, "dpmpp_2m": 20}
Velocity = Callable[[torch.Tensor, float], torch.Tensor]


@FLOW_SAMPLERS.register("euler")
def sample_euler(velocity: Velocity, x, times: Sequence[float], noise=None, callback=None):
    """Euler: x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i) (= DDIM, eta 0, in this flow)."""
    for i in range(len(times) - 1):
        v = velocity(x, times[i])
        x = x + (times[i + 1] - times[i]) * v
        if callback is not None:
            callback({"i": i, "t": times[i], "x": x, "v": v})
    return x


@FLOW_SAMPLERS.register("heun")
def sample_heun(velocity: Velocity, x, times: Sequence[float], noise=None, callback=None):
    """Heun's second-order method (Karras et al. 2022, algorithm 1 without churn): an Euler
    step, then the trapezoid of the two velocities; the last step (to t = 0) stays Euler."""
    for i in range(len(times) - 1):
        t, t_next = times[i], times[i + 1]
        v = velocity(x, t)
        x_euler = x + (t_next - t) * v
        if t_next > 0:
            x = x + (t_next - t) * 0.5 * (v + velocity(x_euler, t_next))
        else:
            x = x_euler
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "v": v})
    return x


@FLOW_SAMPLERS.register("dpmpp_2m")
def sample_dpmpp_2m(velocity: Velocity, x, times: Sequence[float], noise=None, callback=None):
    """DPM-Solver++(2M) (Lu et al. 2022, algorithm 2) in the flow's own parameterisation:
    alpha = 1 - t, sigma = t, lambda = log(alpha / sigma), x0 = x - t v, and
    x' = (sigma' / sigma) x - alpha' (exp(-h) - 1) D, h = lambda' - lambda,
    D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1}, r = h_{i-1} / h. The first step (from t = 1,
    where lambda = -inf) and the last (to t = 0) are first order: Euler's step."""
    x0_prev, h_prev = None, None
    for i in range(len(times) - 1):
        t, t_next = times[i], times[i + 1]
        v = velocity(x, t)
        x0 = x - t * v
        if t >= 1.0 or t_next <= 0.0:  # exp(-h) = 0 at t = 1; the step to t = 0 lands on x0
            x = t_next * x + (1 - t_next) * x0 if t >= 1.0 else x0
            h = math.inf
        else:
            h = math.log((1 - t_next) / t_next) - math.log((1 - t) / t)
            d = x0
            if x0_prev is not None and math.isfinite(h_prev):
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev  # Lu et al. alg. 2
            x = (t_next / t) * x - (1 - t_next) * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "v": v})
    return x


def sample_flow(velocity_fn: Callable[..., torch.Tensor], x: torch.Tensor,
                noise: Callable[[], torch.Tensor], *, flow: FlowMatching,
                sampler: str = "euler", steps: int | None = None, cond: dict | None = None,
                callback=None) -> torch.Tensor:
    """Integrate a flow model from x = x_1 (a draw of the noise prior; `noise()` draws more)
    to t = 0: `velocity_fn(xt, t, **cond)` with t float (B,) in [0, 1]. `vidiff.sample` draws
    x_1 and calls this when its `diffusion` is a `FlowMatching`."""
    sample_fn = FLOW_SAMPLERS.get(sampler)
    times = flow.times(steps or FLOW_DEFAULT_STEPS[sampler])
    keywords = cond or {}

    def velocity(xt: torch.Tensor, t: float) -> torch.Tensor:
        tt = torch.full((xt.shape[0],), t, device=xt.device, dtype=torch.float32)
        return velocity_fn(xt, tt, **keywords).to(xt.dtype)

    return sample_fn(velocity, x, times, noise, callback=callback)
