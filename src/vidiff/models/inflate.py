"""Inflation: a trained image U-Net becomes a video U-Net that starts as the image model.

VDM (Ho et al. 2022) trains its factorized U-Net jointly on images and videos; PYoCo (Ge et al.
2023) and VideoFusion (Luo et al. 2023) start video training from a pretrained image model.
The video U-Net holds every weight of the image U-Net under the same name, plus temporal
blocks that start as the identity, so the inflated model denoises each frame exactly as the
image model did until fine-tuning moves the temporal weights.
"""

from __future__ import annotations

from dataclasses import replace

from vidiff.models.config import UNetConfig
from vidiff.models.unet import UNet

# config fields that may change on inflation: they shape only temporal blocks or execution
_INFLATE_OPTIONS = frozenset(
    {
        "temporal_conv",
        "temporal_conv_kernel",
        "rel_pos",
        "rel_pos_num_buckets",
        "rel_pos_max_distance",
        "channels_last",
        "gradient_checkpointing",
        "dropout",
    }
)


def is_temporal_parameter(name: str) -> bool:
    """Whether the parameter `name` (of `UNet.named_parameters()`) belongs to a temporal block.

    Useful to fine-tune only the temporal layers, or to give them their own learning rate.
    Works for a `DiT`'s parameters too (its temporal blocks are ``temporal.<i>``).
    """
    return ".tattn." in name or ".tconv." in name or name.startswith("temporal.")


def inflate(image_unet: UNet, **options) -> UNet:
    """A video U-Net (`temporal=True`) holding a copy of every weight of `image_unet`.

    `options` may set the temporal blocks' config fields (temporal_conv, rel_pos, ...) and
    execution fields (dropout, channels_last, gradient_checkpointing). The new model is on the
    device and dtype of `image_unet` and in its train/eval mode. At this point it computes
    exactly the image model on every frame; the temporal blocks are the identity.
    """
    if not isinstance(image_unet, UNet):
        raise TypeError(f"inflate needs a vidiff UNet, got {type(image_unet).__name__}")
    cfg: UNetConfig = image_unet.config
    if cfg.temporal:
        raise ValueError("inflate needs an image U-Net (config.temporal=False)")
    bad = sorted(set(options) - _INFLATE_OPTIONS)
    if bad:
        raise ValueError(f"inflate cannot change {bad}; it can set {sorted(_INFLATE_OPTIONS)}")
    param = next(image_unet.parameters())
    video = UNet(replace(cfg, temporal=True, **options)).to(param.device, param.dtype)
    missing, unexpected = video.load_state_dict(image_unet.state_dict(), strict=False)
    not_temporal = [k for k in missing if not is_temporal_parameter(k)]
    if unexpected or not_temporal:  # would mean the two U-Nets disagree on the image layers
        raise RuntimeError(
            f"image and video U-Net differ: missing {not_temporal[:5]}, unexpected "
            f"{unexpected[:5]}"
        )
    return video.train(image_unet.training)
