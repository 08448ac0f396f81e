"""Settings a run would silently ignore, and sources that would fail after the data is read,
are refused when the config is loaded: one error naming the key (and the file)."""

import json

import pytest
from _sd_helpers import write_tiny_sd
from _train_helpers import TINY

from vidiff.cli import main
from vidiff.text.encoders import text_encoder_named
from vidiff.train.config import load_run_config
from vidiff.utils.config_io import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

FLOW = ["diffusion.process=flow", "sample.sampler=euler"]
IMAGE = ["model.overrides.temporal=false", "data.frames=1", "prior.name=independent"]


def _refused(*settings, match):
    with pytest.raises(ConfigError, match=match):
        load_run_config(None, [*TINY, *settings])


@pytest.mark.parametrize("setting", ["diffusion.prediction=eps", "diffusion.schedule=linear",
                                     "diffusion.timesteps=500",
                                     'diffusion.schedule_kwargs={"s": 0.01}'])
def test_flow_refuses_the_ddpm_keys(setting):
    key = setting.split("=")[0]
    _refused(*FLOW, setting, match=rf"{key} = .* is not used: rectified flow")
    load_run_config(None, [*TINY, setting])  # DDPM reads it


@pytest.mark.parametrize("setting", ["diffusion.flow_shift=3", "diffusion.flow_time=uniform"])
def test_ddpm_refuses_the_flow_keys(setting):
    _refused(setting, match=rf"{setting.split('=')[0]} = .* is not used: .*DDPM")
    load_run_config(None, [*TINY, *FLOW, setting])  # flow reads it


@pytest.mark.parametrize("setting", ["model.base_lr=0.1", "model.freeze_base=true",
                                     "model.base_preset=mini"])
def test_videofusion_keys_on_another_kind(setting):
    _refused(setting, match=rf"{setting.split('=')[0]} = .* is not used: .*'unet'")


def test_trainable_temporal_needs_an_image_model_to_start_from():
    _refused("train.trainable=temporal", match=r"without model.init_from .* random init")
    _refused("train.trainable=temporal", *IMAGE, match="has no temporal layers")


@pytest.fixture(scope="module")
def flow_image(tmp_path_factory):
    """A one-step flow-matching image run."""
    out = tmp_path_factory.mktemp("flowimg") / "run"
    assert main(["train", "--out", str(out), "--steps", "1", "--set", *TINY, *FLOW,
                 *IMAGE]) == 0
    return out


def test_init_from_a_run_of_another_process(flow_image, tmp_path):
    _refused(f"model.init_from={flow_image}", f"train.out={tmp_path / 'r'}",
             match=r"model.init_from .* diffusion.process = 'flow' .* 'ddpm'")
    load_run_config(None, [*TINY, *FLOW, f"model.init_from={flow_image}",
                           f"train.out={tmp_path / 'r2'}"])


def test_init_from_truncated_weights_names_the_file(flow_image, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(flow_image, copy)
    (ema,) = copy.glob("checkpoints/step_*/ema.safetensors")
    ema.write_bytes(ema.read_bytes()[:1000])
    _refused(*FLOW, f"model.init_from={copy}", f"train.out={tmp_path / 'r'}",
             match=rf"model.init_from .*{ema}.*not a readable safetensors")


def test_init_from_truncated_diffusers_weights_names_the_file(tmp_path):
    root = write_tiny_sd(tmp_path / "sd")
    weights = root / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    _refused(f"model.init_from={root}", f"train.out={tmp_path / 'r'}",
             match=rf"model.init_from .*{weights}.*not a readable safetensors")


def test_a_dit_from_a_unet_folder_names_the_class(tmp_path):
    root = write_tiny_sd(tmp_path / "sd")
    _refused("model.kind=dit", "model.preset=dit-tiny", f"model.init_from={root}",
             f"train.out={tmp_path / 'r'}",
             match=r"holds a diffusers UNet2DConditionModel .*model.kind = 'dit' starts "
                   r"from a DiTTransformer2DModel")


def test_a_resumed_run_does_not_read_init_from(flow_image, tmp_path):
    """A run with checkpoints takes its weights from them: a moved init_from is no error."""
    load_run_config(None, [*TINY, *FLOW, f"train.out={flow_image}",
                           f"model.init_from={tmp_path / 'moved'}"])


def test_an_sdxl_unet_is_named_before_its_text_width(tmp_path):
    """SDXL's added embeddings are what vidiff cannot import: named first, not the text
    width that follows from them."""
    root = write_tiny_sd(tmp_path / "sd")
    config = root / "unet" / "config.json"
    data = json.loads(config.read_text())
    config.write_text(json.dumps({**data, "addition_embed_type": "text_time",
                                  "cross_attention_dim": 2 * data["cross_attention_dim"]}))
    _refused(f"model.init_from={root}", f"train.out={tmp_path / 'r'}", "data.use_captions=true",
             match=r"addition_embed_type='text_time' \(SDXL's added embeddings")


def test_a_moved_text_encoder_folder_is_named_as_missing(tmp_path):
    moved = tmp_path / "sd" / "moved"
    with pytest.raises(ValueError, match=rf"text encoder '{moved}': no such folder \(moved"):
        text_encoder_named(str(moved))
