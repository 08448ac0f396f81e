"""The super-resolution model (issue 6): the U-Net's low-res input, training with
data.lowres_size, and `vidiff upsample` with such a checkpoint."""

import numpy as np
import pytest
import torch
from _tolerance import assert_close_to
from _train_helpers import TINY, cli_error, tiny_config

import vidiff
from vidiff.cli import main
from vidiff.io import to_uint8
from vidiff.modelio.pipeline import Pipeline
from vidiff.models import build_unet
from vidiff.sampling.conditional import ConditionalSampler, downsample, upsample_nearest
from vidiff.train.config import load_run_config
from vidiff.train.trainer import Trainer
from vidiff.utils.config_io import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--steps", "2", "--threads", "1"]
LOWRES = ["data.lowres_size=8"]  # with TINY: 4 frames, 8x8 -> 16x16


def _sr_unet(gen):
    """A tiny super-resolution U-Net whose zero-initialized output conv is made random, so that
    the output depends on the input."""
    model = build_unet("tiny", cond_channels=3).eval()
    with torch.no_grad():
        w = model.conv_out.weight
        w.copy_(torch.randn(w.shape, generator=gen) * 0.1)
    return model


def test_unet_takes_the_lowres_video_nearest_upsampled(gen):
    model = _sr_unet(gen)
    plain = build_unet("tiny")
    assert plain.conv_in.in_channels == 3 and model.conv_in.in_channels == 6
    added = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    assert added == 3 * 9 * model.config.model_channels  # conv_in's extra input channels only
    x = torch.randn(2, 3, 4, 16, 16, generator=gen)
    t = torch.tensor([10, 500])
    low = torch.rand(2, 3, 4, 8, 8, generator=gen) * 2 - 1
    with torch.no_grad():
        out = model(x, t, lowres=low)
        assert out.shape == x.shape
        other = model(x, t, lowres=low.flip(0))
        # nearest upsampling: the 16x16 pixel-repeated video is the same input
        same = model(x, t, lowres=upsample_nearest(low, 2))
    assert (out - other).abs().max() > 1e-3
    assert_close_to(out, same)  # other input sizes: other convolution kernels
    with pytest.raises(ValueError, match="needs lowres"):
        model(x, t)
    with pytest.raises(ValueError, match="cond_channels=0"):
        plain(x, t, lowres=low)
    with pytest.raises(ValueError, match="lowres must be"):
        model(x, t, lowres=low[:, :, :2])


def test_lowres_size_is_validated():
    with pytest.raises(ConfigError, match="data.lowres_size = 6"):
        load_run_config(None, [*TINY, "data.lowres_size=6"])
    with pytest.raises(ConfigError, match="data.lowres_size = 16"):
        load_run_config(None, [*TINY, "data.lowres_size=16"])
    with pytest.raises(ConfigError, match="model.kind"):
        load_run_config(None, [*TINY, *LOWRES, "model.kind=videofusion",
                               "prior.name=decomposed", "diffusion.prediction=eps"])


def test_trainer_conditions_on_the_downsampled_clip(tmp_path, gen):
    trainer = Trainer(tiny_config(tmp_path / "run", *LOWRES, steps=1))
    assert trainer.backbone.cond_channels == 3
    video = torch.rand(2, 3, 4, 16, 16, generator=gen)
    cond = trainer._cond({"video": video}, torch.ones(2))
    torch.testing.assert_close(cond.lowres, downsample(video, 2))
    assert trainer.pipeline().spec.conditioning.lowres_size == 8


def test_windows_get_their_own_lowres_frames(gen):
    seen = []

    def denoiser(x, t, lowres):
        seen.append(lowres[0, 0, :, 0, 0].clone())
        return 0.1 * x

    cs = ConditionalSampler(denoiser, vidiff.Diffusion(timesteps=50),
                            vidiff.noise_prior("progressive"), weight=0.0, sampler="ddim",
                            steps=2)
    low = torch.arange(7.0).view(1, 1, 7, 1, 1).expand(1, 3, 7, 4, 4).contiguous()
    out = cs.upsample_conditioned(low, 2, window=4, overlap=2, generator=gen)
    assert out.shape == (1, 3, 7, 8, 8)
    firsts = sorted({int(s[0]) for s in seen})
    assert firsts == [0, 2, 3]  # windows at frames 0-3, 2-5, 3-6
    assert all(torch.equal(s, torch.arange(s[0], s[0] + 4)) for s in seen)


@pytest.fixture(scope="module")
def sr_run(tmp_path_factory):
    """A 3-step tiny upsampler run: 4 frames, 8x8 -> 16x16."""
    out = tmp_path_factory.mktemp("upsampler") / "run"
    assert main(["train", "--out", str(out), "--steps", "3", "--set", *TINY, *LOWRES]) == 0
    return out


def _npy(path, videos, frames, size, gen):
    """`videos` random RGB videos of `frames` x `size` x `size` in an .npy file."""
    video = torch.rand(videos, 3, frames, size, size, generator=gen) * 2 - 1
    np.save(path, to_uint8(video).numpy())  # (N, F, H, W, C) uint8
    return path


def test_upsample_command_with_an_upsampler(sr_run, tmp_path, gen):
    spec = Pipeline.from_pretrained(sr_run).spec
    assert (spec.conditioning.lowres_size, spec.shape.size) == (8, 16)
    low = _npy(tmp_path / "low.npy", 2, 4, 8, gen)
    out = tmp_path / "high.npy"
    assert main(["upsample", str(sr_run), "--input", str(low), "--out", str(out),
                 "--guidance-weight", "0", *FAST]) == 0
    assert np.load(out).shape == (2, 4, 16, 16, 3)
    long = _npy(tmp_path / "long.npy", 1, 6, 8, gen)  # longer than the model's 4 frames
    assert main(["upsample", str(sr_run), "--input", str(long), "--out", str(out),
                 "--overlap", "2", *FAST]) == 0
    assert np.load(out).shape == (1, 6, 16, 16, 3)




def test_upsample_names_a_mismatched_input(sr_run, tmp_path, gen, capsys):
    run = str(sr_run)
    big = str(_npy(tmp_path / "big.npy", 1, 4, 12, gen))
    err = cli_error(capsys, ["upsample", run, "--input", big, *FAST])
    assert "12x12" in err and "8x8" in err and "16x16" in err
    low = str(_npy(tmp_path / "low.npy", 1, 4, 8, gen))
    assert "--factor 4" in cli_error(capsys, ["upsample", run, "--input", low, "--factor", "4"])
    assert "--input" in cli_error(capsys, ["upsample", run, *FAST])
    sample = ["sample", run, "--out", str(tmp_path / "s.npy")]
    assert "vidiff upsample" in cli_error(capsys, sample)


def _mse_through_downsampling(pipe, low, weight):
    cs = ConditionalSampler(pipe.model, pipe.diffusion, pipe.prior, weight=weight,
                            sampler="ddim", steps=20)
    g = torch.Generator().manual_seed(0)
    if pipe.spec.conditioning.lowres_size is None:
        out = (cs.upsample_guided(low, 2, g) if weight > 0 else
               cs._sample(pipe.model, (*low.shape[:3], 16, 16), g, low))
    else:
        out = cs.upsample_conditioned(low, 2, pipe.spec.shape.frames, 2, g)
    return (downsample(out, 2) - low).square().mean().item()


@pytest.mark.slow
def test_a_trained_upsampler_reproduces_its_input(tmp_path):
    """300 steps: the conditioned model (no guidance) fits the low-res input of unseen clips
    far better than the unconditional model does without guidance."""
    from dataclasses import replace

    from vidiff.train.data import build_dataset
    from vidiff.train.trainer import train

    mses = {}
    for name, extra in (("cond", LOWRES), ("plain", [])):
        config = tiny_config(tmp_path / name, *extra, "train.sample_count=1", steps=300)
        train(config)
        pipe = Pipeline.from_pretrained(tmp_path / name)
        data = build_dataset(replace(config.data, seed=99))  # clips it has not seen
        low = downsample(torch.stack([data[i]["video"] for i in range(6)]), 2)
        mses[name] = _mse_through_downsampling(pipe, low, 0.0)
    assert mses["cond"] < 0.6 * mses["plain"], mses
