"""Tests and validation of vidiff.metrics: Fréchet distance, FVD-lite, tracking, temporal."""

import numpy as np
import pytest
import torch

from vidiff.data import make_synthetic
from vidiff.io import from_uint8, to_uint8
from vidiff.metrics import (
    FEATURE_GROUPS,
    FEATURES,
    FeatureStats,
    VideoDistance,
    add_noise,
    ball_tracking_score,
    ball_tracking_stats,
    connected_components,
    corrupt,
    detect_balls,
    flicker,
    frame_consistency,
    frame_difference,
    frechet_distance,
    gaussian_blur,
    reference_stats,
    shuffle_frames,
    steady_pairs,
    video_distance,
    video_features,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def clips(name, start, count, **cfg):
    ds = make_synthetic(name, size=32, frames=16, **cfg)
    items = [ds[i] for i in range(start, start + count)]
    return torch.stack([it["video"] for it in items]), items


@pytest.fixture(scope="module")
def balls():
    """Two disjoint sets of 192 bouncing-balls clips (32 x 32, 16 frames) and the items of A."""
    torch.set_num_threads(1)
    real_a, items = clips("bouncing_balls", 0, 192)
    real_b, _ = clips("bouncing_balls", 192, 192)
    return real_a, real_b, items


@pytest.fixture(scope="module")
def shapes():
    torch.set_num_threads(1)
    return clips("moving_shapes", 0, 192)[0], clips("moving_shapes", 192, 192)[0]


# -- frechet_distance and FeatureStats ----------------------------------------------------------


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert abs(got - expected) < 1e-8
    assert abs(frechet_distance(mu2, np.diag(s2), mu1, np.diag(s1)) - expected) < 1e-8
    # torch inputs, float32 included, are converted to float64
    as_torch = frechet_distance(
        torch.tensor(mu1), torch.tensor(np.diag(s1)), torch.tensor(mu2), torch.tensor(np.diag(s2))
    )
    assert abs(as_torch - expected) < 1e-8


def test_frechet_distance_general_covariances():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    d = 12
    a, b = rng.normal(size=(d, 30)), rng.normal(size=(d, 30)) * 0.5
    s1, s2 = a @ a.T / 30, b @ b.T / 30 + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    covmean = scipy_linalg.sqrtm(s1 @ s2).real  # pytorch-fid's formula
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert abs(frechet_distance(mu1, s1, mu2, s2) - expected) < 1e-8 * max(1, expected)
    assert abs(frechet_distance(mu1, s1, mu2, s2) - frechet_distance(mu2, s2, mu1, s1)) < 1e-9
    assert frechet_distance(mu1, s1, mu1, s1) < 1e-10
    # singular (rank 2) covariances: finite, non-negative, no complex parts
    low = rng.normal(size=(d, 2))
    assert 0 <= frechet_distance(mu1, low @ low.T, mu2, s2) < np.inf
    with pytest.raises(ValueError, match="D"):
        frechet_distance(mu1, s1, mu2[:3], s2)


def test_feature_stats_streaming_matches_numpy(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1000, 5)) * [1, 2, 3, 4, 5] + 1e4  # large offset: no cancellation
    stats = FeatureStats(names=list("abcde"))
    for chunk in np.array_split(x, 7):
        stats.update(chunk)
    assert stats.count == 1000
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-9)
    left, right = FeatureStats().update(x[:300]), FeatureStats().update(x[300:])
    np.testing.assert_allclose(left.merge(right).cov, np.cov(x, rowvar=False), rtol=1e-9)
    stats.save(tmp_path / "ref.npz")
    loaded = FeatureStats.load(tmp_path / "ref.npz")
    assert loaded.count == 1000 and loaded.names == list("abcde")
    np.testing.assert_array_equal(loaded.cov, stats.cov)
    with pytest.raises(ValueError, match="finite"):
        FeatureStats().update(np.full((2, 3), np.nan))


# -- FVD-lite -----------------------------------------------------------------------------------


def test_features_shape_names_and_robustness(balls):
    real_a = balls[0][:8]
    feats = video_features(real_a)
    assert feats.shape == (8, len(FEATURES)) and feats.dtype == torch.float64
    assert torch.isfinite(feats).all()
    assert sorted(i for g in FEATURE_GROUPS.values() for i in g) == list(range(len(FEATURES)))
    # degenerate inputs stay finite: constant, black, white, two frames, grayscale
    odd = [
        torch.zeros(2, 3, 8, 16, 16),
        -torch.ones(2, 3, 8, 16, 16),
        torch.ones(2, 3, 8, 16, 16),
        torch.rand(2, 3, 2, 16, 16) * 2 - 1,
        torch.rand(2, 1, 6, 12, 20) * 2 - 1,
    ]
    for v in odd:
        assert torch.isfinite(video_features(v)).all()
    # features do not depend on the chunking
    assert torch.allclose(video_features(real_a, chunk_size=3), feats, rtol=1e-6, atol=1e-6)


def _levels(real_stats, videos, kind, levels):
    return [
        video_distance(real_stats, corrupt(videos, kind, lv, torch.Generator().manual_seed(5)))
        for lv in levels
    ]


@pytest.mark.parametrize("dataset", ["balls", "shapes"])
def test_fvd_lite_validation(dataset, request):
    """Real against real is near 0 and far below every corruption; each corruption grows the
    distance strictly with its level. (At 32 x 32 x 16 with 192 clips per side real against
    real is ~0.7 for balls, ~1.0 for shapes, the mildest corruptions 7-400; see
    benchmarks/metric_validation.py for the full table.)"""
    real_a, real_b = request.getfixturevalue(dataset)[:2]
    ref = reference_stats(real_a)
    base = video_distance(ref, real_b)
    assert base < 1.5
    assert video_distance(ref, ref) < 1e-9
    shuffled = [base] + _levels(ref, real_b, "shuffle", [0.25, 0.5, 1.0])
    blurred = [base] + _levels(ref, real_b, "blur", [0.5, 1.0, 2.0])
    noised = [base] + _levels(ref, real_b, "noise", [0.05, 0.1, 0.25, 0.5])
    for name, values in [("shuffle", shuffled), ("blur", blurred), ("noise", noised)]:
        assert all(a < b for a, b in zip(values, values[1:], strict=False)), (name, values)
        assert values[1] > 5 * base, (name, values)
    # robust to what should not matter: 8-bit quantization, imperceptible noise
    assert abs(video_distance(ref, from_uint8(to_uint8(real_b))) - base) < 0.05
    faint = video_distance(ref, add_noise(real_b, 0.005, torch.Generator().manual_seed(0)))
    assert faint < base + 0.2


def test_fvd_lite_streaming_groups_and_inputs(balls, tmp_path):
    real_a, real_b, _ = balls
    real_a, real_b = real_a[:96], real_b[:96]
    metric = VideoDistance()
    for i in range(0, 96, 32):  # streaming in batches equals the one-shot value
        metric.update(real_a[i : i + 32], real=True)
        metric.update(real_b[i : i + 32], real=False)
    once = video_distance(real_a, real_b)
    assert abs(metric.compute() - once) < 1e-8 * max(1.0, once)
    # saved reference statistics give the same value
    reference_stats(real_a).save(tmp_path / "ref.npz")
    saved = VideoDistance(reference=tmp_path / "ref.npz")
    saved.update(real_b, real=False)
    assert abs(saved.compute() - once) < 1e-8 * max(1.0, once)
    # iterables of batches / of item dicts work too
    items = [{"video": v} for v in real_b]
    assert abs(video_distance(real_a.split(40), items, batch_size=50) - once) < 1e-8
    # the group breakdown tells a blur (sharpness) from a shuffle (motion)
    blur = video_distance(real_a, gaussian_blur(real_b, 1.0), groups=True)
    shuffled = video_distance(real_a, shuffle_frames(real_b, 1.0, torch.Generator()), groups=True)
    assert set(blur) == {"total", "appearance", "sharpness", "motion"}
    assert blur["sharpness"] > 5 * shuffled["sharpness"]
    assert shuffled["motion"] > 5 * shuffled["appearance"]
    assert shuffled["sharpness"] < 1.0  # shuffling leaves each frame as it was
    metric.reset()
    with pytest.raises(ValueError, match="at least 2"):
        metric.compute()


# -- ball tracking ------------------------------------------------------------------------------


def test_connected_components_torch_matches_scipy():
    pytest.importorskip("scipy")
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(6, 17, 23, generator=gen) < 0.55
    mask[0] = False  # an empty frame
    a = connected_components(mask, backend="scipy")
    b = connected_components(mask, backend="torch")
    assert torch.equal(a > 0, mask) and torch.equal(b > 0, mask)
    assert int(b.max()) == len(torch.unique(b[mask]))  # numbered 1, 2, ...
    pairs = torch.unique(torch.stack([a[mask], b[mask]], 1), dim=0)
    assert len(pairs) == len(torch.unique(a[mask])) == len(torch.unique(b[mask]))
    # components never cross frames
    frame_of = torch.arange(6).view(6, 1, 1).expand_as(a)[mask]
    assert len(torch.unique(torch.stack([a[mask], frame_of], 1), dim=0)) == len(pairs)


def test_detector_finds_the_balls(balls):
    real_a, _, items = balls
    det = detect_balls(real_a[:64])
    n = torch.stack([it["num_objects"] for it in items[:64]])
    positions = torch.stack([it["positions"] for it in items[:64]])  # (64, 3, F, 2)
    right = det["counts"] == n[:, None]
    assert right.float().mean() > 0.9  # misses are balls that (nearly) cover each other
    errors = []
    for k in range(len(det["xy"])):
        c, f = int(det["clip"][k]), int(det["frame"][k])
        if right[c, f]:
            gt = positions[c, : n[c], f].double()
            errors.append(float((gt - det["xy"][k]).norm(dim=-1).min()))
    assert np.median(errors) < 0.2 and np.quantile(errors, 0.9) < 0.5  # pixels
    blank = detect_balls(-torch.ones(2, 3, 4, 16, 16))
    assert blank["counts"].sum() == 0 and blank["xy"].shape == (0, 2)


def test_tracking_score_validation(balls):
    real_a, real_b, _ = balls
    ref = ball_tracking_stats(real_a)
    assert ref["count_constant"] > 0.6 and ref["count_deviation"] < 0.1
    real = ball_tracking_score(real_b, reference=ref)
    assert real["score"] > 0.9 and 0.9 < real["accel_ratio"] < 1.1
    assert abs(real["mean_count_ratio"] - 1) < 0.05 and real["link_fraction"] > 0.95

    g = torch.Generator
    shuffled = [
        ball_tracking_score(shuffle_frames(real_b, lv, g().manual_seed(1)), ref)
        for lv in (0.25, 0.5, 1.0)
    ]
    ratios = [real["accel_ratio"]] + [s["accel_ratio"] for s in shuffled]
    assert all(a < b for a, b in zip(ratios, ratios[1:], strict=False)) and ratios[1] > 3, ratios
    assert shuffled[-1]["score"] < 0.1
    # shuffling keeps every frame, so the counts are untouched
    assert shuffled[-1]["count_constant"] == real["count_constant"]

    noised = [
        ball_tracking_score(corrupt(real_b, "noise", lv, g().manual_seed(1)), ref)
        for lv in (0.02, 0.05, 0.1, 0.25)
    ]
    constant = [real["count_constant"]] + [s["count_constant"] for s in noised]
    deviation = [real["count_deviation"]] + [s["count_deviation"] for s in noised]
    assert all(a > b for a, b in zip(constant, constant[1:], strict=False)), constant
    assert all(a < b for a, b in zip(deviation, deviation[1:], strict=False)), deviation
    scores = [real["score"]] + [s["score"] for s in noised]
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False)), scores
    # nothing to track scores 0, and an empty clip is not a consistent one
    blank = ball_tracking_score(-torch.ones(4, 3, 8, 32, 32), ref)
    assert blank["score"] == 0.0 and blank["count_constant"] == 0.0


def test_count_consistency_is_graded_per_frame_pair(balls):
    real_a, real_b, _ = balls
    ref = ball_tracking_stats(real_a)
    real = ball_tracking_score(real_b, reference=ref)
    assert real["count_steady"] > 0.95 and real["score"] > 0.9
    one_frame_lost = real_b.clone()
    one_frame_lost[:, :, 5] = -1.0  # every clip loses its balls in one of 16 frames
    lost = ball_tracking_score(one_frame_lost, reference=ref)
    # the all-or-nothing statistic drops to 0; the pairwise one loses the 2 pairs of 15
    assert lost["count_constant"] == 0.0
    assert lost["count_steady"] == pytest.approx(real["count_steady"] - 2 / 15, abs=0.02)
    assert 0.5 * real["score"] < lost["score"] < real["score"]


def test_steady_pairs_ranks_real_above_every_corruption(balls):
    _, real_b, _ = balls
    g = torch.Generator

    def share(videos):
        return float(steady_pairs(videos).float().mean())

    real = share(real_b)
    assert real > 0.85  # the misses are balls passing through each other
    # frozen: the balls are kept but nothing moves, which is no video of bouncing balls
    frozen = share(real_b[:, :, :1].expand_as(real_b))
    assert frozen == 0.0
    shuffled = [share(shuffle_frames(real_b, lv, g().manual_seed(1))) for lv in (0.5, 1.0)]
    noised = [share(corrupt(real_b, "noise", lv, g().manual_seed(1))) for lv in (0.1, 0.25)]
    assert real > shuffled[0] > shuffled[1] and shuffled[1] < 0.5 * real, shuffled
    assert real > noised[0] > noised[1], noised
    # a ball that changes colour halfway, or jumps a quarter of the frame, breaks one pair
    recolored, jumped = real_b[:8].clone(), real_b[:8].clone()
    recolored[:, :, 8:] = recolored[:, [1, 2, 0], 8:]  # RGB rotated from frame 8 on
    jumped[:, :, 8:] = jumped[:, :, 8:].roll(8, dims=-1)
    base = steady_pairs(real_b[:8])
    for broken in (recolored, jumped):
        pairs = steady_pairs(broken)
        assert not pairs[:, 7].any() and torch.equal(pairs[:, :7], base[:, :7])
    # a frame-filling blob that drifts keeps its count and moves, but is no ball
    x = torch.arange(32.0)
    blobs = torch.stack([((x - 14 - t).abs() < 12).float()[None, :].expand(32, 32)
                         for t in range(8)], 0)  # (F, H, W): a wide bar moving right
    blob_clip = (blobs * 2 - 1).expand(2, 3, 8, 32, 32)
    assert detect_balls(blob_clip)["counts"].eq(1).all()
    assert not steady_pairs(blob_clip).any()
    # the share is what ball_tracking_stats reports, and the score's ratio to real
    stats = ball_tracking_stats(real_b)
    assert stats["steady_pairs"] == pytest.approx(real)
    assert ball_tracking_score(real_b, stats)["steady_pairs_ratio"] == pytest.approx(1.0)


# -- temporal statistics ------------------------------------------------------------------------


def test_temporal_statistics(balls):
    real = balls[0][:32]
    static = real[:, :, :1].expand(-1, -1, 8, -1, -1)
    assert torch.allclose(frame_consistency(static), torch.ones(32))
    assert torch.all(frame_difference(static) == 0) and torch.all(flicker(static) == 0)
    shuffled = shuffle_frames(real, 1.0, torch.Generator().manual_seed(0))
    assert frame_consistency(real).mean() > frame_consistency(shuffled).mean() + 0.2
    assert frame_difference(real).mean() < frame_difference(shuffled).mean()
    # alternating frames are pure flicker; smooth motion is mostly low-frequency
    alternating = torch.stack([real[:, :, 0], real[:, :, 1]] * 4, 2)
    assert torch.all(flicker(alternating) > 0.99)
    assert flicker(real).mean() < 0.3 < flicker(shuffled).mean()
    # iid frames: about half the temporal energy is flicker (64 clips, seeded: measured
    # 0.467 +- 0.002 over 20 seeds; 4 unseeded clips once drew 0.447)
    noise = torch.rand(64, 3, 16, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert abs(float(flicker(noise).mean()) - 0.5) < 0.05
    assert float(frame_consistency(noise).abs().mean()) < 0.1
