"""The factorized space-time U-Net of Video Diffusion Models and the factorized space-time
diffusion transformer (`DiT`), their presets, inflation of image models, import of diffusers
checkpoints (UNet2DModel, Stable Diffusion's UNet2DConditionModel, DiT, PixArt-alpha, the
AutoencoderKL), and VideoFusion's decomposed model.

>>> from vidiff.models import build_unet
>>> model = build_unet("tiny")                       # a video U-Net
>>> eps = model(x, t)                                # x (B, C, F, H, W), t int64 (B,)
"""

from vidiff.models.attention import SpatialAttention, TemporalAttention, relative_position_buckets
from vidiff.models.autoencoder import FrameAutoencoder, VideoAutoencoder, load_diffusers_vae
from vidiff.models.blocks import Downsample, ResBlock, TemporalConv, Upsample
from vidiff.models.config import UNetConfig
from vidiff.models.context import Context
from vidiff.models.diffusers_dit import load_diffusers_transformer
from vidiff.models.diffusers_io import (
    convert_diffusers_state_dict,
    diffusers_config_to_unet_config,
    load_diffusers_unet,
    load_diffusers_unet2d,
)
from vidiff.models.diffusers_schedule import diffusion_config_from_scheduler
from vidiff.models.dit import DiT, inflate_dit
from vidiff.models.dit_config import DIT_PRESETS, DiTConfig, dit_config
from vidiff.models.embeddings import TextConditioner, TimestepMLP, timestep_embedding
from vidiff.models.inflate import inflate, is_temporal_parameter
from vidiff.models.presets import UNET_PRESETS, build_unet, count_parameters, unet_config
from vidiff.models.transformer import SpatialTransformer
from vidiff.models.unet import Stage, UNet
from vidiff.models.videofusion import FrameConditionedUNet, VideoFusion, build_videofusion

__all__ = [
    "DIT_PRESETS",
    "DiT",
    "DiTConfig",
    "dit_config",
    "inflate_dit",
    "load_diffusers_transformer",
    "UNET_PRESETS",
    "Context",
    "Downsample",
    "FrameAutoencoder",
    "FrameConditionedUNet",
    "ResBlock",
    "SpatialAttention",
    "SpatialTransformer",
    "Stage",
    "TemporalAttention",
    "TemporalConv",
    "TextConditioner",
    "TimestepMLP",
    "UNet",
    "UNetConfig",
    "Upsample",
    "VideoAutoencoder",
    "VideoFusion",
    "build_unet",
    "build_videofusion",
    "convert_diffusers_state_dict",
    "count_parameters",
    "diffusers_config_to_unet_config",
    "diffusion_config_from_scheduler",
    "inflate",
    "is_temporal_parameter",
    "load_diffusers_unet",
    "load_diffusers_unet2d",
    "load_diffusers_vae",
    "relative_position_buckets",
    "timestep_embedding",
    "unet_config",
]
