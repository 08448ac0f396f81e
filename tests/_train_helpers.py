"""Small, fast run configs for the training, checkpoint and CLI tests."""

import os
import time

import pytest
import torch

from vidiff.cli import main
from vidiff.train.config import load_run_config

# 4 frames of 16x16, the tiny U-Net, 2 videos a step, a 2-step DDIM sampler: a step takes a few
# milliseconds (test_cli_train.py runs the real defaults)
TINY = [
    "model.preset=tiny", "sample.sampler=ddim", "data.use_labels=false",
    "data.frames=4", "data.size=16", "data.batch_size=2", "data.num_videos=64",
    "train.threads=1", "train.progress=false", "train.report_to=[]",
    "train.sample_count=2", "sample.steps=2", "train.warmup=2", "train.log_every=1",
    "train.ckpt_every=0",
]


def tiny_config(out, *extra, steps=4):
    """A tiny run config writing to `out`."""
    return load_run_config(None, [*TINY, f"train.out={out}", f"train.steps={steps}", *extra])


def cli_error(capsys, argv):
    """Run `vidiff argv`, which must fail as a usage error (exit 2); its stderr."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def fill_zero_layers(module: torch.nn.Module, generator: torch.Generator,
                     std: float = 0.1) -> None:
    """Draw N(0, std^2) into `module`'s all-zero weights (zero-initialised output layers), so
    that every path of a freshly built network reaches its output."""
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim and not p.any():
                p.normal_(0, std, generator=generator)  # weights: not diffusion noise


def rank_pids(parent: int, timeout: float = 60) -> dict[int, int]:
    """{rank: pid} of the worker processes torchrun started (from their environment)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        ranks = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
                stat = open(f"/proc/{pid}/stat").read().split()
            except OSError:
                continue
            if int(stat[3]) != parent:
                continue
            for item in env:
                if item.startswith(b"RANK="):
                    ranks[int(item[5:])] = int(pid)
        if len(ranks) == 2:
            return ranks
        time.sleep(0.2)
    raise AssertionError("torchrun's workers did not start")


def sigterm_rank_one(out, *settings) -> str:
    """Start an endless tiny `vidiff train` on 2 gloo processes (torchrun) in `out`, send
    SIGTERM to rank 1 alone once 3 steps are logged, and wait; the run's stderr."""
    import signal
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "vidiff", "train", "--out", str(out), "--steps", "100000",
           "--set", *TINY, "train.sample_every=0", "train.device=cpu", *settings]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        ranks = rank_pids(proc.pid)
        log = out / "log.jsonl"
        deadline = time.time() + 120
        while not (log.exists() and len(log.read_text().splitlines()) >= 3):
            assert time.time() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        os.kill(ranks[1], signal.SIGTERM)
        return proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
