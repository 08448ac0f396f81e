"""Inflation of image U-Nets into video U-Nets, and import of diffusers `UNet2DModel`s: the
video model must reproduce the image model (vidiff's or diffusers') on every frame."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from _tolerance import assert_close_to

from vidiff.models import (
    UNetConfig,
    build_unet,
    inflate,
    is_temporal_parameter,
    load_diffusers_unet2d,
    unet_config,
)

diffusers = pytest.importorskip("diffusers")

TOL = {"atol": 1e-5, "rtol": 1e-5}  # parity with diffusers (docs: 1e-5 in fp32)

DDPM_CIFAR10 = {  # google/ddpm-cifar10-32's config.json
    "block_out_channels": (128, 256, 256, 256),
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "layers_per_block": 2,
    "attention_head_dim": None,
    "norm_num_groups": 32,
    "norm_eps": 1e-6,
    "time_embedding_type": "positional",
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "downsample_padding": 0,
    "add_attention": True,
    "sample_size": 32,
}
DDPM_SMALL = {**DDPM_CIFAR10, "block_out_channels": (32, 64, 64, 64), "norm_num_groups": 8}
# google/ddpm-celebahq-256 / ddpm-church-256 layout (6 levels, attention at the 5th), narrow
DDPM_256_SMALL = {
    **DDPM_SMALL,
    "block_out_channels": (16, 16, 32, 32, 64, 64),
    "down_block_types": ("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
    "sample_size": 64,
}


def perturb(model: torch.nn.Module, *, seed: int = 0, temporal=True):
    """Add noise to every parameter, so that no zero-initialized layer (and no norm at its
    default 1 / 0) can hide a mapping bug; weights move by half their spread, so activations
    stay O(1) and a 1e-5 tolerance stays meaningful in deep models."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if temporal or not is_temporal_parameter(name):
                spread = float(p.std()) if p.ndim > 1 else 0.0
                p.add_(torch.randn(p.shape, generator=g) * max(0.5 * spread, 0.02))
    return model


def diffusers_unet(config: dict, seed: int = 0):
    torch.manual_seed(seed)
    return perturb(diffusers.UNet2DModel(**config), seed=seed).eval()


def inputs(b, frames, size, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, frames, size, size, generator=g)
    t = torch.randint(0, 1000, (b,), generator=g)
    return x, t


def per_frame(model, x, t, labels=None):
    """`model` (an image model on (N, C, H, W)) on every frame of x: (B, C, F, H, W).

    The frames go through as one batch of B*F images (frame-major, like vidiff's own
    folding), which is the same per-frame computation with the same float rounding."""
    b, c, frames, h, w = x.shape
    kw = {"class_labels": labels.repeat_interleave(frames)} if labels is not None else {}
    out = model(x.transpose(1, 2).reshape(b * frames, c, h, w), t.repeat_interleave(frames), **kw)
    out = getattr(out, "sample", out)
    return out.view(b, frames, -1, h, w).transpose(1, 2)  # (B, C, F, H, W)


def assert_matches_diffusers(dm, directory, size, *, b=2, frames=3, labels=None):
    x, t = inputs(b, frames, size)
    image = load_diffusers_unet2d(directory, temporal=False)
    video = load_diffusers_unet2d(directory)
    assert not image.config.temporal and video.config.temporal
    kw = {"class_labels": labels} if labels is not None else {}
    with torch.no_grad():
        ref = dm(x[:, :, 0], t, **kw).sample
        assert ref.abs().max() > 0.5  # a meaningful output for a 1e-5 tolerance
        torch.testing.assert_close(image(x[:, :, 0], t, **kw), ref, **TOL)
        torch.testing.assert_close(video(x, t, **kw), per_frame(dm, x, t, labels), **TOL)
    return image


# -- vidiff image -> video ------------------------------------------------------------------------
def test_inflate_vidiff_unet_equals_image_unet_per_frame():
    torch.manual_seed(0)
    image = perturb(build_unet("tiny", temporal=False, num_classes=4)).eval()
    video = inflate(image, temporal_conv=True)
    assert video.config == replace(image.config, temporal=True, temporal_conv=True)
    new = {n for n, _ in video.named_parameters()} - {n for n, _ in image.named_parameters()}
    assert new and all(is_temporal_parameter(n) for n in new)
    assert not video.training
    x, t = inputs(2, 4, 16)
    labels = torch.tensor([3, 0])
    with torch.no_grad():
        ref = per_frame(image, x, t, labels)
        assert_close_to(video(x, t, class_labels=labels), ref)
        assert_close_to(image(x, t, class_labels=labels), ref)
        one = torch.stack([image(x[:, :, f], t, class_labels=labels) for f in range(4)], 2)
        assert_close_to(one, ref)


def test_inflate_errors():
    image = build_unet("tiny", temporal=False)
    with pytest.raises(ValueError, match="image U-Net"):
        inflate(build_unet("tiny"))
    with pytest.raises(ValueError, match="model_channels"):
        inflate(image, model_channels=32)


# -- diffusers UNet2DModel -> vidiff --------------------------------------------------------------
def test_diffusers_ddpm_architecture_safetensors(tmp_path):
    dm = diffusers_unet(DDPM_SMALL)
    dm.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    image = assert_matches_diffusers(dm, tmp_path, 32)
    cfg = image.config
    assert cfg.downsample_padding == "same" and cfg.attention_ds == (2,) and cfg.head_dim is None
    assert sum(p.numel() for p in image.parameters()) == sum(p.numel() for p in dm.parameters())
    # the loader itself never imports diffusers
    code = (
        "import sys; from vidiff.models import load_diffusers_unet2d; "
        f"load_diffusers_unet2d({str(tmp_path)!r}); assert 'diffusers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_diffusers_bin_with_legacy_attention_names(tmp_path):
    """Early diffusers checkpoints (the DDPM hub models) name attention query/key/value/
    proj_attn and ship a .bin file."""
    dm = diffusers_unet(DDPM_SMALL, seed=1)
    dm.save_config(tmp_path)
    legacy = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    sd = {}
    for key, value in dm.state_dict().items():
        for new, old in legacy.items():
            key = key.replace(f".{new}.", f".{old}.")
        sd[key] = value
    assert any(".proj_attn." in k for k in sd)
    torch.save(sd, tmp_path / "diffusion_pytorch_model.bin")
    assert_matches_diffusers(dm, tmp_path, 32, b=1, frames=2)


def test_diffusers_256_layout_and_pipeline_directory(tmp_path):
    dm = diffusers_unet(DDPM_256_SMALL, seed=2)
    dm.save_pretrained(tmp_path / "unet")  # a pipeline directory keeps its U-Net in unet/
    (tmp_path / "model_index.json").write_text("{}")
    image = assert_matches_diffusers(dm, tmp_path, 64, b=1, frames=2)
    assert image.config.attention_ds == (16,) and image.config.num_levels == 6


def test_diffusers_class_conditional_and_head_dim(tmp_path):
    config = {**DDPM_SMALL, "num_class_embeds": 5, "attention_head_dim": 16}
    config.update(flip_sin_to_cos=True, freq_shift=0, downsample_padding=1, norm_eps=1e-5)
    dm = diffusers_unet(config, seed=3)
    dm.save_pretrained(tmp_path)
    image = assert_matches_diffusers(dm, tmp_path, 32, labels=torch.tensor([4, 1]))
    assert image.config.num_classes == 5 and image.config.heads(64) == 4


def test_diffusers_exact_ddpm_cifar10(tmp_path):
    """The exact google/ddpm-cifar10-32 architecture (35.7M parameters) at 32x32."""
    dm = diffusers_unet(DDPM_CIFAR10, seed=4)
    dm.save_pretrained(tmp_path)
    image = assert_matches_diffusers(dm, tmp_path, 32, b=1, frames=2)
    # the imported config is the ddpm-cifar10 preset (diffusers stores no training dropout)
    assert image.config == replace(unet_config("ddpm-cifar10"), dropout=0.0)


# -- errors ---------------------------------------------------------------------------------------
def _write_config(directory, **fields):
    directory.mkdir(parents=True, exist_ok=True)
    config = {"_class_name": "UNet2DModel", **DDPM_SMALL, **fields}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_diffusers_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_diffusers_unet2d(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_diffusers_unet2d(tmp_path / "empty")
    _write_config(tmp_path / "no_weights")
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors"):
        load_diffusers_unet2d(tmp_path / "no_weights")
    bad = _write_config(tmp_path / "bad_json")
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        load_diffusers_unet2d(bad)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D") + ("DownBlock2D",) * 2},
         "CrossAttnDownBlock2D"),
        ({"up_block_types": ("UpBlock2D",) * 3 + ("SkipUpBlock2D",)}, "SkipUpBlock2D"),
        ({"up_block_types": ("AttnUpBlock2D",) + ("UpBlock2D",) * 3}, "up_block_types"),
        ({"resnet_time_scale_shift": "scale_shift"}, "resnet_time_scale_shift"),
        ({"time_embedding_type": "fourier"}, "time_embedding_type"),
        ({"_class_name": "UNet3DConditionModel"}, "_class_name"),
        ({"some_future_option": 3}, "some_future_option"),
    ],
)  # fmt: skip
def test_diffusers_unsupported_config_is_named(tmp_path, fields, named):
    directory = _write_config(tmp_path, **fields)
    with pytest.raises(ValueError, match=named) as err:
        load_diffusers_unet2d(directory)
    assert "config.json" in str(err.value)


def test_diffusers_weights_that_do_not_fit(tmp_path):
    dm = diffusers_unet(DDPM_SMALL)
    dm.save_pretrained(tmp_path)
    _write_config(tmp_path, block_out_channels=(32, 64, 64, 128))
    with pytest.raises(ValueError, match="does not fit"):
        load_diffusers_unet2d(tmp_path)


def test_unet_config_roundtrip_of_defaults():
    # the importer maps diffusers' defaults faithfully (a config.json may omit any field)
    from vidiff.models import diffusers_config_to_unet_config

    cfg = diffusers_config_to_unet_config({})
    assert isinstance(cfg, UNetConfig)
    assert cfg.channel_mult == (1, 2, 3, 4) and cfg.model_channels == 224
    assert cfg.attention_ds == (2, 4, 8) and cfg.head_dim == 8 and cfg.norm_eps == 1e-5
    assert cfg.time_flip_sin_to_cos and cfg.time_freq_shift == 0.0
