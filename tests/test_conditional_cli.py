"""`vidiff extend` and `vidiff interpolate` through `vidiff.cli.main`: shapes, paths, errors."""

import numpy as np
import pytest
import torch
from _train_helpers import TINY, cli_error

from vidiff.cli import main
from vidiff.io import write_video

FAST = ["--steps", "2", "--threads", "1"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A 1-step tiny run: 4 frames of 16x16, progressive noise prior."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("cond_cli") / "run"
    assert main(["train", "--out", str(out), "--steps", "1", "--set", *TINY]) == 0
    return out


@pytest.fixture
def clip(tmp_path):
    """A 3-frame 20x20 RGB video in a .npy file (resized to the model's 16x16 on reading)."""
    path = tmp_path / "clip.npy"
    g = torch.Generator().manual_seed(0)
    write_video(path, torch.rand(3, 3, 20, 20, generator=g) * 2 - 1)
    return path




@pytest.mark.parametrize("method", ["reconstruction", "replacement"])
def test_extend_input_and_generated(tiny_run, clip, tmp_path, method):
    out = tmp_path / "long.npy"
    assert main(["extend", str(tiny_run), "--input", str(clip), "--frames", "9", "--overlap",
                 "2", "--method", method, "--out", str(out), *FAST]) == 0
    frames = np.load(out)
    assert frames.shape == (1, 9, 16, 16, 3)
    out = tmp_path / "gen.gif"
    assert main(["extend", str(tiny_run), "--num", "2", "--frames", "7", "--out", str(out),
                 *FAST]) == 0
    assert out.stat().st_size > 0


def test_interpolate_keeps_the_given_frames(tiny_run, clip, tmp_path):
    out = tmp_path / "dense.npy"
    assert main(["interpolate", str(tiny_run), "--input", str(clip), "--factor", "3",
                 "--out", str(out), *FAST]) == 0
    frames = np.load(out)
    assert frames.shape == (1, 7, 16, 16, 3)
    from vidiff.data.resize import resize_crop_frames

    given = torch.from_numpy(np.load(clip)[0])  # (3, 20, 20, 3) uint8
    # the given frames, resized as the training clips were, come back within the rounding
    resized = resize_crop_frames(given, (16, 16)).int()
    kept = torch.from_numpy(frames[0, ::3]).int()
    assert (kept - resized).abs().max() <= 1


def test_conditional_commands_name_bad_input(tiny_run, clip, tmp_path, capsys):
    run = str(tiny_run)
    assert "--overlap" in cli_error(capsys, ["extend", run, "--overlap", "4", *FAST])
    assert "shorter" in cli_error(capsys, ["extend", run, "--input", str(clip), "--frames", "2"])
    assert "--input" in cli_error(capsys, ["extend", run, "--input", str(tmp_path / "no.mp4")])
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not a video")
    assert "bad.npy" in cli_error(capsys, ["interpolate", run, "--input", str(bad)])
    assert "--factor" in cli_error(capsys, ["interpolate", run, "--factor", "1"])
    assert "--out" in cli_error(capsys, ["extend", run, "--out", "x.avi"])
    assert "invalid choice" in cli_error(capsys, ["extend", run, "--method", "inpaint"])


def test_upsample_fits_the_low_resolution_input(tiny_run, tmp_path):
    """An 8x8 input, upsampled x2 by the 16x16 model through 2x2 average pooling."""
    low = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    path = tmp_path / "low.npy"
    write_video(path, low)
    out = tmp_path / "high.npy"
    assert main(["upsample", str(tiny_run), "--input", str(path), "--out", str(out),
                 "--threads", "1", "--steps", "10"]) == 0
    frames = np.load(out)
    assert frames.shape == (1, 2, 16, 16, 3)
    assert main(["upsample", str(tiny_run), "--num", "1", "--factor", "4", "--out",
                 str(tmp_path / "r.gif"), *FAST]) == 0


def test_upsample_names_bad_input(tiny_run, capsys):
    run = str(tiny_run)
    assert "--factor 3" in cli_error(capsys, ["upsample", run, "--factor", "3"])
    assert "reconstruction" in cli_error(capsys, ["upsample", run, "--method", "replacement"])


def test_extend_takes_the_models_conditions(tiny_run, clip, tmp_path, capsys):
    """--class conditions the extension (with guidance at the run's scale); without it the
    model samples unconditionally; a condition the model does not take is refused."""
    run = tmp_path / "labels"
    assert main(["train", "--out", str(run), "--steps", "2", "--set", *TINY,
                 "data.use_labels=true", "train.cond_drop_prob=0.2"]) == 0
    outs = []
    for extra in (["--class", "0"], ["--class", "1"], []):
        out = tmp_path / f"c{len(outs)}.npy"
        assert main(["extend", str(run), "--input", str(clip), "--frames", "6", *extra,
                     "--out", str(out), *FAST]) == 0
        outs.append(np.load(out))
    assert (outs[0][:, :3] == outs[1][:, :3]).all()  # the given frames, kept
    assert not (outs[0] == outs[1]).all() and not (outs[0] == outs[2]).all()
    err = cli_error(capsys, ["extend", str(tiny_run), "--input", str(clip), "--class", "0"])
    assert "--class: this model is not class-conditional" in err
    err = cli_error(capsys, ["extend", str(tiny_run), "--input", str(clip), "--caption", "x"])
    assert "--caption: this model is not text-conditional" in err
    err = cli_error(capsys, ["extend", str(run), "--input", str(clip), "--negative-prompt", "x"])
    assert "--negative-prompt: a unet model's null condition is learned" in err
    # the same check, the library's names: Pipeline.check_conditions is the one place
    from vidiff import Pipeline
    from vidiff.modelio.pipeline import ConditionError

    with pytest.raises(ConditionError, match="^captions: this model is not text-conditional"):
        Pipeline.from_pretrained(run).conditions(1, captions=["x"])
