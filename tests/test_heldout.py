"""The held-out validation loss: the split (fixed, disjoint, never trained on), the fixed
levels and noise (the same values at any batch size, after a resume, under another training
seed), every process and a DiT, a folder of held-out videos in latent space, bad settings."""

import json

import pytest
import torch
from _train_helpers import tiny_config

from vidiff.data import make_synthetic
from vidiff.data.split import held_out_split, split_indices
from vidiff.train import train
from vidiff.train.heldout import validation_levels
from vidiff.train.validation import validate
from vidiff.utils.config_io import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

VAL = ["data.val_fraction=0.25", "train.val_clips=4", "train.val_levels=3",
       "train.val_every=2"]


def _records(out):
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


def _val(records):
    return {r["step"]: [r["val_loss"], *r["val_loss_by_level"]] for r in records
            if "val_loss" in r}


def test_the_split_is_fixed_disjoint_and_covers_the_data():
    kept, held = split_indices(40, 0.25)
    assert len(held) == 10 and sorted(kept + held) == list(range(40))
    assert split_indices(40, 0.25) == (kept, held)  # no seed of the run's: the same split
    assert held != list(range(30, 40))  # drawn, not the tail
    train_view, val_view = held_out_split(make_synthetic("bouncing_balls", num_videos=40,
                                                         frames=2, size=16), 0.25)
    assert len(train_view) == 30 and len(val_view) == 10
    assert train_view.class_names == val_view.dataset.class_names  # passes through
    assert torch.equal(val_view[0]["video"], val_view.dataset[held[0]]["video"])
    for bad, match in [(0.0, r"in \(0, 1\)"), (0.001, "leaves 0 held out")]:
        with pytest.raises(ValueError, match=match):
            split_indices(40, bad)


def test_levels_are_bin_midpoints():
    assert validation_levels(4).tolist() == [0.125, 0.375, 0.625, 0.875]
    with pytest.raises(ValueError, match="val_levels must be >= 1"):
        validation_levels(0)


def test_a_run_logs_its_validation_loss_and_a_resume_repeats_it(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    extra = [*VAL, "train.ckpt_every=2", "train.sample_every=0"]
    train(tiny_config(whole, *extra, steps=4), echo=False)
    train(tiny_config(parts, *extra, steps=2), echo=False)
    train(tiny_config(parts, *extra, steps=4), echo=False)  # resumes at step 2
    a, b = _val(_records(whole)), _val(_records(parts))
    assert sorted(a) == [2, 4] and sorted(b) == [2, 4]
    for step in (2, 4):
        assert b[step] == pytest.approx(a[step], rel=1e-6), step
    loss, *by_level = a[4]
    assert len(by_level) == 3 and loss == pytest.approx(sum(by_level) / 3)
    assert all(x > 0 for x in by_level)
    assert a[4] != a[2]  # the weights changed, so did the loss
    # the training loss's record at the same step is still there: one record per step
    assert [r["step"] for r in _records(whole)] == [1, 2, 3, 4]


def test_the_same_model_scores_the_same_at_any_batch_size_or_training_seed(tmp_path):
    from vidiff.train.trainer import Trainer

    losses = []
    for i, extra in enumerate([["data.batch_size=1"], ["data.batch_size=3", "train.seed=5"]]):
        trainer = Trainer(tiny_config(tmp_path / f"r{i}", *VAL, *extra, steps=1))
        torch.manual_seed(0)  # the same weights in both (the test's own, not the library's)
        for p in trainer.ema.model.parameters():
            p.data.copy_(torch.randn_like(p) * 0.05)  # weights, not diffusion noise
        losses.append(trainer.validate())
        # the run trains on the other 48 of its 64 clips, never a held-out one
        assert len(trainer.dataset) == 48 and len(trainer.train_data) == 48
        assert not set(trainer.dataset.indices) & set(trainer.heldout.data.indices)
    assert losses[1]["val_loss_by_level"] == pytest.approx(losses[0]["val_loss_by_level"],
                                                           rel=1e-5)


@pytest.mark.parametrize("backbone", [["diffusion.process=flow", "sample.sampler=euler"],
                                      ["model.kind=dit", "model.preset=dit-tiny"]],
                         ids=["flow", "dit"])
def test_every_process_and_kind_validates(tmp_path, backbone):
    out = tmp_path / "r"
    train(tiny_config(out, *VAL, *backbone, "train.sample_every=0", steps=2), echo=False)
    (loss, *by_level), = _val(_records(out)).values()
    assert len(by_level) == 3 and all(x > 0 for x in by_level)


def test_a_folder_of_held_out_videos_in_latent_space(tmp_path):
    pytest.importorskip("diffusers")
    from _sd_helpers import write_tiny_vae

    from vidiff.io import write_video

    videos, val = tmp_path / "videos", tmp_path / "val"
    g = torch.Generator().manual_seed(0)
    for folder, n in ((videos, 4), (val, 2)):
        for i in range(n):
            write_video(folder / f"v{i}.mp4", torch.rand(3, 4, 16, 16, generator=g) * 2 - 1,
                        fps=8)  # pixels, not diffusion noise
    vae = write_tiny_vae(tmp_path / "vae")
    out = tmp_path / "r"
    train(tiny_config(out, "data.source=folder", f"data.path={videos}", f"data.val_data={val}",
                      f"data.autoencoder={vae}", "train.val_levels=2", "train.sample_every=0",
                      steps=2), echo=False)
    (loss, *by_level), = _val(_records(out)).values()
    assert len(by_level) == 2
    assert (tmp_path / "r" / "latents-val").is_dir()  # its own cache beside the training one


@pytest.mark.parametrize("extra, match", [
    (["data.val_fraction=1.5"], r"data\.val_fraction = 1\.5 must be in \[0, 1\)"),
    (["data.val_fraction=0.1", "data.val_data=."], "both hold out clips"),
    (["data.val_data=/nonexistent/val"], "is not a folder of videos"),
    (["data.val_fraction=0.1", "distill.teacher=somewhere"], "a distillation run learns"),
    (["train.val_levels=0"], r"train\.val_levels"),
])
def test_bad_held_out_settings_are_named(tmp_path, extra, match):
    with pytest.raises(ConfigError, match=match):
        validate(tiny_config(tmp_path / "r", *extra))


def test_sample_grids_take_the_chosen_classes_with_the_same_noise(tmp_path):
    from vidiff.train.trainer import Trainer

    labelled = ["data.use_labels=true", "train.sample_count=2"]
    grids = []
    for i, classes in enumerate(["[2, 2]", "[2, 2]", "[5, 5]"]):
        trainer = Trainer(tiny_config(tmp_path / f"r{i}", *labelled,
                                      f"train.val_classes={classes}", steps=1), echo=False)
        torch.manual_seed(0)  # the same weights in each (the test's own, not the library's)
        for p in trainer.ema.model.parameters():
            p.data.copy_(torch.randn_like(p) * 0.05)  # weights, not diffusion noise
        grids.append(trainer.sample_videos())
    assert torch.equal(grids[0], grids[1]) and not torch.equal(grids[0], grids[2])
    with pytest.raises(ConfigError, match=r"train\.val_classes \[99\]: the model's classes"):
        Trainer(tiny_config(tmp_path / "bad", *labelled, "train.val_classes=[99]"), echo=False)
    with pytest.raises(ConfigError, match=r"train\.val_prompts: the model reads no captions"):
        Trainer(tiny_config(tmp_path / "bad2", 'train.val_prompts=["a ball"]'), echo=False)
