"""The training loss: DDPM's L_simple for any prediction type, with optional SNR weighting.

The loss knows nothing of the network or the noise: the caller draws t and the noise (from the
noise prior) and passes them in, so the same function serves every prior.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from vidiff.cond import Cond
from vidiff.diffusion.process import NoisingProcess

WEIGHTINGS = ("none", "min_snr")


@dataclass
class LossConfig:
    """Every default of the training loss lives here."""

    weighting: str = "none"  # none: L_simple; min_snr: Hang et al. 2023's min(SNR, gamma)
    min_snr_gamma: float = 5.0  # gamma of min-SNR weighting (their recommended value)


def snr_weight(diffusion: NoisingProcess, t: torch.Tensor, config: LossConfig) -> torch.Tensor:
    """Per-sample loss weight (B,) float32 for the configured weighting.

    min-SNR (Hang et al. 2023, eq. 8-10): the eps-loss weight is min(SNR, gamma) / SNR; for an
    x0 target it is min(SNR, gamma), for a v target min(SNR, gamma) / (SNR + 1), so that all
    three prediction types give the same weighting of the x0 error. A process lists the
    weightings that apply to it (`NoisingProcess.loss_weightings`; min-SNR is DDPM's).
    """
    if config.weighting not in WEIGHTINGS:
        raise ValueError(f"unknown loss weighting {config.weighting!r}; "
                         f"valid: {', '.join(WEIGHTINGS)}")
    if config.weighting not in diffusion.loss_weightings:
        raise ValueError(f"loss weighting {config.weighting!r} is an SNR weighting of DDPM's; "
                         f"{diffusion.title} trains with weighting "
                         f"{' or '.join(map(repr, diffusion.loss_weightings))}")
    if config.weighting == "none":
        return torch.ones(t.shape, device=t.device)
    snr = diffusion.snr(t)
    clipped = snr.clamp(max=config.min_snr_gamma)
    weight = {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[diffusion.prediction]
    return weight.float()


def diffusion_loss(
    denoiser: Callable[..., torch.Tensor],
    diffusion: NoisingProcess,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    config: LossConfig = LossConfig(),
    cond: Cond | None = None,
    **keywords,
) -> torch.Tensor:
    """Per-sample loss (B,): weight_t * mean ||target - denoiser(x_t, t)||^2.

    With the eps prediction and no weighting this is L_simple (DDPM eq. 14), the noise drawn
    from the noise prior (for PYoCo and VideoFusion, correlated across frames); with a
    `vidiff.FlowMatching` it is the flow's velocity regression. The network is called at
    the process's `network_time(t)`. The conditions come as one `vidiff.Cond` and / or as
    keywords (class_labels=...).
    """
    xt = diffusion.q_sample(x0, t, noise)
    out = denoiser(xt, diffusion.network_time(t), **Cond.of(cond).merged(**keywords).kwargs())
    target = diffusion.target(x0, noise, t)
    per_sample = (out.float() - target.float()).square().flatten(1).mean(1)  # (B,)
    return per_sample * snr_weight(diffusion, t, config)
