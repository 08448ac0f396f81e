"""Stable Diffusion U-Nets (diffusers' UNet2DConditionModel) in vidiff's U-Net: parity with
diffusers for SD 1's form and SD 2's, as image models and inflated; SD's conditioning (the
text as the cross-attention context, the empty prompt as guidance's null); refusals."""

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from _sd_helpers import random_weights, tiny_sd_unet_config, write_tiny_sd  # noqa: E402
from _tolerance import assert_close_to, assert_parity  # noqa: E402

from vidiff.models import (  # noqa: E402
    SpatialTransformer,
    TemporalAttention,
    UNet,
    diffusers_config_to_unet_config,
    is_temporal_parameter,
    load_diffusers_unet,
)


@pytest.fixture(scope="module", params=["sd1", "sd2"])
def sd_unet(request, tmp_path_factory):
    """(diffusers reference, folder) for a tiny UNet2DConditionModel of each form."""
    sd2 = request.param == "sd2"
    torch.manual_seed(0)
    ref = random_weights(diffusers.UNet2DConditionModel(**tiny_sd_unet_config(sd2))).eval()
    folder = tmp_path_factory.mktemp(request.param) / "unet"
    ref.save_pretrained(folder)
    return ref, folder


def _inputs(frames=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (2, 4, 16, 16) if frames is None else (2, 4, frames, 16, 16)
    return (torch.randn(shape, generator=g), torch.tensor([7, 930]),
            torch.randn(2, 11, 32, generator=g))


def test_the_config_maps_each_sd_form(sd_unet):
    ref, folder = sd_unet
    cfg = diffusers_config_to_unet_config(dict(ref.config))
    sd2 = ref.config.use_linear_projection
    assert cfg.spatial_block == "transformer" and not cfg.text_pooling and cfg.text_dim == 32
    assert cfg.attention_ds == (1, 2) and cfg.channel_mult == (1, 2, 2)
    assert cfg.level_heads == ((2, 4, 8) if sd2 else (8, 8, 8))
    assert cfg.attention_fp32 == sd2 and cfg.downsample_padding == "symmetric"


def test_image_model_equals_diffusers(sd_unet):
    ref, folder = sd_unet
    model = load_diffusers_unet(folder, inflate=False)
    x, t, text = _inputs()
    with torch.no_grad():
        want = ref(x, t, encoder_hidden_states=text).sample
        got = model(x, t, text_emb=text)
    assert want.abs().max() > 0.5  # the weights are not at their zero init
    assert_parity(got, want)
    from vidiff import Cond

    with torch.no_grad():  # exact: a Cond is unpacked into these very keywords
        torch.testing.assert_close(model(x, t, Cond(text_emb=text)), got, rtol=0, atol=0)


def test_inflated_model_equals_diffusers_on_every_frame(sd_unet):
    ref, folder = sd_unet
    video = load_diffusers_unet(folder)  # inflate=True
    tattn = [m for m in video.modules() if isinstance(m, TemporalAttention)]
    spatial = [m for m in video.modules() if isinstance(m, SpatialTransformer)]
    assert len(tattn) == len(spatial) > 0  # one temporal attention after each transformer
    x, t, text = _inputs(frames=3)
    with torch.no_grad():
        got = video(x, t, text_emb=text)
        want = torch.stack([ref(x[:, :, f], t, encoder_hidden_states=text).sample
                            for f in range(3)], dim=2)
    assert_parity(got, want)
    # the temporal layers are what a motion-module run trains: a small share of the model
    temporal = sum(p.numel() for n, p in video.named_parameters() if is_temporal_parameter(n))
    assert 0 < temporal < 0.25 * sum(p.numel() for p in video.parameters())


def test_text_per_sample_is_shared_by_the_frames_and_per_frame_text_works(sd_unet):
    _, folder = sd_unet
    video = load_diffusers_unet(folder)
    x, t, text = _inputs(frames=2)
    with torch.no_grad():
        shared = video(x, t, text_emb=text)
        per_frame = video(x, t, text_emb=text[:, None].expand(2, 2, *text.shape[1:]))
        other = text.clone()
        other[:, 0] += 1.0
        moved = video(x, t, text_emb=other)
    assert_close_to(per_frame, shared)
    assert (moved - shared).abs().max() > 1e-3  # the output depends on the text


def test_null_text_is_the_empty_prompt_and_guidance_uses_it(tmp_path):
    from vidiff.text import ClipTextEncoder

    root = write_tiny_sd(tmp_path / "sd")
    text = ClipTextEncoder(root)
    empty, _ = text([""])  # (1, 77, 32)
    model = load_diffusers_unet(root, null_text=empty[0])
    assert model.config.null_text_tokens == 77
    torch.testing.assert_close(model.text_cond.null_token.detach(), empty[0], rtol=0, atol=0)
    x, t, _ = _inputs(frames=2)
    caption, _ = text(["two red balls", "a blue ball"])
    with torch.no_grad():
        as_empty = model(x, t, text_emb=empty.expand(2, -1, -1))
        unconditional = model(x, t)  # no text: the null text
        dropped = model(x, t, text_emb=caption, cond_mask=torch.tensor([False, True]))
        captioned = model(x, t, text_emb=caption)
    assert_close_to(unconditional, as_empty)  # the null text expanded inside the model
    assert_close_to(dropped[0], as_empty[0])  # batched with another sample's caption
    assert_close_to(dropped[1], captioned[1])
    # without a text encoder: one learned null token, and a text of any length
    learned = load_diffusers_unet(root)
    assert learned.text_cond.null_token.shape == (1, 32)
    with torch.no_grad():
        learned(x, t, text_emb=caption[:, :5], cond_mask=torch.tensor([False, True]))
    with pytest.raises(ValueError, match="null text has 77"):
        model(x, t, text_emb=caption[:, :5])


def test_trains_under_bf16_autocast_with_checkpointing_and_frozen_image_layers(sd_unet):
    _, folder = sd_unet
    model = load_diffusers_unet(folder, gradient_checkpointing=True).train()
    for name, p in model.named_parameters():
        p.requires_grad_(is_temporal_parameter(name))
    x, t, text = _inputs(frames=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x, t, text_emb=text).float().pow(2).mean()
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if is_temporal_parameter(n)]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_a_new_transformer_unet_starts_each_block_as_the_identity():
    from vidiff.models import unet_config

    cfg = unet_config("tiny", spatial_block="transformer", text_dim=16, text_pooling=False)
    model = UNet(cfg)
    block = next(m for m in model.modules() if isinstance(m, SpatialTransformer))
    x = torch.randn(2, block.norm.num_channels, 4, 4)
    from vidiff.models.context import Context

    ctx = Context(torch.zeros(2, cfg.emb_dim), 2, 0, torch.randn(2, 3, 16), None, None, None)
    # exact: a zero-initialised output projection adds exactly 0 to x
    torch.testing.assert_close(block(x, ctx), x, rtol=0, atol=0)


@pytest.mark.parametrize("release", ["sd-1.5", "sd-2.1"])
def test_the_released_architectures_map_weight_for_weight(release):
    """At full size, on the meta device (shapes only): every weight of diffusers' SD 1.5 /
    2.1 U-Net has its place in vidiff's (859.5M / 865.9M parameters each)."""
    from vidiff.models import convert_diffusers_state_dict
    from vidiff.models.diffusers_sd import RELEASED_CONFIGS

    config = RELEASED_CONFIGS[release]
    with torch.device("meta"):
        ref = diffusers.UNet2DConditionModel(**{k: v for k, v in config.items()
                                                if k != "_class_name"})
        ours = UNet(diffusers_config_to_unet_config(config))
    count = sum(p.numel() for p in ref.parameters())
    assert count == {"sd-1.5": 859_520_964, "sd-2.1": 865_910_724}[release]
    converted = convert_diffusers_state_dict(ref.state_dict(), ours.config)
    missing, unexpected = ours.load_state_dict(converted, strict=False, assign=True)
    assert missing == ["text_cond.null_token"] and unexpected == []
    assert sum(p.numel() for p in converted.values()) == count


@pytest.mark.parametrize("field,value,words", [
    ("addition_embed_type", "text_time", "addition_embed_type='text_time'"),
    ("dual_cross_attention", True, "dual_cross_attention=True"),
    ("cross_attention_dim", [32, 64, 64], "one int for every level"),
    ("transformer_layers_per_block", [1, 2, 2], "one int for every level"),
    ("only_cross_attention", True, "self-attention"),
    ("down_block_types", ["CrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D", "DownBlock2D"],
     "SimpleCrossAttnDownBlock2D"),
])
def test_unsupported_configs_are_refused_by_name(tmp_path, field, value, words):
    config = {"_class_name": "UNet2DConditionModel", **tiny_sd_unet_config(), field: value}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json") as err:
        load_diffusers_unet(tmp_path)
    assert words in str(err.value)
