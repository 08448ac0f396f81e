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

from vidiff.checkpoint import checkpoint_intact, list_checkpoints, load_checkpoint
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
