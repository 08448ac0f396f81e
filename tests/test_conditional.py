"""The conditional-generation library: windows, masks, shapes, the known frames kept."""

import pytest
import torch

import vidiff
from vidiff.sampling.conditional import (
    ConditionalSampler,
    downsample,
    interpolation_mask,
    upsample_nearest,
    window_starts,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_window_starts_extension_and_interpolation():
    extension = torch.arange(20) < 8  # 8 given frames, 12 to generate
    assert window_starts(extension, 8, 4) == [4, 8, 12]
    assert window_starts(extension, 8, 2) == [6, 12]  # the last window ends at frame 20
    inter = interpolation_mask(5, 4)  # 17 frames, given at 0, 4, 8, 12, 16
    assert inter.nonzero().flatten().tolist() == [0, 4, 8, 12, 16]
    assert window_starts(inter, 8, 1) == [0, 8]  # frame 8 is given: the overlap


def _sampler(method, prior="progressive"):
    diffusion = vidiff.Diffusion(timesteps=50)
    # a uniformed eps-denoiser: the known frames must still come out exactly
    return ConditionalSampler(lambda x, t: 0.1 * x, diffusion, vidiff.noise_prior(prior),
                              method=method, sampler="ddim", steps=3)


@pytest.mark.parametrize("method", ["reconstruction", "replacement"])
def test_extend_and_interpolate_shapes_keep_the_given_frames(method, gen):
    cs = _sampler(method)
    clip = torch.rand(2, 3, 4, 8, 8, generator=gen) * 2 - 1
    long = cs.extend(clip, 11, window=4, overlap=2, generator=gen)
    assert long.shape == (2, 3, 11, 8, 8)
    torch.testing.assert_close(long[:, :, :4], clip)
    assert long[:, :, 4:].abs().sum() > 0
    dense = cs.interpolate(clip, 3, window=4, overlap=1, generator=gen)
    assert dense.shape == (2, 3, 10, 8, 8)
    torch.testing.assert_close(dense[:, :, ::3], clip)


def test_guided_upsampling_matches_the_low_resolution_video(gen):
    """Guidance through 2x2 average pooling under a correlated prior: the pooled sample is
    far closer to the low-resolution video than an unguided sample's."""
    low = torch.rand(1, 1, 3, 4, 4, generator=gen) - 0.5
    diffusion = vidiff.Diffusion(timesteps=200)
    prior = vidiff.noise_prior("mixed")
    plain = lambda x, t: torch.zeros_like(x)  # an uninformed eps-denoiser
    cs = ConditionalSampler(plain, diffusion, prior, weight=4.0, sampler="ddim", steps=50)
    high = cs.upsample_guided(low, 2, generator=torch.Generator().manual_seed(1))
    assert high.shape == (1, 1, 3, 8, 8)
    free = vidiff.sample(plain, high.shape, diffusion=diffusion, prior=prior, sampler="ddim",
                         steps=50, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(downsample(upsample_nearest(low, 2), 2), low)
    err = (downsample(high, 2) - low).abs().mean()
    assert err < 0.5 * (downsample(free, 2) - low).abs().mean()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="method"):
        _sampler("inpaint")
    cs = _sampler("replacement")
    with pytest.raises(ValueError, match="overlap"):
        cs.extend(torch.zeros(1, 1, 4, 4, 4), 8, window=4, overlap=4)
    with pytest.raises(ValueError, match="factor"):
        cs.interpolate(torch.zeros(1, 1, 4, 4, 4), 1, window=4, overlap=1)
    with pytest.raises(ValueError, match="reconstruction"):
        cs.upsample_guided(torch.zeros(1, 1, 2, 2, 2), 2)
