"""Tests for the folder datasets (vidiff.data.folder): scanning, clips, crops, skipping."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vidiff.data import (
    VIDEO_SUFFIXES,
    ImageFolder,
    SkippedVideoWarning,
    VideoFolder,
    make_dataset,
)
from vidiff.io import write_video

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def ramp_video(frames, h=24, w=32, step=12):
    """Frame k is uniform gray level ``k * step`` (0..255), as a float video in [-1, 1]."""
    levels = torch.arange(frames, dtype=torch.float32) * step / 127.5 - 1.0
    return levels.view(1, frames, 1, 1).expand(3, frames, h, w).clone()


def gray_level(video):
    """Per-frame mean gray level (0..255) of a float video (3, F, H, W)."""
    return ((video + 1.0) * 127.5).mean((0, 2, 3))


def save_frames(folder, frames, mode="RGB"):
    """uint8 frames (F, H, W, 3) as numbered png files (frame2 before frame10)."""
    folder.mkdir(parents=True)
    for k, f in enumerate(frames):
        im = Image.fromarray(f)
        im = im.convert(mode) if mode != "RGB" else im
        im.save(folder / f"frame{k}.png")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """UCF-like layout: two classes, an mp4 with a caption, a gif, frame folders."""
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "Jump" / "v_jump_01.mp4", ramp_video(20), fps=8)
    (root / "Jump" / "v_jump_01.txt").write_text("a person jumps\n")
    write_video(root / "Jump" / "v_jump_02.gif", ramp_video(10, step=20), fps=8)
    # a horizontal gradient (lossless png frames), 16 x 40, for the crop checks
    x = np.linspace(0, 255, 40).round().astype(np.uint8)
    grad = np.broadcast_to(x[None, None, :, None], (12, 16, 40, 3)).copy()
    grad[:, :, :, 1] = np.arange(12, dtype=np.uint8)[:, None, None] * 20  # frame index in G
    save_frames(root / "Run" / "clip_gradient", grad)
    (root / "Run" / "clip_gradient.txt").write_text("a gradient")
    save_frames(root / "Run" / "clip_gray", grad, mode="L")
    save_frames(root / "Run" / "clip_rgba", grad, mode="RGBA")
    (root / "Run" / "notes.md").write_text("not a video")
    return root


def test_scan_labels_captions_paths(root):
    ds = VideoFolder(root, frames=4, size=16)
    assert ds.class_names == ["Jump", "Run"] and ds.num_classes == 2
    rels = [e.rel for e in ds.entries]
    assert rels == [
        "Jump/v_jump_01.mp4",
        "Jump/v_jump_02.gif",
        "Run/clip_gradient",
        "Run/clip_gray",
        "Run/clip_rgba",
    ]
    items = [ds[i] for i in range(len(ds))]
    assert [int(it["label"]) for it in items] == [0, 0, 1, 1, 1]
    assert [it["caption"] for it in items] == ["a person jumps", "", "a gradient", "", ""]
    assert items[0]["path"].endswith("v_jump_01.mp4")
    assert VideoFolder(root, frames=4, size=16, captions=False)[0]["caption"] == ""
    unlabeled = VideoFolder(root, frames=4, size=16, labels=None)
    assert unlabeled.class_names == [] and int(unlabeled[0]["label"]) == -1


def test_shapes_range_dtype_and_channels(root):
    ds = VideoFolder(root, frames=6, size=(16, 20))
    for i in range(len(ds)):
        item = ds[i]
        v = item["video"]
        assert v.shape == (3, 6, 16, 20) and v.dtype == torch.float32
        assert v.min() >= -1 and v.max() <= 1 and torch.isfinite(v).all()
        assert item["label"].dtype == torch.int64
    # grayscale frames become 3 equal channels; RGBA frames lose alpha
    gray, rgba, rgb = ds[3]["video"], ds[4]["video"], ds[2]["video"]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert torch.allclose(rgba, rgb)


def test_stride_and_start(root):
    ds = VideoFolder(root, frames=5, size=16, stride=3, offset="first")
    item = ds[0]  # the mp4: frame k has gray level 12 k
    assert item["frame_indices"].tolist() == [0, 3, 6, 9, 12]
    assert torch.allclose(gray_level(item["video"]), torch.tensor([0.0, 36, 72, 108, 144]), atol=3)
    center = VideoFolder(root, frames=5, size=16, stride=3, offset="center")[0]
    assert center["frame_indices"].tolist() == [3, 6, 9, 12, 15]  # slack 20 - 13 = 7 -> 3
    assert torch.allclose(
        gray_level(center["video"]), torch.tensor([36.0, 72, 108, 144, 180]), atol=3
    )
    # random starts stay inside the video and follow (seed, epoch, index)
    ds = VideoFolder(root, frames=5, size=16, stride=3)
    starts = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        idx = ds[0]["frame_indices"]
        assert 0 <= idx[0] and idx[-1] < 20 and torch.equal(idx, idx[0] + 3 * torch.arange(5))
        starts.add(int(idx[0]))
    assert len(starts) > 2


def test_fps_resampling(root):
    # the mp4 runs at 8 fps: 4 fps takes every second frame, 16 fps repeats frames
    half = VideoFolder(root, frames=4, size=16, fps=4, offset="first")[0]
    assert half["frame_indices"].tolist() == [0, 2, 4, 6]
    assert torch.allclose(gray_level(half["video"]), torch.tensor([0.0, 24, 48, 72]), atol=3)
    double = VideoFolder(root, frames=4, size=16, fps=16, offset="first")[0]
    assert double["frame_indices"].tolist() == [0, 0, 1, 2]  # round(k / 2), half to even
    with pytest.raises(ValueError, match="not both"):
        VideoFolder(root, stride=2, fps=4)


def test_short_videos_pad_or_skip(root):
    from vidiff.data.entries import PaddedVideoWarning

    ds = VideoFolder(root, frames=14, size=16, offset="first")
    with pytest.warns(PaddedVideoWarning, match="v_jump_02.gif"):
        item = ds[1]  # the gif has 10 frames: padded by repeating the last
    assert int(item["num_real_frames"]) == 10
    assert item["frame_indices"].tolist() == list(range(10)) + [9] * 4
    level = gray_level(item["video"])
    assert torch.allclose(level[9:], level[9].expand(5))
    skip = VideoFolder(root, frames=11, size=16, short="skip", offset="first")
    with pytest.warns(SkippedVideoWarning, match=r"v_jump_02\.gif .*10 frames.*11"):
        item = skip[1]
    assert item["path"].endswith("clip_gradient")


def test_center_and_random_crop(root):
    # the 16 x 40 gradient frames: resized to 16 x 40 (no change), crop the middle 16 columns
    ds = VideoFolder(root, frames=2, size=16, offset="first", labels=None)
    v = ds[2]["video"]
    red = (v[0, 0, 0] + 1) * 127.5  # first row of the red channel: the gradient
    x = np.linspace(0, 255, 40).round()
    assert np.allclose(red.numpy(), x[12:28], atol=0.6)
    # random crops: reproducible per seed and index, varying over epochs
    rnd = VideoFolder(root, frames=2, size=16, crop="random", seed=3)
    again = VideoFolder(root, frames=2, size=16, crop="random", seed=3)
    assert torch.equal(rnd[2]["video"], again[2]["video"])
    left_edges = set()
    for epoch in range(10):
        rnd.set_epoch(epoch)
        left_edges.add(round(float((rnd[2]["video"][0, 0, 0, 0] + 1) * 127.5)))
    assert len(left_edges) > 3
    # a larger size upsamples: the shorter side (16) becomes 32
    assert VideoFolder(root, frames=2, size=32)[2]["video"].shape == (3, 2, 32, 32)


def test_determinism_without_global_rng(root):
    state = torch.random.get_rng_state()
    a = VideoFolder(root, frames=4, size=16, crop="random", seed=7)
    b = VideoFolder(root, frames=4, size=16, crop="random", seed=7)
    for i in range(len(a)):
        assert torch.equal(a[i]["video"], b[i]["video"])
        assert torch.equal(a[i]["frame_indices"], b[i]["frame_indices"])
    assert torch.equal(torch.random.get_rng_state(), state)
    c = VideoFolder(root, frames=4, size=16, crop="random", seed=8)
    assert any(not torch.equal(a[i]["frame_indices"], c[i]["frame_indices"]) for i in range(5))


def test_clips_per_video(root):
    ds = VideoFolder(root, frames=5, size=16, clips_per_video="all")
    # mp4: 20 frames -> 4 windows; gif 10 -> 2; each 12-frame folder -> 2
    assert len(ds) == 4 + 2 + 2 * 3
    starts = [int(ds[i]["frame_indices"][0]) for i in range(4)]
    assert starts == [0, 5, 10, 15]
    ds = VideoFolder(root, frames=4, size=16, clips_per_video=2, offset="first")
    assert len(ds) == 10
    assert [int(ds[i]["frame_indices"][0]) for i in range(2)] == [0, 8]  # slack 16 -> 0, 8


def test_dataloader_batches(root):
    ds = VideoFolder(root, frames=4, size=16)
    batch = next(iter(DataLoader(ds, batch_size=5)))
    assert batch["video"].shape == (5, 3, 4, 16, 16)
    assert batch["label"].tolist() == [0, 0, 1, 1, 1] and len(batch["caption"]) == 5


@pytest.fixture(scope="module")
def broken_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    write_video(root / "a_good.mp4", ramp_video(8), fps=8)
    rng = np.random.default_rng(0)
    (root / "b_corrupt.mp4").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (root / "c_empty.mp4").write_bytes(b"")
    (root / "d_fake.gif").write_bytes(b"GIF89a not really")
    return root


def test_unreadable_files_are_skipped_with_a_warning(broken_root):
    ds = VideoFolder(broken_root, frames=4, size=16, offset="first")
    assert len(ds) == 4
    with pytest.warns(SkippedVideoWarning) as record:
        items = [ds[i] for i in range(len(ds))]
    messages = [str(w.message) for w in record]
    assert messages[0].startswith("skipped b_corrupt.mp4 (1 unreadable file so far): ")
    assert messages[1].startswith("skipped c_empty.mp4 (2 unreadable files so far): ")
    assert "empty" in messages[1]
    assert messages[2].startswith("skipped d_fake.gif (3 unreadable files so far): ")
    assert len(messages) == 3
    # every item is a readable video: the next readable index, wrapping around
    assert all(it["path"].endswith("a_good.mp4") for it in items)
    assert sorted(ds.bad_paths) == ["b_corrupt.mp4", "c_empty.mp4", "d_fake.gif"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known bad files are skipped silently
        assert ds[1]["path"].endswith("a_good.mp4")


def test_video_frames_skip_as_the_videos_do_and_share_the_record(broken_root):
    videos = VideoFolder(broken_root, frames=4, size=16, offset="first")
    frames = videos.as_images(per_video=2)
    assert len(frames) == 8
    with pytest.warns(SkippedVideoWarning) as record:
        items = [frames[i] for i in range(len(frames))]
    assert [str(w.message).split()[1] for w in record] == ["b_corrupt.mp4", "c_empty.mp4",
                                                          "d_fake.gif"]
    assert all(it["path"].endswith("a_good.mp4") for it in items)
    assert sorted(videos.bad_paths) == ["b_corrupt.mp4", "c_empty.mp4", "d_fake.gif"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the frames found them broken: the videos skip them
        assert videos[1]["path"].endswith("a_good.mp4")
    with pytest.raises(IndexError, match="out of range"):
        frames[8]


def test_joint_training_on_a_folder_decodes_single_frames(root):
    from vidiff.data import VideoFolderFrames
    from vidiff.train.data import ShardedOrder, image_dataset

    videos = VideoFolder(root, frames=4, size=16)
    images = image_dataset(videos, 4)
    assert isinstance(images, VideoFolderFrames) and len(images) == 4 * len(videos.entries)
    order = ShardedOrder(len(videos), 2, num_images=3, num_frames=4, image_items=len(images))
    for step in range(6):  # every image index the order asks for exists
        for _, _, picks in order.micro_batch(step):
            assert all(0 <= j < len(images) for j in picks)
            assert all(images[j]["image"].shape == (3, 16, 16) for j in picks)


def test_probe_drops_unreadable_files_at_construction(broken_root):
    with pytest.warns(SkippedVideoWarning) as record:
        ds = VideoFolder(broken_root, frames=4, size=16, probe=True)
    assert [str(w.message).split()[1] for w in record] == [
        "b_corrupt.mp4",
        "c_empty.mp4",
        "d_fake.gif",
    ]
    assert len(ds) == 1 and ds[0]["path"].endswith("a_good.mp4")


def test_all_unreadable_is_a_value_error(tmp_path):
    (tmp_path / "x.mp4").write_bytes(b"\x00" * 100)
    ds = VideoFolder(tmp_path, frames=4, size=16)
    with pytest.warns(SkippedVideoWarning), pytest.raises(ValueError, match="unreadable"):
        ds[0]
    with pytest.warns(SkippedVideoWarning), pytest.raises(ValueError, match=str(tmp_path)):
        VideoFolder(tmp_path, frames=4, size=16, probe=True)


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "readme.txt").write_text("no videos here")
    with pytest.raises(ValueError) as err:
        VideoFolder(tmp_path)
    assert str(tmp_path) in str(err.value)
    assert all(s in str(err.value) for s in VIDEO_SUFFIXES) and ".png" in str(err.value)
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        VideoFolder(missing)
    with pytest.raises(ValueError, match="frames"):
        VideoFolder(tmp_path, frames=0)


def test_images_from_videos_and_image_folders(root):
    ds = VideoFolder(root, frames=4, size=16, offset="first")
    images = ds.as_images(per_video=2)
    assert len(images) == 10
    item = images[1]  # video 0 (the mp4, 20 frames), second half: frame 10
    assert item["image"].shape == (3, 16, 16) and int(item["frame_index"]) == 10
    assert abs(float(gray_level(item["image"][:, None])) - 120) < 3
    assert int(item["label"]) == 0 and item["caption"] == "a person jumps"
    folder = ImageFolder(root / "Run", size=8)
    assert len(folder) == 36 and folder.class_names == ["clip_gradient", "clip_gray", "clip_rgba"]
    img = folder[0]
    assert img["image"].shape == (3, 8, 8) and int(img["label"]) == 0
    (root / "Run" / "clip_gray" / "frame99.png").write_bytes(b"")
    try:
        folder = ImageFolder(root / "Run", size=8)
        with pytest.warns(SkippedVideoWarning, match="frame99.png"):
            item = folder[24]  # clip_gray/frame99.png, replaced by the next image
        assert item["path"].endswith("clip_rgba/frame0.png")
    finally:
        (root / "Run" / "clip_gray" / "frame99.png").unlink()


def test_make_dataset(root):
    balls = make_dataset("bouncing_balls", size=16, frames=4, num_videos=3)
    assert len(balls) == 3 and balls[0]["video"].shape == (3, 4, 16, 16)
    assert make_dataset("moving_shapes", size=16).config.size == 16
    folder = make_dataset(str(root), frames=4, size=16)
    assert isinstance(folder, VideoFolder) and len(folder) == 5
    assert isinstance(make_dataset(root, frames=4, size=16), VideoFolder)
    with pytest.raises(ValueError, match="bouncing_balls.*moving_shapes"):
        make_dataset("ucf101")
    with pytest.raises(FileNotFoundError):
        make_dataset("./no/such/folder")


def test_recursive_scan_webm_and_hidden_files(tmp_path):
    write_video(tmp_path / "A" / "deeper" / "x.webm", ramp_video(6), fps=8)
    write_video(tmp_path / "A" / ".hidden.mp4", ramp_video(6), fps=8)
    write_video(tmp_path / "top.mp4", ramp_video(6), fps=8)
    ds = VideoFolder(tmp_path, frames=3, size=8, stride=2, offset="first")
    assert [e.rel for e in ds.entries] == ["A/deeper/x.webm", "top.mp4"]
    assert ds.class_names == ["A"] and [int(ds[i]["label"]) for i in range(2)] == [0, -1]
    assert torch.allclose(gray_level(ds[0]["video"]), torch.tensor([0.0, 24, 48]), atol=3)


@pytest.mark.parametrize("shape, size", [((5, 72, 128, 3), (32, 32)), ((3, 144, 176, 3), (64, 48)),
                                         ((2, 20, 30, 3), (64, 64)), ((2, 64, 64, 3), (64, 64))])
@pytest.mark.parametrize("crop", ["center", "random"])
def test_uint8_resize_crop_equals_the_float_path(shape, size, crop):
    """The fast path (resize and crop the bytes, convert at the final size) gives the clip of
    the float path: the same crop, values within the rounding to 256 levels."""
    from vidiff.data.resize import resize_crop, resize_crop_frames
    from vidiff.io import from_uint8

    frames = torch.randint(0, 256, shape, dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(3))
    slow = resize_crop(from_uint8(frames), size, crop, torch.Generator().manual_seed(7))
    fast = from_uint8(resize_crop_frames(frames, size, crop, torch.Generator().manual_seed(7)))
    assert fast.shape == slow.shape == (3, shape[0], *size)
    assert (fast - slow).abs().max() <= 1.0 / 127.5 + 1e-6


def test_folder_clips_equal_the_float_path_on_a_real_h264_file(tmp_path):
    """The decoder-side fast path (each frame resized and cropped as bytes when decoded) gives
    the clip of the old path (decode all, convert to float, resize, crop): same frames, same
    crop, values within one of the 256 levels; at a 640x272 h264 file with a stride."""
    from vidiff.data import VideoFolder
    from vidiff.data.entries import epoch_generator
    from vidiff.data.resize import resize_crop
    from vidiff.io import from_uint8, read_video

    g = torch.Generator().manual_seed(0)
    clip = torch.rand(3, 40, 272, 640, generator=g) * 2 - 1
    clip = torch.nn.functional.avg_pool3d(clip[None], (1, 9, 9), 1, (0, 4, 4))[0] * 3
    write_video(tmp_path / "v" / "wide.mp4", clip.clamp(-1, 1), fps=24)
    ds = VideoFolder(tmp_path / "v", frames=6, size=48, stride=3, crop="random",
                     offset="random", labels=None, captions=False, seed=5)
    for index in range(3):
        ds.set_epoch(index)
        item = ds[0]
        gen = epoch_generator(5, index, 0)
        start = ds._clip_start(0, 0, 1, gen)
        assert int(item["frame_indices"][0]) == start
        frames = read_video(tmp_path / "v" / "wide.mp4", start, start + 16, 3)
        slow = resize_crop(from_uint8(frames), (48, 48), "random", gen)
        assert item["video"].shape == slow.shape == (3, 6, 48, 48)
        assert (item["video"] - slow).abs().max() <= 1.0 / 127.5 + 1e-6


def test_padding_short_videos_is_said_once_with_a_count(tmp_path):
    from vidiff.data import VideoFolder
    from vidiff.data.entries import PaddedVideoWarning

    write_video(tmp_path / "short.mp4", ramp_video(5), fps=8)
    write_video(tmp_path / "long.mp4", ramp_video(20), fps=8)
    with pytest.warns(PaddedVideoWarning, match="1 of the 2 videos are shorter than a clip"):
        ds = VideoFolder(tmp_path, frames=8, size=16, probe=True, labels=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said already: reading the padded clips is silent
        assert all(int(ds[i]["num_real_frames"]) in (5, 8) for i in range(len(ds)))
    lazy = VideoFolder(tmp_path, frames=8, size=16, labels=None, offset="first")
    with pytest.warns(PaddedVideoWarning, match="short.mp4 is"):
        for i in range(len(lazy)):
            lazy[i]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lazy[1 if lazy.entries[1].rel == "short.mp4" else 0]  # once only
