"""The factorized space-time U-Net: shapes, identity init, temporal mixing, joint-training
masks, conditioning, presets, bf16 and gradient checkpointing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _tolerance import BACKWARD, ONE_OP, assert_close_to, tolerance

from vidiff.models import (
    UNET_PRESETS,
    Context,
    TemporalAttention,
    TemporalConv,
    UNet,
    UNetConfig,
    build_unet,
    count_parameters,
    is_temporal_parameter,
    relative_position_buckets,
    unet_config,
)

VDP_UNET3D_PARAMS = 35_706_259  # video-diffusion-pytorch 0.7.0 Unet3D(dim=64, mults 1,2,4,8)
DDPM_CIFAR10_PARAMS = 35_746_307  # diffusers google/ddpm-cifar10-32 (DDPM's 35.7M)


def perturb(model: torch.nn.Module, *, seed: int = 0, scale: float = 0.05, temporal=True):
    """Add noise to every parameter (optionally not the temporal ones), so that no zero-init
    hides a bug; returns the model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if temporal or not is_temporal_parameter(name):
                p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def tiny(**overrides) -> UNet:
    torch.manual_seed(0)
    return build_unet("tiny", **overrides).eval()


def video(b=2, f=4, h=16, seed=1):
    return torch.randn(b, 3, f, h, h, generator=torch.Generator().manual_seed(seed))


T2 = torch.tensor([7, 900])


# -- shapes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("temporal", [False, True])
def test_shapes_image_and_video(temporal):
    model = tiny(temporal=temporal)
    x = video()
    with torch.no_grad():
        assert model(x, T2).shape == x.shape
        assert model(x[:, :, 0], T2).shape == x[:, :, 0].shape  # (B, C, H, W) = one frame
        assert model(x, T2, num_images=2).shape == x.shape
    out = build_unet("tiny", out_channels=6).eval()(x, T2)
    assert out.shape == (2, 6, 4, 16, 16) and out.is_contiguous()


@pytest.mark.parametrize(
    "overrides",
    [
        {"num_classes": 10, "text_dim": 12},
        {"num_classes": 3, "temporal_conv": True, "resblock_updown": True, "dropout": 0.1},
        {"text_dim": 5, "use_scale_shift_norm": False, "rel_pos": "clip", "conv_resample": False},
        {"channels_last": False, "downsample_padding": "same", "head_dim": None, "num_heads": 2},
    ],
)
def test_shapes_with_conditioning(overrides):
    model = build_unet("tiny", **overrides).train()
    x = video(f=5)
    cond = {"cond_mask": torch.tensor([True, False]), "num_images": 2}
    if overrides.get("num_classes"):
        cond["class_labels"] = torch.tensor([1, 2])
    if overrides.get("text_dim"):
        d = overrides["text_dim"]
        cond["text_emb"] = torch.randn(2, 6, d)
        cond["text_mask"] = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]]).bool()
    out = model(x, T2, **cond)
    assert out.shape == x.shape
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_tiny_preset_stays_tiny():
    """What keeps the suite's many tiny runs cheap, counted (never timed: benchmarks/ time)."""
    assert count_parameters("tiny") < 250_000
    model = build_unet("tiny")
    assert model.config.num_levels == 2 and model.config.model_channels <= 16


# -- presets --------------------------------------------------------------------------------------
def test_presets_build_and_count():
    names = UNET_PRESETS.names()
    for name in ("tiny", "small", "base", "vdm-matched", "ddpm-cifar10", "vdm-ucf101"):
        assert name in names
    counts = {name: count_parameters(name) for name in names}  # meta device: no memory
    assert counts["ddpm-cifar10"] == DDPM_CIFAR10_PARAMS
    assert abs(counts["vdm-matched"] / VDP_UNET3D_PARAMS - 1) < 0.10
    assert counts["tiny"] < counts["small"] < counts["base"] < counts["vdm-ucf101"]
    assert counts["tiny"] == sum(p.numel() for p in build_unet("tiny").parameters())
    assert not unet_config("ddpm-cifar10").temporal
    assert unet_config("vdm-ucf101").temporal


def test_ddpm_cifar10_preset_is_the_ddpm_architecture():
    cfg = unet_config("ddpm-cifar10")
    assert (cfg.model_channels, cfg.channel_mult, cfg.num_res_blocks) == (128, (1, 2, 2, 2), 2)
    assert cfg.attention_ds == (2,) and cfg.dropout == 0.1 and not cfg.use_scale_shift_norm
    assert (cfg.time_flip_sin_to_cos, cfg.time_freq_shift, cfg.norm_eps) == (False, 1.0, 1e-6)
    assert cfg.downsample_padding == "same"


def test_unet_config_overrides_and_errors():
    cfg = unet_config("tiny", num_classes=7)
    assert cfg.num_classes == 7 and unet_config("tiny").num_classes is None
    assert build_unet(cfg).config is cfg
    with pytest.raises(ValueError, match="no_such_field"):
        unet_config("tiny", no_such_field=1)
    with pytest.raises(ValueError, match="no_such_field"):
        build_unet(UNetConfig(), no_such_field=1)
    with pytest.raises(ValueError, match="'vdm-matched'"):  # the error lists the valid names
        unet_config("no-such-preset")
    with pytest.raises(ValueError, match="attention_ds"):
        UNetConfig(attention_ds=(3,))
    with pytest.raises(ValueError, match="norm_groups"):
        UNetConfig(model_channels=40)
    with pytest.raises(ValueError, match="head_dim"):
        UNetConfig(head_dim=48)
    with pytest.raises(ValueError, match="downsample_padding"):
        UNetConfig(downsample_padding="valid")


# -- identity init --------------------------------------------------------------------------------
def _ctx(b, frames, emb_dim, num_images=0, cfg=None):
    cfg = cfg or UNetConfig()
    buckets = relative_position_buckets(
        frames, kind=cfg.rel_pos, num_buckets=cfg.rel_pos_num_buckets,
        max_distance=cfg.rel_pos_max_distance,
    )  # fmt: skip
    return Context(torch.randn(b, emb_dim), b, num_images, None, None, buckets, None)


def test_temporal_blocks_are_identity_at_init():
    model = tiny(temporal_conv=True)
    blocks = [m for m in model.modules() if isinstance(m, (TemporalAttention, TemporalConv))]
    assert any(isinstance(m, TemporalAttention) for m in blocks)
    assert any(isinstance(m, TemporalConv) for m in blocks)
    for block in blocks:
        c = block.norm.num_channels
        x = torch.randn(2 * 5, c, 4, 4).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            assert torch.equal(block(x, _ctx(2, 5, 8, cfg=model.config)), x)


def test_video_unet_at_init_is_the_image_unet_per_frame():
    model = perturb(tiny(temporal_conv=True), temporal=False)  # temporal blocks still at init
    x = video(f=4)
    with torch.no_grad():
        out = model(x, T2)
        per_frame = torch.stack([model(x[:, :, f], T2) for f in range(4)], dim=2)
    assert_close_to(out, per_frame)  # batched over frames against one frame at a time


# -- temporal attention ---------------------------------------------------------------------------
def test_temporal_attention_mixes_frames_once_trained():
    x = video(f=4)
    x2 = x.clone()
    x2[:, :, 0] += 1.0
    at_init = perturb(tiny(), temporal=False)
    trained = perturb(tiny())
    with torch.no_grad():
        d_init = (at_init(x, T2) - at_init(x2, T2))[:, :, 1:].abs().max()
        d_trained = (trained(x, T2) - trained(x2, T2))[:, :, 1:].abs().max()
    # frames are independent while temporal blocks are the identity
    assert d_init <= tolerance(at_init(x, T2))["atol"]
    assert d_trained > 1e-4  # a nonzero output projection lets frame 0 reach the others


def _naive_temporal_attention(block: TemporalAttention, x, b, buckets, frame_mask=None):
    """Loop-free but reshape-free reference: explicit per-pixel attention with einsum."""
    n, c, hh, ww = x.shape
    frames, heads = n // b, block.heads
    d = c // heads
    h = block.norm(x)  # (B*F, C, H, W)
    h = h.reshape(b, frames, c, hh * ww).transpose(2, 3)  # (B, F, P, C)
    q, k, v = block.qkv(h).split(c, dim=-1)  # (B, F, P, C) each
    q, k, v = (z.reshape(b, frames, hh * ww, heads, d) for z in (q, k, v))
    logits = torch.einsum("bipnd,bjpnd->bpnij", q, k) / math.sqrt(d)  # (B, P, heads, F, F)
    logits = logits + block.rel_bias[buckets].permute(2, 0, 1)  # bias[h, i, j]
    if frame_mask is not None:
        logits = logits.masked_fill(~frame_mask, float("-inf"))
    out = torch.einsum("bpnij,bjpnd->bipnd", logits.softmax(-1), v)  # (B, F, P, heads, d)
    out = block.proj(out.reshape(b, frames, hh * ww, c))  # (B, F, P, C)
    return x + out.transpose(2, 3).reshape(n, c, hh, ww)


@pytest.mark.parametrize("num_images", [0, 2])
def test_temporal_attention_matches_naive_reference(num_images):
    torch.manual_seed(0)
    cfg = UNetConfig(rel_pos_num_buckets=8, rel_pos_max_distance=16)
    block = perturb(
        TemporalAttention(32, 4, groups=8, eps=1e-6, table_size=cfg.rel_pos_table_size),
        scale=0.3,
    )
    b, frames = 2, 6
    x = torch.randn(b * frames, 32, 3, 5).contiguous(memory_format=torch.channels_last)
    ctx = _ctx(b, frames, 8, num_images, cfg)
    mask = None
    if num_images:
        idx = torch.arange(frames)
        vid = idx < frames - num_images
        mask = (vid[:, None] & vid[None]) | (idx[:, None] == idx)
        ctx = ctx._replace(frame_mask=mask)
    with torch.no_grad():
        ref = _naive_temporal_attention(block, x, b, ctx.rel_buckets, mask)
        assert_close_to(block(x, ctx), ref)


def _t5_bucket_reference(rel: int, num_buckets: int, max_distance: int) -> int:
    """Mesh TensorFlow / T5's bidirectional bucket, written out for one offset."""
    half = num_buckets // 2
    ret = half if rel > 0 else 0
    n = abs(rel)
    exact = half // 2
    if n < exact:
        return ret + n
    val = exact + int(math.log(n / exact) / math.log(max_distance / exact) * (half - exact))
    return ret + min(val, half - 1)


def test_relative_position_buckets_depend_only_on_offset():
    frames = 40
    for kind, nb, md in (("t5", 32, 64), ("t5", 8, 16), ("clip", 0, 5)):
        bk = relative_position_buckets(frames, kind=kind, num_buckets=nb, max_distance=md)
        assert bk.shape == (frames, frames) and bk.dtype == torch.long
        for i in range(frames):  # Toeplitz: the bucket of (i, j) is a function of j - i only
            for j in range(frames):
                assert bk[i, j] == bk[0, j - i] if j >= i else bk[i, j] == bk[i - j, 0]
        if kind == "t5":
            ref = [_t5_bucket_reference(r, nb, md) for r in range(-frames + 1, frames)]
            got = [int(bk[max(0, -r), max(0, r)]) for r in range(-frames + 1, frames)]
            assert got == ref
            assert int(bk.max()) < nb
        else:
            assert bk[0, frames - 1] == 2 * md and bk[frames - 1, 0] == 0 and bk[3, 3] == md


# -- joint image + video training -----------------------------------------------------------------
def test_joint_training_mask_keeps_images_and_video_apart():
    model = perturb(tiny(temporal_conv=True), scale=0.1)
    frames, k = 5, 2  # 3 video frames + 2 images
    x = video(f=frames)
    with torch.no_grad():
        base = model(x, T2, num_images=k)
        x_img = x.clone()
        x_img[:, :, 3] += 2.0  # change the first image
        out_img = model(x_img, T2, num_images=k)
        x_vid = x.clone()
        x_vid[:, :, 1] += 2.0  # change a video frame
        out_vid = model(x_vid, T2, num_images=k)
        unmasked = model(x_img, T2, num_images=0)
        alone = model(x[:, :, 3], T2)  # the image as a (B, C, H, W) image
    same = tolerance(base)  # (in practice bitwise equal: masked keys weigh exactly 0)
    torch.testing.assert_close(out_img[:, :, :3], base[:, :, :3], **same)  # video ignores images
    torch.testing.assert_close(out_img[:, :, 4], base[:, :, 4], **same)  # images ignore each other
    assert not torch.allclose(out_img[:, :, 3], base[:, :, 3])
    torch.testing.assert_close(out_vid[:, :, 3:], base[:, :, 3:], **same)  # images ignore video
    assert not torch.allclose(out_vid[:, :, 0], base[:, :, 0])  # video frames do mix
    assert not torch.allclose(unmasked[:, :, :3], base[:, :, :3])  # the mask matters
    assert_close_to(base[:, :, 3], alone)


# -- conditioning ---------------------------------------------------------------------------------
def test_class_labels_and_cond_mask():
    model = perturb(tiny(num_classes=5))
    x = video(f=3)
    off = torch.tensor([False, False])
    with torch.no_grad():
        null_a = model(x, T2, class_labels=torch.tensor([0, 1]), cond_mask=off)
        null_b = model(x, T2, class_labels=torch.tensor([4, 3]), cond_mask=off)
        null_c = model(x, T2)  # no labels = the null label
        lab_a = model(x, T2, class_labels=torch.tensor([0, 1]))
        lab_b = model(x, T2, class_labels=torch.tensor([4, 1]))
        mixed = model(
            x, T2, class_labels=torch.tensor([4, 1]), cond_mask=torch.tensor([0, 1]).bool()
        )
    # cond_mask False picks the null row for both: the same embedding, the same computation
    assert torch.equal(null_a, null_b)
    assert_close_to(null_a, null_c)  # no labels at all: another code path
    assert not torch.allclose(lab_a[0], lab_b[0], atol=1e-4)  # labels change the output
    assert_close_to(lab_a[1], lab_b[1])  # per sample
    assert_close_to(mixed[0], null_a[0])
    assert_close_to(mixed[1], lab_b[1])
    with pytest.raises(ValueError, match="num_classes"):
        tiny()(x, T2, class_labels=torch.tensor([0, 1]))


def test_text_conditioning_and_cond_mask():
    model = perturb(tiny(text_dim=8))
    x = video(f=2)
    g = torch.Generator().manual_seed(3)
    text_a, text_b = torch.randn(2, 2, 5, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
    off = torch.tensor([False, False])
    with torch.no_grad():
        null_a = model(x, T2, text_emb=text_a, text_mask=mask, cond_mask=off)
        null_b = model(x, T2, text_emb=text_b, cond_mask=off)
        null_c = model(x, T2)  # no text = the null text
        out_a = model(x, T2, text_emb=text_a, text_mask=mask)
        out_b = model(x, T2, text_emb=text_b, text_mask=mask)
        padded = text_a.clone()
        padded[0, 3:] = 100.0  # padding tokens of sample 0 must not matter
        out_pad = model(x, T2, text_emb=padded, text_mask=mask)
    # the null text padded to 5 tokens (masked) against its 1 token alone: other kernels
    assert_close_to(null_a, null_b)
    assert_close_to(null_a, null_c)
    assert not torch.allclose(out_a, out_b, atol=1e-4)
    assert not torch.allclose(out_a, null_a, atol=1e-4)
    assert_close_to(out_pad, out_a)


# -- input checks ---------------------------------------------------------------------------------
def test_input_errors():
    model = tiny()
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 4, 2, 16, 16), T2[:1])
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(1, 3, 2, 15, 16), T2[:1])
    with pytest.raises(ValueError, match="num_images"):
        model(torch.randn(1, 3, 2, 16, 16), T2[:1], num_images=3)
    with pytest.raises(ValueError, match="t must"):
        model(torch.randn(2, 3, 2, 16, 16), T2[:1])
    with pytest.raises(ValueError, match="x must"):
        model(torch.randn(3, 16, 16), T2[:1])
    with pytest.raises(ValueError, match="text_dim"):
        model(torch.randn(1, 3, 2, 16, 16), T2[:1], text_emb=torch.randn(1, 2, 3))


# -- execution: memory format, bf16, checkpointing ------------------------------------------------
def test_channels_last_does_not_change_the_math():
    a = perturb(tiny(temporal_conv=True))
    b = perturb(tiny(temporal_conv=True, channels_last=False))
    x = video(f=3)
    with torch.no_grad():
        assert_close_to(a(x, T2, num_images=1), b(x, T2, num_images=1))  # other conv kernels


def test_bf16_autocast_forward():
    model = perturb(tiny(num_classes=3, text_dim=4, temporal_conv=True))
    x = video(f=3)
    cond = {"class_labels": torch.tensor([0, 2]), "text_emb": torch.randn(2, 3, 4)}
    with torch.no_grad():
        ref = model(x, T2, **cond)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, T2, num_images=0, **cond)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert (out.float() - ref).abs().mean() < 0.05 * ref.abs().mean() + 1e-3


def test_gradient_checkpointing_gives_the_same_gradients():
    def grads(checkpointing):
        model = perturb(tiny(temporal_conv=True, num_classes=3)).train()
        model.set_gradient_checkpointing(checkpointing)
        x = video(f=3)
        out = model(x, T2, class_labels=torch.tensor([1, 2]), num_images=1)
        F.mse_loss(out, torch.zeros_like(out)).backward()
        return {n: p.grad for n, p in model.named_parameters()}

    plain, ckpt = grads(False), grads(True)
    for name, g in plain.items():
        assert_close_to(ckpt[name], g, BACKWARD, msg=name)
    cfg_model = build_unet("tiny", gradient_checkpointing=True)
    assert all(s.checkpointing for s in cfg_model.down)


# -- torch.compile ------------------------------------------------------------------------------
def _compile_case():
    model = perturb(tiny(num_classes=3, text_dim=4, temporal_conv=True))
    x = video(f=4)
    cond = {
        "class_labels": torch.tensor([0, 2]),
        "text_emb": torch.randn(2, 3, 4),
        "text_mask": torch.tensor([[1, 1, 0], [1, 1, 1]]).bool(),
        "cond_mask": torch.tensor([True, False]),
        "num_images": 1,
    }
    return model, x, cond


def test_torch_compile_traces_without_graph_breaks():
    torch._dynamo.reset()
    model, x, cond = _compile_case()
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fails on a graph break
    with torch.no_grad():
        assert_close_to(compiled(x, T2, **cond), model(x, T2, **cond))
    torch._dynamo.reset()


@pytest.mark.slow
def test_torch_compile_inductor_matches_eager():
    torch._dynamo.reset()
    model, x, cond = _compile_case()
    with torch.no_grad():
        out = torch.compile(model)(x, T2, **cond)
        assert_close_to(out, model(x, T2, **cond))  # inductor's fused kernels
    torch._dynamo.reset()


def test_1x1_convolution_gradients_keep_the_parameter_layout():
    """DDP's buckets follow the parameters' layout; a channels-last 1x1 convolution's own
    backward returned its weight gradient channels-last (strides (I, 1, I, I)), which made
    every DDP rank warn and copy. `Conv1x1` computes the same thing as a matrix product."""
    from vidiff.models.blocks import Conv1x1

    conv = Conv1x1(8, 16)
    x = torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = conv(x)
    assert_close_to(y, torch.nn.functional.conv2d(x, conv.weight, conv.bias), ONE_OP)
    assert y.is_contiguous(memory_format=torch.channels_last)
    y.square().sum().backward()
    assert conv.weight.grad.stride() == conv.weight.stride()
    ref = torch.nn.Conv2d(8, 16, 1)
    ref.load_state_dict(conv.state_dict())  # the same parameters and keys as nn.Conv2d
    assert list(ref.state_dict()) == list(conv.state_dict())


def test_group_norm_backward_on_a_frozen_channels_last_input():
    """torch 2.13's CPU group-norm backward segfaults on a channels-last input that needs no
    gradient under a weight that does (a partly frozen model); GroupNorm32 avoids it and
    gives the same gradients as on a standard-layout input."""
    from vidiff.models.norm import GroupNorm32

    torch.manual_seed(0)
    norm = GroupNorm32(8, 16)
    x = torch.randn(4, 16, 8, 8)
    grads = []
    for layout in (torch.contiguous_format, torch.channels_last):
        norm.zero_grad()
        norm(x.contiguous(memory_format=layout)).square().sum().backward()
        grads.append(norm.weight.grad.clone())
    assert_close_to(grads[0], grads[1], ONE_OP)  # one norm's backward, two layouts
