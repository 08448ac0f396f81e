"""vidiff: video diffusion (DDPM, Video Diffusion Models, VideoFusion, PYoCo) in PyTorch.

>>> import vidiff
>>> prior = vidiff.noise_prior("mixed", alpha=1.0)
>>> diffusion = vidiff.Diffusion(schedule="linear", timesteps=1000, prediction="eps")
>>> video = vidiff.sample(denoiser, (1, 3, 8, 32, 32), diffusion=diffusion, prior=prior,
...                       sampler="ddim", steps=50, generator=torch.Generator().manual_seed(0))
>>> pipe = vidiff.Pipeline.from_pretrained("runs/balls")   # a trained model (or an export)
>>> videos = pipe(num_videos=8, generator=torch.Generator().manual_seed(0))
"""

from .cond import Cond
from .diffusion import Diffusion, DiffusionConfig
from .flow import FlowMatching
from .likelihood import nll_bits_per_dim, vlb_terms
from .losses import LossConfig, diffusion_loss
from .oracle import GaussianOracle
from .pipeline import Pipeline
from .priors import NoisePrior, noise_prior
from .samplers import SamplingConfig, sample
from .schedules import make_betas, respace
from .spec import ModelSpec

__version__ = "0.1.0"

__all__ = [
    "FlowMatching",
    "Cond",
    "Diffusion",
    "DiffusionConfig",
    "GaussianOracle",
    "LossConfig",
    "ModelSpec",
    "NoisePrior",
    "Pipeline",
    "SamplingConfig",
    "diffusion_loss",
    "make_betas",
    "nll_bits_per_dim",
    "noise_prior",
    "respace",
    "sample",
    "vlb_terms",
]
