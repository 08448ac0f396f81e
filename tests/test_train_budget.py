"""The training time budget (`train.max_seconds`, `vidiff.train.budget.TimeBudget`)."""

import json
import math

import pytest
from _train_helpers import tiny_config

from vidiff.train import Trainer
from vidiff.train.budget import TimeBudget
from vidiff.utils.config_io import ConfigError


class FakeClock:
    """A clock that advances only when told to."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def fake_budget(seconds):
    budget = TimeBudget(seconds)
    clock = FakeClock()
    budget._now, budget.start = clock, clock.now
    return budget, clock


def test_budget_stops_within_half_a_step_and_estimates_the_horizon():
    budget, clock = fake_budget(10.0)
    steps = 0
    while budget.another():
        clock.now += 0.3  # every step takes 0.3 s
        budget.done_step()
        steps += 1
        if steps == 10:  # 3 s spent, 7 s left: 23 more steps fit
            assert budget.horizon(steps) == 10 + 23
            assert budget.horizon(steps, cap=20) == 20
    # the last step started only if it would end at most half a step past 10 s
    assert steps == 33 and budget.elapsed == pytest.approx(9.9)
    assert not budget.another()


def test_budget_first_step_always_runs_and_bad_arguments():
    budget, clock = fake_budget(1.0)
    clock.now += 50
    assert budget.another()  # no step yet: it runs however late
    budget.done_step()
    assert not budget.another()
    with pytest.raises(ValueError, match="clock must be one of wall, cpu"):
        TimeBudget(1.0, clock="gpu")
    with pytest.raises(ValueError, match="> 0 seconds"):
        TimeBudget(0)


def test_cpu_clock_counts_process_time():
    budget = TimeBudget(5.0, clock="cpu")
    total = sum(math.sqrt(i) for i in range(300_000))  # burn a little CPU
    assert total > 0 and 0 < budget.elapsed < 5


def test_max_seconds_stops_the_run_with_checkpoint_samples_and_a_short_lr_decay(tmp_path):
    config = tiny_config(tmp_path / "run", "train.max_seconds=1.5", "train.warmup=0",
                         "train.log_every=5", steps=100_000)
    trainer = Trainer(config, echo=False)
    result = trainer.run()
    trainer.close()
    assert 5 <= result.step < 100_000  # stopped by time, after a few steps
    assert result.checkpoint is not None and result.checkpoint.name.endswith(
        f"{result.step:08d}")
    assert result.samples and all(p.exists() for p in result.samples)
    # the cosine decay was re-aimed at the budget's end: the LR is far below its peak
    assert trainer.lr_horizon < 100_000
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "run" / "log.jsonl").open()]
    assert lrs[-1] < 0.5 * config.train.lr


def test_max_seconds_must_not_be_negative(tmp_path):
    with pytest.raises(ConfigError, match="train.max_seconds"):
        tiny_config(tmp_path, "train.max_seconds=-1")
