"""The loss by noise level: the bins' arithmetic (edges, the last bin closed, empty bins,
means over intervals), each process's level of its times, and a run's log records."""

import json

import pytest
import torch
from _train_helpers import tiny_config

from vidiff.diffusion.ddpm import Diffusion
from vidiff.diffusion.flow import FlowMatching
from vidiff.train import train
from vidiff.train.levels import LevelBins, bin_index

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bins_have_half_open_edges_and_a_closed_last_bin():
    level = torch.tensor([0.0, 0.0999, 0.1, 0.55, 0.9, 0.99999, 1.0], dtype=torch.float64)
    assert bin_index(level, 10).tolist() == [0, 0, 1, 5, 9, 9, 9]
    assert bin_index(level, 1).tolist() == [0] * 7
    with pytest.raises(ValueError, match="bins must be >= 1"):
        LevelBins(0)


@pytest.mark.parametrize("bins", [3, 7, 10, 16])
def test_every_ddpm_step_falls_in_its_integer_bin(bins):
    """floor(t / T * bins) in float64 equals the exact integer floor(t * bins / T) for every
    training step: no step slips across an edge by rounding."""
    t = torch.arange(1000)
    assert torch.equal(bin_index(Diffusion("cosine", 1000, "v").level(t), bins),
                       t * bins // 1000)


def test_means_counts_and_empty_bins_per_interval():
    bins = LevelBins(4)
    bins.add(torch.tensor([0.1, 0.2, 0.8]), torch.tensor([1.0, 3.0, 5.0]))
    bins.add(torch.tensor([0.3]), torch.tensor([2.0]))
    record = bins.record()
    assert record == {"loss_by_level": [2.0, 2.0, None, 5.0],
                      "samples_by_level": [2, 1, 0, 1]}
    assert bins.record()["samples_by_level"] == [0, 0, 0, 0]  # a new interval
    with pytest.raises(ValueError, match=r"must both be \(B,\)"):
        bins.add(torch.zeros(2), torch.zeros(3))


def test_each_process_levels_its_times_in_zero_one():
    ddpm = Diffusion("cosine", 1000, "v")
    t = torch.tensor([0, 499, 999])
    assert torch.allclose(ddpm.level(t), torch.tensor([0.0, 0.499, 0.999], dtype=torch.float64))
    flow = FlowMatching()
    assert torch.equal(flow.level(torch.tensor([0.0, 0.25, 1.0])).float(),
                       torch.tensor([0.0, 0.25, 1.0]))


def test_a_run_logs_the_loss_by_level_each_interval(tmp_path):
    out = tmp_path / "r"
    train(tiny_config(out, "train.log_every=2", "train.loss_bins=5", "data.batch_size=4",
                      "train.sample_every=0", steps=4), echo=False)
    records = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    for r in records:
        assert sum(r["samples_by_level"]) == 8  # 2 steps x 4 videos, each in one bin
        assert len(r["loss_by_level"]) == 5
        seen = [x for x in r["loss_by_level"] if x is not None]
        assert seen and all(x >= 0 for x in seen)


def test_trackers_name_each_bin_by_its_level_range():
    from vidiff.train.trackers import level_scalars

    assert level_scalars({"loss_by_level": [0.5, None, 0.25, 0.125],
                          "val_loss_by_level": [0.3, 0.1]}) == {
        "loss_by_level/0-0.25": 0.5, "loss_by_level/0.5-0.75": 0.25,
        "loss_by_level/0.75-1": 0.125, "val_loss_by_level/0.25": 0.3,
        "val_loss_by_level/0.75": 0.1}
