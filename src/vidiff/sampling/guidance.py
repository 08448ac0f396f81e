"""Guidance: wrappers that turn a denoiser into another denoiser, so every sampler can use them.

- `ClassifierFreeGuidance` (Ho & Salimans 2022): pred = pred_uncond + w (pred_cond - pred_uncond).
- `GuidanceInput`: the same for a guidance-distilled model, whose input is w (one call).
- `ReconstructionGuidance` (Ho et al. 2022, VDM section 3.1, eq. 7): conditional sampling of
  unknown frames x^b given known data x^a with an unconditional video model,
      xtilde^b = xhat^b - (w_r alpha_t / 2) grad_{z^b} ||x^a - xhat^a(z_t)||^2,
  plus the replacement method for the known part. With `weight=0` it is the replacement method
  alone, the baseline. An `operator` (e.g. a downsampling) takes the error through A(xhat), as
  for spatial super-resolution.

Under a correlated noise prior (frame covariance S, `vidiff.diffusion.priors`) both are made
prior-aware. Whiten the frames with a Cholesky factor whose known frames come first,
y = L^-1 x: y^a depends on x^a alone and the noise of y is independent, so the plain method
applies to y exactly. Back in x this is (derivation in docs/CONDITIONAL.md):
  replacement  x0^b += S_ba S_aa^-1 (x^a - xhat^a)   (the unknown frames' noise follows the
               known frames' noise as the prior's conditional mean does),
  guidance     the gradient step is preconditioned by S_b|a = S_bb - S_ba S_aa^-1 S_ab.
With independent noise (S = I) both reduce to VDM's formulas.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vidiff.cond import Cond
from vidiff.diffusion.predictions import eps_from_x0
from vidiff.diffusion.priors import NoisePrior, apply_frames
from vidiff.diffusion.process import NoisingProcess

Denoiser = Callable[..., torch.Tensor]
# w_r of VDM eq. 7 unless told: the default of ReconstructionGuidance, ConditionalSampler and
# vidiff extend / interpolate (vidiff upsample doubles it: docs/CONDITIONAL.md)
RECONSTRUCTION_WEIGHT = 2.0


class ClassifierFreeGuidance:
    """A guided denoiser: scale 1 is the conditional model, 0 the unconditional one.

    The wrapped denoiser must accept `cond_mask` (bool (B,), False = the learned null
    condition), as vidiff's U-Net does. Conditional and unconditional predictions come from
    one forward on a doubled batch (`batched=False` runs two forwards, for large batches).
    """

    def __init__(self, denoiser: Denoiser, scale: float | torch.Tensor, batched: bool = True):
        self.denoiser, self.batched = denoiser, batched
        # a float, or one scale per sample (B,) (a guided distillation's teacher)
        self.scale = scale if isinstance(scale, torch.Tensor) else float(scale)

    def __call__(self, xt: torch.Tensor, t: torch.Tensor, **keywords) -> torch.Tensor:
        scale = self.scale
        if isinstance(scale, torch.Tensor):
            scale = scale.to(xt.device, xt.dtype).view((-1,) + (1,) * (xt.ndim - 1))
        elif scale == 1.0:
            return self.denoiser(xt, t, **keywords)
        cond = Cond.of(keywords)
        batch = xt.shape[0]
        keep = torch.ones(batch, dtype=torch.bool, device=xt.device)
        if cond.cond_mask is not None:  # samples already asked for the null condition
            keep = cond.cond_mask.clone()
        if self.batched:
            both = cond.repeat(2).replace(cond_mask=torch.cat([keep, torch.zeros_like(keep)]))
            out = self.denoiser(torch.cat([xt, xt]), torch.cat([t, t]), **both.kwargs())
            pred_cond, pred_uncond = out.chunk(2)  # each (B, ...)
        else:
            pred_cond = self.denoiser(xt, t, **cond.replace(cond_mask=keep).kwargs())
            pred_uncond = self.denoiser(
                xt, t, **cond.replace(cond_mask=torch.zeros_like(keep)).kwargs())
        return pred_uncond + scale * (pred_cond - pred_uncond)  # Ho & Salimans eq. 6


class GuidanceInput:
    """A guidance-distilled denoiser at `scale`: the scale is the network's input
    (`Cond.guidance`), so a guided prediction costs one call instead of classifier-free
    guidance's two (Meng et al. 2023, stage one; `vidiff distill --method guided`). A call
    that gives its own `guidance` keeps it."""

    def __init__(self, denoiser: Denoiser, scale: float):
        self.denoiser, self.scale = denoiser, float(scale)

    def __call__(self, xt: torch.Tensor, t: torch.Tensor, **keywords) -> torch.Tensor:
        cond = Cond.of(keywords)
        if cond.guidance is None:
            scales = torch.full((xt.shape[0],), self.scale, device=xt.device)
            cond = cond.replace(guidance=scales)
        return self.denoiser(xt, t, **cond.kwargs())


def conditional_frame_maps(cov: torch.Tensor, known: torch.Tensor):
    """(gain, precond), each (F, F) float64, for the frame covariance `cov` (F, F) of the noise
    and the known frames `known` (bool (F,)):

    gain[b, a]    = S_ba S_aa^-1, the regression of the unknown frames' noise on the known ones';
    precond[b, b] = S_bb - S_ba S_aa^-1 S_ab, the conditional covariance of the unknown frames;
    zero elsewhere. With no known frame, precond = S.
    """
    cov = cov.double()
    a, b = known.nonzero().flatten(), (~known).nonzero().flatten()
    gain, precond = torch.zeros_like(cov), torch.zeros_like(cov)
    reg = torch.linalg.solve(cov[a][:, a], cov[a][:, b]).T if len(a) else cov[b][:, a]  # (Fb, Fa)
    gain[b[:, None], a[None, :]] = reg  # S_ba S_aa^-1 (S_aa is symmetric)
    precond[b[:, None], b[None, :]] = cov[b][:, b] - reg @ cov[a][:, b]  # Schur complement
    return gain, precond


def frame_mask(mask: torch.Tensor, frames: int) -> torch.Tensor | None:
    """The known frames (bool (F,)) of a mask broadcastable to (B, C, F, H, W) that is the same
    for every batch item, channel and pixel; None for any other mask."""
    if mask.dim() != 5:
        return None
    mask = mask.expand(*mask.shape[:2], frames, *mask.shape[3:])
    per_frame = mask.movedim(2, 0).reshape(mask.shape[2], -1)  # (F, B*C*H*W)
    if not (per_frame == per_frame[:, :1]).all():
        return None
    return per_frame[:, 0].cpu()


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
    prior:    the noise prior the sampler draws from (default independent). A correlated prior
              needs a mask of whole frames (the same for every pixel and batch item).
    """

    def __init__(self, denoiser: Denoiser, diffusion: NoisingProcess, known: torch.Tensor,
                 mask: torch.Tensor | None = None, weight: float = RECONSTRUCTION_WEIGHT,
                 operator: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 replace: bool = True, prior: NoisePrior | None = None):
        if mask is None and operator is None:
            raise ValueError("give a mask of the known entries, or an operator")
        self.denoiser, self.diffusion = denoiser, diffusion
        self.known, self.mask, self.weight = known, mask, float(weight)
        self.operator = operator if operator is not None else (lambda x: x)
        self.replace = replace and mask is not None
        self.prior = prior
        self._maps: dict = {}

    def _frame_maps(self, frames: int):
        """(gain, precond) of `conditional_frame_maps` for the prior; None for white noise."""
        if frames not in self._maps:
            eye = torch.eye(frames, dtype=torch.float64)
            cov = eye if self.prior is None else self.prior.frame_covariance(frames)
            maps = None
            if not torch.equal(cov, eye):
                known = (torch.zeros(frames, dtype=torch.bool) if self.mask is None
                         else frame_mask(self.mask, frames))
                if known is None:
                    raise ValueError(f"a correlated noise prior ({self.prior!r}) needs a mask "
                                     "of whole known frames, the same for every pixel and video")
                maps = conditional_frame_maps(cov, known)
            self._maps[frames] = maps
        return self._maps[frames]

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

    def _guided_x0(self, x0, grad, a, maps):
        """VDM eq. 7 on the unknown part, preconditioned by S_b|a under a correlated prior.
        For any path x_t = a x0 + s eps (DDPM's a = sqrt(abar), rectified flow's a = 1 - t)
        Tweedie gives xhat = (x_t + s^2 score) / a and q(x^a | x_t) ~ N(xhat^a, s^2 / a^2),
        so the conditional score's correction of xhat is -(a / 2) grad, as in DDPM."""
        if maps is not None:
            grad = apply_frames(maps[1], grad)  # S_b|a grad^b, zero on the known frames
        elif self.mask is not None:
            grad = grad * ~self.mask  # the gradient with respect to z^b only
        return x0 - (self.weight * a / 2) * grad  # VDM eq. 7

    def _replaced_x0(self, x0, maps):
        """The replacement method: xhat^a = x^a, and the prior-aware shift of xhat^b."""
        if maps is not None:
            x0 = x0 + apply_frames(maps[0], (self.known - x0) * self.mask)  # S_ba S_aa^-1 d^a
        return torch.where(self.mask, self.known, x0)

    def __call__(self, xt: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        x0, grad = self._x0_with_grad(xt, t, cond)
        maps = self._frame_maps(xt.shape[2]) if xt.dim() == 5 else None
        a, s = self.diffusion.alpha_sigma(t, xt)  # a_t, s_t of the process, (B, 1, ...)
        if grad is not None:
            x0 = self._guided_x0(x0, grad, a, maps)
        if self.replace:
            x0 = self._replaced_x0(x0, maps)
        return self.diffusion.target(x0, eps_from_x0(xt, x0, a, s), t)  # the model's type
