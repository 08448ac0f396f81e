"""FSDP2 on CPU: 2 gloo processes (torchrun) with ``train.parallel = "fsdp"`` train the same
parameters as one process with the same global batch, write sharded checkpoints that resume
exactly on 2 processes and on 1, and read back whole in every command."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from _train_helpers import TINY, sigterm_rank_one, tiny_config

from vidiff.io import write_video
from vidiff.modelio.checkpoint import checkpoint_intact, list_checkpoints, load_checkpoint
from vidiff.modelio.pipeline import Pipeline
from vidiff.train import train

EXTRA = ["data.num_images=1", "data.use_labels=true", "prior.name=progressive",
         "train.sample_count=1", "train.device=cpu"]
# a few AdamW steps on gradients summed in another order (the DDP test's bound)
CLOSE = {"rtol": 1e-5, "atol": 1e-5}


def torchrun(out, steps, *settings, check=True):
    """`vidiff train` on 2 gloo processes; the finished process."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "vidiff", "train", "--out", str(out), "--steps", str(steps),
           "--set", *TINY, *EXTRA, "data.batch_size=2", *settings]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def assert_same_weights(a, b, exact=False):
    for which in ("model", "ema"):
        wa, wb = a.weights(which), b.weights(which)
        assert wa.keys() == wb.keys()
        for key in wa:
            if exact:
                assert torch.equal(wa[key], wb[key]), key
            else:
                torch.testing.assert_close(wb[key], wa[key], **CLOSE, msg=key)


def only_step(run, step, dest):
    """A copy of `run` holding only its checkpoint of `step` (a run stopped there)."""
    shutil.copytree(run, dest)
    for path in list_checkpoints(dest):
        if load_checkpoint(path).step != step:
            shutil.rmtree(path)
    return dest


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process (batch 4) and FSDP on 2 (batch 2 each), 5 steps, checkpoints at 3 and 5."""
    root = tmp_path_factory.mktemp("fsdp")
    every = ["train.ckpt_every=3", "train.sample_every=5"]
    train(tiny_config(root / "single", *EXTRA, *every, "data.batch_size=4", steps=5),
          echo=False)
    torchrun(root / "fsdp", 5, *every, "train.parallel=fsdp")
    return root


def test_fsdp_matches_one_process_and_writes_shards(runs):
    single, fsdp = runs / "single", runs / "fsdp"
    for step in (3, 5):
        a = load_checkpoint(single / "checkpoints" / f"step_{step:08d}")
        b = load_checkpoint(fsdp / "checkpoints" / f"step_{step:08d}")
        assert b.sharded and not a.sharded and b.meta["world_size"] == 2
        assert checkpoint_intact(b.path)
        assert sorted(p.name for p in (b.path / "shards").iterdir()) == [
            ".metadata", "__0_0.distcp", "__1_0.distcp"]  # every rank wrote its shards
        assert "optimizer" not in b.state()  # in the shards
        assert_same_weights(a, b)
    losses = [[json.loads(x)["loss"] for x in (r / "log.jsonl").read_text().splitlines()]
              for r in (single, fsdp)]
    assert len(losses[1]) == 5  # rank 0 alone logs
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), **CLOSE)


def test_export_of_a_sharded_run_samples_what_the_run_sampled(runs, tmp_path):
    from vidiff.cli import main

    fsdp = runs / "fsdp"
    assert main(["export", str(fsdp), str(tmp_path / "export")]) == 0
    pipe = Pipeline.from_pretrained(tmp_path / "export")
    gathered = load_checkpoint(fsdp).weights("ema")
    for key, value in pipe.model.state_dict().items():
        assert torch.equal(value, gathered[key]), key
    videos = pipe(1, generator=torch.Generator().manual_seed(0), batch_size=1)
    mine = write_video(tmp_path / "again.png", videos, fps=8)
    assert mine.read_bytes() == (fsdp / "samples" / "step_00000005.png").read_bytes()


def test_sharded_resume_is_exact_on_two_processes_and_close_on_one(runs, tmp_path):
    fsdp = runs / "fsdp"
    end = load_checkpoint(fsdp / "checkpoints" / "step_00000005")
    two = only_step(fsdp, 3, tmp_path / "two")
    proc = torchrun(two, 5, "train.ckpt_every=3", "train.sample_every=5",
                    "train.parallel=fsdp")
    assert "resumed from" in proc.stderr + proc.stdout
    assert_same_weights(end, load_checkpoint(two), exact=True)
    # the same shards on one process (DCP reshards the optimizer; batch 4 = 2 x 2)
    one = only_step(fsdp, 3, tmp_path / "one")
    train(tiny_config(one, *EXTRA, "train.ckpt_every=3", "data.batch_size=4", steps=5),
          echo=False)
    resumed = load_checkpoint(one)
    assert resumed.step == 5 and not resumed.sharded
    assert_same_weights(end, resumed)


def test_a_one_process_checkpoint_resumes_under_fsdp(runs, tmp_path):
    """The single-file optimizer state is sharded as it is set."""
    single = runs / "single"
    run = only_step(single, 3, tmp_path / "run")
    torchrun(run, 5, "train.ckpt_every=3", "train.parallel=fsdp")
    assert load_checkpoint(run).sharded
    assert_same_weights(load_checkpoint(single / "checkpoints" / "step_00000005"),
                        load_checkpoint(run))


def test_hsdp_with_bf16_trains_videofusion_like_one_process(tmp_path):
    """HSDP over a (2 replicas x 1 shard) mesh with bf16 parameters and fp32 reductions, on
    VideoFusion's shard units (each generator's blocks, then the generators) with every
    block recomputed in backward: the step-1 loss (before any update) as one process's bf16
    autocast gives, to bf16 rounding, and the fp32 master weights within what 2 AdamW steps
    can move (2 lr per step)."""
    steps, lr = 2, 1e-3
    settings = ["train.precision=bf16", f"train.lr={lr}", "train.ema_decay=0.9",
                "model.kind=videofusion", "model.base_preset=tiny", "diffusion.prediction=eps",
                "prior.name=decomposed", "model.overrides.gradient_checkpointing=true",
                "train.sample_every=0"]
    train(tiny_config(tmp_path / "single", *EXTRA, *settings, "data.batch_size=4",
                      steps=steps), echo=False)
    torchrun(tmp_path / "hsdp", steps, *settings, "train.parallel=hsdp", "train.shard_size=1")
    a, b = load_checkpoint(tmp_path / "single"), load_checkpoint(tmp_path / "hsdp")
    first = [json.loads((r / "log.jsonl").read_text().splitlines()[0])["loss"]
             for r in (tmp_path / "single", tmp_path / "hsdp")]
    assert abs(first[1] - first[0]) <= 4 * 2**-8 * abs(first[0])
    wa, wb = a.weights("model"), b.weights("model")
    assert any(k.startswith("base.") for k in wa) and any(k.startswith("residual.") for k in wa)
    for key in wa:
        assert wb[key].dtype == torch.float32, key
        torch.testing.assert_close(wb[key], wa[key], rtol=0, atol=2 * steps * lr * 2, msg=key)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the ranks through /proc")
def test_sigterm_to_one_rank_checkpoints_every_shard(tmp_path):
    out = tmp_path / "fsdp"
    stderr = sigterm_rank_one(out, "train.parallel=fsdp")
    ckpt = load_checkpoint(out)
    assert ckpt.step >= 3 and ckpt.sharded and checkpoint_intact(ckpt.path)
    assert "stopped by a signal" in stderr
    assert json.loads((out / "log.jsonl").read_text().splitlines()[-1])["step"] == ckpt.step
    assert not list((out / "checkpoints").glob(".tmp-*"))  # the staged folder moved in place
