"""DDP on CPU: 2 processes (gloo, launched by torchrun) train the same parameters as one
process with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch
from _train_helpers import TINY, sigterm_rank_one, tiny_config

from vidiff.modelio.checkpoint import list_checkpoints, load_checkpoint
from vidiff.train import train

EXTRA = ["data.num_images=1", "data.use_labels=true", "prior.name=progressive",
         "train.sample_count=1", "train.device=cpu"]


@pytest.mark.parametrize("backbone", [[], ["model.kind=dit", "model.preset=dit-tiny"]],
                         ids=["unet", "dit"])
def test_two_processes_match_one(tmp_path, backbone):
    steps = 3
    single = tmp_path / "single"
    train(tiny_config(single, *EXTRA, *backbone, "data.batch_size=4", steps=steps), echo=False)

    ddp = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "vidiff", "train", "--out", str(ddp), "--steps", str(steps),
           "--set", *TINY, *EXTRA, *backbone, "data.batch_size=2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the gradients match DDP's buckets (1x1 convolutions once made every rank warn)
    assert "Grad strides do not match" not in proc.stderr

    a, b = load_checkpoint(single), load_checkpoint(ddp)
    assert a.step == b.step == steps and b.meta["world_size"] == 2
    for which in ("model", "ema"):
        wa, wb = a.weights(which), b.weights(which)
        for key in wa:
            torch.testing.assert_close(wa[key], wb[key], rtol=1e-5, atol=1e-5, msg=key)
    # rank 0 alone writes: one log line per step, one checkpoint, one set of samples
    lines = (ddp / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(1, steps + 1))
    # the loss by level sums both ranks' samples: the single process's bins, as they are
    ones = [json.loads(x) for x in (single / "log.jsonl").read_text().splitlines()]
    for one, two in zip(ones, map(json.loads, lines), strict=True):
        assert two["samples_by_level"] == one["samples_by_level"]
        assert sum(two["samples_by_level"]) == 4
        for x, y in zip(one["loss_by_level"], two["loss_by_level"], strict=True):
            assert (x is None) == (y is None) and (x is None or abs(x - y) <= 1e-5 * x)
    assert len(list_checkpoints(ddp)) == 1
    assert sorted(p.name for p in (ddp / "samples").iterdir()) == [
        f"step_{steps:08d}{s}" for s in (".gif", ".mp4", ".png")]


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the ranks through /proc")
def test_sigterm_to_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    """Only rank 1 is signalled: rank 0 learns of it through the per-step agreement, stops
    after the same step and writes the checkpoint; the run resumes from it."""
    out = tmp_path / "ddp"
    stderr = sigterm_rank_one(out)
    step = load_checkpoint(out).step
    assert step >= 3, stderr[-3000:]
    assert "stopped by a signal" in stderr
    assert json.loads((out / "log.jsonl").read_text().splitlines()[-1])["step"] == step
