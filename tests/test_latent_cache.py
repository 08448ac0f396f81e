"""The latent cache: every clip encoded once, reused across epochs, rebuilt when a setting or
the autoencoder changes, resumed after an interruption."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidiff.data import make_synthetic
from vidiff.data.latents import LatentCache, autoencoder_fingerprint


class CountingAutoencoder(nn.Module):
    """A stand-in autoencoder: 2x2 average pooling and a learned 1x1 channel map; it counts
    the clips it encodes and can fail after a number of calls."""

    def __init__(self, fail_after: int | None = None):
        super().__init__()
        self.mix = nn.Conv3d(3, 4, 1)
        self.calls, self.clips, self.fail_after = 0, 0, fail_after

    def latent_shape(self, shape):
        c, f, h, w = shape
        return 4, f, h // 2, w // 2

    @torch.no_grad()
    def encode(self, video, generator=None):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt  # the process is stopped mid-build
        self.calls += 1
        self.clips += video.shape[0]
        return self.mix(F.avg_pool3d(video, (1, 2, 2)))


def _data(frames=4, n=10):
    return make_synthetic("bouncing_balls", frames=frames, size=16, num_videos=n, seed=0)


def test_built_once_and_reused_over_epochs(tmp_path):
    data, ae = _data(), CountingAutoencoder()
    cache = LatentCache(data, ae, tmp_path, key={"frames": 4, "size": 16}, batch_size=4)
    assert ae.clips == 10 and ae.calls == 3  # batches of 4, 4, 2
    for _epoch in range(2):
        items = [cache[i] for i in range(len(cache))]
    assert ae.clips == 10  # two epochs later: no clip encoded again
    item = items[7]
    assert item["video"].shape == (4, 4, 8, 8) and item["video"].dtype == torch.float32
    want = ae.encode(data[7]["video"][None])[0]
    torch.testing.assert_close(item["video"], want, rtol=2e-3, atol=2e-3)  # float16 storage
    assert item["label"] == int(data[7]["label"]) and item["caption"] == data[7]["caption"]
    again = LatentCache(data, ae, tmp_path, key={"frames": 4, "size": 16}, batch_size=4)
    assert ae.clips == 11 and again.folder == cache.folder  # 1: the check above; none reused


def test_rebuilt_when_a_setting_or_the_autoencoder_changes(tmp_path):
    ae = CountingAutoencoder()
    first = LatentCache(_data(), ae, tmp_path, key={"frames": 4})
    longer = LatentCache(_data(frames=6), ae, tmp_path, key={"frames": 6})
    assert longer.folder != first.folder and ae.clips == 20
    assert longer[0]["video"].shape == (4, 6, 8, 8)
    other = CountingAutoencoder()  # other weights: another fingerprint, another cache
    assert autoencoder_fingerprint(other) != autoencoder_fingerprint(ae)
    third = LatentCache(_data(), other, tmp_path, key={"frames": 4})
    assert other.clips == 10 and third.folder not in (first.folder, longer.folder)
    removed = longer.prune()
    assert sorted(removed) == sorted([first.folder, third.folder])
    assert not first.folder.exists() and longer.folder.exists()


def test_an_interrupted_build_resumes(tmp_path):
    stopped = CountingAutoencoder(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        LatentCache(_data(), stopped, tmp_path, key={}, batch_size=3)
    assert stopped.clips == 6  # two batches of 3 made it to disk
    resumed = CountingAutoencoder()
    resumed.load_state_dict(stopped.state_dict())  # the same weights: the same cache
    cache = LatentCache(_data(), resumed, tmp_path, key={}, batch_size=3)
    assert resumed.clips == 4  # only the 4 clips left
    torch.testing.assert_close(cache[1]["video"], resumed.encode(_data()[1]["video"][None])[0],
                               rtol=2e-3, atol=2e-3)
