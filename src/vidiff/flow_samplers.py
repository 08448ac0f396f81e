"""Samplers of flow-matching models: Euler and Heun on dx/dt = v, from t = 1 to t = 0.

Every sampler has the signature `sampler(velocity, x, times, noise, callback=None)`:
  velocity(x, t) -> v   the model's velocity at float time t (a python float);
  x                     the starting noise x_1, a draw from the noise prior;
  times                 the grid 1 = t_0 > t_1 > ... > t_N = 0 (`FlowMatching.times`);
  noise()               a fresh prior draw (unused by these deterministic ODE samplers; the
                        signature is the one every sampler shares).
`sample_flow` builds them from a velocity function, a `FlowMatching` and a noise prior; it is
what `vidiff.sample` runs when its `diffusion` is a `FlowMatching`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .cond import Cond
from .flow import FlowMatching
from .priors import NoisePrior, noise_prior
from .registry import Registry

__all__ = ["FLOW_DEFAULT_STEPS", "FLOW_SAMPLERS", "sample_euler", "sample_flow", "sample_heun"]

FLOW_SAMPLERS: Registry = Registry("flow sampler")
FLOW_DEFAULT_STEPS = {"euler": 50, "heun": 25}
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


@torch.no_grad()
def sample_flow(velocity_fn: Callable[..., torch.Tensor], shape: Sequence[int], *,
                flow: FlowMatching, prior: NoisePrior | None = None, sampler: str = "euler",
                steps: int | None = None, generator: torch.Generator | None = None,
                num_images: int = 0, cond: Cond | dict | None = None,
                x_T: torch.Tensor | None = None, callback=None,
                device: torch.device | str | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Samples of `shape` from a flow model: `velocity_fn(xt, t, **cond)` with t float (B,)
    in [0, 1]; x_1 is a draw of `prior` (default independent) with `generator`."""
    sample_fn = FLOW_SAMPLERS.get(sampler)
    prior = prior if prior is not None else noise_prior("independent")
    times = flow.times(steps or FLOW_DEFAULT_STEPS[sampler])
    if device is None:
        device = generator.device if generator is not None else "cpu"

    def noise() -> torch.Tensor:
        return prior.sample(shape, generator=generator, num_images=num_images, device=device,
                            dtype=dtype)

    x = noise() if x_T is None else x_T.to(device=device, dtype=dtype)
    cond = Cond.of(cond)
    cond = cond.replace(num_images=num_images) if num_images else cond
    keywords = cond.kwargs()

    def velocity(xt: torch.Tensor, t: float) -> torch.Tensor:
        tt = torch.full((shape[0],), t, device=device, dtype=torch.float32)
        return velocity_fn(xt, tt, **keywords).to(xt.dtype)

    return sample_fn(velocity, x, times, noise, callback=callback)
