"""Bad arguments to the sampling commands, `vidiff.Pipeline` and an edited model spec: one
clear error naming the argument or the file, before any sampling (never a traceback after
the model has loaded, never a default silently used in place of what was asked)."""

import json
import re
import shutil

import pytest
import torch
from _train_helpers import TINY, cli_error

from vidiff import Pipeline
from vidiff.cli import main
from vidiff.modelio.spec import ModelSpec
from vidiff.utils.config_io import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two 1-step tiny runs: an unconditional video model and a class-conditional image
    model."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("usage")
    video, image = root / "video", root / "image"
    assert main(["train", "--out", str(video), "--steps", "1", "--set", *TINY]) == 0
    assert main(["train", "--out", str(image), "--steps", "1", "--set", *TINY,
                 "data.use_labels=true", "data.frames=1", "model.overrides.temporal=false",
                 "prior.name=independent"]) == 0
    return video, image


def _one_line(capsys, argv) -> str:
    err = cli_error(capsys, argv)
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("fps, why", [("0", "positive"), ("-3", "positive"),
                                      ("inf", "positive"), ("x", "not a number")])
def test_fps_must_be_a_positive_rate(runs, tmp_path, capsys, fps, why):
    out = tmp_path / "v.npy"
    for command in (["sample"], ["extend", "--frames", "6"], ["interpolate"]):
        line = _one_line(capsys, [command[0], str(runs[0]), *command[1:], "--out", str(out),
                                  "--fps", fps])
        assert "--fps" in line and why in line, line
    assert not out.exists()


def test_steps_beyond_the_models_timesteps(runs, tmp_path, capsys):
    out = tmp_path / "v.npy"
    for command in (["sample"], ["extend", "--frames", "6"], ["interpolate"]):
        line = _one_line(capsys, [command[0], str(runs[0]), *command[1:], "--out", str(out),
                                  "--sampler", "ddim", "--steps", "5000"])
        assert "--steps = 5000 exceeds the model's 1000 timesteps" in line, line
    assert not out.exists()
    pipe = Pipeline.from_pretrained(runs[0])
    with pytest.raises(ValueError, match="steps = 1001 exceeds"):
        pipe(1, sampler="ddim", steps=1001)
    assert pipe.sampling("ddim", 1000).steps == 1000  # T itself is a grid


def test_window_commands_on_an_image_model(runs, tmp_path, capsys):
    for command in (["extend", "--frames", "6"], ["interpolate"]):
        line = _one_line(capsys, [command[0], str(runs[1]), *command[1:], "--out",
                                  str(tmp_path / "v.npy")])
        assert "is an image model" in line and f"vidiff {command[0]} needs a video" in line


def test_pipeline_refuses_what_it_would_ignore(runs):
    video, image = (Pipeline.from_pretrained(run) for run in runs)
    for pipe, kwargs, match in (
            (video, {"class_labels": [0]}, "class_labels: this model is not class-cond"),
            (image, {"captions": ["a ball"]}, "captions: this model is not text-cond.*labels"),
            (video, {"lowres": torch.zeros(1, 3, 4, 8, 8)}, "lowres: .*not a super-res"),
            (video, {"steps": 0}, "steps = 0 must be >= 1"),
            (video, {"steps": -2}, "steps = -2 must be >= 1"),
            (video, {"batch_size": 0}, "batch_size must be >= 1"),
            (video, {"batch_size": -1}, "batch_size must be >= 1")):
        with pytest.raises(ValueError, match=match):
            pipe(2, sampler="ddim", **{"steps": 2, **kwargs})
    with pytest.raises(ValueError, match="class_labels"):
        video.conditions(1, class_labels=[0])
    labels = image(2, sampler="ddim", steps=2, class_labels=[1], batch_size=1)
    assert labels.shape == (2, 3, 1, 16, 16)


@pytest.fixture(scope="module")
def export(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("usage_export") / "exported"
    assert main(["export", str(runs[0]), str(out)]) == 0
    return out


def _edited(export, tmp_path, edit):
    copy = tmp_path / "edited"
    shutil.copytree(export, copy)
    data = json.loads((copy / "config.json").read_text())
    edit(data)
    (copy / "config.json").write_text(json.dumps(data))
    return copy


@pytest.mark.parametrize("edit, named", [
    (lambda d: d.pop("shape"), "shape missing"),
    (lambda d: d.pop("diffusion"), "diffusion, diffusion.process missing"),
    (lambda d: d["diffusion"].pop("process"), "diffusion.process missing"),
    (lambda d: d.pop("prior"), "prior, prior.name missing"),
    (lambda d: d.pop("network"), "network missing"),
    (lambda d: d["network"].update(bogus=1), r"bad network .*\['bogus'\]"),
    (lambda d: d.update(kind="dit"), "bad network .*DiTConfig"),
    (lambda d: d["diffusion"].update(timesteps=-1), "bad diffusion .*timesteps"),
    (lambda d: d["prior"].update(name="nope"), "bad prior .*unknown noise prior 'nope'"),
])
def test_an_edited_spec_is_named_by_info_and_sample(export, tmp_path, capsys, edit, named):
    """A spec missing what defines the model (a default would load another model: a flow
    model as DDPM) or holding a section that cannot be built: `vidiff info` and `vidiff
    sample` both name the file and the section."""
    edited = _edited(export, tmp_path, edit)
    for argv in (["info", str(edited)], ["sample", str(edited), "--out",
                                         str(tmp_path / "v.npy")]):
        line = _one_line(capsys, argv)
        assert "config.json" in line and re.search(named, line), line
    assert not (tmp_path / "v.npy").exists()


def test_a_complete_spec_round_trips(export):
    data = json.loads((export / "config.json").read_text())
    assert ModelSpec.from_dict(data).to_dict() == data
    with pytest.raises(ConfigError, match="prior.name missing"):
        ModelSpec.from_dict({**data, "prior": {"params": {}}})
    assert ModelSpec.from_dict(data).shape.frames == 4
