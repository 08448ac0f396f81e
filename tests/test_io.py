"""Tests for vidiff.io: conversions, writers, readers, errors, atomic writes."""

import os
import pickle

import av
import numpy as np
import pytest
import torch
from PIL import Image

import vidiff.io.read as read_mod
import vidiff.io.write as write_mod
from vidiff.io import (
    VideoReadError,
    contact_sheet,
    from_uint8,
    gif_durations,
    read_frames_folder,
    read_video,
    tile_videos,
    to_uint8,
    video_info,
    write_video,
)


def smooth_video(frames=12, height=32, width=32, channels=3):
    """A smooth moving pattern, tinted like natural video (mostly brightness, little chroma
    detail, which yuv420p halves), so lossy codecs stay close."""
    t = torch.arange(frames, dtype=torch.float32).view(1, frames, 1, 1)
    y = torch.arange(height, dtype=torch.float32).view(1, 1, height, 1)
    x = torch.arange(width, dtype=torch.float32).view(1, 1, 1, width)
    tint = torch.tensor([0.15, 0.0, -0.15])[:channels].view(channels, 1, 1, 1)
    return 0.7 * torch.sin(0.25 * x + 0.15 * y - 0.5 * t) + tint


def few_color_video(frames=6, size=24):
    """A moving white square on a blue background: few colors, exact through a GIF palette."""
    v = torch.full((3, frames, size, size), -1.0)
    v[2] = 0.5
    for t in range(frames):
        v[:, t, 4:12, 2 + 2 * t : 10 + 2 * t] = 1.0
    return v


def no_temp_files(folder):
    return [p.name for p in folder.iterdir() if ".tmp" in p.name] == []


# conversions


def test_to_uint8_values_rounding_and_clamping():
    v = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.999, 1.0, 3.0, float("nan")]).view(1, 1, 1, 8)
    out = to_uint8(v)
    assert out.dtype == torch.uint8 and out.shape == (1, 1, 8, 1)
    assert out.flatten().tolist() == [0, 0, 64, 128, 255, 255, 255, 128]


def test_to_uint8_layouts_and_inverse():
    g = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 256, (2, 3, 4, 5, 6), generator=g, dtype=torch.uint8)
    video = levels.float() / 127.5 - 1  # (B, C, F, H, W) on the 256 levels
    batch = to_uint8(video)
    assert batch.shape == (2, 4, 5, 6, 3)
    assert torch.equal(batch, levels.permute(0, 2, 3, 4, 1))
    assert to_uint8(video[0]).shape == (4, 5, 6, 3)
    assert torch.allclose(from_uint8(batch), video, atol=1e-6)
    assert torch.equal(to_uint8(levels[0]), batch[0])  # uint8 input: only permuted
    with pytest.raises(ValueError, match="shape"):
        to_uint8(torch.zeros(3, 4, 5))


def test_tile_and_contact_sheet_layout():
    frames = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1, 1).expand(5, 2, 3, 4, 3)
    grid = tile_videos(frames, nrow=2, padding=1)  # 3 rows x 2 columns of (3, 4) tiles
    assert grid.shape == (2, 3 * 3 + 2, 2 * 4 + 1, 3)
    assert grid[0, 4, 5, 0] == 3 and grid[0, 8, 0, 0] == 4 and grid[0, 8, 5, 0] == 0
    sheet = contact_sheet(frames, padding=2)
    assert sheet.shape == (5 * 3 + 4 * 2, 2 * 4 + 2, 3)
    assert sheet[0, 4, 0] == 255  # separator


# writing and reading back


def test_mp4_round_trip(tmp_path):
    video = smooth_video(frames=12)
    path = write_video(tmp_path / "a.mp4", video, fps=12)
    frames = read_video(path)
    assert frames.shape == (12, 32, 32, 3) and frames.dtype == torch.uint8
    err = (frames.float() - to_uint8(video).float()).abs().mean()
    assert err < 4.0, err  # lossy (yuv420p, CRF 18), but close
    info = video_info(path)
    assert (info.num_frames, info.fps, info.width, info.height) == (12, 12.0, 32, 32)
    assert info.exact and info.duration == pytest.approx(1.0)
    assert no_temp_files(tmp_path)


def test_mp4_odd_size_is_padded_and_gray_is_replicated(tmp_path):
    video = smooth_video(frames=5, height=15, width=21, channels=1)
    frames = read_video(write_video(tmp_path / "odd.mp4", video))
    assert frames.shape == (5, 16, 22, 3)
    ref = to_uint8(video).float()  # (F, H, W, 1)
    assert (frames[:, :15, :21].float() - ref).abs().mean() < 4.0
    assert (frames[..., 0].float() - frames[..., 2].float()).abs().mean() < 2.0  # gray


def test_batch_is_tiled_into_a_grid(tmp_path):
    batch = smooth_video(frames=4, height=16, width=16).expand(5, 3, 4, 16, 16)
    frames = read_video(write_video(tmp_path / "grid.gif", batch, nrow=2))
    assert frames.shape == (4, 3 * 16 + 2 * 2, 2 * 16 + 2, 3)


def test_webm_round_trip(tmp_path):
    video = smooth_video(frames=8)
    frames = read_video(write_video(tmp_path / "a.webm", video, fps=8))
    assert frames.shape == (8, 32, 32, 3)
    assert (frames.float() - to_uint8(video).float()).abs().mean() < 4.0
    assert video_info(tmp_path / "a.webm").num_frames == 8


def test_gif_round_trip_and_timing(tmp_path):
    video = few_color_video(frames=6)
    path = write_video(tmp_path / "a.gif", video, fps=8)
    assert torch.equal(read_video(path), to_uint8(video))  # few colors: exact palette
    with Image.open(path) as im:
        assert im.info.get("loop") == 0 and im.n_frames == 6
    info = video_info(path)
    assert info.num_frames == 6 and info.fps == pytest.approx(8, rel=0.05)
    # GIF delays are on a 10 ms grid: alternate to keep the average exact
    assert set(gif_durations(8, 8)) == {120, 130} and sum(gif_durations(8, 8)) == 1000
    assert min(gif_durations(10, 100)) == 20


def test_gif_of_a_smooth_video_is_close(tmp_path):
    video = smooth_video(frames=4)
    frames = read_video(write_video(tmp_path / "s.gif", video))
    assert (frames.float() - to_uint8(video).float()).abs().mean() < 3.0


def test_png_contact_sheet(tmp_path):
    batch = smooth_video(frames=5, height=8, width=10).expand(3, 3, 5, 8, 10)
    with Image.open(write_video(tmp_path / "sheet.png", batch)) as im:
        assert im.size == (5 * 10 + 4 * 2, 3 * 8 + 2 * 2) and im.mode == "RGB"
        sheet = np.asarray(im)
    assert np.array_equal(sheet[:8, 12:22], to_uint8(batch[0])[1].numpy())
    with Image.open(write_video(tmp_path / "one.png", batch[0, :1])) as im:
        assert im.size == (5 * 10 + 4 * 2, 8)


def test_npy_exact(tmp_path):
    video = torch.rand(2, 1, 3, 4, 5, generator=torch.Generator().manual_seed(1)) * 2 - 1
    path = write_video(tmp_path / "a.npy", video)
    arr = np.load(path)
    assert arr.dtype == np.uint8 and arr.shape == (2, 3, 4, 5, 1)
    assert np.array_equal(arr, to_uint8(video).numpy())
    single = write_video(tmp_path / "b.npy", video[0])
    assert torch.equal(read_video(single, start=1), to_uint8(video[0])[1:])
    assert video_info(single).num_frames == 3


def test_frame_range_matches_full_decode_and_seeks(tmp_path, monkeypatch):
    monkeypatch.setitem(write_mod._CODEC_OPTIONS, "libx264", {"crf": "18", "g": "6"})
    path = write_video(tmp_path / "long.mp4", smooth_video(frames=40), fps=25)
    full = read_video(path)
    assert full.shape[0] == 40
    first_index = []
    real = read_mod._pts_index
    monkeypatch.setattr(
        read_mod, "_pts_index", lambda f, s: first_index.append(real(f, s)) or first_index[-1]
    )
    clip = read_video(path, start=21, end=35, stride=3, max_frames=4)
    assert torch.equal(clip, full[21:35:3][:4])
    assert first_index and 0 < first_index[0] <= 21  # it sought past the first keyframe
    assert torch.equal(read_video(path, max_frames=3), full[:3])
    assert torch.equal(read_video(path, start=38), full[38:])
    with pytest.raises(VideoReadError, match="no frames at or after frame 40"):
        read_video(path, start=40)
    with pytest.raises(ValueError, match="stride"):
        read_video(path, stride=0)


def test_frames_folder_natural_order(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (1, 2, 10, 3):
        Image.new("RGB", (6, 4), (i, 0, 0)).save(folder / f"frame{i}.png")
    (folder / "notes.txt").write_text("not a frame")
    frames = read_frames_folder(folder)
    assert frames.shape == (4, 4, 6, 3)
    assert frames[:, 0, 0, 0].tolist() == [1, 2, 3, 10]
    assert read_video(folder, start=1, stride=2)[:, 0, 0, 0].tolist() == [2, 10]
    assert video_info(folder).num_frames == 4
    Image.new("RGB", (5, 5)).save(folder / "frame11.png")
    with pytest.raises(VideoReadError, match="frame11.png"):
        read_frames_folder(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoReadError, match="no image frames"):
        read_frames_folder(tmp_path / "empty")


# errors


def test_corrupt_file_names_the_path(tmp_path):
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    for fn in (read_video, video_info):
        with pytest.raises(VideoReadError, match="corrupt.mp4") as err:
            fn(path)
        assert err.value.path == str(path)
    gif = tmp_path / "corrupt.gif"
    gif.write_bytes(b"GIF89a" + bytes(50))
    with pytest.raises(VideoReadError, match="corrupt.gif"):
        read_video(gif)


def test_empty_missing_and_frameless_files(tmp_path):
    (tmp_path / "zero.mp4").touch()
    with pytest.raises(VideoReadError, match=r"zero\.mp4.*empty"):
        read_video(tmp_path / "zero.mp4")
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(FileNotFoundError, match="missing.gif"):
        video_info(tmp_path / "missing.gif")
    # a valid header (12 frames) and no frame data: cut just after the "mdat" box header
    data = write_video(tmp_path / "full.mp4", smooth_video()).read_bytes()
    (tmp_path / "noframes.mp4").write_bytes(data[: data.index(b"mdat") + 4])
    with pytest.raises(VideoReadError, match=r"noframes\.mp4.*no frames"):
        read_video(tmp_path / "noframes.mp4")


def test_truncated_file_warns(tmp_path):
    path = write_video(tmp_path / "full.mp4", smooth_video(frames=30))
    with av.open(str(path)) as container:  # byte offsets of the packets, in file order
        offsets = sorted(p.pos for p in container.demux(video=0) if p.size)
    (tmp_path / "cut.mp4").write_bytes(path.read_bytes()[: offsets[20]])  # 20 whole packets
    with pytest.warns(RuntimeWarning, match="truncated"):
        frames = read_video(tmp_path / "cut.mp4")
    assert 0 < frames.shape[0] < 30


def test_video_read_error_is_a_picklable_value_error():
    err = pickle.loads(pickle.dumps(VideoReadError("/x/y.mp4", "broken")))
    assert isinstance(err, ValueError) and str(err) == "cannot read video '/x/y.mp4': broken"


def test_unknown_suffix_lists_supported(tmp_path):
    with pytest.raises(ValueError, match=r"\.mp4, \.webm, \.gif, \.png, \.npy"):
        write_video(tmp_path / "a.avi", smooth_video(frames=2))
    assert list(tmp_path.iterdir()) == []


# atomic writes


def test_atomic_write_leaves_no_temp_files(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "out.mp4"
    write_video(target, smooth_video(frames=3))  # creates the missing folder
    before = target.read_bytes()
    assert no_temp_files(target.parent)
    assert oct(target.stat().st_mode & 0o777) != "0o600"  # usual permissions, not mkstemp's

    def fail(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(write_mod, "_write_av", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        write_video(target, smooth_video(frames=3, height=16))
    assert target.read_bytes() == before  # the old file is untouched
    assert os.listdir(target.parent) == ["out.mp4"]
