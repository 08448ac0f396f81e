"""vidiff: video diffusion (DDPM, Video Diffusion Models, VideoFusion, PYoCo) in PyTorch.

>>> import vidiff
>>> prior = vidiff.noise_prior("mixed", alpha=1.0)
>>> diffusion = vidiff.Diffusion(schedule="linear", timesteps=1000, prediction="eps")
>>> video = vidiff.sample(denoiser, (1, 3, 8, 32, 32), diffusion=diffusion, prior=prior,
...                       sampler="ddim", steps=50, generator=torch.Generator().manual_seed(0))
>>> pipe = vidiff.Pipeline.from_pretrained("runs/balls")   # a trained model (or an export)
>>> videos = pipe(num_videos=8, generator=torch.Generator().manual_seed(0))
"""

from vidiff.cond import Cond
from vidiff.diffusion.ddpm import Diffusion, DiffusionConfig
from vidiff.diffusion.flow import FlowMatching
from vidiff.diffusion.likelihood import nll_bits_per_dim, vlb_terms
from vidiff.diffusion.losses import LossConfig, diffusion_loss
from vidiff.diffusion.oracle import GaussianOracle
from vidiff.diffusion.priors import NoisePrior, noise_prior
from vidiff.diffusion.schedules import make_betas, respace
from vidiff.modelio.pipeline import Pipeline
from vidiff.modelio.spec import ModelSpec
from vidiff.sampling.samplers import SamplingConfig, sample

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
