"""Video VAEs: diffusers' AutoencoderKLWan, AutoencoderKLLTXVideo and AutoencoderKLCogVideoX
as vidiff autoencoders. Tiny random VAEs in diffusers' folder format (save_pretrained), read
back through `load_diffusers_vae`, against diffusers' own calls with each pipeline's latent
normalisation; the frame rule; tiling and slicing; the latent cache's fingerprint."""

import json
import shutil

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from _video_pipelines import TINY_VAES  # noqa: E402

from vidiff.data import make_synthetic  # noqa: E402
from vidiff.data.latents import LatentCache, autoencoder_fingerprint  # noqa: E402
from vidiff.models import load_diffusers_vae  # noqa: E402
from vidiff.models.video_vae import DiffusersVideoAutoencoder  # noqa: E402

TINY = TINY_VAES  # tests/_video_pipelines.py: the smallest configs diffusers accepts
LATENT_FRAMES_OF_9 = {"wan": 3, "ltx": 2, "cogvideox": 3}
SPATIAL = {"wan": 4, "ltx": 8, "cogvideox": 4}


def _write(root, family):
    cls, config = TINY[family]
    torch.manual_seed(0)
    vae = getattr(diffusers, cls)(**config)
    if family == "ltx":  # LTX keeps its statistics as buffers: make them tell
        vae.latents_mean.copy_(torch.tensor([0.2, -0.1, 0.0, 0.3]))
        vae.latents_std.copy_(torch.tensor([0.5, 1.5, 1.0, 2.0]))
    vae.save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_vaes")
    return {family: _write(root / family, family) for family in TINY}


def _reference(family, vae, video):
    """diffusers' VAE called as each pipeline does (fp32): the normalised posterior mode and
    the decoded video of those latents."""
    with torch.no_grad():
        mu = vae.encode(video).latent_dist.mode()
        if family == "wan":  # pipeline_wan_i2v.prepare_latents; pipeline_wan.__call__
            mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
            inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
            z = (mu - mean) * inv_std
            x = vae.decode(z / inv_std + mean).sample
        elif family == "ltx":  # LTXPipeline._normalize_latents / _denormalize_latents
            mean, std = vae.latents_mean.view(1, -1, 1, 1, 1), vae.latents_std.view(1, -1, 1, 1, 1)
            sf = vae.config.scaling_factor
            z = (mu - mean) * sf / std
            timestep = torch.tensor([0.0] * video.shape[0])  # LTXPipeline's decode_timestep
            x = vae.decode(z * std / sf + mean, timestep).sample
        else:  # CogVideoXPipeline.decode_latents: 1 / scaling_factor * latents
            z = mu * vae.config.scaling_factor
            x = vae.decode(1 / vae.config.scaling_factor * z).sample
    return z, x


@pytest.mark.parametrize("family", list(TINY))
def test_encode_decode_equal_diffusers(folders, family, gen, one_thread):
    ours = load_diffusers_vae(folders[family])
    assert isinstance(ours, DiffusersVideoAutoencoder)
    theirs = getattr(diffusers, TINY[family][0]).from_pretrained(folders[family]).eval()
    video = torch.rand(2, 3, 9, 16, 16, generator=gen) * 2 - 1
    want_z, want_x = _reference(family, theirs, video)
    z = ours.encode(video)
    s = SPATIAL[family]
    assert z.shape == (2, 4, LATENT_FRAMES_OF_9[family], 16 // s, 16 // s)
    assert z.shape[1:] == ours.latent_shape((3, 9, 16, 16))
    torch.testing.assert_close(z, want_z, rtol=1e-5, atol=1e-5)  # fp32: measured <= 1e-6
    x = ours.decode(z)
    assert x.shape == video.shape
    torch.testing.assert_close(x, want_x, rtol=1e-5, atol=1e-5)
    # the normalisation matters: the raw posterior mode is not what vidiff trains on
    raw = theirs.encode(video).latent_dist.mode()
    assert (raw - z).abs().max() > 0.05
    a = ours.encode(video, generator=torch.Generator().manual_seed(3))
    b = ours.encode(video, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.allclose(a, z)  # a posterior sample


@pytest.mark.parametrize("family, frames, message", [
    ("wan", 8, r"8 frames do not fit the Wan VAE: a clip has 1 \+ 4k frames \(nearest: 5 or 9"),
    ("ltx", 8, r"8 frames .* LTX-Video VAE: a clip has 1 \+ 8k frames \(nearest: 1 or 9\)"),
    ("cogvideox", 5, r"5 frames .* 1 \+ 8k frames \(its decoder restores odd latent clips "
                     r"only\) \(nearest: 1 or 9\)"),
])
def test_the_frame_rule(folders, family, frames, message):
    vae = load_diffusers_vae(folders[family])
    with pytest.raises(ValueError, match=message):
        vae.latent_shape((3, frames, 16, 16))
    with pytest.raises(ValueError, match=message):  # encode: the same message, not a crash
        vae.encode(torch.zeros(1, 3, frames, 16, 16))
    with pytest.raises(ValueError, match="height and width must be multiples"):
        vae.latent_shape((3, 9, 16, 14))
    with pytest.raises(ValueError, match="clips of 1 channels do not fit"):
        vae.encode(torch.zeros(1, 1, 9, 16, 16))
    with pytest.raises(ValueError, match=r"expected latents \(B, 4, f, h, w\), got \(1, 3,"):
        vae.decode(torch.zeros(1, 3, 3, 4, 4))
    assert vae.latent_shape((3, 17, 16, 16))[1] == 1 + 16 // vae.temporal


def test_tiled_and_sliced_decode(folders, gen, one_thread):
    """Tiles of 24 pixels every 12 over 32 x 32 frames (blended seams) stay close to the
    whole-frame decode (a random VAE's receptive field spans the frame, so not to 1e-5: 7 %
    of the mean magnitude); slicing (one video at a time) equals it."""
    whole = load_diffusers_vae(folders["wan"])
    tiles = dict(tile_sample_min_height=24, tile_sample_min_width=24,
                 tile_sample_stride_height=12, tile_sample_stride_width=12)
    tiled = load_diffusers_vae(folders["wan"], tiling=tiles)
    sliced = load_diffusers_vae(folders["wan"], slicing=True)
    assert tiled.vae.use_tiling and not whole.vae.use_tiling
    video = torch.rand(2, 3, 5, 32, 32, generator=gen) * 2 - 1
    z = whole.encode(video)
    x, x_tiled = whole.decode(z), tiled.decode(z)
    gap = (x_tiled - x).abs()
    assert gap.max() > 1e-3  # the tiles were decoded apart
    assert gap.mean() < 0.1 * x.abs().mean() and gap.max() < 0.25
    z_tiled = tiled.encode(video)
    assert z_tiled.shape == z.shape and not torch.allclose(z_tiled, z)  # tiled encode too
    torch.testing.assert_close(sliced.decode(z), x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sliced.encode(video), z, rtol=1e-5, atol=1e-5)


def test_loader_dispatch_and_errors(folders, tmp_path):
    from _sd_helpers import write_tiny_vae

    from vidiff.models import FrameAutoencoder

    image = write_tiny_vae(tmp_path / "sd")
    assert isinstance(load_diffusers_vae(image), FrameAutoencoder)
    with pytest.raises(ValueError, match="tiling / slicing are for video VAEs"):
        load_diffusers_vae(image, tiling=True)
    other = tmp_path / "mochi"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLMochi"}))
    with pytest.raises(ValueError, match=r"mochi/config.json'.*AutoencoderKLMochi is not a "
                                         r"VAE vidiff reads: AutoencoderKL .*AutoencoderKLWan"):
        load_diffusers_vae(other)
    (other / "config.json").write_text('{"_class_name": "AutoencoderKLWan",')
    with pytest.raises(ValueError, match=r"mochi/config.json' is not valid JSON"):
        load_diffusers_vae(other)
    bare = shutil.copytree(folders["wan"], tmp_path / "bare")  # a config without the factors
    config = json.loads((bare / "config.json").read_text())
    config.update(scale_factor_temporal=None, scale_factor_spatial=None)
    (bare / "config.json").write_text(json.dumps(config))
    vae = load_diffusers_vae(bare)
    assert (vae.temporal, vae.spatial) == (4, 4)  # from its downsamplings
    broken = DiffusersVideoAutoencoder
    with pytest.raises(ValueError, match="AutoencoderKL is not a supported video VAE"):
        broken(diffusers.AutoencoderKL(block_out_channels=(8,), norm_num_groups=4))


def _counted(vae):
    """`vae` with its diffusers encoder calls counted in ``vae.calls``."""
    vae.calls, encode = 0, vae.vae.encode

    def counting(x, *args, **kwargs):
        vae.calls += 1
        return encode(x, *args, **kwargs)

    vae.vae.encode = counting
    return vae


def test_latent_cache_fingerprint(folders, tmp_path, one_thread):
    """The same VAE and settings (even from another folder) reuse the cache; a changed weight,
    normalisation or tiling builds another; the preprocessing key counts too."""
    data = make_synthetic("moving_shapes", frames=9, size=16, num_videos=3, seed=0)
    key = {"source": "moving_shapes", "frames": 9, "size": 16}
    vae = _counted(load_diffusers_vae(folders["wan"]))
    cache = LatentCache(data, vae, tmp_path / "cache", key=key)
    assert vae.calls == 1 and cache[2]["video"].shape == (4, 3, 4, 4)
    want = vae.encode(data[2]["video"][None])[0]
    torch.testing.assert_close(cache[2]["video"], want, rtol=1e-2, atol=2e-3)  # float16

    moved = shutil.copytree(folders["wan"], tmp_path / "moved")  # config _name_or_path differs
    same = _counted(load_diffusers_vae(moved))
    again = LatentCache(data, same, tmp_path / "cache", key=key)
    assert again.folder == cache.folder and same.calls == 0  # reused, nothing encoded

    def folder_with(change, **load):
        other = _counted(load_diffusers_vae(moved, **load))
        change(other)
        built = LatentCache(data, other, tmp_path / "cache", key=key)
        assert other.calls == 1  # encoded afresh
        return built.folder

    def weight(vae):
        with torch.no_grad():
            next(vae.vae.parameters()).add_(1e-3)

    folders_seen = {cache.folder, folder_with(weight), folder_with(lambda vae: None, tiling=True)}
    config = json.loads((moved / "config.json").read_text())
    config["latents_std"] = [1.5, 0.5, 2.0, 0.9]  # the normalisation of channel 3
    (moved / "config.json").write_text(json.dumps(config))
    folders_seen.add(folder_with(lambda vae: None))
    assert len(folders_seen) == 4
    reloaded = load_diffusers_vae(folders["wan"])
    assert autoencoder_fingerprint(reloaded) == autoencoder_fingerprint(vae)
    other_key = LatentCache(data, reloaded, tmp_path / "cache", key={**key, "size": 17})
    assert other_key.folder not in folders_seen


@pytest.mark.parametrize("family", ["wan", "ltx"])
def test_bfloat16_weights_float32_io(folders, family, gen, one_thread):
    vae = load_diffusers_vae(folders[family], dtype=torch.bfloat16)
    assert vae.dtype == torch.bfloat16
    video = torch.rand(1, 3, 9, 16, 16, generator=gen) * 2 - 1
    z = vae.encode(video)
    assert z.dtype == torch.float32 and vae.decode(z).dtype == torch.float32
    full = load_diffusers_vae(folders[family]).encode(video)
    assert (z - full).abs().max() < 0.05 * full.abs().max()


def test_a_run_on_wan_latents_trains_and_samples_whole_clips(folders, tmp_path, one_thread):
    """9 frames encode to 3 latent frames: the trainer checks the pixel clip's frames against
    data.frames, and samples decode back to 9 frames."""
    from _train_helpers import TINY as RUN

    from vidiff.cli import main
    from vidiff.modelio.pipeline import Pipeline

    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--steps", "2", "--set", *RUN, "data.frames=9",
                 f"data.autoencoder={folders['wan']}", "model.overrides.attention_ds=[]"]) == 0
    pipe = Pipeline.from_pretrained(out)
    assert pipe.spec.shape.frames == 3  # the latent clip
    videos = pipe(num_videos=1, steps=2, generator=torch.Generator().manual_seed(0))
    assert videos.shape == (1, 3, 9, 16, 16)
