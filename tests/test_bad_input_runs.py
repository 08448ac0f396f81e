"""Bad input to the commands: one line naming the file or argument, checked before compute is
spent, never a traceback and never lost work."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from _train_helpers import TINY, cli_error

from vidiff.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

SET = ["--set", *TINY]


def _read_only_place():
    """A path no one (root included) can create: /sys refuses new entries."""
    path = "/sys/vidiff-cannot-write-here"
    try:
        os.mkdir(path)
    except OSError:
        return path
    os.rmdir(path)
    pytest.skip("this machine lets us write in /sys")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad") / "run"
    assert main(["train", "--out", str(out), "--steps", "1", *SET]) == 0
    return out


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_folder_of_unreadable_videos(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("a.mp4", "b.webm", "c.gif"):
        (bad / name).write_bytes(b"not a video at all" * 10)
    line = _one_line(cli_error(capsys, ["train", "--data", str(bad), "--out",
                                        str(tmp_path / "r"), *SET]))
    assert "no readable videos" in line and str(bad) in line and "all 3" in line
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_read_only_out_for_train_sample_extend_eval(run_dir, tmp_path, capsys):
    place = _read_only_place()
    line = _one_line(cli_error(capsys, ["train", "--out", place, *SET]))
    assert place in line and "--out" in line
    for argv in (["sample", str(run_dir), "--out", f"{place}/s.mp4"],
                 ["extend", str(run_dir), "--frames", "8", "--out", f"{place}/e.mp4"],
                 ["interpolate", str(run_dir), "--out", f"{place}/i.mp4"],
                 ["upsample", str(run_dir), "--out", f"{place}/u.mp4"]):
        line = _one_line(cli_error(capsys, argv))
        assert f"{place}/" in line and "cannot create" in line, argv
    line = _one_line(cli_error(capsys, ["demo", "--out", f"{place}/demo"]))
    assert place in line
    clips = tmp_path / "clips.npy"
    np.save(clips, np.zeros((2, 3, 4, 16, 16), np.uint8))
    line = _one_line(cli_error(capsys, ["eval", "-g", str(clips), "-r", "bouncing_balls",
                                        "--out", f"{place}/report.json"]))
    assert "--out" in line and place in line


def test_out_that_is_an_existing_file(tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    line = _one_line(cli_error(capsys, ["train", "--out", str(file), *SET]))
    assert str(file) in line and "existing file" in line
    assert file.read_text() == "mine"
    line = _one_line(cli_error(capsys, ["train", "--out", str(file / "run"), *SET]))
    assert str(file) in line


def test_sample_out_that_is_a_file_under_a_file(run_dir, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    line = _one_line(cli_error(capsys, ["sample", str(run_dir), "--out",
                                        str(tmp_path / "notes.txt" / "s.mp4")]))
    assert "notes.txt" in line


def test_truncated_state_file_given_to_resume(run_dir, tmp_path, capsys):
    import shutil

    from vidiff.modelio.checkpoint import list_checkpoints

    copy = tmp_path / "ckpt"
    shutil.copytree(list_checkpoints(run_dir)[-1], copy)
    data = (copy / "state.pt").read_bytes()
    (copy / "state.pt").write_bytes(data[: len(data) // 2])
    line = _one_line(cli_error(capsys, ["train", "--out", str(tmp_path / "r"), "--resume",
                                        str(copy), *SET]))
    assert str(copy / "state.pt") in line and "corrupt or truncated" in line


def test_pickled_state_file_is_refused_without_advice_to_unpickle(run_dir, tmp_path, capsys):
    import argparse
    import shutil

    from vidiff.modelio.checkpoint import list_checkpoints

    copy = tmp_path / "ckpt"
    shutil.copytree(list_checkpoints(run_dir)[-1], copy)
    torch.save({"step": 1, "evil": argparse.Namespace(x=1)}, copy / "state.pt")  # a pickle
    line = _one_line(cli_error(capsys, ["train", "--out", str(tmp_path / "r"), "--resume",
                                        str(copy), *SET]))
    assert "refusing to load" in line and "never unpickles" in line
    assert "weights_only" not in line and "False" not in line


def test_eval_of_a_single_video(tmp_path, capsys):
    from vidiff.io import write_video

    video = tmp_path / "one.mp4"
    write_video(video, torch.rand(3, 8, 16, 16) * 2 - 1, fps=8)
    line = _one_line(cli_error(capsys, ["eval", "-g", str(video), "-r", "bouncing_balls"]))
    assert str(video) in line and "at least 2" in line


def test_print_config_into_a_closed_pipe():
    """`vidiff train --print-config | head -1`: no BrokenPipeError traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "vidiff", "train", "--print-config"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the writer writes
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode in (0, 141)


def test_a_setting_without_effect_is_warned(run_dir, capsys):
    assert main(["train", "--out", str(run_dir), "--steps", "1",
                 "--set", "data.text_encoder=minilm"]) == 0
    out = capsys.readouterr().out
    assert "data.text_encoder = 'minilm' has no effect" in out and "use_captions" in out


def test_info_shows_text_encoder_and_fps(run_dir, tmp_path, capsys):
    assert main(["info", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "text         none (not text-conditional)" in out and "frame rate   8 fps" in out
    text_run = tmp_path / "t"
    assert main(["train", "--out", str(text_run), "--steps", "1", *SET,
                 "data.use_captions=true"]) == 0
    capsys.readouterr()
    assert main(["info", str(text_run)]) == 0
    assert "text         hash, width 64, up to 16 words" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda(tmp_path, capsys):
    line = _one_line(cli_error(capsys, ["train", "--out", str(tmp_path / "r"), "--device",
                                        "cuda", *SET]))
    assert "no CUDA device" in line and "--device cpu" in line


def test_sample_grids_are_marked_refused_by_eval_and_a_folder_gets_one_file_each(
        run_dir, tmp_path, capsys):
    from vidiff.io import grid_of, read_video

    grid = tmp_path / "grid.mp4"
    assert main(["sample", str(run_dir), "--out", str(grid), "--num", "4", "--steps", "2"]) == 0
    assert grid_of(grid) == "vidiff grid: 4 videos of 16x16, 2 per row"
    line = _one_line(cli_error(capsys, ["eval", "-g", str(grid), "-r", "bouncing_balls"]))
    assert "holds 4 videos of 16x16, 2 per row, tiled into one file" in line
    assert "--out DIR/" in line
    folder = tmp_path / "each"
    assert main(["sample", str(run_dir), "--out", f"{folder}/", "--num", "3", "--steps",
                 "2", "--format", "gif"]) == 0
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == [f"video_{k:04d}.gif" for k in range(3)]
    assert all(grid_of(f) is None and read_video(f).shape[1:3] == (16, 16) for f in files)
    capsys.readouterr()
    assert main(["eval", "-g", str(folder), "-r", "bouncing_balls", "--frames", "4",
                 "--no-progress"]) == 0
    assert "clips: 3 generated" in capsys.readouterr().out
