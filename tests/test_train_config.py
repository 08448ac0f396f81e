"""Run configs: files, --set overrides, and the errors for unknown keys and bad values."""

import importlib.util
import json
from pathlib import Path

import pytest

from vidiff.train.config import RunConfig, load_run_config
from vidiff.utils.config_io import ConfigError, apply_overrides

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_and_dict_roundtrip():
    config = load_run_config(None, [])  # validated: the kind's default preset filled in
    assert config.data.source == "bouncing_balls" and config.model.preset == "mini"
    assert RunConfig().model.preset is None
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


# the example configs that start from a pretrained model (model.init_from): its kind
NEEDS_SOURCE = {"finetune_sd_video.toml": "sd", "finetune_video.toml": "image",
                "finetune_videofusion.toml": "image", "finetune_wan_lora.toml": "wan",
                "finetune_cogvideox_lora.toml": "cogvideox"}
# the example configs of a folder of videos (data.path given on the command line)
NEEDS_FOLDER = {"finetune_wan_lora.toml", "finetune_cogvideox_lora.toml"}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A one-step vidiff image run, tiny Stable Diffusion, Wan and CogVideoX roots, by kind."""
    from _sd_helpers import write_tiny_sd
    from _train_helpers import TINY

    from vidiff.cli import main

    root = tmp_path_factory.mktemp("sources")
    assert main(["train", "--out", str(root / "image"), "--steps", "1", "--set", *TINY,
                 "model.overrides.temporal=false", "data.frames=1"]) == 0
    found = {"image": root / "image", "sd": write_tiny_sd(root / "sd")}
    if importlib.util.find_spec("peft") is not None:
        import _video_pipelines as vp

        found |= {f: vp.write_pipeline(root / f, f) for f in ("wan", "cogvideox")}
    return found


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.toml")))
def test_example_configs_load(name, request, tmp_path):
    folder = [f"data.path={tmp_path}"] if name in NEEDS_FOLDER else []
    if name not in NEEDS_SOURCE:
        assert isinstance(load_run_config(CONFIGS / name, folder), RunConfig)
        return
    with pytest.raises(ConfigError, match="model.init_from|train.trainable"):
        load_run_config(CONFIGS / name, folder)  # its model is read at load: here, none
    found = request.getfixturevalue("sources")
    if NEEDS_SOURCE[name] not in found:
        pytest.skip("the video recipes need peft (pip install 'vidiff[video]')")
    source = found[NEEDS_SOURCE[name]]
    config = load_run_config(CONFIGS / name, [*folder, f"model.init_from={source}"])
    assert config.model.init_from == str(source)


def test_balls_toml_is_the_default():
    config = load_run_config(CONFIGS / "balls.toml")
    assert config == load_run_config(None, [])


def test_file_formats(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"train": {"lr": 1e-4}, "data": {"frames": 4}}))
    (tmp_path / "c.toml").write_text("[train]\nlr = 1e-4\n[data]\nframes = 4\n")
    a = load_run_config(tmp_path / "c.json")
    b = load_run_config(tmp_path / "c.toml")
    assert a == b and a.train.lr == 1e-4 and a.data.frames == 4
    pytest.importorskip("yaml")
    (tmp_path / "c.yaml").write_text("train:\n  lr: 1.0e-4\ndata:\n  frames: 4\n")
    assert load_run_config(tmp_path / "c.yaml") == a


def test_overrides_are_typed():
    config = load_run_config(None, [
        "train.lr=1e-4", "data.frames=16", "train.compile=true", "data.fps=none",
        "train.betas=0.9,0.99", "model.overrides.model_channels=32", 'prior.params={"alpha": 2}',
        "prior.name=mixed", "train.steps=1e3",
    ])
    assert config.train.lr == 1e-4 and isinstance(config.train.lr, float)
    assert config.data.frames == 16 and config.train.compile is True
    assert config.data.fps is None and config.train.betas == (0.9, 0.99)
    assert config.model.overrides == {"model_channels": 32}
    assert config.prior.params == {"alpha": 2} and config.train.steps == 1000


def test_file_then_overrides(tmp_path):
    (tmp_path / "c.toml").write_text("[train]\nlr = 1e-4\nsteps = 7\n")
    config = load_run_config(tmp_path / "c.toml", ["train.lr=3e-4"])
    assert config.train.lr == 3e-4 and config.train.steps == 7


def test_unknown_key_lists_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'train.lrr'.*lr_schedule"):
        load_run_config(None, ["train.lrr=1"])
    (tmp_path / "c.toml").write_text("[data]\nframez = 4\n")
    with pytest.raises(ConfigError, match=r"'data.framez'.*valid keys of \[data\]:.*frames"):
        load_run_config(tmp_path / "c.toml")
    (tmp_path / "d.toml").write_text("[trian]\nlr = 1\n")
    with pytest.raises(ConfigError, match=r"unknown config section 'trian'.*train"):
        load_run_config(tmp_path / "d.toml")


def test_bad_values_name_key_and_type(tmp_path):
    with pytest.raises(ConfigError, match=r"train.lr: expected a float, got 'abc'"):
        load_run_config(None, ["train.lr=abc"])
    with pytest.raises(ConfigError, match=r"data.frames: expected an int"):
        load_run_config(None, ["data.frames=8.5"])
    with pytest.raises(ConfigError, match=r"train.compile: expected a bool"):
        load_run_config(None, ["train.compile=maybe"])
    (tmp_path / "c.toml").write_text('[data]\nframes = "eight"\n')
    with pytest.raises(ConfigError, match=r"data.frames: expected int, got 'eight'"):
        load_run_config(tmp_path / "c.toml")
    with pytest.raises(ConfigError, match=r"train.precision = 'fp8' is not valid.*bf16"):
        load_run_config(None, ["train.precision=fp8"])
    with pytest.raises(ConfigError, match=r"model.preset"):
        load_run_config(None, ["model.preset=huge"])
    with pytest.raises(ConfigError, match=r"section.key=value"):
        load_run_config(None, ["train.lr"])
    with pytest.raises(ConfigError, match=r"does not exist"):
        load_run_config(tmp_path / "missing.toml")


def test_apply_overrides_keeps_original():
    config = RunConfig()
    changed = apply_overrides(config, ["train.steps=3"])
    assert changed.train.steps == 3 and config.train.steps == RunConfig().train.steps


def test_sample_section_and_the_keys_it_replaced(tmp_path):
    """[sample] holds the sampler defaults; files and --set written for train.sampler /
    train.sample_steps still work, and a stored run of that time keeps sampling unguided."""
    from vidiff.train.config import RunConfig

    config = load_run_config(None, ["train.sampler=ddim", "train.sample_steps=7"])
    assert (config.sample.sampler, config.sample.steps) == ("ddim", 7)
    old = tmp_path / "old.toml"
    old.write_text('[train]\nsampler = "dpmpp_2m"\nsample_steps = 12\n')
    config = load_run_config(old)
    assert (config.sample.sampler, config.sample.steps) == ("dpmpp_2m", 12)
    assert config.sample.guidance_scale == 1.5  # a new run: today's default guidance
    stored = RunConfig().to_dict()
    del stored["sample"]
    stored["train"].update(sampler="ddim", sample_steps=50)
    loaded = RunConfig.from_dict(stored)
    assert (loaded.sample.sampler, loaded.sample.steps, loaded.sample.guidance_scale) == (
        "ddim", 50, 1.0)
    with pytest.raises(ConfigError, match="sample.eta applies to"):
        load_run_config(None, ["sample.eta=0.5"])  # the default sampler is DDPM
    with pytest.raises(ConfigError, match="sample.guidance_scale = -1.0 must be >= 0"):
        load_run_config(None, ["sample.guidance_scale=-1"])
