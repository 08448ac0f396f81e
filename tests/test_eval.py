"""The evaluation library: streaming equals one-shot, the streamed Inception Score equals the
reference definition, FVD preprocessing variants, temporal statistics under flicker."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _metric_stubs import TinyImageFeatures

from vidiff.evaluate import EvalConfig, SetStats, compare, load_reference, save_reference
from vidiff.metrics import (
    FeatureStats,
    FIDConfig,
    FVDConfig,
    InceptionScoreAccumulator,
    TemporalStats,
    flicker,
    frame_consistency,
    frame_difference,
    inception_score,
    video_features,
)
from vidiff.metrics.fvd import preprocess_for_i3d


def _clips(n, gen, frames=6, size=16):
    t = torch.linspace(0, 1, frames).view(1, 1, frames, 1, 1)
    base = torch.rand(n, 3, 1, size, size, generator=gen)
    return (base * (1 - t) + t * torch.rand(n, 3, 1, 1, 1, generator=gen)) * 2 - 1


def test_many_small_batches_equal_one_shot():
    gen = torch.Generator().manual_seed(0)
    videos = _clips(23, gen)
    config = EvalConfig(fid=FIDConfig(batch_size=7), is_splits=3, tracking=True,
                        tracking_clips=10)
    net = TinyImageFeatures(logit_scale=5.0).eval()
    streamed, whole = SetStats(23, config, inception=net), SetStats(23, config, inception=net)
    for start in range(0, 23, 2):  # 12 batches of 2 (the last of 1)
        streamed.update(videos[start:start + 2])
    whole.update(videos)
    for name in ("fvd_lite", "inception"):
        a, b = streamed.stats[name], whole.stats[name]
        assert a.count == b.count == (23 if name == "fvd_lite" else 23 * 6)
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(a.cov, b.cov, rtol=1e-8, atol=1e-10)
    lite = video_features(videos).numpy()
    np.testing.assert_allclose(streamed.stats["fvd_lite"].cov, np.cov(lite, rowvar=False),
                               rtol=1e-8, atol=1e-10)
    s, w = streamed.summary(), whole.summary()
    assert s["inception_score"] == pytest.approx(w["inception_score"], rel=1e-10)
    frames = videos.transpose(1, 2).reshape(-1, 3, 16, 16)  # (B*F, 3, H, W), clip by clip
    q = (frames * 127.5 + 128).clamp(0, 255).floor() / 255
    probs = torch.softmax(net.features_and_logits(q)[1].double(), 1)
    assert s["inception_score"] == pytest.approx(inception_score(probs, splits=3), rel=1e-9)
    for key in ("frame_consistency", "frame_difference", "flicker"):
        assert s["temporal"][key] == pytest.approx(w["temporal"][key], rel=1e-6)
    assert streamed.kept == 10 and torch.equal(torch.cat(streamed.clips), videos[:10])


def test_inception_score_accumulator_equals_reference():
    gen = torch.Generator().manual_seed(1)
    probs = torch.softmax(3 * torch.randn(101, 12, generator=gen, dtype=torch.float64), 1)
    for splits in (1, 4, 10):
        acc = InceptionScoreAccumulator(101, splits)
        for chunk in torch.split(probs, 17):  # chunks straddle the split boundaries
            acc.update(chunk)
        want = inception_score(probs, splits=splits, return_std=True)
        got = acc.compute(return_std=True)
        assert got == pytest.approx(want, rel=1e-10, abs=1e-12)
    with pytest.raises(ValueError, match="of the announced"):
        InceptionScoreAccumulator(5, 2).compute()
    acc = InceptionScoreAccumulator(3, 1)
    with pytest.raises(ValueError, match="more than"):
        acc.update(probs[:4])


def test_saved_reference_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(2)
    config = EvalConfig(is_splits=2)
    real, fake = SetStats(8, config), SetStats(8, config)
    real.update(_clips(8, gen))
    fake.update(_clips(8, gen))
    save_reference(real, tmp_path / "ref.npz", {"reference": {"name": "x"}})
    loaded = load_reference(tmp_path / "ref.npz", config)
    assert loaded.shape == real.shape and loaded.meta["reference"] == {"name": "x"}
    assert compare(loaded, fake) == compare(real, fake)
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(ValueError, match="bad.npz.*--save-reference"):
        load_reference(tmp_path / "bad.npz", config)
    FeatureStats().update(np.ones((2, 3))).save(tmp_path / "plain.npz")
    with pytest.raises(ValueError, match="plain.npz"):
        load_reference(tmp_path / "plain.npz", config)


def test_fvd_crop_is_short_side_resize_and_center_crop():
    gen = torch.Generator().manual_seed(3)
    videos = torch.rand(1, 3, 9, 20, 30, generator=gen) * 2 - 1
    config = FVDConfig(resolution=40, crop=True)
    got = preprocess_for_i3d(videos, config)
    frames = (videos * 127.5 + 128).clamp(0, 255).floor()[0].transpose(0, 1)  # (F, 3, H, W)
    big = F.interpolate(frames, size=(40, 60), mode="bilinear", align_corners=False)
    want = (2 * big[:, :, :, 10:50] / 255 - 1).transpose(0, 1)[None]
    assert got.shape == (1, 3, 9, 40, 40) and torch.allclose(got, want, atol=1e-6)
    square = torch.rand(1, 3, 9, 20, 20, generator=gen) * 2 - 1
    assert torch.equal(preprocess_for_i3d(square, config),
                       preprocess_for_i3d(square, FVDConfig(resolution=40)))


def test_temporal_statistics_under_flicker_injection():
    gen = torch.Generator().manual_seed(4)
    smooth = _clips(6, gen, frames=16) * 0.5  # room for the brightness change
    sign = torch.tensor([(-1.0) ** f for f in range(16)]).view(1, 1, 16, 1, 1)
    flickering = smooth + 0.3 * sign  # every other frame brighter
    assert (flicker(flickering) > flicker(smooth) + 0.3).all()
    assert (frame_difference(flickering) > frame_difference(smooth)).all()
    # consistency is a correlation: blind to brightness by design, hurt by content changes
    assert torch.allclose(frame_consistency(flickering), frame_consistency(smooth), atol=1e-4)
    noisy = smooth + 0.5 * torch.randn(smooth.shape, generator=gen)
    assert (frame_consistency(noisy) < frame_consistency(smooth) - 0.1).all()
    stats = TemporalStats()
    stats.update(smooth[:4])
    stats.update(smooth[4:])
    assert stats.compute()["flicker"] == pytest.approx(float(flicker(smooth).mean()), rel=1e-5)
    assert stats.compute()["clips"] == 6
