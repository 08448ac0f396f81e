"""Ulysses sequence parallelism of the DiT: 2 processes (gloo, launched by torchrun) splitting
the patch tokens compute the output and, summed, the gradients of one process (videos with
text and classes, images, gradient checkpointing); bad divisors are refused by name."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidiff.models import DiT, dit_config
from vidiff.models.sequence_parallel import SequenceGroup


def test_two_processes_match_one():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    worker = Path(__file__).with_name("_sp_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(worker)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("OK") == 2, proc.stdout[-3000:]


class FakeGroup:
    """Stands in for a ProcessGroup: a size and a rank, no communication."""

    def __init__(self, size, rank=0):
        self._size, self._rank = size, rank

    def size(self):
        return self._size

    def rank(self):
        return self._rank


def test_bad_divisors_are_refused_and_none_turns_it_off():
    model = DiT(dit_config("dit-tiny", heads=2))
    with pytest.raises(ValueError, match="heads divisible by 3, the model has 2"):
        model.enable_sequence_parallel(FakeGroup(3))
    with pytest.raises(ValueError, match="not a member"):
        model.enable_sequence_parallel(FakeGroup(2, rank=-1))
    model.enable_sequence_parallel(FakeGroup(2))
    assert model.sequence_group == SequenceGroup(model.sequence_group.group, 2, 0)
    assert all(b.attn.sequence_group is model.sequence_group for b in model.blocks)
    assert copy.deepcopy(model).sequence_group is model.sequence_group  # an EMA copy shares it
    x, t = torch.zeros(1, 3, 2, 6, 6), torch.tensor([1])
    with pytest.raises(ValueError, match="divisible by 2: the 3x3 grid has 9"):
        model(x, t)  # refused before any communication
    model.enable_sequence_parallel(None)
    assert model.sequence_group is None
    assert all(b.attn.sequence_group is None for b in model.blocks)
    with torch.no_grad():
        assert model(x, t).shape == x.shape
