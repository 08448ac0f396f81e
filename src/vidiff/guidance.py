"""Guidance: wrappers that turn a denoiser into another denoiser, so every sampler can use them.

- `ClassifierFreeGuidance` (Ho & Salimans 2022): pred = pred_uncond + w (pred_cond - pred_uncond).
- `ReconstructionGuidance` (Ho et al. 2022, VDM section 3.1, eq. 7): conditional sampling of
  unknown frames x^b given known data x^a with an unconditional video model,
      xtilde^b = xhat^b - (w_r alpha_t / 2) grad_{z^b} ||x^a - xhat^a(z_t)||^2,
  plus the replacement method for the known part. With `weight=0` it is the replacement method
  alone, the baseline. An `operator` (e.g. a downsampling) takes the error through A(xhat), as
  for spatial super-resolution.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .diffusion import Diffusion

Denoiser = Callable[..., torch.Tensor]


def _repeat_cond(cond: dict) -> dict:
    """Every tensor condition stacked twice along the batch (for one batched CFG forward)."""
    return {k: torch.cat([v, v]) if torch.is_tensor(v) and v.dim() > 0 else v
            for k, v in cond.items()}


class ClassifierFreeGuidance:
    """A guided denoiser: scale 1 is the conditional model, 0 the unconditional one.

    The wrapped denoiser must accept `cond_mask` (bool (B,), False = the learned null
    condition), as vidiff's U-Net does. Conditional and unconditional predictions come from
    one forward on a doubled batch (`batched=False` runs two forwards, for large batches).
    """

    def __init__(self, denoiser: Denoiser, scale: float, batched: bool = True):
        self.denoiser, self.scale, self.batched = denoiser, float(scale), batched

    def __call__(self, xt: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        if self.scale == 1.0:
            return self.denoiser(xt, t, **cond)
        batch = xt.shape[0]
        keep = torch.ones(batch, dtype=torch.bool, device=xt.device)
        if self.batched:
            out = self.denoiser(torch.cat([xt, xt]), torch.cat([t, t]),
                                **_repeat_cond(cond), cond_mask=torch.cat([keep, ~keep]))
            pred_cond, pred_uncond = out.chunk(2)  # each (B, ...)
        else:
            pred_cond = self.denoiser(xt, t, **cond, cond_mask=keep)
            pred_uncond = self.denoiser(xt, t, **cond, cond_mask=~keep)
        return pred_uncond + self.scale * (pred_cond - pred_uncond)  # Ho & Salimans eq. 6


class ReconstructionGuidance:
    """Sample the unknown part of a video consistently with known data (VDM eq. 7).

    known:    (B, C, F, H, W) the known values x^a (anything where `mask` is False), or, with
              an `operator`, the observation y = A(x) (e.g. a low-resolution video).
    mask:     bool, broadcastable to the video, True where x is known (e.g. the first frames);
              None with an operator (the whole video is guided).
    weight:   w_r; 0 gives the replacement method alone.
    operator: A, a differentiable map from the video to the observation (default identity).
    replace:  the replacement method on the known part: its x0 prediction is x^a itself, so
              the sampler's own state there stays a noised x^a, with the prior's noise.
    """

    def __init__(self, denoiser: Denoiser, diffusion: Diffusion, known: torch.Tensor,
                 mask: torch.Tensor | None = None, weight: float = 2.0,
                 operator: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 replace: bool = True):
        if mask is None and operator is None:
            raise ValueError("give a mask of the known entries, or an operator")
        self.denoiser, self.diffusion = denoiser, diffusion
        self.known, self.mask, self.weight = known, mask, float(weight)
        self.operator = operator if operator is not None else (lambda x: x)
        self.replace = replace and mask is not None

    def _x0_with_grad(self, xt, t, cond):
        """xhat(z_t) and grad_{z_t} ||x^a - A(xhat)||^2 (zero grad when weight is 0)."""
        if self.weight == 0:
            with torch.no_grad():
                x0, _ = self.diffusion.split(self.denoiser(xt, t, **cond), xt, t)
            return x0, None
        with torch.enable_grad():
            z = xt.detach().requires_grad_(True)
            x0, _ = self.diffusion.split(self.denoiser(z, t, **cond), z, t)
            residual = self.known - self.operator(x0)
            if self.mask is not None:
                residual = residual * self.mask
            (grad,) = torch.autograd.grad(residual.square().sum(), z)
        return x0.detach(), grad

    def __call__(self, xt: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        x0, grad = self._x0_with_grad(xt, t, cond)
        a, s = self.diffusion.alpha_sigma(t, xt)  # alpha_t = sqrt(abar_t), sigma_t, (B, 1, ...)
        if grad is not None:
            if self.mask is not None:
                grad = grad * ~self.mask  # the gradient with respect to z^b only
            x0 = x0 - (self.weight * a / 2) * grad  # VDM eq. 7
        if self.replace:
            x0 = torch.where(self.mask, self.known, x0)  # replacement: xhat^a = x^a
        eps = (xt - a * x0) / s
        pred = self.diffusion.prediction
        return eps if pred == "eps" else x0 if pred == "x0" else a * eps - s * x0
