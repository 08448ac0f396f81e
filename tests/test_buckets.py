"""Buckets (vidiff.data.buckets, vidiff.train.data.BucketOrder): videos of mixed sizes, lengths
and frame rates assigned by aspect ratio and length, the counts and the skipped videos, batches
of one bucket each, the order's resume and sharding, the config checks, a bucketed run."""

import json
import warnings
from pathlib import Path

import pytest
import torch
from _tolerance import BACKWARD, assert_close_to
from _train_helpers import TINY, tiny_config

from vidiff.cli import main
from vidiff.data import SkippedVideoWarning
from vidiff.data.buckets import BucketedFolder, assign_bucket, check_frame_rule, clip_span
from vidiff.io import write_video
from vidiff.modelio.checkpoint import load_checkpoint
from vidiff.modelio.spec import ClipShape, ModelSpec
from vidiff.train import train
from vidiff.train.config import load_run_config
from vidiff.train.data import BucketOrder, JointVideoDataset, make_loader
from vidiff.utils.config_io import ConfigError

# (frames, height, width): wide 2:3 long and short, tall 3:2
BUCKETS = [(5, 16, 24), (3, 16, 24), (3, 24, 16)]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def ramp(frames, h, w, step=12):
    """Frame k is gray level k * step (0..255), as a float video (3, F, H, W) in [-1, 1]."""
    levels = torch.arange(frames, dtype=torch.float32) * step / 127.5 - 1.0
    return levels.view(1, frames, 1, 1).expand(3, frames, h, w).clone()


# video -> (frames, height, width, fps, the bucket it goes to at data.fps = 8)
VIDEOS = {
    "wide/long.mp4": (12, 24, 36, 8, 0),  # holds 5 frames: the long wide bucket
    "wide/short.mp4": (4, 24, 36, 8, 1),  # 4 frames: only the 3-frame wide bucket
    "wide/fast.mp4": (20, 30, 40, 16, 0),  # h/w 0.75 is nearest 2:3; 16 fps: 9 source frames
    "wide/fast_short.mp4": (8, 30, 40, 16, 1),  # 8 frames at 16 fps: 2 s, not 5 frames at 8
    "tall/tall.gif": (10, 36, 24, 8, 2),
    "tall/stub.gif": (2, 36, 24, 8, None),  # too short for the tall bucket
}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A folder of mp4 and gif videos of mixed sizes, lengths and frame rates, and a broken
    file."""
    root = tmp_path_factory.mktemp("buckets")
    for rel, (f, h, w, fps, _) in VIDEOS.items():
        write_video(root / rel, ramp(f, h, w), fps=fps)
    (root / "wide" / "broken.mp4").write_bytes(b"not a video")
    return root


def folder(root, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = BucketedFolder(root, BUCKETS, **{"fps": 8, **kwargs})
    return ds, [str(w.message) for w in caught if issubclass(w.category, SkippedVideoWarning)]


def test_assignment_counts_and_skipped(root):
    ds, warned = folder(root)
    got = {}
    for i in range(len(ds)):
        item = ds[i]
        rel = Path(item["path"]).relative_to(root).as_posix()
        got[rel] = item["bucket"]
        f, h, w = BUCKETS[item["bucket"]]
        assert item["video"].shape == (3, f, h, w)  # resized to cover, cropped to the bucket
    expected = {rel: b for rel, (*_, b) in VIDEOS.items() if b is not None}
    assert got == expected
    report = ds.report
    assert report.clips == report.videos == [2, 2, 1] and ds.bucket_sizes == [2, 2, 1]
    assert report.found == 7 and report.num_skipped == 2
    assert set(report.skipped) == {"too short", "unreadable"}
    assert report.skipped["too short"] == {
        "tall/stub.gif": "2 frames; its aspect's shortest bucket 3x24x16 needs 3 source frames"}
    assert list(report.skipped["unreadable"]) == ["wide/broken.mp4"]
    assert any("too short" in m and "tall/stub.gif" in m for m in warned)
    assert any("wide/broken.mp4" in m for m in warned)
    lines = report.lines()
    assert lines[0].startswith("buckets: 5 of 7 videos in 3 buckets (data.buckets), 2 skipped")
    assert "8 fps (resampled)" in lines[0]
    assert lines[1] == "  bucket 0: 5x16x24 (h/w 0.67): 2 clips from 2 videos"
    assert lines[3] == "  bucket 2: 3x24x16 (h/w 1.50): 1 clip from 1 video"
    assert any(line.startswith("  skipped, too short: 1 video: tall/stub.gif") for line in lines)
    assert report.to_dict()["buckets"][2] == {"frames": 3, "height": 24, "width": 16,
                                               "clips": 1, "videos": 1}


def test_source_fps_is_resampled(root):
    """The 16 fps video's clip at 8 fps takes every other source frame (VideoFolder's fps
    resampling): its gray levels step by two frames' worth."""
    ds, _ = folder(root, offset="first")
    index = next(i for i in range(len(ds)) if ds[i]["path"].endswith("wide/fast.mp4"))
    item = ds[index]
    assert item["frame_indices"].tolist() == [0, 2, 4, 6, 8]
    levels = ((item["video"] + 1) * 127.5).mean((0, 2, 3))
    assert torch.allclose(levels, torch.tensor([0.0, 24, 48, 72, 96]), atol=3.0)  # codec


def test_stride_changes_the_lengths_and_notes_the_rates(root):
    """At stride 2 a clip of 3 frames spans 5 source frames: the 4-frame video is too short;
    the mixed source rates are noted, since a stride keeps each one's."""
    ds, _ = folder(root, fps=None, stride=2)
    short = ds.report.skipped["too short"]
    assert set(short) == {"wide/short.mp4", "tall/stub.gif"}
    assert ds.report.rate == "stride 2" and ds.report.source_fps == [8.0, 16.0]
    assert any("several frame rates (8, 16 fps)" in line for line in ds.report.lines())


def test_nearest_aspect_is_in_log_ratio():
    """h/w = 1.45 is nearer 1 than 2 in difference but nearer 2 in log ratio; the longest
    bucket the video holds wins; a video too short for its aspect is skipped even where a
    bucket of another aspect would hold it."""
    square_tall = [(1, 20, 20), (1, 40, 20)]
    assert assign_bucket(29, 20, 10, 1.0, square_tall)[0] == 1
    assert assign_bucket(27, 20, 10, 1.0, square_tall)[0] == 0
    lengths = [(9, 16, 16), (17, 16, 16), (5, 16, 16), (33, 8, 16)]
    assert assign_bucket(50, 50, 20, 1.0, lengths)[0] == 1
    assert assign_bucket(50, 50, 20, 2.0, lengths)[0] == 0  # 17 frames span 33 at step 2
    b, why = assign_bucket(50, 50, 4, 1.0, lengths)
    assert b is None and "5x16x16 needs 5 source frames" in why
    assert clip_span(17, 2.0) == 33 and clip_span(1, 3.0) == 1


def _global(order, step):
    return [item for _, item, _ in order.micro_batch(step)]


def test_every_batch_is_one_bucket_with_its_shape(root):
    ds, _ = folder(root)
    order = BucketOrder(ds.bucket_sizes, 2, seed=3)
    assert order.epoch_batches == 3  # ceil(2/2) + ceil(2/2) + ceil(1/2)
    batches = make_loader(JointVideoDataset(ds), order, workers=0)
    seen = set()
    for step in range(2 * order.epoch_batches):
        batch = next(batches)
        epoch, b, items = order.global_items(step)
        assert all(ds.locate(i)[0] == b for i in items)  # every item from bucket b
        assert batch["video"].shape == (2, 3, *BUCKETS[b])
        if epoch == 0:
            seen.update(items)
    assert seen == set(range(len(ds)))  # an epoch leaves no clip out (the 1-clip bucket too)


def test_order_is_a_function_of_seed_and_step():
    sizes, batch = [7, 0, 3, 12], 2
    order = BucketOrder(sizes, batch, seed=5)
    steps = [_global(order, s) for s in range(40)]
    assert steps == [_global(BucketOrder(sizes, batch, seed=5), s) for s in range(40)]
    assert steps != [_global(BucketOrder(sizes, batch, seed=6), s) for s in range(40)]
    for s in (1, 7, 13):  # resumed at step s: only the position (videos consumed) is known
        resumed = BucketOrder(sizes, batch, seed=5, offset=s * batch)
        assert [_global(resumed, k) for k in range(20)] == steps[s:s + 20]
        it = iter(BucketOrder(sizes, batch, seed=5, start=s))
        assert [[i for _, i, _ in next(it)] for _ in range(5)] == steps[s:s + 5]
    epochs = {order.global_items(s)[0] for s in range(40)}
    assert epochs == {0, 1, 2, 3}  # E = 4 + 2 + 6 = 12 batches an epoch
    first, second = steps[:12], steps[12:24]
    assert first != second and sorted(map(tuple, first)) != sorted(map(tuple, second))


@pytest.mark.parametrize("world", [2, 3])
def test_rank_union_is_the_single_process_batch(world):
    sizes, batch = [5, 9, 2], 2
    single = BucketOrder(sizes, batch * world, seed=1, offset=4 * batch * world)
    ranks = [BucketOrder(sizes, batch, rank=r, world=world, seed=1, offset=4 * batch * world)
             for r in range(world)]
    for step in range(25):
        union = [item for r in ranks for item in r.micro_batch(step)]
        assert union == single.micro_batch(step)


def test_frame_rule_error_text():
    with pytest.raises(ConfigError, match=r"^data\.buckets\[1\]: 80 frames .*a clip has "
                                          r"1 \+ 4k frames \(nearest: 77 or 81\)$"):
        check_frame_rule(80, 4, "data.buckets[1]")
    with pytest.raises(ConfigError, match=r"1 \+ 8k frames \(nearest: 17 or 25\)"):
        check_frame_rule(20, 8, "data.frames")
    for frames, step in ((81, 4), (1, 4), (17, 8), (7, 1)):
        check_frame_rule(frames, step, "data.frames")  # fits: no error


@pytest.mark.parametrize("overrides, match", [
    (["data.buckets=[[5, 16]]"], r"data\.buckets\[0\] = \[5, 16\]: a bucket is \[frames, "
                                 r"height, width\]"),
    (["data.buckets=[[5, 16, 24], [0, 16, 16]]"], r"data\.buckets\[1\] = \[0, 16, 16\]"),
    (["data.buckets=[[5, 16, 24], [5, 32, 48]]"], r"data\.buckets\[1\] .* has the aspect "
                                                  r"ratio and the frames of data\.buckets\[0\]"),
    (["data.source=bouncing_balls"], r'data\.buckets needs data\.source = "folder"'),
    (["data.num_images=2"], r"data\.buckets does not combine with data\.num_images"),
    (["data.lowres_size=8"], r"data\.buckets does not combine with data\.lowres_size"),
    (['data.options={"frames": 4}'], r"data\.options\.frames does not combine with "
                                     r"data\.buckets"),
])
def test_bad_buckets_are_config_errors(tmp_path, overrides, match):
    base = ["data.source=folder", f"data.path={tmp_path}", "data.buckets=[[5, 16, 24]]"]
    with pytest.raises(ConfigError, match=match):
        load_run_config(None, [*base, *overrides])


def test_clip_shape_height_and_width():
    square, wide = ClipShape.of(3, 5, 16, 16), ClipShape.of(3, 5, 16, 24)
    assert (square.size, square.height, square.width, square.fhw) == (16, None, None,
                                                                     (5, 16, 16))
    assert (wide.size, wide.fhw) == (16, (5, 16, 24))
    assert ClipShape(3, 8, 24).fhw == (8, 24, 24)  # a spec written before height and width
    spec = ModelSpec(shape=wide)
    assert ModelSpec.from_json(spec.to_json()).shape == wide


def _bucket_run(root, out, steps, *extra):
    return ["train", "--out", str(out), "--steps", str(steps), "--set", *TINY,
            "data.source=folder", f"data.path={root}", "data.fps=8",
            "data.buckets=[[5, 16, 24], [3, 24, 16]]", *extra]


def test_train_with_two_buckets(root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_bucket_run(root, out, 3)) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "buckets.json").read_text())
    # the only wide bucket takes 5 frames: the wide videos that hold fewer are too short
    assert [(b["frames"], b["clips"]) for b in report["buckets"]] == [(5, 2), (3, 1)]
    assert set(report["skipped"]["too short"]) == {"wide/short.mp4", "wide/fast_short.mp4",
                                                   "tall/stub.gif"}
    assert list(report["skipped"]["unreadable"]) == ["wide/broken.mp4"]
    assert "buckets: 3 of 7 videos in 2 buckets (data.buckets), 4 skipped" in printed
    assert "bucket 0: 5x16x24 (h/w 0.67): 2 clips from 2 videos" in printed
    assert "skipped, too short: 3 videos" in printed
    assert "data.frames = 4 has no effect: data.buckets gives the clip shapes" in printed
    spec = ModelSpec.from_dict(load_checkpoint(out).meta["model_spec"])
    assert spec.shape.fhw == (5, 16, 24)  # the first bucket's
    # what the commands say of it: height and width apart, not size x size
    assert main(["info", str(out)]) == 0
    assert "clips        3 x 5 frames x 16x24\n" in capsys.readouterr().out
    video = tmp_path / "one.npy"
    assert main(["sample", str(out), "--out", str(video), "--num", "1", "--steps", "2"]) == 0
    assert f"wrote {video} (1 videos of 5x16x24, " in capsys.readouterr().out
    assert main(["export", str(out), str(tmp_path / "exported")]) == 0
    assert "| videos | 3 x 5 frames x 16x24" in (tmp_path / "exported" / "README.md").read_text()


def test_bucketed_resume_continues_the_same_trajectory(root, tmp_path):
    extra = ["data.source=folder", f"data.path={root}", "data.fps=8",
             "data.buckets=[[5, 16, 24], [3, 24, 16]]", "train.sample_every=0"]
    straight, resumed = tmp_path / "a", tmp_path / "b"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedVideoWarning)
        train(tiny_config(straight, *extra, steps=4), echo=False)
        train(tiny_config(resumed, *extra, steps=4), until=2, echo=False)
        train(tiny_config(resumed, *extra, steps=4), echo=False)
    a, b = load_checkpoint(straight).weights("ema"), load_checkpoint(resumed).weights("ema")
    for key in a:
        assert_close_to(a[key], b[key], BACKWARD, msg=key)
