"""FVD / FID / IS networks: reference key names, loading from local files, errors, metrics.

The pretrained weights are not available offline, so the networks get fixed-seed random
weights; the tests prove state-dict compatibility with the reference files (key names and
shapes copied from piergiaj/pytorch-i3d and mseitzer/pytorch-fid), the reference forward
semantics that can be checked without weights (padding, preprocessing), and that the metrics
behave (IS bounds, FVD/FID larger for noise than for a second draw of the same data).
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _metric_stubs import TinyImageFeatures, TinyVideoDetector

from vidiff.metrics.fid import (
    FIDConfig,
    _frame_batches,
    fid_per_frame,
    frame_inception_score,
    inception_frame_features,
    inception_frame_stats,
    inception_score,
    video_frames,
)
from vidiff.metrics.frechet import FeatureStats, frechet_distance
from vidiff.metrics.fvd import (
    FVDConfig,
    fvd,
    i3d_features,
    i3d_stats,
    preprocess_for_i3d,
    resize_bilinear_tf1,
    stats_distance,
)
from vidiff.metrics.i3d import (
    I3D,
    InceptionI3d,
    MaxPool3dSamePadding,
    Unit3D,
    load_i3d,
    same_padding,
)
from vidiff.metrics.inception import FIDInceptionV3, load_fid_inception
from vidiff.metrics.weights import random_init_

# (key, shape) copied from piergiaj/pytorch-i3d pytorch_i3d.py (InceptionI3d(400))
I3D_REFERENCE = {
    "Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7),
    "Conv3d_1a_7x7.bn.weight": (64,),
    "Conv3d_1a_7x7.bn.running_var": (64,),
    "Conv3d_2b_1x1.conv3d.weight": (64, 64, 1, 1, 1),
    "Conv3d_2c_3x3.conv3d.weight": (192, 64, 3, 3, 3),
    "Mixed_3b.b0.conv3d.weight": (64, 192, 1, 1, 1),
    "Mixed_3b.b1a.conv3d.weight": (96, 192, 1, 1, 1),
    "Mixed_3b.b1b.conv3d.weight": (128, 96, 3, 3, 3),
    "Mixed_3b.b2b.conv3d.weight": (32, 16, 3, 3, 3),
    "Mixed_3b.b3b.conv3d.weight": (32, 192, 1, 1, 1),
    "Mixed_4b.b0.conv3d.weight": (192, 480, 1, 1, 1),
    "Mixed_4f.b3b.bn.running_mean": (128,),
    "Mixed_5c.b1b.conv3d.weight": (384, 192, 3, 3, 3),
    "Mixed_5c.b3b.conv3d.weight": (128, 832, 1, 1, 1),
    "logits.conv3d.weight": (400, 1024, 1, 1, 1),
    "logits.conv3d.bias": (400,),
}
# (key, shape) of pt_inception-2015-12-05-6726825d.pth, from mseitzer/pytorch-fid inception.py
# (torchvision Inception3(num_classes=1008, aux_logits=False) with the FID blocks)
INCEPTION_REFERENCE = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_1a_3x3.bn.running_mean": (32,),
    "Conv2d_2b_3x3.conv.weight": (64, 32, 3, 3),
    "Conv2d_3b_1x1.conv.weight": (80, 64, 1, 1),
    "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
    "Mixed_5b.branch1x1.conv.weight": (64, 192, 1, 1),
    "Mixed_5b.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch_pool.conv.weight": (64, 288, 1, 1),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
    "Mixed_7b.branch3x3_2b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch3x3dbl_1.conv.weight": (448, 2048, 1, 1),
    "Mixed_7c.branch_pool.bn.bias": (192,),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}

# torch.jit.script / save are deprecated in recent PyTorch, but they make the reference file format
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")

FAST_FVD = FVDConfig(resolution=193, batch_size=2)  # 193 px: the smallest the I3D head takes


def _no_counters(state):
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


@pytest.fixture(scope="module")
def i3d_net():
    return random_init_(InceptionI3d(), torch.Generator().manual_seed(0)).eval()


@pytest.fixture(scope="module")
def inception_net():
    net = FIDInceptionV3(resize_input=False)  # 75x75 frames, fast; 299 is tested separately
    return random_init_(net, torch.Generator().manual_seed(0)).eval()


def _blob_videos(n, frames, size, gen):
    """Smooth toy clips in [-1, 1]: a colored Gaussian blob moving over a gradient."""
    t = torch.arange(frames, dtype=torch.float32).view(1, frames, 1, 1)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        start, vel = torch.rand(2, generator=gen), (torch.rand(2, generator=gen) - 0.5) * 0.1
        color = torch.rand(3, 1, 1, 1, generator=gen) * 2 - 1
        cy, cx = start[0] + vel[0] * t, start[1] + vel[1] * t  # (1, F, 1, 1)
        blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.02)  # (1, F, H, W)
        background = 0.5 * (xx - 0.5) + 0.2 * (torch.rand(1, generator=gen) - 0.5)
        out.append((background + color * blob).clamp(-1, 1))  # (3, F, H, W)
    return torch.stack(out)


# ----------------------------------------------------------------------------- key names


def test_i3d_reference_key_names_and_shapes():
    state = InceptionI3d().state_dict()
    for key, shape in I3D_REFERENCE.items():
        assert tuple(state[key].shape) == shape, key
    assert len(_no_counters(state)) == 57 * 5 + 2  # 57 conv+bn units, the logits conv + bias
    assert not any(k.startswith("logits.bn") for k in state)
    charades = InceptionI3d(num_classes=157).state_dict()
    assert tuple(charades["logits.conv3d.weight"].shape) == (157, 1024, 1, 1, 1)


def test_inception_reference_key_names_and_shapes():
    state = FIDInceptionV3().state_dict()
    for key, shape in INCEPTION_REFERENCE.items():
        assert tuple(state[key].shape) == shape, key
    assert len(_no_counters(state)) == 94 * 5 + 2  # 94 BasicConv2d, fc weight + bias
    assert not any("AuxLogits" in k for k in state)
    bns = [m for m in FIDInceptionV3().modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.eps == 1e-3 for m in bns)


# ----------------------------------------------------------------------------- loading


def test_i3d_state_dict_round_trip(tmp_path, i3d_net):
    state = i3d_net.state_dict()
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(_no_counters(state), path)  # old-PyTorch files have no BN counters
    detector = load_i3d(path)
    assert isinstance(detector, I3D) and not detector.training
    loaded = detector.net.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    # checkpoints wrapping the state dict / DataParallel prefixes, and other class counts
    charades = InceptionI3d(num_classes=157)
    wrapped = {"state_dict": {"module." + k: v for k, v in charades.state_dict().items()}}
    torch.save(wrapped, tmp_path / "rgb_charades.pt")
    assert load_i3d(tmp_path / "rgb_charades.pt", kind="state_dict").net.num_classes == 157


def test_inception_state_dict_round_trip(tmp_path, inception_net):
    state = inception_net.state_dict()
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    net = load_fid_inception(path, resize_input=False)
    assert not net.training
    loaded = net.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_missing_files_raise_file_not_found(tmp_path):
    missing = tmp_path / "nope.pt"
    for load in (load_i3d, lambda p: load_i3d(p, kind="torchscript"), load_fid_inception):
        with pytest.raises(FileNotFoundError, match="nope.pt"):
            load(missing)


def test_wrong_files_raise_value_error(tmp_path):
    scripted = tmp_path / "script.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), scripted)
    with pytest.raises(ValueError, match="script.pt.*TorchScript.*pytorch-fid"):
        load_fid_inception(scripted)
    with pytest.raises(ValueError, match="script.pt.*TorchScript.*pytorch-i3d"):
        load_i3d(scripted, kind="state_dict")
    with pytest.raises(ValueError, match="script.pt.*rescale"):  # not the FVD detector
        load_i3d(scripted)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a checkpoint" * 10)
    for load in (load_i3d, load_fid_inception):
        with pytest.raises(ValueError, match="garbage.pt.*could not be read"):
            load(garbage)
    with pytest.raises(ValueError, match="garbage.pt.*not a TorchScript"):
        load_i3d(garbage, kind="torchscript")

    inception_like = tmp_path / "inception.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3),
                "fc.weight": torch.zeros(1008, 2048)}, inception_like)
    with pytest.raises(ValueError) as info:
        load_i3d(inception_like)
    message = str(info.value)
    assert "inception.pth" in message and "pytorch-i3d" in message
    assert "'Conv3d_1a_7x7.bn.bias'" in message and "'Conv2d_1a_3x3.conv.weight'" in message
    with pytest.raises(ValueError, match="inception.pth.*not a TorchScript.*rescale="):
        load_i3d(inception_like, kind="torchscript")

    i3d_like = tmp_path / "i3d.pt"
    torch.save({"Conv3d_1a_7x7.conv3d.weight": torch.zeros(64, 3, 7, 7, 7)}, i3d_like)
    with pytest.raises(ValueError, match="i3d.pt.*pt_inception.*missing keys.*unexpected keys"
                                         ".*Conv3d_1a_7x7"):
        load_fid_inception(i3d_like)

    state = FIDInceptionV3().state_dict()
    state["fc.weight"] = torch.zeros(1000, 2048)  # torchvision's ImageNet head
    torch.save(state, tmp_path / "torchvision.pth")
    with pytest.raises(ValueError, match=r"shape mismatches.*fc.weight \(1000, 2048\)"):
        load_fid_inception(tmp_path / "torchvision.pth")


# ----------------------------------------------------------------------------- I3D semantics


def test_same_padding_is_tensorflow_same():
    for size in range(1, 30):
        for kernel in range(1, 8):
            for stride in range(1, 4):
                before, after = same_padding(size, kernel, stride)
                out = math.ceil(size / stride)  # TF 'SAME' output size
                assert before + after == max((out - 1) * stride + kernel - size, 0)
                assert 0 <= after - before <= 1
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 5, 9, 8, generator=gen) - 3  # negative: zero padding is visible
    unit = Unit3D(2, 3, (3, 7, 7), (2, 2, 2), relu=False).eval()
    want = unit.bn(F.conv3d(F.pad(x, [2, 3, 3, 3, 1, 1]), unit.conv3d.weight, stride=2))
    assert torch.allclose(unit(x), want, atol=1e-6)
    assert unit(x).shape[2:] == (3, 5, 4)  # ceil(size / 2)
    pool = MaxPool3dSamePadding((3, 3, 3), (2, 2, 2))
    negative = -x.abs() - 0.1
    want = F.max_pool3d(F.pad(negative, [0, 1, 1, 1, 1, 1]), 3, 2)  # zeros, as pytorch-i3d
    assert torch.equal(pool(negative), want)
    border, interior = pool(negative)[..., -1], pool(negative)[:, :, 1:2, 1:-1, :-1]
    assert (border == 0).all() and (interior < 0).all()  # windows over padding see the zeros


def test_i3d_shapes_and_determinism(i3d_net):
    shapes = {}
    names = ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "MaxPool3d_3a_3x3", "Mixed_3c",
             "MaxPool3d_4a_3x3", "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5c", "logits"]

    def record(name):
        def hook(module, inputs, output):
            shapes[name] = tuple(output.shape[1:])
        return hook

    hooks = [getattr(i3d_net, n).register_forward_hook(record(n)) for n in names]
    videos = _blob_videos(1, 9, 32, torch.Generator().manual_seed(1))
    detector = I3D(i3d_net).eval()
    try:
        first = i3d_features(videos, detector, FAST_FVD)  # resized to 193 px, the minimum
    finally:
        for h in hooks:
            h.remove()
    assert shapes == {  # sizes rounded up at every stride-2 stage, then the (2, 7, 7) head pool
        "Conv3d_1a_7x7": (64, 5, 97, 97), "MaxPool3d_2a_3x3": (64, 5, 49, 49),
        "MaxPool3d_3a_3x3": (192, 5, 25, 25), "Mixed_3c": (480, 5, 25, 25),
        "MaxPool3d_4a_3x3": (480, 3, 13, 13), "Mixed_4f": (832, 3, 13, 13),
        "MaxPool3d_5a_2x2": (832, 2, 7, 7), "Mixed_5c": (1024, 2, 7, 7),
        "logits": (400, 1, 1, 1),
    }
    assert first.shape == (1, 400) and torch.isfinite(first).all() and first.std() > 0
    assert torch.equal(i3d_features(videos, detector, FAST_FVD), first)  # eval: deterministic


def test_i3d_preprocessing_protocols_agree():
    gen = torch.Generator().manual_seed(2)
    videos = torch.rand(2, 3, 9, 20, 28, generator=gen) * 2 - 1
    tf_input = preprocess_for_i3d(videos, FVDConfig())
    sgv_input = preprocess_for_i3d(videos, FVDConfig(protocol="stylegan-v"))
    assert sgv_input.dtype == torch.uint8 and sgv_input.shape == videos.shape
    assert torch.equal(sgv_input, (videos * 127.5 + 128).clamp(0, 255).to(torch.uint8))
    # what the StyleGAN-V detector does inside with rescale=True, resize=True
    inside = F.interpolate(sgv_input.float() / 255 * 2 - 1, size=(9, 224, 224), mode="trilinear",
                           align_corners=False)
    assert tf_input.shape == (2, 3, 9, 224, 224)
    assert torch.allclose(tf_input, inside, atol=1e-5)
    gray = preprocess_for_i3d(videos[:, :1], FVDConfig())
    assert gray.shape == tf_input.shape and torch.equal(gray[:, 0], gray[:, 2])
    with pytest.raises(ValueError, match="at least 9 frames"):
        preprocess_for_i3d(videos[:, :, :8], FVDConfig())
    with pytest.raises(ValueError, match="protocol"):
        FVDConfig(protocol="tfhub")


def test_resize_bilinear_tf1_matches_tf_legacy_sampling():
    row = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 1, 1, 4)
    up = resize_bilinear_tf1(row, (1, 8))  # samples at i * 4 / 8, last one clamped
    assert torch.allclose(up.flatten(), torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3.0]))
    down = resize_bilinear_tf1(torch.arange(16.0).view(1, 1, 4, 4), (2, 2))  # every 2nd pixel
    assert torch.equal(down.flatten(), torch.tensor([0.0, 2.0, 8.0, 10.0]))
    videos = torch.rand(1, 3, 9, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    x = preprocess_for_i3d(videos, FVDConfig(resize="tf1", resolution=32))
    assert x.shape == (1, 3, 9, 32, 32) and x.min() >= -1 and x.max() <= 1


def test_torchscript_round_trip_with_stylegan_v_signature(tmp_path, i3d_net):
    detector = I3D(i3d_net).eval()
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(detector), path)
    loaded = load_i3d(path)
    assert isinstance(loaded, torch.jit.ScriptModule)
    videos = torch.rand(1, 3, 9, 24, 24, generator=torch.Generator().manual_seed(4)) * 2 - 1
    config = FVDConfig(protocol="stylegan-v")
    want = i3d_features(videos, detector, config)  # uint8 -> detector(rescale, resize)
    uint8 = (videos * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    with torch.no_grad(), torch.jit.optimized_execution(False):
        got = loaded(uint8, rescale=True, resize=True, return_features=True)
    assert got.shape == (1, 400)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)


def _check_fvd_orders_corruption(detector, config, clips):
    gen = torch.Generator().manual_seed(5)
    real = _blob_videos(clips, 9, 32, gen)
    real2 = _blob_videos(clips, 9, 32, gen)
    noise = torch.rand(clips, 3, 9, 32, 32, generator=gen) * 2 - 1
    half = clips // 2
    real_stats = i3d_stats([real[:half], real[half:]], detector, config)  # streamed
    assert real_stats.count == clips
    same = fvd(real_stats, real2, detector, config)
    far = fvd(real_stats, noise, detector, config)
    assert 0 <= same < far
    assert stats_distance(real_stats, real_stats) == pytest.approx(0, abs=1e-6)
    return real_stats


def test_fvd_pipeline_orders_corruption():
    detector = TinyVideoDetector().eval()
    for config in (FVDConfig(resolution=48, batch_size=3), FVDConfig(protocol="stylegan-v")):
        stats = _check_fvd_orders_corruption(detector, config, clips=8)
    assert fvd(stats, stats, None, FVDConfig(unbiased=False)) == pytest.approx(0, abs=1e-6)


def test_stats_distance_covariance_conventions():
    gen = torch.Generator().manual_seed(11)
    a, b = torch.randn(6, 3, generator=gen), torch.randn(9, 3, generator=gen) + 0.5
    sa, sb = FeatureStats().update(a[:4]).update(a[4:]), FeatureStats().update(b)
    for unbiased in (True, False):
        cov = [np.cov(x.double().numpy(), rowvar=False, bias=not unbiased) for x in (a, b)]
        want = frechet_distance(a.double().mean(0), cov[0], b.double().mean(0), cov[1])
        assert stats_distance(sa, sb, unbiased=unbiased) == pytest.approx(want, rel=1e-9)
    assert FVDConfig().unbiased_cov and not FVDConfig(protocol="stylegan-v").unbiased_cov
    with pytest.raises(ValueError, match="at least 2"):
        stats_distance(FeatureStats().update(a[:1]), sb)


@pytest.mark.slow
def test_fvd_with_random_i3d_orders_corruption(i3d_net):
    stats = _check_fvd_orders_corruption(I3D(i3d_net).eval(), FAST_FVD, clips=2)
    assert stats.dim == 400


# ----------------------------------------------------------------------------- FID / IS


def test_inception_input_pipeline_is_pytorch_fid():
    net = FIDInceptionV3()
    x = torch.rand(2, 3, 40, 50, generator=torch.Generator().manual_seed(6))
    want = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    assert torch.equal(net._prepare(x), want)
    pools = [m.max_pool for m in (net.Mixed_7b, net.Mixed_7c)]
    assert pools == [False, True]  # FIDInceptionE_1 averages, FIDInceptionE_2 max-pools


def test_frames_are_streamed_in_order():
    videos = torch.arange(2 * 5, dtype=torch.float32).view(2, 1, 5, 1, 1).expand(2, 3, 5, 2, 2)
    videos = videos / 10 - 1
    batches = list(_frame_batches([videos[:1], videos[1:]], FIDConfig(batch_size=3)))
    assert [b.shape[0] for b in batches] == [3, 3, 3, 1]
    frames = torch.cat(batches)
    want = (video_frames(videos) * 127.5 + 128).clamp(0, 255).floor() / 255
    assert torch.equal(frames, want)
    assert video_frames(videos, frame_stride=2).shape[0] == 2 * 3


def _check_fid_orders_corruption(net, size, clips, frames):
    gen = torch.Generator().manual_seed(7)
    real = _blob_videos(clips, frames, size, gen)
    real2 = _blob_videos(clips, frames, size, gen)
    noise = torch.rand(clips, 3, frames, size, size, generator=gen) * 2 - 1
    config = FIDConfig(batch_size=6)
    real_stats = inception_frame_stats(real, net, config)
    assert real_stats.count == clips * frames
    same = fid_per_frame(real_stats, real2, net, config)
    far = fid_per_frame(real_stats, noise, net, config)
    assert 0 <= same < far
    return real_stats


def test_fid_pipeline_orders_corruption():
    _check_fid_orders_corruption(TinyImageFeatures().eval(), size=32, clips=6, frames=4)


@pytest.mark.slow
def test_fid_with_random_inception_orders_corruption(inception_net):
    stats = _check_fid_orders_corruption(inception_net, size=75, clips=3, frames=4)
    assert stats.dim == 2048


def test_inception_features_are_deterministic_and_is_matches_the_formula(inception_net):
    gen = torch.Generator().manual_seed(7)
    videos = _blob_videos(2, 2, 75, gen)
    config = FIDConfig(batch_size=4)
    pool, logits = inception_frame_features(videos, inception_net, config)
    assert pool.shape == (4, 2048) and logits.shape == (4, 1008)
    assert torch.isfinite(pool).all() and pool.std() > 0
    again, _ = inception_frame_features(videos, inception_net, config)
    assert torch.equal(pool, again)
    assert torch.allclose(logits, pool @ inception_net.fc.weight.T, atol=1e-4)  # no bias
    score, std = frame_inception_score(videos, inception_net, splits=2, config=config,
                                       return_std=True)
    # the frames' softmax over the logits above, scored by the reference formula
    expected = inception_score(torch.softmax(logits.double(), 1), splits=2, return_std=True)
    assert (score, std) == pytest.approx(expected, rel=1e-6, abs=1e-9) and score >= 1


def test_inception_score_reference_values():
    assert inception_score(torch.full((40, 1008), 1 / 1008)) == pytest.approx(1.0)
    classes = 5
    one_hot = torch.eye(classes).repeat(10, 1)  # every split of 5 sees each class once
    assert inception_score(one_hot, splits=10) == pytest.approx(classes)
    mean, std = inception_score(one_hot, splits=10, return_std=True)
    assert mean == pytest.approx(classes) and std == pytest.approx(0, abs=1e-9)
    same_class = torch.zeros(20, classes)
    same_class[:, 0] = 1
    assert inception_score(same_class, splits=2) == pytest.approx(1.0)  # confident, no diversity
    soft = torch.softmax(torch.randn(30, 7, generator=torch.Generator().manual_seed(8)), 1)
    # the formula written out: exp of the mean KL(p(y|x) || p(y)) in each chunk of 10 rows
    chunks = soft.double().view(3, 10, 7)
    kl = (chunks * (chunks.log() - chunks.mean(1, keepdim=True).log())).sum(2)  # (3, 10)
    assert inception_score(soft, splits=3) == pytest.approx(kl.mean(1).exp().mean().item(),
                                                            rel=1e-12)
    sorted_one_hot = torch.eye(classes).repeat_interleave(10, 0)  # each split sees one class
    assert inception_score(sorted_one_hot, splits=5) == pytest.approx(1.0)
    gen = torch.Generator().manual_seed(0)
    shuffled = inception_score(sorted_one_hot, splits=5, generator=gen)
    assert shuffled > 2  # shuffling first (torch-fidelity) mixes the classes into every split
    with pytest.raises(ValueError, match="sum"):
        inception_score(torch.rand(10, 4))
    with pytest.raises(ValueError, match="splits"):
        inception_score(one_hot, splits=100)
