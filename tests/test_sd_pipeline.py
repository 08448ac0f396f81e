"""A tiny Stable Diffusion pipeline root, end to end through the command line:
`vidiff train -c configs/finetune_sd_video.toml --init-from tiny_sd --steps 20`, then sample
an mp4; VideoFusion with the SD U-Net as its base generator; resume; export."""

from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from _sd_helpers import write_tiny_sd  # noqa: E402

from vidiff.cli import main  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "finetune_sd_video.toml"
# the recipe's config at test size: 4 frames of 16x16 pixels (8x8 latents), fp32 on the CPU
SMALL = ["--data", "moving_shapes", "--set", "data.size=16", "data.frames=4", "data.fps=null",
         "data.num_videos=8", "train.sample_count=2", "sample.steps=2", "train.precision=fp32",
         "train.progress=false", "train.report_to=[]", "train.threads=1",
         "train.warmup=2", "train.sample_every=0", "train.ckpt_every=0", "train.lr=1e-3"]


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return write_tiny_sd(tmp_path_factory.mktemp("pipelines") / "tiny_sd")


@pytest.fixture(scope="module")
def sd_run(tiny_sd, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "sd_video"
    assert main(["train", "-c", str(CONFIG), "--init-from", str(tiny_sd), "--steps", "20",
                 "--out", str(out), *SMALL]) == 0
    return out


def test_the_recipe_trains_only_the_temporal_layers_and_keeps_sds_parts(tiny_sd, sd_run):
    from vidiff import Pipeline
    from vidiff.models import is_temporal_parameter, load_diffusers_unet
    from vidiff.text import ClipTextEncoder

    pipe = Pipeline.from_pretrained(sd_run, weights="model")
    spec = pipe.spec
    assert spec.autoencoder.name == str(tiny_sd)  # the pipeline's VAE, by default
    assert spec.conditioning.text_encoder.name == str(tiny_sd)  # and its text encoder
    assert (spec.diffusion.schedule, spec.diffusion.prediction) == ("quadratic", "eps")
    cfg = spec.backbone_config
    assert cfg.spatial_block == "transformer" and cfg.temporal and cfg.null_text_tokens == 77
    start = load_diffusers_unet(tiny_sd, null_text=ClipTextEncoder(tiny_sd)([""])[0][0])
    trained = dict(pipe.model.named_parameters())
    moved = []
    for name, before in start.named_parameters():
        if not torch.equal(trained[name].detach().cpu(), before.detach()):
            moved.append(name)
    assert moved and all(is_temporal_parameter(n) for n in moved)  # the image layers: frozen
    # the null condition is still the empty prompt's embedding (frozen with the image layers)
    null = ClipTextEncoder(tiny_sd)([""])[0][0]
    torch.testing.assert_close(trained["text_cond.null_token"].detach().cpu(), null,
                               rtol=0, atol=0)


def test_sample_writes_an_mp4_of_decoded_frames(sd_run, tmp_path):
    from vidiff.io import read_video

    mp4 = tmp_path / "s.mp4"
    assert main(["sample", str(sd_run), "--caption", "two red balls", "-n", "2", "--seed", "0",
                 "--out", str(mp4)]) == 0
    video = read_video(mp4)  # (F, H, W, 3): the two videos tiled side by side
    assert video.shape[0] == 4 and video.shape[1] >= 16 and video.shape[2] >= 32
    assert video.float().std() > 1  # decoded frames, not a blank


def test_resume_continues_and_export_reloads(sd_run, tiny_sd, tmp_path):
    from vidiff import Pipeline

    assert main(["train", "--out", str(sd_run), "--steps", "22"]) == 0  # resumes at 20
    pipe = Pipeline.from_pretrained(sd_run)
    assert pipe.spec.provenance.step == 22
    exported = tmp_path / "exported"
    assert main(["export", str(sd_run), str(exported)]) == 0
    card = (exported / "README.md").read_text()  # its data's classes are no condition
    assert "text-conditional" in card and "class-conditional" not in card
    again = Pipeline.from_pretrained(exported)
    g = [torch.Generator().manual_seed(3) for _ in range(2)]
    torch.testing.assert_close(again(1, captions=["a blue ball"], generator=g[0]),
                               pipe(1, captions=["a blue ball"], generator=g[1]),
                               rtol=0, atol=1e-5)


def test_videofusion_with_the_sd_unet_as_base_generator(tiny_sd, tmp_path):
    from vidiff import Pipeline
    from vidiff.models import SpatialTransformer, VideoFusion

    out = tmp_path / "vf"
    assert main(["train", "-c", str(CONFIG), "--init-from", str(tiny_sd), "--steps", "3",
                 "--out", str(out), *SMALL, "model.kind=videofusion", "model.preset=tiny",
                 "train.trainable=all", "prior.name=decomposed", "prior.params={}"]) == 0
    pipe = Pipeline.from_pretrained(out)
    assert isinstance(pipe.model, VideoFusion)
    assert any(isinstance(m, SpatialTransformer) for m in pipe.model.base.modules())
    videos = pipe(1, captions=["a red ball"], generator=torch.Generator().manual_seed(0))
    assert videos.shape == (1, 3, 4, 16, 16) and torch.isfinite(videos).all()


@pytest.mark.parametrize("setting,words", [
    ("data.text_encoder=WIDE", "gives 48-wide text; model.init_from"),
    ("data.use_labels=true", "takes no class labels"),
])
def test_conditions_the_sd_unet_cannot_take_are_refused_before_any_data(tiny_sd, tmp_path,
                                                                        capsys, setting, words):
    from _sd_helpers import write_tiny_clip
    from _train_helpers import cli_error

    wide = write_tiny_clip(tmp_path / "wide", width=48)  # another text encoder's width
    err = cli_error(capsys, ["train", "-c", str(CONFIG), "--init-from", str(tiny_sd),
                             "--out", str(tmp_path / "r"), "--steps", "1", *SMALL,
                             setting.replace("WIDE", str(wide))])
    assert words in err and not (tmp_path / "r" / "latents").exists()


def test_a_latent_unet_without_a_vae_is_refused(tiny_sd, tmp_path, capsys):
    import shutil

    from _train_helpers import cli_error

    lone = tmp_path / "unet_only"
    shutil.copytree(tiny_sd / "unet", lone)
    err = cli_error(capsys, ["train", "--init-from", str(lone), "--out", str(tmp_path / "r"),
                             "--steps", "1", *SMALL])
    assert "has no vae/ beside it: set data.autoencoder" in err
