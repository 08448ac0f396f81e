"""A run never loses work: a stop request during a sample grid checkpoints and exits 143 at
once, rotation keeps the checkpoint a resume fell back to, a resume may change what is
trained, and ``--resume CKPT --out NEW`` continues the checkpoint's run."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest
from _train_helpers import TINY, tiny_config

from vidiff.modelio.checkpoint import checkpoint_intact, list_checkpoints, load_checkpoint
from vidiff.train import train

# a grid of 4 videos by 1000 DDPM steps: tens of seconds on a CPU, what a stop must not wait for
SLOW_GRID = ["sample.sampler=ddpm", "sample.steps=1000", "train.sample_count=4"]


def _start(out, *extra, steps):
    cmd = [sys.executable, "-m", "vidiff", "train", "--out", str(out), "--steps", str(steps),
           "--set", *TINY, *SLOW_GRID, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), start_new_session=True)


def _wait_for(ready, proc, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the run did not get there")


def _logged(out, step):
    log = out / "log.jsonl"
    return log.exists() and any(json.loads(line)["step"] == step
                                for line in log.read_text().splitlines())


@pytest.mark.parametrize("where", ["mid-run", "final"])
def test_sigterm_during_a_sample_grid_checkpoints_and_exits_143(tmp_path, where):
    """Mid-run (a grid at step 2 that no checkpoint precedes) and at the end (after the last
    checkpoint): the grid is cut, step 2's checkpoint is on disk, the exit code is 143."""
    out = tmp_path / "r"
    if where == "mid-run":
        proc = _start(out, "train.sample_every=2", steps=4)
        _wait_for(lambda: _logged(out, 2), proc)  # step 2 is logged, then its grid begins
    else:
        proc = _start(out, "train.sample_every=0", steps=2)
        _wait_for(lambda: bool(list_checkpoints(out)), proc)  # the last save, then the grid
    time.sleep(1.0)  # well inside the grid
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    took = time.monotonic() - sent
    assert proc.returncode == 143, stderr
    assert [p.name for p in list_checkpoints(out)] == ["step_00000002"]
    assert checkpoint_intact(list_checkpoints(out)[0]) and load_checkpoint(out).step == 2
    assert "cut short by the stop request" in stdout
    assert f"resume with: vidiff train --out {out}" in stderr and "Traceback" not in stderr
    assert not (out / "samples" / "step_00000002.png").exists()  # the grid was not finished
    assert took < 20, f"the stop waited {took:.0f} s"  # the grid alone takes far longer


def test_rotation_keeps_the_checkpoint_a_resume_fell_back_to(tmp_path):
    out = tmp_path / "r"
    train(tiny_config(out, "train.ckpt_every=2", steps=4), echo=False)
    newest = list_checkpoints(out)[-1]
    state = newest / "state.pt"
    state.write_bytes(state.read_bytes()[:100])  # step 4 is corrupt: resume from step 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(tiny_config(out, "train.ckpt_every=1", steps=6), until=3, echo=False)
    assert result.step == 3
    names = [p.name for p in list_checkpoints(out)]
    # step 2 (the good one it resumed from) stays while only one whole newer one exists
    assert names == ["step_00000002", "step_00000003", "step_00000004"]
    assert checkpoint_intact(out / "checkpoints" / "step_00000002")


def _moments(trainer):
    """name -> exp_avg of every parameter the optimizer holds moments for."""
    names = {id(p): n for n, p in trainer.raw.named_parameters()}
    return {names[id(p)]: s["exp_avg"].clone() for p, s in trainer.optimizer.state.items()}


@pytest.mark.parametrize("recorded", [True, False])
def test_resume_may_change_what_is_trained(tmp_path, capsys, recorded):
    """train.trainable temporal -> all: the temporal layers keep their moments, the image
    layers start fresh, the log says so; also for checkpoints that did not record the
    optimizer's parameter names (their groups are rebuilt from the checkpoint's config)."""
    import torch

    from vidiff.models import is_temporal_parameter
    from vidiff.train import Trainer

    out = tmp_path / "r"
    train(tiny_config(out, steps=1), echo=False)  # temporal-only needs trained image layers
    first = Trainer(tiny_config(out, "train.trainable=temporal", steps=2), echo=False)
    try:
        first.run()
        before = _moments(first)
    finally:
        first.close()
    assert before and all(is_temporal_parameter(n) for n in before)
    if not recorded:  # a checkpoint of an earlier vidiff
        state_file = list_checkpoints(out)[-1] / "state.pt"
        state = torch.load(state_file, weights_only=True)
        del state["optimizer_params"]
        torch.save(state, state_file)
    capsys.readouterr()
    second = Trainer(tiny_config(out, "train.trainable=all", steps=3))
    try:
        after = _moments(second)
        said = capsys.readouterr().out
        assert "train.trainable: 'temporal' -> 'all'" in said
        assert f"kept the optimizer moments of {len(before)} tensors" in said
        assert set(after) == set(before)
        for name, value in before.items():
            torch.testing.assert_close(after[name], value, rtol=0, atol=0)
        frozen_before = sum(1 for n, _ in second.raw.named_parameters()
                            if not is_temporal_parameter(n))
        assert f"({frozen_before} newly trained)" in said
        assert second.run().step == 3  # and it trains every parameter
        assert len(_moments(second)) == sum(1 for _ in second.raw.parameters())
    finally:
        second.close()


def test_resume_may_unfreeze_videofusions_base(tmp_path, capsys):
    vf = ["model.kind=videofusion", "prior.name=decomposed", "diffusion.prediction=eps"]
    out = tmp_path / "vf"
    train(tiny_config(out, *vf, "model.freeze_base=true", steps=2), echo=False)
    capsys.readouterr()
    result = train(tiny_config(out, *vf, "model.freeze_base=false", steps=3))
    said = capsys.readouterr().out
    assert result.step == 3 and "model.freeze_base: True -> False" in said
    assert "newly trained" in said and "does not fit" not in said


def test_resume_may_freeze_all_but_the_temporal_layers(tmp_path, capsys):
    """train.trainable all -> temporal: the image layers keep their trained (not EMA)
    weights, frozen; only the temporal layers' moments are kept."""
    import torch

    from vidiff.models import is_temporal_parameter
    from vidiff.train import Trainer

    out = tmp_path / "r"
    train(tiny_config(out, "train.ema_decay=0.5", steps=2), echo=False)
    ckpt = load_checkpoint(out)
    trained, ema = ckpt.weights("model"), ckpt.weights("ema")
    capsys.readouterr()
    second = Trainer(tiny_config(out, "train.trainable=temporal", "train.ema_decay=0.5",
                                 steps=3))
    try:
        said = capsys.readouterr().out
        assert "dropped those of" in said and "(0 newly trained)" in said
        image = [n for n, _ in second.raw.named_parameters() if not is_temporal_parameter(n)]
        assert any(not torch.equal(trained[n], ema[n]) for n in image)  # EMA differs
        for name, p in second.raw.named_parameters():
            torch.testing.assert_close(p.detach(), trained[name], rtol=0, atol=0)
        assert all(is_temporal_parameter(n) for n in _moments(second))
    finally:
        second.close()


def test_resume_from_a_checkpoint_into_a_new_folder_continues_its_run(tmp_path, capsys):
    """--resume CKPT --out NEW takes the checkpoint's config (not the defaults), and NEW
    later resumes from its own newest checkpoint, not from CKPT again."""
    from vidiff.cli import main

    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", "--out", str(a), "--steps", "2", "--set", *TINY]) == 0
    ckpt = list_checkpoints(a)[-1]
    capsys.readouterr()
    assert main(["train", "--resume", str(ckpt), "--out", str(b), "--steps", "3"]) == 0
    said = capsys.readouterr().out
    assert f"resumed from {ckpt} at step 2" in said
    assert "resuming with changed settings: train.out" in said
    assert load_checkpoint(b).step == 3 and load_checkpoint(b).config["train"]["out"] == str(b)
    assert load_checkpoint(b).config["model"] == load_checkpoint(a).config["model"]
    assert main(["train", "--out", str(b), "--steps", "4"]) == 0
    assert f"resumed from {list_checkpoints(b)[0]} at step 3" in capsys.readouterr().out


@pytest.mark.parametrize("where", ["data", "inside", "parent", "vae"])
def test_a_latent_cache_overlapping_what_it_reads_is_refused(tmp_path, where):
    from vidiff.train.setup import build_data
    from vidiff.utils.config_io import ConfigError

    videos, vae = tmp_path / "videos", tmp_path / "vae"
    videos.mkdir()
    cache = {"data": videos, "inside": videos / "latents", "parent": tmp_path,
             "vae": vae / "cache"}[where]
    config = tiny_config(tmp_path / "r", "data.source=folder", f"data.path={videos}",
                         f"data.autoencoder={vae}", f"data.latent_cache={cache}")
    with pytest.raises(ConfigError, match=r"^data.latent_cache .* (is|contains|lies inside) "
                                          r"data\.(path|autoencoder)"):
        build_data(config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["videos"]  # nothing made or read
