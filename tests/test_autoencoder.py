"""Latent space: diffusers' AutoencoderKL frame by frame, as vidiff's video autoencoder."""

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from _sd_helpers import write_tiny_vae  # noqa: E402
from _tolerance import assert_close_to  # noqa: E402

from vidiff.models.autoencoder import FrameAutoencoder, load_diffusers_vae  # noqa: E402


@pytest.fixture(scope="module")
def tiny_sd_root(tmp_path_factory):
    """A pipeline root in diffusers' layout holding a tiny random AutoencoderKL."""
    return write_tiny_vae(tmp_path_factory.mktemp("tiny_sd"))


def _per_frame_reference(vae, video):
    """diffusers' own calls on each frame: mode * scaling_factor, and the decoder."""
    b, c, f, h, w = video.shape
    frames = video.transpose(1, 2).reshape(b * f, c, h, w)
    with torch.no_grad():
        z = vae.encode(frames).latent_dist.mode() * vae.config.scaling_factor
        x = vae.decode(z / vae.config.scaling_factor).sample
    return (z.view(b, f, *z.shape[1:]).transpose(1, 2),
            x.view(b, f, *x.shape[1:]).transpose(1, 2))


def test_encode_decode_equal_diffusers_per_frame(tiny_sd_root, gen):
    ours = load_diffusers_vae(tiny_sd_root)  # the pipeline root: its vae/ folder
    theirs = diffusers.AutoencoderKL.from_pretrained(tiny_sd_root / "vae").eval()
    video = torch.rand(2, 3, 5, 16, 16, generator=gen) * 2 - 1
    want_z, want_x = _per_frame_reference(theirs, video)
    z = ours.encode(video)
    assert z.shape == (2, 4, 5, 8, 8) == (2, *ours.latent_shape((3, 5, 16, 16)))
    torch.testing.assert_close(z, want_z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.decode(z), want_x, rtol=1e-5, atol=1e-5)
    # frame 3 of video 1 is that frame's own encoding: frames are never mixed up
    alone = ours.encode(video[1:2, :, 3:4])
    assert_close_to(alone[0, :, 0], z[1, :, 3])


def test_chunks_generator_and_errors(tiny_sd_root, gen):
    whole = load_diffusers_vae(tiny_sd_root / "vae", batch_size=64)
    chunked = FrameAutoencoder(whole.vae, batch_size=3)  # 10 frames in chunks of 3
    video = torch.rand(2, 3, 5, 16, 16, generator=gen) * 2 - 1
    assert_close_to(chunked.encode(video), whole.encode(video))
    a = whole.encode(video, generator=torch.Generator().manual_seed(1))
    b = whole.encode(video, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.allclose(a, whole.encode(video))  # a sample
    with pytest.raises(ValueError, match="multiples of 2"):
        whole.encode(torch.zeros(1, 3, 2, 15, 16))
    with pytest.raises(FileNotFoundError, match="neither a diffusers VAE folder"):
        load_diffusers_vae(tiny_sd_root / "missing")


def test_bfloat16_weights_float32_io(tiny_sd_root, gen):
    vae = load_diffusers_vae(tiny_sd_root, dtype=torch.bfloat16)
    assert vae.dtype == torch.bfloat16
    video = torch.rand(1, 3, 2, 16, 16, generator=gen) * 2 - 1
    z = vae.encode(video)
    assert z.dtype == torch.float32 and vae.decode(z).dtype == torch.float32
    full = load_diffusers_vae(tiny_sd_root).encode(video)
    assert (z - full).abs().max() < 0.05


def test_latent_cache_with_a_real_vae(tiny_sd_root, tmp_path):
    from vidiff.data import make_synthetic
    from vidiff.data.latents import LatentCache

    vae = load_diffusers_vae(tiny_sd_root)
    data = make_synthetic("moving_shapes", frames=3, size=16, num_videos=5, seed=0)
    cache = LatentCache(data, vae, tmp_path, key={"source": "moving_shapes"}, batch_size=2)
    assert len(cache) == 5 and cache[4]["video"].shape == (4, 3, 8, 8)
    want = vae.encode(data[4]["video"][None])[0]
    torch.testing.assert_close(cache[4]["video"], want, rtol=1e-2, atol=2e-3)  # float16


def test_a_latent_run_trains_samples_pixels_and_exports(tiny_sd_root, tmp_path, capsys):
    """data.autoencoder: the model learns latents (4 x 4 x 8 x 8 for 16x16 clips), its spec
    records the autoencoder, `vidiff sample` decodes, the export bundles the VAE."""
    import numpy as np
    from _train_helpers import TINY, cli_error

    from vidiff import Pipeline
    from vidiff.cli import main

    out = tmp_path / "latent"
    assert main(["train", "--out", str(out), "--steps", "2", "--set", *TINY,
                 f"data.autoencoder={tiny_sd_root}"]) == 0
    assert (out / "latents").is_dir()  # the cache, in the run folder by default
    pipe = Pipeline.from_pretrained(out)
    spec = pipe.spec
    assert (spec.shape.channels, spec.shape.frames, spec.shape.size) == (4, 4, 8)
    assert spec.autoencoder.pixel_shape.size == 16 and spec.network["in_channels"] == 4
    videos = pipe(2, generator=torch.Generator().manual_seed(0))
    assert videos.shape == (2, 3, 4, 16, 16) and videos.abs().max() <= 1
    npy = tmp_path / "s.npy"
    assert main(["sample", str(out), "-n", "2", "--seed", "0", "--out", str(npy)]) == 0
    assert np.load(npy).shape == (2, 4, 16, 16, 3)
    exported = tmp_path / "exported"
    assert main(["export", str(out), str(exported)]) == 0
    assert (exported / "vae" / "config.json").is_file()
    again = Pipeline.from_pretrained(exported)
    # the same weights; the VAE's convolutions may batch the frames otherwise
    assert_close_to(again(2, generator=torch.Generator().manual_seed(0)), videos)
    # the window commands condition in latent space: the input is encoded, the output decoded
    clip = tmp_path / "clip.npy"
    np.save(clip, np.load(npy)[:1])  # one 4-frame 16x16 video
    for argv in (["extend", "--frames", "6"], ["interpolate", "--factor", "2"]):
        target = tmp_path / f"{argv[0]}.npy"
        assert main([argv[0], str(out), "--input", str(clip), *argv[1:], "--steps", "2",
                     "--out", str(target)]) == 0
        frames = 6 if argv[0] == "extend" else 7
        assert np.load(target).shape == (1, frames, 16, 16, 3)
    assert main(["extend", str(out), "--frames", "6", "--steps", "2", "--out",
                 str(tmp_path / "fresh.npy")]) == 0  # no input: sampled latents, extended
    err = cli_error(capsys, ["upsample", str(out), "--input", str(clip), "--out",
                             str(tmp_path / "u.npy")])
    assert "latent models are not supported" in err
    assert err.count("vidiff upsample:") == 1, err  # the command is named once
