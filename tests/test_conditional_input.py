"""The window commands read their input as training read its clips: resized to cover the
model's size and center-cropped (not squashed), in bounded memory, at the input's frame rate."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from _train_helpers import TINY

from vidiff.cli import main
from vidiff.data.resize import resize_crop_frames
from vidiff.io import read_video, video_info, write_video

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cond") / "run"
    assert main(["train", "--out", str(out), "--steps", "1", "--set", *TINY]) == 0
    return out


def _wide_video(path, frames=4, h=36, w=64, fps=12):
    g = torch.Generator().manual_seed(0)
    clip = torch.rand(3, frames, h, w, generator=g) * 2 - 1
    clip = torch.nn.functional.avg_pool3d(clip[None], (1, 5, 5), 1, (0, 2, 2))[0] * 2
    write_video(path, clip.clamp(-1, 1), fps=fps)
    return path


def test_extend_crops_like_training_and_keeps_the_input_fps(run_dir, tmp_path, capsys):
    source = _wide_video(tmp_path / "wide.mp4")
    out = tmp_path / "long.npy"
    assert main(["extend", str(run_dir), "--input", str(source), "--frames", "8", "--steps",
                 "2", "--out", str(out)]) == 0
    assert "64x36 frames resized to cover 16x16 and center-cropped" in capsys.readouterr().out
    got = torch.from_numpy(np.load(out))[0]  # (8, 16, 16, 3): the known frames come first
    want = resize_crop_frames(read_video(source), (16, 16))  # the training geometry
    assert got.shape == (8, 16, 16, 3)
    assert (got[:4].int() - want.int()).abs().max() <= 1
    mp4 = tmp_path / "long.mp4"
    assert main(["extend", str(run_dir), "--input", str(source), "--frames", "8", "--steps",
                 "2", "--out", str(mp4)]) == 0
    assert video_info(mp4).fps == pytest.approx(12)
    dense = tmp_path / "dense.mp4"
    assert main(["interpolate", str(run_dir), "--input", str(source), "--factor", "2",
                 "--steps", "2", "--out", str(dense)]) == 0
    assert video_info(dense).fps == pytest.approx(24)  # twice the frames, the same duration


def _peak_rss_mib(cmd):
    code = ("import resource, sys; from vidiff.cli import main; rc = main(sys.argv[1:]); "
            "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.split("PEAK")[-1]) / 1024


def test_extend_memory_follows_the_clip_size_not_the_file_resolution(run_dir, tmp_path):
    """A 720p input used to become full-resolution float (24 x 1280 x 720 x 3 x 4 bytes =
    265 MB here) before any resize; now frames are cropped as they are decoded."""
    small = _wide_video(tmp_path / "small.mp4", frames=24, h=144, w=256)
    large = _wide_video(tmp_path / "large.mp4", frames=24, h=720, w=1280)
    peaks = [_peak_rss_mib(["extend", str(run_dir), "--input", str(p), "--frames", "26",
                            "--steps", "1", "--out", str(tmp_path / f"{p.stem}.npy")])
             for p in (small, large)]
    assert peaks[1] - peaks[0] < 120, peaks  # MiB; the float path added > 250


def test_interpolate_shows_one_progress_bar_for_all_windows(run_dir, tmp_path, capsys):
    source = _wide_video(tmp_path / "wide.mp4", frames=6)
    assert main(["interpolate", str(run_dir), "--input", str(source), "--factor", "3",
                 "--steps", "2", "--out", str(tmp_path / "d.mp4")]) == 0
    err = capsys.readouterr().err
    bars = {line.split(":")[0].strip() for line in err.replace("\r", "\n").splitlines()
            if "window(s)" in line}
    assert len(bars) == 1, bars  # one bar, counting every step of every window
    assert "sampling" not in err


def test_extend_a_long_video_from_its_last_frames(run_dir, tmp_path, capsys):
    """--context N: only the last N input frames condition, --frames new ones are added after
    the whole input, which comes back unchanged in front."""
    source = _wide_video(tmp_path / "long.mp4", frames=12)
    out = tmp_path / "longer.npy"
    assert main(["extend", str(run_dir), "--input", str(source), "--context", "3",
                 "--frames", "5", "--steps", "2", "--out", str(out)]) == 0
    got = torch.from_numpy(np.load(out))[0]
    want = resize_crop_frames(read_video(source), (16, 16))
    assert got.shape[0] == 12 + 5
    assert (got[:12].int() - want.int()).abs().max() <= 1
    from _train_helpers import cli_error

    err = cli_error(capsys, ["extend", str(run_dir), "--input", str(source), "--frames", "5"])
    assert "--context N --frames NEW" in err
    err = cli_error(capsys, ["extend", str(run_dir), "--input", str(source), "--context", "20"])
    assert "--context 20 must be in [1, 12]" in err


def test_upsample_keeps_the_input_fps_and_says_the_resize(run_dir, tmp_path, capsys):
    source = _wide_video(tmp_path / "wide.mp4", fps=15)
    out = tmp_path / "up.mp4"
    assert main(["upsample", str(run_dir), "--input", str(source), "--factor", "2",
                 "--steps", "2", "--out", str(out)]) == 0
    assert "64x36 frames resized to cover 8x8 and center-cropped" in capsys.readouterr().out
    info = video_info(out)
    assert info.fps == pytest.approx(15) and (info.width, info.height) == (16, 16)
