"""vidiff: video diffusion (DDPM, Video Diffusion Models, VideoFusion, PYoCo) in PyTorch.

>>> import vidiff
>>> prior = vidiff.noise_prior("mixed", alpha=1.0)
>>> diffusion = vidiff.Diffusion(schedule="linear", timesteps=1000, prediction="eps")
>>> video = vidiff.sample(denoiser, (1, 3, 8, 32, 32), diffusion=diffusion, prior=prior,
...                       sampler="ddim", steps=50, generator=torch.Generator().manual_seed(0))
"""

from .diffusion import Diffusion, DiffusionConfig
from .likelihood import nll_bits_per_dim, vlb_terms
from .losses import LossConfig, diffusion_loss
from .oracle import GaussianOracle
from .priors import NoisePrior, noise_prior
from .samplers import sample
from .schedules import make_betas, respace

__version__ = "0.1.0"

__all__ = [
    "Diffusion",
    "DiffusionConfig",
    "GaussianOracle",
    "LossConfig",
    "NoisePrior",
    "diffusion_loss",
    "make_betas",
    "nll_bits_per_dim",
    "noise_prior",
    "respace",
    "sample",
    "vlb_terms",
]
