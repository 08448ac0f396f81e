"""PYoCo's recipe from the command (docs/MATH.md section 5): pretrain an image model on frames,
inflate it (`model.init_from`), fine-tune it on video with any prior; VideoFusion's base
generator from the same image model; clear errors for bad `init_from` sources."""

from dataclasses import asdict

import pytest
import torch
from _tolerance import assert_close_to
from _train_helpers import TINY, cli_error

from vidiff.cli import main
from vidiff.modelio.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from vidiff.modelio.pipeline import read_spec
from vidiff.models import UNet, is_temporal_parameter
from vidiff.train import Trainer
from vidiff.train.config import load_run_config
from vidiff.train.trainer import resolve_backbone_config

pytestmark = pytest.mark.usefixtures("one_thread")

SET = ["--set", *TINY, "diffusion.prediction=eps"]
IMAGE = ["model.overrides.temporal=false", "data.frames=1", "prior.name=independent"]
VIDEO_FUSION = ["model.kind=videofusion", "prior.name=decomposed",
                "model.overrides.model_channels=8"]


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """Step 1: an image model pretrained on single frames through `vidiff train`."""
    out = tmp_path_factory.mktemp("pyoco") / "image"
    assert main(["train", "--out", str(out), "--steps", "2", *SET, *IMAGE]) == 0
    return out


@pytest.fixture(scope="module")
def perturbed_image(tmp_path_factory):
    """An image checkpoint whose every weight is off its init (zero-initialized output
    convolutions would hide a difference), written the way `vidiff train` writes one."""
    out = tmp_path_factory.mktemp("pyoco") / "perturbed"
    config = load_run_config(None, [*TINY, *IMAGE, "diffusion.prediction=eps"])
    torch.manual_seed(0)
    unet = UNet(resolve_backbone_config(config))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    meta = {"unet_config": asdict(unet.config), "channels": 3, "frames": 1, "size": 16}
    save_checkpoint(out, 1, model=unet, ema=unet, state={}, config=config.to_dict(), meta=meta)
    return out, unet.eval()




def _video_config(tmp_path, source, *extra):
    return load_run_config(None, [*TINY, "diffusion.prediction=eps", f"train.out={tmp_path}",
                                  f"model.init_from={source}", "train.steps=2", *extra])


def test_pretrain_inflate_finetune_from_the_command(image_run, tmp_path, capsys):
    image = read_spec(image_run)
    assert image.network["temporal"] is False and image.shape.frames == 1
    for prior in ("mixed", "progressive"):
        out = tmp_path / prior
        source = (["--init-from", str(image_run), *SET] if prior == "progressive"
                  else [*SET, f"model.init_from={image_run}"])  # the shortcut, or --set
        assert main(["train", "--out", str(out), "--steps", "2", "--prior", prior,
                     *source]) == 0
        ckpt = load_checkpoint(out)
        spec = read_spec(out)
        assert spec.network["temporal"] is True and spec.shape.frames == 4
        assert ckpt.config["model"]["init_from"] == str(image_run)
    assert main(["sample", str(out), "--out", str(tmp_path / "s.npy"), "--num", "2",
                 "--steps", "2"]) == 0
    assert main(["info", str(out)]) == 0
    assert f"initialized from the image model {image_run}" in capsys.readouterr().out


def test_inflated_model_starts_as_the_image_model_per_frame(perturbed_image, tmp_path):
    source, image = perturbed_image
    trainer = Trainer(_video_config(tmp_path, source, "prior.name=mixed"), echo=False)
    video = trainer.raw.eval()
    temporal = [n for n, _ in video.named_parameters() if is_temporal_parameter(n)]
    assert video.config.temporal and temporal  # the video U-Net has temporal blocks ...
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 16, 16, generator=g)  # frames that differ from each other
    t = torch.tensor([10, 700])
    with torch.no_grad():
        out = video(x, t)
        per_frame = torch.stack([image(x[:, :, f], t) for f in range(4)], dim=2)
        ema = trainer.ema.model.eval()(x, t)
    assert per_frame.abs().mean() > 0.1  # a non-trivial image model
    assert_close_to(out, per_frame)  # ... at the identity
    assert_close_to(ema, per_frame)
    trainer.run()
    assert trainer.step == 2  # and fine-tuning runs


def test_videofusion_base_starts_as_the_image_model(perturbed_image, tmp_path, capsys):
    source, image = perturbed_image
    config = _video_config(tmp_path / "vf", source, *VIDEO_FUSION)
    trainer = Trainer(config, echo=False)
    base = trainer.raw.base.state_dict()
    assert all(torch.equal(v, base[k]) for k, v in image.state_dict().items())
    lrs = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs["base"] == pytest.approx(1e-4 / 2) and lrs["residual"] == pytest.approx(1e-3 / 2)
    trainer.run()
    trainer.close()
    for sampler in ("ddpm", "ddim", "dpmpp_2m"):
        assert main(["sample", str(tmp_path / "vf"), "--out", str(tmp_path / "v.npy"),
                     "--num", "1", "--steps", "2", "--sampler", sampler]) == 0
    assert main(["info", str(tmp_path / "vf")]) == 0
    assert "videofusion: residual generator preset 'tiny'" in capsys.readouterr().out


def test_bad_init_from_gives_clear_errors(image_run, perturbed_image, tmp_path, capsys):
    run = ["train", "--out", str(tmp_path / "r"), "--steps", "1", *SET]
    err = cli_error(capsys, [*run, f"model.init_from={tmp_path / 'missing'}"])
    assert f"model.init_from '{tmp_path / 'missing'}' does not exist" in err
    assert "temporal=false" in err
    # a video checkpoint where an image model is needed
    video = tmp_path / "video"
    assert main(["train", "--out", str(video), "--steps", "1", *SET]) == 0
    err = cli_error(capsys, [*run, f"model.init_from={video}"])
    assert "is a video model" in err and "train.resume" in err
    # another architecture than the run's model
    err = cli_error(capsys, [*run, f"model.init_from={image_run}",
                          "model.overrides.model_channels=8"])
    assert "has another architecture" in err and "model_channels: image model 16, model 8" in err
    err = cli_error(capsys, [*run, f"model.init_from={image_run}", *VIDEO_FUSION,
                          "model.base_overrides.num_res_blocks=2"])
    assert "the base generator" in err and "num_res_blocks: image model 1, model 2" in err
    # a VideoFusion checkpoint is not an image model either
    fusion = tmp_path / "fusion"
    assert main(["train", "--out", str(fusion), "--steps", "1", *SET, *VIDEO_FUSION]) == 0
    err = cli_error(capsys, [*run, f"model.init_from={fusion}"])
    assert "is a videofusion checkpoint (model.kind), not an image unet" in err
    # VideoFusion needs the decomposed prior and eps-prediction
    err = cli_error(capsys, [*run, "model.kind=videofusion", "prior.name=mixed"])
    assert 'needs prior.name = "decomposed"' in err
    err = cli_error(capsys, [*run, *VIDEO_FUSION, "diffusion.prediction=v"])
    assert 'needs diffusion.prediction = "eps"' in err
    assert not list_checkpoints(tmp_path / "r")


def test_diffusers_unet2d_directory_as_init_from(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    dm = diffusers.UNet2DModel(
        sample_size=16, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8,
    ).eval()
    with torch.no_grad():
        for p in dm.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    dm.save_pretrained(tmp_path / "dm")
    config = _video_config(tmp_path / "run", tmp_path / "dm", "model.overrides.dropout=0.0")
    trainer = Trainer(config, echo=False)
    x = torch.randn(1, 3, 4, 16, 16)
    t = torch.tensor([300])
    with torch.no_grad():
        out = trainer.raw.eval()(x, t)
        expected = torch.stack([dm(x[:, :, f], t).sample for f in range(4)], dim=2)
    assert trainer.backbone.temporal and trainer.backbone.model_channels == 16
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    trainer.close()


def test_a_diffusers_root_trains_on_its_own_schedule(tmp_path):
    """init_from a pipeline root with scheduler/scheduler_config.json: the run takes its
    schedule, T and prediction (model.init_schedule), resumes with it, and can keep its own."""
    import json

    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    root = tmp_path / "root"
    diffusers.UNet2DModel(
        sample_size=16, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8,
    ).save_pretrained(root / "unet")
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "DDPMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
         "beta_end": 0.012, "num_train_timesteps": 500, "prediction_type": "v_prediction"}))
    out = tmp_path / "run"
    trainer = Trainer(_video_config(out, root), echo=False)
    d = trainer.config.diffusion
    assert (d.schedule, d.timesteps, d.prediction) == ("quadratic", 500, "v")
    abar = diffusers.DDPMScheduler.from_pretrained(root / "scheduler").alphas_cumprod
    torch.testing.assert_close(trainer.diffusion.alphas_cumprod.float(), abar, rtol=1e-5,
                               atol=1e-7)
    trainer.run()
    trainer.close()
    assert read_spec(out).diffusion.timesteps == 500  # the spec, and so sampling, follow
    again = Trainer(_video_config(out, root, "train.steps=3"), echo=False)  # resumes
    assert again.step == 2 and again.config.diffusion.timesteps == 500
    again.close()
    own = Trainer(_video_config(tmp_path / "own", root, "model.init_schedule=false"), echo=False)
    assert own.config.diffusion.timesteps == 1000 and own.config.diffusion.prediction == "eps"
    own.close()


def test_train_only_the_temporal_layers(perturbed_image, tmp_path, capsys):
    """train.trainable = "temporal" (AnimateDiff's recipe): the inflated image weights stay
    exactly the image model's, the temporal layers learn, the optimizer holds only them."""
    from vidiff.models import is_temporal_parameter

    source, _ = perturbed_image
    trainer = Trainer(_video_config(tmp_path / "run", source, "train.trainable=temporal",
                                    "train.warmup=0"), echo=False)
    before = {k: v.clone() for k, v in trainer.raw.state_dict().items()}
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    named = dict(trainer.raw.named_parameters())
    assert optimized == {id(p) for n, p in named.items() if is_temporal_parameter(n)}
    trainer.run()
    after = trainer.raw.state_dict()
    trainer.close()
    moved = {k for k in named if not torch.equal(before[k], after[k])}
    assert moved and all(is_temporal_parameter(k) for k in moved)
    err = cli_error(capsys, ["train", "--out", str(tmp_path / "img"), "--steps", "1", *SET,
                             *IMAGE, "train.trainable=temporal"])
    assert "has no temporal layers" in err
