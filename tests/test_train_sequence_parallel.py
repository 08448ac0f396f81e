"""``train.sequence_parallel = 2`` on 2 gloo processes (torchrun): both ranks hold one clip
and split its tokens (Ulysses), the parameters sharded by FSDP too; the run trains what one
process trains on the same batch (vidiff's DiT; a LoRA on diffusers' Wan)."""

import json
import os
import subprocess
import sys

import _video_pipelines as vp
import pytest
import torch
from _train_helpers import TINY, cli_error, tiny_config

from vidiff.modelio.checkpoint import load_checkpoint
from vidiff.train import train

EXTRA = ["data.use_labels=true", "prior.name=progressive", "train.sample_every=0",
         "train.device=cpu", "data.batch_size=2"]
WAN = ["model.kind=wan", "model.preset=wan-tiny", "diffusion.process=flow", "sample.sampler=euler",
       "data.use_captions=true", "data.frames=9", "data.size=32", "data.num_videos=8",
       "train.lr=0.01", "train.lora.rank=4", "prior.name=progressive", "train.ema_decay=0",
       "sample.steps=2", "train.sample_every=0", "train.device=cpu", "data.batch_size=2",
       "data.use_labels=false"]


def torchrun(out, steps, *settings):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "vidiff", "train", "--out", str(out), "--steps", str(steps),
           "--set", *TINY, *settings, "train.sequence_parallel=2", "train.parallel=fsdp"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def logged(run, key):
    return torch.tensor([json.loads(x)[key] for x in (run / "log.jsonl").read_text()
                         .splitlines()])


def test_a_dit_split_over_two_ranks_trains_as_one_process(tmp_path):
    dit = ["model.kind=dit", "model.preset=dit-tiny", *EXTRA]
    train(tiny_config(tmp_path / "one", *dit, steps=3), echo=False)
    torchrun(tmp_path / "split", 3, *dit)
    a, b = load_checkpoint(tmp_path / "one"), load_checkpoint(tmp_path / "split")
    # one data shard: each optimizer step sees the batch one process sees, not twice it
    assert b.step == 3 and b.sharded
    for which in ("model", "ema"):
        wa, wb = a.weights(which), b.weights(which)
        for key in wa:  # a few AdamW steps on gradients summed in another order
            torch.testing.assert_close(wb[key], wa[key], rtol=1e-5, atol=1e-5, msg=key)


def test_a_wan_lora_split_over_two_ranks_trains_as_one_process(tmp_path):
    root = vp.write_pipeline(tmp_path / "root", "wan")
    wan = [*WAN, f"model.init_from={root}"]
    train(tiny_config(tmp_path / "one", *wan, steps=2), echo=False)
    torchrun(tmp_path / "split", 2, *wan)
    one, split = tmp_path / "one", tmp_path / "split"
    for key in ("loss", "grad_norm"):  # the summed token shares are the whole gradient
        torch.testing.assert_close(logged(split, key), logged(one, key), rtol=1e-5, atol=0)
    wa = load_checkpoint(one).weights("model")
    wb = load_checkpoint(split).weights("model")
    for key in wa:  # AdamW's first steps move each weight by about lr, whatever the gradient
        torch.testing.assert_close(wb[key], wa[key], rtol=0, atol=1e-3 * 0.01 * 2, msg=key)


@pytest.mark.parametrize(("settings", "message"), [
    (["train.sequence_parallel=2"], "model.kind = 'unet' cannot split its clips"),
    (["train.offload=true"], 'train.offload needs train.parallel = "fsdp" or "hsdp"'),
    (["train.parallel=zero3"], "train.parallel"),
])
def test_bad_parallel_settings_are_one_line_errors(capsys, tmp_path, settings, message):
    err = cli_error(capsys, ["train", "--out", str(tmp_path / "r"), "--set", *TINY,
                             *settings])
    assert message in err and "Traceback" not in err


def test_a_degree_that_does_not_divide_the_processes_is_refused(capsys, tmp_path):
    err = cli_error(capsys, ["train", "--out", str(tmp_path / "r"), "--set", *TINY,
                             "model.kind=dit", "model.preset=dit-tiny",
                             "train.sequence_parallel=2"])
    assert "train.sequence_parallel = 2 must divide the 1 process(es)" in err
