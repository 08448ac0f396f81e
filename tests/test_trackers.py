"""Trackers: TensorBoard event files and an offline W&B run written by a real run (rank 0),
a missing package skipped with a note, the plain progress lines of a non-interactive
terminal, throughput and memory in every record, the old train.tensorboard key upgraded."""

import json
import time

import pytest
from _train_helpers import tiny_config

from vidiff.train import train
from vidiff.train.config import load_run_config
from vidiff.utils.config_io import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def _records(out):
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


def test_every_record_has_throughput_eta_and_memory(tmp_path):
    out = tmp_path / "r"
    train(tiny_config(out, "train.sample_every=0", steps=2), echo=False)
    last = _records(out)[-1]
    assert last["tokens_s"] == pytest.approx(last["videos_s"] * 4 * 16 * 16)
    assert last["eta_s"] == 0 and last["rss_gib"] > 0.01


def test_tensorboard_gets_scalars_levels_the_histogram_and_samples(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "r"
    train(tiny_config(out, 'train.report_to=["tensorboard"]', "data.val_fraction=0.25",
                      "train.val_clips=2", "train.val_levels=2", steps=2), echo=False)
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    assert {"train/loss", "train/val_loss", "train/tokens_s"} <= set(tags["scalars"])
    assert any(t.startswith("loss_by_level/") for t in tags["scalars"])
    assert {"val_loss_by_level/0.25", "val_loss_by_level/0.75"} <= set(tags["scalars"])
    assert "loss_by_level" in tags["histograms"]
    assert "samples" in tags["images"]  # the grid's animated GIF
    image = events.Images("samples")[-1]
    assert image.encoded_image_string[:6] in (b"GIF87a", b"GIF89a")
    assert "config" in "".join(tags["tensors"])


def test_wandb_offline_writes_its_run_with_no_network(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "r"
    train(tiny_config(out, 'train.report_to=["wandb"]', steps=2), echo=False)
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run_id = (out / "wandb_id").read_text().strip()
    # what `wandb sync` uploads: history (scalars, the levels) and the config. W&B's service
    # process writes the file; on a loaded machine (the suite on both cores) its last records
    # were seen to land after finish() returned, so they get a deadline, not an instant
    keys = (b"train/loss", b"loss_by_level/", b"train/tokens_s", b"wandb_project")
    deadline = time.monotonic() + 60
    while True:
        records = (runs[0] / f"run-{run_id}.wandb").read_bytes()
        missing = [key for key in keys if key not in records]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not missing, missing
    media = [p.suffix for p in (runs[0] / "files" / "media").rglob("*") if p.is_file()]
    assert media == [".mp4"]  # the sample grid as one video (its GIF not uploaded twice)


def test_a_missing_tracker_package_is_skipped_with_a_note(tmp_path, monkeypatch, capsys):
    import builtins

    real = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("no wandb here")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    out = tmp_path / "r"
    train(tiny_config(out, 'train.report_to=["wandb"]', "train.sample_every=0", steps=1))
    assert "the wandb package is not installed (pip install wandb)" in capsys.readouterr().out
    assert _records(out)[-1]["step"] == 1


def test_a_log_file_gets_plain_progress_lines(tmp_path, capsys):
    out = tmp_path / "r"
    train(tiny_config(out, "train.progress=true", "train.sample_every=0", steps=2))
    text = capsys.readouterr()
    lines = [x for x in text.out.splitlines() if "step 2/2: loss" in x]
    assert lines and "videos/s" in lines[0]
    assert "\r" not in text.err  # no carriage-return bar in a file


def test_the_old_tensorboard_key_and_unknown_trackers():
    assert load_run_config(None, ["train.tensorboard=false"]).train.report_to == []
    assert load_run_config(None, ["train.tensorboard=true"]).train.report_to == ["tensorboard"]
    with pytest.raises(ConfigError, match=r"train\.report_to.*tensorboard.*wandb"):
        load_run_config(None, ['train.report_to=["mlflow"]'])
