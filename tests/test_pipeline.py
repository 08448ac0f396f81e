"""The model as one object: `ModelSpec`, `vidiff.Pipeline` and `vidiff export`."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_helpers import tiny_config

from vidiff import ModelSpec, Pipeline
from vidiff.cli import main
from vidiff.io import to_uint8
from vidiff.modelio.spec import TextEncoderSpec
from vidiff.train import train
from vidiff.utils.config_io import ConfigError


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A class-conditional run (guidance by default) and an unconditional VideoFusion run."""
    root = tmp_path_factory.mktemp("pipeline")
    cond = root / "cond"
    train(tiny_config(cond, "data.use_labels=true", "sample.guidance_scale=2.0", steps=3),
          echo=False)
    vf = root / "vf"
    train(tiny_config(vf, "model.kind=videofusion", "prior.name=decomposed",
                      "diffusion.prediction=eps", steps=2), echo=False)
    return {"cond": cond, "vf": vf, "root": root}


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_spec_round_trips_through_json(runs):
    for name in ("cond", "vf"):
        spec = Pipeline.from_pretrained(runs[name]).spec
        again = ModelSpec.from_json(spec.to_json())
        assert again == spec and again.to_dict() == json.loads(spec.to_json())
    spec = Pipeline.from_pretrained(runs["cond"]).spec
    assert spec.kind == "unet" and spec.num_classes == 8 and spec.conditional
    assert spec.sampling.guidance_scale == 2.0 and spec.provenance.data == "bouncing_balls"
    assert spec.prior.params == {"alpha": 2.0}  # resolved: no default is needed to load it
    vf = Pipeline.from_pretrained(runs["vf"]).spec
    assert vf.kind == "videofusion" and not vf.conditional and vf.prior.name == "decomposed"
    text = replace(spec, conditioning=replace(spec.conditioning, lowres_size=8,
                                              text_encoder=TextEncoderSpec("hash", 64, 16)))
    assert ModelSpec.from_json(text.to_json()) == text  # the optional sections too


def test_spec_errors_are_clear(runs):
    data = Pipeline.from_pretrained(runs["cond"]).spec.to_dict()
    with pytest.raises(ConfigError, match="not a vidiff model spec"):
        ModelSpec.from_dict({**data, "format": "something-else"})
    with pytest.raises(ValueError, match="unknown model kind 'mamba'.*'unet', 'videofusion'"):
        ModelSpec.from_dict({**data, "kind": "mamba"})
    bad_key = r"unknown config key 'spec.shape.colour'; valid keys of \[spec.shape\]"
    with pytest.raises(ConfigError, match=bad_key):
        ModelSpec.from_dict({**data, "shape": {**data["shape"], "colour": 1}})


def test_pipeline_equals_vidiff_sample(runs, tmp_path):
    pipe = Pipeline.from_pretrained(runs["cond"])
    out = tmp_path / "s.npy"
    assert main(["sample", str(runs["cond"]), "-n", "3", "--seed", "5", "--out", str(out),
                 "--threads", "1"]) == 0
    videos = pipe(num_videos=3, generator=_seeded(5))
    assert videos.shape == (3, 3, 4, 16, 16) and videos.abs().max() <= 1
    assert np.array_equal(np.load(out), to_uint8(videos).numpy())
    # guidance is the spec's default: the explicit scale gives the same, 1 gives other videos
    torch.testing.assert_close(pipe(3, guidance_scale=2.0, generator=_seeded(5)), videos,
                               rtol=0, atol=0)
    assert not torch.equal(pipe(3, guidance_scale=1.0, generator=_seeded(5)), videos)


def test_pipeline_batches_and_labels(runs):
    pipe = Pipeline.from_pretrained(runs["cond"])
    one = pipe(4, class_labels=[3], generator=_seeded(1))
    assert one.shape[0] == 4
    cond = pipe.conditions(5, class_labels=[1, 2])
    assert cond.class_labels.tolist() == [1, 2, 1, 2, 1]
    assert pipe.conditions(3).class_labels.tolist() == [0, 1, 2]  # the classes in turn
    with pytest.raises(ValueError, match=r"class_labels \[9\] must lie in \[0, 8\)"):
        pipe(1, class_labels=[9])
    with pytest.raises(ValueError,
                       match="sampler 'lms' is unknown; choose one of consistency, ddim, ddpm"):
        pipe(1, sampler="lms")
    with pytest.raises(ValueError, match="sampler 'euler': euler and heun sample flow"):
        pipe(1, sampler="euler")  # a flow sampler, on a DDPM model
    with pytest.raises(ValueError, match="eta applies to the ddim sampler only"):
        pipe(1, sampler="ddpm", eta=0.5)
    # bounded memory: batches of 2 draw their noise from the one generator in turn
    batched = pipe(4, batch_size=2, generator=_seeded(1), class_labels=[0, 1, 2, 3])
    assert batched.shape == (4, 3, 4, 16, 16)
    first = pipe(2, generator=_seeded(1), class_labels=[0, 1])
    torch.testing.assert_close(batched[:2], first, rtol=0, atol=0)


def test_export_folder_loads_and_samples_as_the_run(runs, tmp_path, capsys):
    run = runs["cond"]
    report = {"metrics": {"fvd_lite": 12.5, "ball_tracking": {"steady_pairs": 0.5}},
              "settings": {"generated": {"sampler": "ddim", "steps": 2},
                           "reference": {"name": "bouncing_balls"}}}
    (run / "eval.json").write_text(json.dumps(report))
    out = tmp_path / "exported"
    assert main(["export", str(run), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json",
                                                     "model.safetensors"]
    for path in out.iterdir():  # no pickle, no machine path
        text = path.read_bytes()
        assert b"\x80\x04\x95" not in text and str(tmp_path).encode() not in text
        assert str(run).encode() not in text
    card = (out / "README.md").read_text()
    assert "class-conditional (8 classes" in card and "| FVD-lite | 12.5000 |" in card
    assert f"vidiff sample {out.name}" in card
    assert ModelSpec.from_json((out / "config.json").read_text()) == replace(
        Pipeline.from_pretrained(run).spec)
    a = Pipeline.from_pretrained(out)(3, generator=_seeded(2))
    b = Pipeline.from_pretrained(run)(3, generator=_seeded(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    raw = Pipeline.from_pretrained(run, weights="model")(3, generator=_seeded(2))
    assert main(["export", str(run), str(tmp_path / "raw"), "--weights", "model"]) == 0
    torch.testing.assert_close(Pipeline.from_pretrained(tmp_path / "raw")(
        3, generator=_seeded(2)), raw, rtol=0, atol=0)
    # every command takes the exported folder as its checkpoint
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert "exported" in capsys.readouterr().out
    assert main(["sample", str(out), "-n", "1", "--out", str(tmp_path / "e.npy")]) == 0
    assert main(["extend", str(out), "--frames", "6", "--out", str(tmp_path / "x.npy"),
                 "--steps", "2", "--threads", "1"]) == 0
    assert main(["eval", "-c", str(out), "-n", "2", "--reference-num", "2", "--threads", "1",
                 "--no-progress", "--out", str(tmp_path / "r.json")]) == 0
    reference = json.loads((tmp_path / "r.json").read_text())["settings"]["reference"]
    assert reference["name"] == "bouncing_balls" and reference["seed"] == 1  # held out


def test_export_refuses_a_non_empty_folder(runs, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):
        main(["export", str(runs["vf"]), str(tmp_path / "taken")])
    assert "is not empty" in capsys.readouterr().err
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_vidiff_sample_never_imports_the_trainer(runs, tmp_path):
    code = (
        "import sys\n"
        "import vidiff.modelio.pipeline, vidiff.modelio.export\n"
        "assert not [m for m in sys.modules if m.startswith('vidiff.train')], 'import'\n"
        "from vidiff.cli import main\n"
        f"assert main(['sample', {str(runs['vf'])!r}, '-n', '1', '--steps', '2', '--out', "
        f"{str(tmp_path / 'v.npy')!r}, '--threads', '1']) == 0\n"
        "loaded = [m for m in sys.modules if m.startswith('vidiff.train')]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert Path(tmp_path / "v.npy").exists()


def test_pipeline_in_bfloat16(runs):
    """`.to(dtype=...)` casts the weights; sampling stays float32 around the network."""
    pipe = Pipeline.from_pretrained(runs["cond"])
    full = pipe(2, generator=_seeded(4))
    low = Pipeline.from_pretrained(runs["cond"]).to(dtype=torch.bfloat16)
    assert low.dtype == torch.bfloat16
    half = low(2, generator=_seeded(4))
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert (half - full).abs().mean() < 0.05  # bf16 rounding, not other videos


def test_eval_nll_refusals_come_before_any_sampling(runs, capsys, monkeypatch):
    from _train_helpers import cli_error

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled before refusing --nll")

    monkeypatch.setattr(Pipeline, "__call__", no_sampling)
    err = cli_error(capsys, ["eval", "-c", str(runs["cond"]), "-n", "2", "--nll",
                             "--threads", "1", "--no-progress"])
    assert "--nll: conditional models are not supported" in err
