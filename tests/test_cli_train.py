"""`vidiff train`, `vidiff sample` and `vidiff info` through `vidiff.cli.main`, with the
messages of bad inputs."""

import json

import numpy as np
import pytest
import torch
from _train_helpers import TINY, cli_error

from vidiff.cli import main

SET = ["--set", *TINY]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A trained 2-step tiny run (shared by the tests of this module)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--out", str(out), "--steps", "2", *SET]) == 0
    return out


@pytest.fixture(scope="module")
def cond_dir(tmp_path_factory):
    """A class-conditional tiny run."""
    out = tmp_path_factory.mktemp("cli") / "cond"
    assert main(["train", "--out", str(out), "--steps", "1", *SET, "data.use_labels=true",
                 "data.options={\"max_balls\": 1}"]) == 0
    return out


def test_the_default_run_trains_and_samples(tmp_path):
    """The README's main job with its real defaults (the mini U-Net with temporal convs, 1-2
    balls at 8x24x24, DDPM sampling), shortened to 2 steps and a 3-step sampler."""
    out = tmp_path / "balls"
    assert main(["train", "--out", str(out), "--steps", "2", "--threads", "1", "--set",
                 "train.progress=false", "train.report_to=[]", "train.sample_count=2",
                 "sample.steps=3"]) == 0
    assert main(["sample", str(out), "--out", str(tmp_path / "balls.gif"), "-n", "2"]) == 0
    from vidiff import Pipeline

    pipe = Pipeline.from_pretrained(out)
    spec = pipe.spec
    assert spec.network["model_channels"] == 16 and spec.backbone_config.temporal_conv
    assert spec.sampling.sampler == "ddpm" and spec.sampling.steps == 3
    assert (spec.shape.frames, spec.shape.size) == (8, 24)
    assert len(spec.conditioning.class_names) == 8  # 1-2 balls x 4 colours
    assert (tmp_path / "balls.gif").stat().st_size > 0


def test_train_writes_run(run_dir, capsys):
    assert (run_dir / "checkpoints" / "step_00000002" / "ema.safetensors").exists()
    assert (run_dir / "samples" / "step_00000002.mp4").exists()
    assert (run_dir / "samples" / "step_00000002.gif").exists()
    # running it again resumes from the run's own config and has nothing left to do
    assert main(["train", "--out", str(run_dir), "--steps", "2"]) == 0


def test_sample_formats(run_dir, tmp_path, capsys):
    npy = tmp_path / "s.npy"
    assert main(["sample", str(run_dir), "--out", str(npy), "--num", "3", "--steps", "2"]) == 0
    assert "sampling on cpu with " in capsys.readouterr().out  # and its CPU threads
    frames = np.load(npy)
    assert frames.shape == (3, 4, 16, 16, 3) and frames.dtype == np.uint8
    for suffix in (".png", ".gif", ".mp4"):
        path = tmp_path / f"s{suffix}"
        assert main(["sample", str(run_dir / "checkpoints" / "step_00000002" / "ema.safetensors"),
                     "--out", str(path), "--num", "2", "--steps", "2", "--sampler",
                     "dpmpp_2m"]) == 0
        assert path.stat().st_size > 0
    # same seed, same videos; the raw weights and DDIM eta work too
    again = tmp_path / "t.npy"
    main(["sample", str(run_dir), "--out", str(again), "--num", "3", "--steps", "2"])
    assert np.array_equal(np.load(again), frames)
    assert main(["sample", str(run_dir), "--out", str(again), "--num", "1", "--steps", "2",
                 "--weights", "model", "--eta", "1", "--threads", "1"]) == 0
    assert "sampling on cpu with 1 CPU thread\n" in capsys.readouterr().out  # set: as it is


def test_sample_conditional(cond_dir, tmp_path, capsys):
    out = tmp_path / "c.npy"
    assert main(["sample", str(cond_dir), "--out", str(out), "--num", "2", "--steps", "2",
                 "--class", "a red ball,1", "--guidance-scale", "2"]) == 0
    assert np.load(out).shape[0] == 2
    err = cli_error(capsys, ["sample", str(cond_dir), "--out", str(out), "--class", "purple"])
    assert "neither a class index" in err and "'a red ball'" in err
    err = cli_error(capsys, ["sample", str(cond_dir), "--out", str(out), "--class", "99"])
    assert "4 classes" in err


def test_info(run_dir, capsys):
    assert main(["info", str(run_dir)]) == 0
    text = capsys.readouterr().out
    assert "step         2" in text and "parameters" in text and "ema.safetensors" in text
    assert main(["info", str(run_dir), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["step"] == 2 and facts["parameters"] > 1000
    assert facts["config"]["data"]["frames"] == 4 and facts["total_bytes"] > 0


def test_missing_checkpoint(tmp_path, capsys):
    missing = tmp_path / "nope"
    for cmd in ("sample", "info"):
        err = cli_error(capsys, [cmd, str(missing)])
        assert f"checkpoint '{missing}' does not exist" in err


def test_checkpoint_of_other_architecture(run_dir, capsys):
    err = cli_error(capsys, ["train", "--out", str(run_dir), "--steps", "3",
                          "--set", "model.overrides.model_channels=32"])
    assert "another model architecture" in err and "model_channels: checkpoint 16, model 32" in err


def test_pickle_is_refused(tmp_path, capsys):
    bad = tmp_path / "model.safetensors"
    torch.save({"weight": torch.zeros(1)}, bad)
    err = cli_error(capsys, ["sample", str(bad), "--out", str(tmp_path / "x.mp4")])
    assert "not a safetensors file" in err


def test_bad_config_inputs(tmp_path, capsys):
    out = str(tmp_path / "r")
    err = cli_error(capsys, ["train", "--out", out, "--set", "train.lrr=1"])
    assert "unknown config key 'train.lrr'" in err and "valid keys of [train]" in err
    err = cli_error(capsys, ["train", "--out", out, "--set", "data.frames=many"])
    assert "data.frames: expected an int, got 'many'" in err
    err = cli_error(capsys, ["train", "--out", out, *SET, "model.overrides.in_channels=1",
                          "model.overrides.out_channels=1"])
    assert "the data has 3 channels" in err and "in_channels=1" in err
    err = cli_error(capsys, ["train", "--out", out, "--set", "model.overrides.colour=1"])
    assert "model.overrides: unknown field(s) ['colour']; valid: the fields of UNetConfig" in err
    err = cli_error(capsys, ["train", "--out", out, "--data", str(tmp_path / "no_videos")])
    assert "no_videos" in err
    err = cli_error(capsys, ["train", "-c", str(tmp_path / "missing.toml")])
    assert "missing.toml' does not exist" in err
    err = cli_error(capsys, ["sample", out, "--out", "x.avi"])
    assert "unknown suffix '.avi'" in err


def test_sample_option_errors(run_dir, tmp_path, capsys):
    out = str(tmp_path / "x.mp4")
    assert "not class-conditional" in cli_error(capsys, ["sample", str(run_dir), "--out", out,
                                                      "--class", "1"])
    assert "--sampler 'lms' is unknown" in cli_error(capsys, ["sample", str(run_dir), "--out",
                                                             out, "--sampler", "lms"])


def test_help_mentions_every_option(capsys):
    for cmd in ("train", "sample", "info"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = capsys.readouterr().out
        assert "usage: vidiff" in text
        if cmd == "train":
            assert "--set KEY=VALUE" in text and "--resume" in text and "--prior" in text
        if cmd == "sample":
            assert "--guidance-scale" in text and ".npy" in text


def test_print_config(capsys, tmp_path):
    assert main(["train", "--out", str(tmp_path / "r"), "--steps", "5", "--print-config",
                 "--set", "train.lr=2e-4"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["train"]["steps"] == 5 and config["train"]["lr"] == 2e-4
