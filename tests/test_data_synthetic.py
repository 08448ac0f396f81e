"""Tests for the synthetic datasets (vidiff.data): determinism, content, labels, speed."""


import pytest
import torch
from torch.utils.data import DataLoader

from vidiff.data import (
    SYNTHETIC,
    BouncingBalls,
    BouncingBallsConfig,
    FramesAsImages,
    MovingShapes,
    item_generator,
    make_synthetic,
)

NAMES = ["bouncing_balls", "moving_shapes"]


# render on one thread, as DataLoader workers do (conftest.py one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def brightness(video):
    """(3, F, H, W) in [-1, 1] -> (F, H, W) intensity in [0, 1]."""
    return ((video + 1) / 2).mean(0)


def centroids(video):
    """Intensity centroids (F, 2) as (x, y) in pixels (pixel centers on integers)."""
    w = brightness(video)
    f, h, wd = w.shape
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(wd).float(), indexing="ij")
    total = w.sum((1, 2))
    return torch.stack([(w * xs).sum((1, 2)) / total, (w * ys).sum((1, 2)) / total], -1)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_per_index(name):
    a, b = make_synthetic(name), make_synthetic(name)
    assert torch.equal(a[3]["video"], b[3]["video"]) and a[3]["caption"] == b[3]["caption"]
    assert torch.equal(a[-1]["video"], a[len(a) - 1]["video"])
    assert not torch.equal(a[3]["video"], a[4]["video"])
    assert not torch.equal(a[3]["video"], make_synthetic(name, seed=1)[3]["video"])
    with pytest.raises(IndexError):
        a[len(a)]


def test_item_generator_mixes_seed_and_index():
    draws = {
        float(torch.rand(1, generator=item_generator(s, i)))
        for s, i in [(0, 1), (1, 0), (0, 0), (1, 1)]
    }
    assert len(draws) == 4


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("frames,size", [(16, 32), (8, 64), (5, 20)])
def test_shapes_range_and_keys(name, frames, size):
    ds = make_synthetic(name, frames=frames, size=size, num_videos=7)
    assert len(ds) == 7
    for i in range(3):
        item = ds[i]
        video = item["video"]
        assert video.shape == (3, frames, size, size) and video.dtype == torch.float32
        assert video.min() >= -1 and video.max() <= 1 and torch.isfinite(video).all()
        assert item["label"].dtype == torch.int64 and 0 <= item["label"] < ds.num_classes
        assert isinstance(item["caption"], str)
        assert ds.class_names[item["label"]] in item["caption"]
        n = int(item["num_objects"])
        assert item["positions"].shape[1:] == (frames, 2)
        assert torch.isfinite(item["positions"][:n]).all()
        assert torch.isnan(item["positions"][n:]).all()


def test_balls_move_and_match_their_centroid():
    for size in (32, 64):
        ds = BouncingBalls(min_balls=1, max_balls=1, size=size, frames=12)
        for i in range(4):
            item = ds[i]
            pos = item["positions"][0]  # (F, 2)
            assert (pos[1:] - pos[:-1]).norm(dim=-1).min() > 0.5  # moves every frame
            diff = (item["video"][:, 1:] - item["video"][:, :-1]).abs().amax((0, 2, 3))
            assert (diff > 0.1).all()  # and the frames show it
            err = (centroids(item["video"]) - pos).norm(dim=-1).max()
            assert err < 0.1, (size, i, err)  # anti-aliased, symmetric shading: sub-pixel


def test_balls_bounce_and_stay_inside():
    cfg = BouncingBallsConfig(frames=60, speed_range=(0.08, 0.1), max_balls=3, min_balls=3)
    ds = BouncingBalls(cfg)
    flips = 0
    for i in range(3):
        item = ds[i]
        pos, r = item["positions"], item["radii"].view(-1, 1, 1)
        assert (pos >= r - 0.5 - 1e-4).all() and (pos <= cfg.size - 0.5 - r + 1e-4).all()
        vel = pos[:, 1:] - pos[:, :-1]
        flips += int((vel[:, 1:] * vel[:, :-1] < 0).sum())
        speed = vel.norm(dim=-1)  # constant except at a bounce frame
        assert (speed.median(dim=1).values > 0.08 * cfg.size - 1e-3).all()
    assert flips > 5
    # nothing is drawn on the border rows/columns beyond the soft edge of a touching ball
    video = ds[0]["video"]
    assert brightness(video).amax() > 0.3


def test_ball_labels_and_captions_match_content():
    ds = BouncingBalls()
    assert ds.num_classes == 8  # 1-2 balls x 4 colors
    assert BouncingBalls(max_balls=3).num_classes == 12
    assert ds.class_names[:5] == [
        "a red ball",
        "a green ball",
        "a blue ball",
        "a yellow ball",
        "two red balls",
    ]
    words = {"a": 1, "two": 2, "three": 3}
    for i in range(20):
        item = ds[i]
        n = int(item["num_objects"])
        assert item["caption"] == ds.class_names[item["label"]]
        assert words[item["caption"].split()[0]] == n == (item["colors"] >= 0).sum()
        color = ds.config.colors[int(item["colors"][0])]
        assert color in item["caption"] and (item["colors"][:n] == item["colors"][0]).all()
        # the pixel under each ball's center has the ball's color (shading 1 at the center)
        x, y = item["positions"][0, 0].round().long().tolist()
        rgb = (item["video"][:, 0, y, x] + 1) / 2
        assert torch.allclose(rgb, ds.palette[int(item["colors"][0])], atol=0.12) or n > 1


def test_mixed_colors_classes():
    ds = BouncingBalls(mixed_colors=True, max_balls=3)
    assert ds.num_classes == 4 + 10 + 20  # multisets of 1, 2, 3 of 4 colors
    assert "a red ball and a blue ball" in ds.class_names
    assert "two red balls and a yellow ball" in ds.class_names
    assert "a red ball, a green ball and a blue ball" in ds.class_names
    labels = {int(ds[i]["label"]) for i in range(60)}
    assert len(labels) > 15  # classes are drawn uniformly


def test_shapes_rotate_pulse_squash():
    ds = MovingShapes(speed_range=(0.0, 0.0), background="black")
    seen = set()
    for i in range(30):
        item = ds[i]
        motion = ds.config.motions[int(item["motion"])]
        seen.add(motion)
        video, angles, scales = item["video"], item["angles"], item["scales"]
        assert motion in item["caption"] and ds.class_names[item["label"]] in item["caption"]
        assert ds.config.textures[int(item["texture"])] in item["caption"]
        # the shape stays in place (speed 0) yet the frames change
        assert (item["positions"][0] == item["positions"][0, 0]).all()
        assert (video[:, 1:] - video[:, :-1]).abs().amax() > 0.2
        if motion == "rotating":
            assert (angles[1:] - angles[:-1]).abs().min() > 0.1 and (scales == 1).all()
        elif motion == "pulsing":
            assert scales.max() - scales.min() > 0.1 and (angles == angles[0]).all()
        else:
            assert torch.allclose(scales.prod(-1), torch.ones(16), atol=1e-5)  # area kept
    assert seen == {"rotating", "pulsing", "squashing"}


def test_shapes_stay_inside_and_follow_their_position():
    ds = MovingShapes(
        background="black", frames=24, speed_range=(0.06, 0.07), motions=("rotating", "squashing")
    )  # motions that keep the area
    for i in range(12):
        item = ds[i]
        area = (brightness(item["video"]) > 0).float().sum((1, 2))  # (F,)
        assert area.min() > 0.85 * area.max()  # never cut off by the frame's edge
        pos = item["positions"][0]
        assert (pos[1:] - pos[:-1]).norm(dim=-1).median() > 1.5  # and it moves
        if ds.class_names[item["label"]] in ("circle", "square", "cross"):  # point symmetric
            err = (centroids(item["video"]) - pos).norm(dim=-1).max()
            assert err < 1.0


def test_registry_and_config_errors():
    assert SYNTHETIC.names() == ["bouncing_balls", "moving_shapes"]
    assert isinstance(make_synthetic("moving_shapes", size=48), MovingShapes)
    with pytest.raises(ValueError, match="bouncing_balls"):
        make_synthetic("balls")
    with pytest.raises(ValueError, match="sise"):
        make_synthetic("bouncing_balls", sise=32)
    with pytest.raises(ValueError, match="colors"):
        BouncingBalls(colors=("red", "mauve"))
    with pytest.raises(ValueError, match="min_balls"):
        BouncingBalls(min_balls=3, max_balls=2)
    with pytest.raises(ValueError, match="shapes"):
        MovingShapes(shapes=("hexagon",))
    with pytest.raises(ValueError, match="too large"):
        MovingShapes(radius_range=(0.3, 0.4))


def test_frames_as_images_and_collate():
    videos = BouncingBalls(frames=4, size=16, num_videos=5)
    images = FramesAsImages(videos)
    assert len(images) == 20
    item = images[6]  # video 1, frame 2
    assert torch.equal(item["image"], videos[1]["video"][:, 2])
    torch.testing.assert_close(item["positions"], videos[1]["positions"][:, 2], equal_nan=True)
    assert item["caption"] == videos[1]["caption"] and int(item["frame_index"]) == 2
    batch = next(
        iter(
            DataLoader(
                images, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0)
            )
        )
    )
    assert batch["image"].shape == (8, 3, 16, 16) and batch["label"].shape == (8,)
    batch = next(iter(DataLoader(MovingShapes(frames=4, size=16), batch_size=3)))
    assert batch["video"].shape == (3, 3, 4, 16, 16) and len(batch["caption"]) == 3


def test_generation_is_a_pure_function_of_the_index():
    """Item i is the same from a fresh dataset and after other items (no hidden state);
    its speed is benchmarks/synthetic_speed.py's (never timed in a test)."""
    for name in NAMES:
        first = make_synthetic(name)[7]["video"]
        ds = make_synthetic(name)
        for i in (3, 0, 9):
            ds[i]
        assert torch.equal(ds[7]["video"], first)
