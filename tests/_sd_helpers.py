"""Tiny Stable-Diffusion-format folders for the tests (random weights, the real layout)."""

import json


def write_tiny_vae(root):
    """A pipeline root holding a tiny random diffusers AutoencoderKL in vae/ (4 latent
    channels, 2x downsampling); returns `root`."""
    import diffusers
    import torch

    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=4, sample_size=16, scaling_factor=0.18215)
    vae.save_pretrained(root / "vae")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                       "vae": ["diffusers", "AutoencoderKL"]}))
    return root
