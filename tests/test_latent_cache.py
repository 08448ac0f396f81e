"""The latent cache: every clip encoded once, reused across epochs, rebuilt when a setting or
the autoencoder changes, resumed after an interruption; bucketed data's cache per bucket (with
the tiny Wan and SD VAEs), reused, rebuilt bucket by bucket, and a bucketed latent run."""

import json
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidiff.data import make_synthetic
from vidiff.data.latents import LatentCache, autoencoder_fingerprint
from vidiff.utils.config_io import ConfigError


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


# -- buckets: one cache per bucket ------------------------------------------------------------

# (frames, height, width): 9- and 5-frame buckets, wide 2:3 and tall 3:2; Wan's 1 + 4k frames
LATENT_BUCKETS = [(9, 16, 24), (5, 16, 24), (9, 24, 16), (5, 24, 16)]
# video -> (frames, height, width, its bucket) at 8 fps
LATENT_VIDEOS = {"wide/long.mp4": (12, 24, 36, 0), "wide/wider.mp4": (9, 30, 40, 0),
                 "wide/short.mp4": (6, 24, 36, 1), "tall/long.mp4": (10, 36, 24, 2),
                 "tall/short.mp4": (7, 36, 24, 3)}
# the latents of each bucket: the tiny Wan VAE (z_dim 4, 4x in time and space), the tiny SD
# AutoencoderKL (4 channels, 2x in space, every frame)
LATENT_SHAPES = {"wan": [(4, 3, 4, 6), (4, 2, 4, 6), (4, 3, 6, 4), (4, 2, 6, 4)],
                 "sd": [(4, 9, 8, 12), (4, 5, 8, 12), (4, 9, 12, 8), (4, 5, 12, 8)]}


def _noise_video(frames, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, frames, h, w, generator=g) * 2 - 1  # not diffusion noise


@pytest.fixture(scope="module")
def video_root(tmp_path_factory):
    from vidiff.io import write_video

    root = tmp_path_factory.mktemp("bucketed_videos")
    for seed, (rel, (f, h, w, _)) in enumerate(LATENT_VIDEOS.items()):
        write_video(root / rel, _noise_video(f, h, w, seed), fps=8)
    return root


@pytest.fixture(scope="module")
def vaes(tmp_path_factory):
    """The tiny Wan VAE of test_video_vae.py and the tiny SD VAE of _sd_helpers.py, saved with
    save_pretrained."""
    pytest.importorskip("diffusers")
    from _sd_helpers import write_tiny_vae
    from test_video_vae import _write

    root = tmp_path_factory.mktemp("vaes")
    return {"wan": _write(root / "wan", "wan"), "sd": write_tiny_vae(root / "sd")}


def _counting(vae):
    """`vae` counting the clips it encodes (``vae.clips``)."""
    vae.clips, encode = 0, vae.encode

    def counted(video, *args, **kwargs):
        vae.clips += video.shape[0]
        return encode(video, *args, **kwargs)

    vae.encode = counted
    return vae


def _bucketed(root, buckets=LATENT_BUCKETS):
    from vidiff.data.buckets import BucketedFolder

    return BucketedFolder(root, buckets, fps=8, offset="first")


def _mtimes(cache):
    return {p: (p / "latents.npy").stat().st_mtime_ns for p in cache.folders}


@pytest.mark.parametrize("family", ["wan", "sd"])
def test_one_cache_per_bucket_built_once(video_root, vaes, tmp_path, family, one_thread):
    from vidiff.data.latents import BucketedLatents
    from vidiff.models import load_diffusers_vae

    folder = _bucketed(video_root)
    assert folder.bucket_sizes == [2, 1, 1, 1]
    vae = _counting(load_diffusers_vae(vaes[family]))
    cache = BucketedLatents(folder, vae, tmp_path / "cache", key={"source": "folder"})
    assert vae.clips == 5 and cache.shapes == LATENT_SHAPES[family]
    assert [p.parent.name for p in cache.folders] == ["9x16x24", "5x16x24", "9x24x16", "5x24x16"]
    for p, bucket in zip(cache.folders, LATENT_BUCKETS, strict=True):
        identity = json.loads((p / "meta.json").read_text())["identity"]
        assert identity["key"]["bucket"] == list(bucket)
        assert identity["autoencoder"] == autoencoder_fingerprint(vae)
    for i in range(len(cache)):
        item, pixels = cache[i], folder[i]
        assert item["bucket"] == pixels["bucket"] and item["label"] == pixels["label"]
        assert tuple(item["video"].shape) == LATENT_SHAPES[family][item["bucket"]]
        want = vae.encode(pixels["video"][None])[0]
        torch.testing.assert_close(item["video"], want, rtol=1e-2, atol=2e-3)  # float16
    again = _counting(load_diffusers_vae(vaes[family]))
    reused = BucketedLatents(_bucketed(video_root), again, tmp_path / "cache",
                             key={"source": "folder"})
    assert again.clips == 0 and _mtimes(reused) == _mtimes(cache)  # nothing encoded again


def test_a_changed_bucket_video_or_vae_rebuilds_only_its_caches(video_root, vaes, tmp_path,
                                                               one_thread):
    import shutil

    from vidiff.data.latents import BucketedLatents
    from vidiff.models import load_diffusers_vae

    root = shutil.copytree(video_root, tmp_path / "videos")
    key, where = {"source": "folder"}, tmp_path / "cache"

    def build(buckets=LATENT_BUCKETS, vae=None):
        vae = _counting(vae or load_diffusers_vae(vaes["wan"]))
        return BucketedLatents(_bucketed(root, buckets), vae, where, key=key), vae.clips

    first, clips = build()
    assert clips == 5
    before = _mtimes(first)
    # the last bucket's shape: its cache alone is rebuilt, in its own subfolder
    bigger = [*LATENT_BUCKETS[:3], (5, 36, 24)]
    changed, clips = build(bigger)
    assert clips == 1 and changed.folders[:3] == first.folders[:3]
    assert changed.folders[3].parent.name == "5x36x24" and changed.shapes[3] == (4, 2, 9, 6)
    assert all(_mtimes(changed)[p] == before[p] for p in changed.folders[:3])  # untouched
    # a video replaced by another of the same length: its bucket's cache alone
    from vidiff.io import write_video

    video = root / "wide" / "short.mp4"
    stat = video.stat()
    write_video(video, _noise_video(6, 24, 36, seed=99), fps=8)
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    replaced, clips = build()
    assert clips == 1 and replaced.folders[1] != first.folders[1]
    assert [replaced.folders[b] for b in (0, 2, 3)] == [first.folders[b] for b in (0, 2, 3)]
    # a damaged cache (its meta's identity not its own) is detected and rebuilt in place
    meta = replaced.folders[2] / "meta.json"
    damaged = json.loads(meta.read_text())
    damaged["identity"]["length"] = 7
    meta.write_text(json.dumps(damaged))
    _, clips = build()
    assert clips == 1  # bucket 2's one clip
    # another VAE (other weights): every bucket's cache
    other = load_diffusers_vae(vaes["wan"])
    with torch.no_grad():
        next(other.vae.parameters()).add_(1e-3)
    fresh, clips = build(vae=other)
    assert clips == 5 and not set(fresh.folders) & set(replaced.folders)
    assert [p.parent for p in fresh.folders] == [p.parent for p in replaced.folders]
    removed = fresh.prune()  # the stale caches, and the 5x36x24 bucket's folder
    assert where / "5x36x24" in removed and all(p.exists() for p in fresh.folders)
    assert sorted(p.name for p in where.iterdir()) == ["5x16x24", "5x24x16", "9x16x24",
                                                       "9x24x16"]
    assert all(len(list((where / name).iterdir())) == 1 for name in os.listdir(where))


# -- a bucketed latent run ----------------------------------------------------------------------

_RUN_BUCKETS = "data.buckets=[[9, 16, 24], [5, 16, 24], [9, 24, 16], [5, 24, 16]]"


def _latent_run(root, vae, *extra, buckets=_RUN_BUCKETS):
    from _train_helpers import TINY

    return [*TINY, "model.kind=unet", "data.source=folder", f"data.path={root}", "data.fps=8",
            f"data.autoencoder={vae}", buckets, *extra]


@pytest.mark.parametrize("buckets, match", [
    ("[[9, 16, 24], [8, 24, 16]]", r"^data\.buckets\[1\] = \[8, 24, 16\]: 8 frames do not fit the "
                                   r"Wan VAE: a clip has 1 \+ 4k frames \(nearest: 5 or 9\)$"),
    ("[[9, 16, 18]]", r"^data\.buckets\[0\] = \[9, 16, 18\]: frames of 16x18 pixels do not fit "
                      r"the Wan VAE: height and width must be multiples of 4$"),
])
def test_a_bucket_the_vae_refuses_stops_before_any_encoding(video_root, vaes, tmp_path,
                                                            buckets, match):
    from vidiff.train.config import load_run_config
    from vidiff.train.setup import build_data

    cache = tmp_path / "cache"
    config = load_run_config(None, _latent_run(video_root, vaes["wan"], f"train.out={tmp_path}",
                                               f"data.latent_cache={cache}",
                                               buckets=f"data.buckets={buckets}"))
    with pytest.raises(ConfigError, match=match):
        build_data(config)
    assert not cache.exists()  # nothing encoded, no cache begun


@pytest.mark.filterwarnings("ignore:1 of 5 videos are too short")
def test_latent_buckets_that_do_not_fit_the_model_are_named(video_root, vaes, tmp_path):
    """16 x 20 pixels fit the tiny U-Net (multiples of 2), their 4 x 5 Wan latents do not."""
    from vidiff.train import train
    from vidiff.train.config import load_run_config

    config = load_run_config(None, _latent_run(
        video_root, vaes["wan"], f"train.out={tmp_path / 'run'}", "train.steps=1",
        buckets="data.buckets=[[9, 16, 24], [5, 16, 20]]"))
    with pytest.raises(ConfigError, match=r"data\.buckets\[1\] = \[5, 16, 20\] encodes to "
                                          r"latents of 4x5, which do not fit the tiny unet: "
                                          r".*multiples of 2 \(frames of multiples of 8 "
                                          r"pixels\)"):
        train(config, echo=False)


def test_a_bucketed_latent_run_trains_reuses_its_caches_and_samples(
        video_root, vaes, tmp_path, monkeypatch, capsys, one_thread):
    from vidiff.cli import main
    from vidiff.modelio.checkpoint import load_checkpoint
    from vidiff.modelio.pipeline import Pipeline
    from vidiff.modelio.spec import ModelSpec
    from vidiff.models.video_vae import DiffusersVideoAutoencoder
    from vidiff.train.data import BucketOrder

    encoded, encode = [], DiffusersVideoAutoencoder.encode

    def counted(self, video, *args, **kwargs):
        encoded.extend([tuple(video.shape[1:])] * video.shape[0])  # a batch's clips
        return encode(self, video, *args, **kwargs)

    monkeypatch.setattr(DiffusersVideoAutoencoder, "encode", counted)
    cache = tmp_path / "cache"
    run = _latent_run(video_root, vaes["wan"], f"data.latent_cache={cache}",
                      "model.overrides.attention_ds=[]")
    first = tmp_path / "first"
    assert main(["train", "--out", str(first), "--steps", "3", "--set", *run]) == 0
    printed = capsys.readouterr().out
    assert "buckets: 5 of 5 videos in 4 buckets" in printed
    assert f"data: 5 videos in 2 classes, 0 unreadable skipped from {video_root};" in printed
    # every clip encoded once, at its bucket's shape
    assert sorted(encoded) == sorted([(3, 9, 16, 24)] * 2 + [(3, 5, 16, 24), (3, 9, 24, 16),
                                                             (3, 5, 24, 16)])
    assert sorted(p.name for p in cache.iterdir()) == ["5x16x24", "5x24x16", "9x16x24",
                                                       "9x24x16"]
    spec = ModelSpec.from_dict(load_checkpoint(first).meta["model_spec"])
    assert (spec.shape.channels, *spec.shape.fhw) == (4, 3, 4, 6)  # the first bucket's latents
    report = json.loads((first / "buckets.json").read_text())
    assert [b["clips"] for b in report["buckets"]] == [2, 1, 1, 1]
    encoded.clear()
    second = tmp_path / "second"
    assert main(["train", "--out", str(second), "--steps", "2", "--set", *run]) == 0
    assert encoded == []  # both runs' caches are the same: nothing encoded again
    # the batches of a run: one bucket's latents each
    from vidiff.train.config import load_run_config
    from vidiff.train.setup import build_data

    data = build_data(load_run_config(None, [*run, f"train.out={second}"]))
    assert encoded == [] and data.clip == (4, 3, 4, 6)
    order = BucketOrder(data.dataset.bucket_sizes, 2, seed=0)
    for step in range(order.epoch_batches):
        _, b, items = order.global_items(step)
        shapes = {tuple(data.dataset[i]["video"].shape) for i in items}
        assert shapes == {LATENT_SHAPES["wan"][b]}
    pipe = Pipeline.from_pretrained(first)
    videos = pipe(num_videos=1, steps=2, generator=torch.Generator().manual_seed(0))
    assert videos.shape == (1, 3, 9, 16, 24)  # decoded at the first bucket's shape


def test_a_bucket_without_videos_gets_no_cache(video_root, vaes, tmp_path, one_thread):
    from vidiff.data.latents import BucketedLatents
    from vidiff.models import load_diffusers_vae
    from vidiff.train.data import BucketOrder

    folder = _bucketed(video_root, [*LATENT_BUCKETS, (9, 32, 32)])  # no square video
    cache = BucketedLatents(folder, load_diffusers_vae(vaes["wan"]), tmp_path, key={})
    assert cache.bucket_sizes == [2, 1, 1, 1, 0] and cache.caches[4] is None
    assert cache.shapes[4] == (4, 3, 8, 8) and not (tmp_path / "9x32x32").exists()
    order = BucketOrder(cache.bucket_sizes, 1)
    assert {order.global_items(s)[1] for s in range(2 * order.epoch_batches)} == {0, 1, 2, 3}
