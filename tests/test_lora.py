"""LoRA (vidiff.models.lora) on vidiff's own networks: eq. 3 of Hu et al. on a layer, the
network unchanged at B = 0, only the adapters train, the fast paths that read a layer's weight
(a single frame's temporal attention, an image's temporal conv) see the adapters, merging is
the same function, and the run config's checks. The video kinds' LoRA (diffusers' format,
``load_lora_weights``) is tests/test_video_models.py."""

import copy

import pytest
import torch

pytest.importorskip("peft")

from _train_helpers import fill_zero_layers, tiny_config  # noqa: E402

from vidiff.models import build_unet  # noqa: E402
from vidiff.models.lora import LoraSpec, add_lora, is_adapted, lora_weights, merge_lora  # noqa: E402
from vidiff.utils.config_io import ConfigError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TARGETS = ["qkv", "proj", "conv"]  # attention (spatial and temporal) and the temporal conv


def _unet():
    """The tiny U-Net with its zero-initialized layers (output conv, temporal layers) drawn
    too: a network whose every path reaches the output."""
    torch.manual_seed(0)
    model = build_unet("tiny", num_classes=None, temporal_conv=True).eval()
    fill_zero_layers(model, torch.Generator().manual_seed(0), std=0.05)
    return model


def _perturb(model: torch.nn.Module, seed: int = 1) -> None:
    """B != 0 everywhere (B = 0 at the start would hide any adapter that is skipped)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def _inputs(frames: int, batch: int = 2):
    g = torch.Generator().manual_seed(2)
    return torch.randn(batch, 3, frames, 16, 16, generator=g), torch.tensor([3, 700])[:batch]


def test_a_layer_computes_eq_3():
    layer = torch.nn.Sequential(torch.nn.Linear(6, 5))
    base = copy.deepcopy(layer[0])
    add_lora(layer, LoraSpec(rank=2, alpha=6.0, targets=["0"]))
    _perturb(layer)
    a = layer[0].lora_A["default"].weight  # (r, in)
    b = layer[0].lora_B["default"].weight  # (out, r)
    x = torch.randn(4, 6)
    want = base(x) + (6.0 / 2) * x @ a.T @ b.T  # W x + (alpha / r) B A x
    torch.testing.assert_close(layer(x), want, rtol=1e-6, atol=1e-6)


def test_at_init_the_network_is_unchanged_and_only_adapters_train():
    model = _unet()
    x, t = _inputs(4)
    before = model(x, t)
    add_lora(model, LoraSpec(rank=4, targets=TARGETS))
    torch.testing.assert_close(model(x, t), before, rtol=0, atol=0)  # B = 0 (eq. 3)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    adapted = [n for n, m in model.named_modules() if is_adapted(m)]
    assert {n.rsplit(".", 1)[-1] for n in adapted} == set(TARGETS)
    assert any(n.endswith("tconv.conv") for n in adapted)  # the temporal conv too
    keys = lora_weights(model)
    assert len(keys) == 2 * len(adapted) and not any(".default." in k for k in keys)


@pytest.mark.parametrize("frames, num_images", [(1, 0), (5, 2), (2, 2)])
def test_merging_is_the_same_function_on_every_path(frames, num_images):
    """A single frame (temporal attention's value-only path) and joint image+video batches
    (the temporal conv's centre tap for images): the adapted network equals its merged one,
    which has no adapters to skip."""
    model = add_lora(_unet(), LoraSpec(rank=4, targets=TARGETS))
    _perturb(model)
    merged = merge_lora(copy.deepcopy(model))
    assert not any(is_adapted(m) for m in merged.modules())
    x, t = _inputs(frames)
    with torch.no_grad():
        ours, plain = model(x, t, num_images=num_images), merged(x, t, num_images=num_images)
        unadapted = _unet()(x, t, num_images=num_images)
    assert (ours - unadapted).abs().max() > 1e-3  # the adapters change the output
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-5)  # fp32, O(1) outputs


def test_a_target_that_names_no_layer_lists_the_layers():
    with pytest.raises(ValueError, match=r"'to_q' names no linear or conv layer.*qkv"):
        add_lora(_unet(), LoraSpec(rank=4, targets=["to_q"]))


@pytest.mark.parametrize("setting, message", [
    (["train.lora.rank=4"], "without model.init_from it keeps its random init"),
    (["train.lora.rank=-1"], r"train.lora: rank = -1 must be >= 0"),
    (["train.lora.rank=4", "train.lora.alpha=0"], r"train.lora: alpha = 0.0 must be > 0"),
    (["train.lora.rank=4", "train.trainable=temporal"], "trains the adapters only"),
])
def test_the_run_config_refuses_a_lora_that_cannot_train(tmp_path, setting, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(tmp_path / "r", *setting)


def test_a_unet_lora_run_from_an_image_model_resumes_and_exports(tmp_path):
    """PYoCo's recipe with adapters: an image run inflated into a video U-Net, LoRA on its
    attention (spatial and temporal), trained, resumed, exported and sampled back."""
    from _train_helpers import TINY

    from vidiff import Pipeline
    from vidiff.cli import main
    from vidiff.modelio.export import export_model

    image, run = tmp_path / "image", tmp_path / "run"
    assert main(["train", "--out", str(image), "--steps", "1", "--set", *TINY,
                 "model.overrides.temporal=false", "data.frames=1"]) == 0
    assert main(["train", "--out", str(run), "--steps", "2", "--set", *TINY,
                 f"model.init_from={image}", "train.lora.rank=4", "prior.name=mixed"]) == 0
    assert main(["train", "--out", str(run), "--steps", "3"]) == 0  # resumes at 2
    pipe = Pipeline.from_pretrained(run)
    assert pipe.spec.provenance.step == 3 and pipe.spec.lora.targets == ["qkv", "proj"]
    assert any(is_adapted(m) for m in pipe.model.modules())
    export_model(run, tmp_path / "out")
    exported = Pipeline.from_pretrained(tmp_path / "out")
    g = [torch.Generator().manual_seed(0) for _ in range(2)]
    torch.testing.assert_close(exported(1, steps=2, generator=g[0]),  # fp32 in [-1, 1]
                               pipe(1, steps=2, generator=g[1]), rtol=1e-5, atol=1e-5)
