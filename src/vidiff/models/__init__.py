"""The factorized space-time U-Net of Video Diffusion Models, its presets, inflation of image
U-Nets, import of diffusers `UNet2DModel` checkpoints, and VideoFusion's decomposed model.

>>> from vidiff.models import build_unet
>>> model = build_unet("tiny")                       # a video U-Net
>>> eps = model(x, t)                                # x (B, C, F, H, W), t int64 (B,)
"""

from .attention import SpatialAttention, TemporalAttention, relative_position_buckets
from .autoencoder import FrameAutoencoder, VideoAutoencoder, load_diffusers_vae
from .blocks import Downsample, ResBlock, TemporalConv, Upsample
from .config import UNetConfig
from .context import Context
from .diffusers_io import (
    convert_diffusers_state_dict,
    diffusers_config_to_unet_config,
    load_diffusers_unet,
    load_diffusers_unet2d,
)
from .diffusers_schedule import diffusion_config_from_scheduler
from .embeddings import TextConditioner, TimestepMLP, timestep_embedding
from .inflate import inflate, is_temporal_parameter
from .presets import UNET_PRESETS, build_unet, count_parameters, unet_config
from .transformer import SpatialTransformer
from .unet import Stage, UNet
from .videofusion import FrameConditionedUNet, VideoFusion, build_videofusion

__all__ = [
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
