"""The trainer: a few steps write checkpoints and samples, resume continues the same
trajectory, a NaN loss stops the run, joint/conditional batches, data order, EMA, LR."""

import json
import math

import pytest
import torch
from _tolerance import BACKWARD, assert_close_to
from _train_helpers import tiny_config
from torch import nn

from vidiff.modelio.checkpoint import list_checkpoints, load_checkpoint
from vidiff.models import build_unet
from vidiff.train import (
    EMA,
    NonFiniteLossError,
    ShardedOrder,
    Trainer,
    WarmupSchedule,
    train,
)


def _weights(run, which="model"):
    return load_checkpoint(run).weights(which)


def test_few_steps_write_checkpoint_samples_and_log(tmp_path):
    out = tmp_path / "run"
    result = train(tiny_config(out, "train.ckpt_every=2", "train.keep_checkpoints=1"),
                   echo=False)
    assert result.step == 4 and math.isfinite(result.loss)
    ckpts = list_checkpoints(out)
    assert [p.name for p in ckpts] == ["step_00000004"]  # keep_checkpoints=1 pruned step 2
    names = {p.name for p in ckpts[0].iterdir()}
    assert names == {"model.safetensors", "ema.safetensors", "state.pt", "config.json"}
    assert {p.suffix for p in result.samples} == {".mp4", ".gif", ".png"}
    assert all(p.exists() and p.stat().st_size > 0 for p in result.samples)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert {"loss", "lr", "grad_norm", "it_s", "videos_s", "threads"} <= set(records[0])
    assert not list((out / "checkpoints").glob(".tmp-*"))  # nothing half-written left


def test_loss_goes_down(tmp_path):
    torch.set_num_threads(1)
    config = tiny_config(tmp_path / "r", "train.lr=3e-3", "train.warmup=0",
                         "train.lr_schedule=constant", "diffusion.prediction=x0",
                         "data.batch_size=4", steps=30)
    trainer = Trainer(config, echo=False)
    trainer.run()
    losses = [json.loads(x)["loss"] for x in (tmp_path / "r/log.jsonl").read_text().splitlines()]
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:3]) / 3


@pytest.mark.parametrize("extra", [
    ["data.num_images=2", "data.use_labels=true", "prior.name=mixed"],
    ["data.use_captions=true", "train.grad_accum=2", "diffusion.prediction=v",
     "loss.weighting=min_snr", "prior.name=decomposed"],
])
def test_resume_continues_the_same_trajectory(tmp_path, extra):
    straight, resumed = tmp_path / "a", tmp_path / "b"
    train(tiny_config(straight, *extra, steps=6), echo=False)
    train(tiny_config(resumed, *extra, steps=6), until=3, echo=False)
    assert [p.name for p in list_checkpoints(resumed)] == ["step_00000003"]
    train(tiny_config(resumed, *extra, steps=6), echo=False)  # resume=auto
    for which in ("model", "ema"):
        a, b = _weights(straight, which), _weights(resumed, which)
        assert a.keys() == b.keys()
        for key in a:
            # the same steps on the same draws (bitwise here; MKL's kernels may take
            # alignment-dependent paths): a backward pass's rounding of each tensor's scale
            assert_close_to(a[key], b[key], BACKWARD, msg=key)
    sa, sb = load_checkpoint(straight).state(), load_checkpoint(resumed).state()
    assert sa["step"] == sb["step"] == 6
    accum = 2 if "train.grad_accum=2" in extra else 1
    assert sa["data_position"] == sb["data_position"] == 6 * 2 * accum  # videos consumed
    assert sa["lr_horizon"] == sb["lr_horizon"]


class NaNAt(nn.Module):
    """A denoiser that returns NaN from its k-th call on."""

    def __init__(self, k):
        super().__init__()
        self.inner = build_unet("tiny")
        self.k, self.calls = k, 0

    def forward(self, x, t, **cond):
        self.calls += 1
        out = self.inner(x, t, **cond)
        return out * float("nan") if self.calls >= self.k else out


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(out, "train.ckpt_every=2", steps=8), model=NaNAt(5),
                      echo=False)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 5.*step_00000004"):
        trainer.run()
    assert [p.name for p in list_checkpoints(out)] == ["step_00000002", "step_00000004"]
    weights = _weights(out)
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert load_checkpoint(out).state()["step"] == 4


def test_sharded_order_union_is_single_process_order():
    single = ShardedOrder(10, 4, seed=3, num_images=2, num_frames=5)
    ranks = [ShardedOrder(10, 2, rank=r, world=2, seed=3, num_images=2, num_frames=5)
             for r in range(2)]
    for step in range(7):  # crosses epochs
        assert single.micro_batch(step) == ranks[0].micro_batch(step) + ranks[1].micro_batch(step)
    videos = [v for s in range(5) for _, v, _ in single.micro_batch(s)]
    assert sorted(videos[:10]) == list(range(10))  # an epoch visits every video once
    resumed = iter(ShardedOrder(10, 4, seed=3, num_images=2, num_frames=5, start=4))
    assert next(resumed) == single.micro_batch(4)


def test_ema_and_schedule():
    model = nn.Linear(2, 2)
    ema = EMA(model, decay=0.9, start=2)
    assert ema.decay_at(1) == 0.0 and ema.decay_at(3) == pytest.approx(2 / 11)
    assert ema.decay_at(10_000) == 0.9
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model, 1)  # before start: a copy
    assert torch.equal(ema.model.weight, model.weight)
    sched = WarmupSchedule(warmup=4, kind="cosine", min_ratio=0.1)
    assert sched(0, 14) == 0.25 and sched(3, 14) == 1.0 and sched(4, 14) == pytest.approx(1.0)
    assert sched(14, 14) == pytest.approx(0.1) and sched(9, 14) == pytest.approx(0.55)
    assert sched(9, 24) == pytest.approx(0.5 * 0.9 * (1 + math.cos(math.pi / 4)) + 0.1)
    assert WarmupSchedule(0, "constant")(7, 10) == 1.0


def test_ema_shares_frozen_parameters_and_averages_the_trained_ones():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[0].requires_grad_(False)  # e.g. the image layers of trainable = "temporal"
    ema = EMA(model, decay=0.5, warmup=False)
    assert ema.model[0].weight is model[0].weight  # no second copy of the frozen weights
    assert ema.model[1].weight is not model[1].weight and not ema.model[1].weight.requires_grad
    before = ema.model[1].weight.clone()
    with torch.no_grad():
        model[1].weight.add_(2.0)
    ema.update(model, 1)
    torch.testing.assert_close(ema.model[1].weight, before + 1.0)  # half way: decay 0.5
    assert model[1].weight.requires_grad  # the trained layers keep training


def test_bf16_autocast_and_loader_workers(tmp_path):
    result = train(tiny_config(tmp_path / "r", "train.precision=bf16", "data.workers=1",
                               "train.sample_count=1", steps=2), echo=False)
    assert result.step == 2 and math.isfinite(result.loss)


def test_run_setup_pieces_resolve_labels_and_build_in_order(tmp_path):
    """`vidiff.train.setup`: the data decides use_labels (None: when it has classes), the
    network is built for its classes, the optimizer records each group's peak LR."""
    from dataclasses import replace

    from vidiff.train import distributed
    from vidiff.train.setup import build_data, build_network, build_optimization

    config = tiny_config(tmp_path / "r")
    auto = replace(config, data=replace(config.data, use_labels=None))
    data = build_data(auto)
    assert data.config.data.use_labels is True and len(data.class_names) == 8
    assert data.channels == 3 and data.first.shape == (3, 4, 16, 16) and data.fps == 8.0
    plain = build_data(config)
    assert plain.config.data.use_labels is False
    dist = distributed.setup("cpu")
    net = build_network(data.config, data, dist, resumed=False)
    assert net.conditional and net.backbone.num_classes == 8 and net.net is net.raw
    assert not build_network(plain.config, plain, dist, resumed=False).conditional
    opt = build_optimization(net.raw, data.config)
    assert all(g["peak_lr"] == config.train.lr for g in opt.optimizer.param_groups)
    assert opt.schedule(0, 4) == pytest.approx(0.5)  # warmup 2: (0 + 1) / 2
