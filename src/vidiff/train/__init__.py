"""Training: run configs and the trainer (single process or DDP). Sampling a trained model:
`vidiff.Pipeline`.

>>> from vidiff.train import load_run_config, train
>>> config = load_run_config("configs/balls.toml", ["train.steps=200", "train.out=runs/x"])
>>> result = train(config)          # checkpoints in runs/x/checkpoints, samples in runs/x/samples
>>> distill("runs/x", steps=4, out="runs/x-4")   # a 4-step student (docs/DISTILL.md)

Launch on several GPUs or nodes with ``torchrun --nproc_per_node N -m vidiff train ...``.
"""

from vidiff.text.hash import HashTextEncoder
from vidiff.train.config import (
    DataConfig,
    ModelConfig,
    PriorConfig,
    RunConfig,
    TrainConfig,
    load_run_config,
)
from vidiff.train.data import JointVideoDataset, ShardedOrder, build_dataset
from vidiff.train.ema import EMA
from vidiff.train.rounds import distill
from vidiff.train.schedule import WarmupSchedule
from vidiff.train.trainer import (
    NonFiniteLossError,
    Trainer,
    TrainResult,
    resolve_backbone_config,
    train,
)
from vidiff.utils.config_io import ConfigError

__all__ = [
    "EMA",
    "ConfigError",
    "DataConfig",
    "HashTextEncoder",
    "JointVideoDataset",
    "ModelConfig",
    "NonFiniteLossError",
    "PriorConfig",
    "RunConfig",
    "ShardedOrder",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "WarmupSchedule",
    "build_dataset",
    "distill",
    "load_run_config",
    "resolve_backbone_config",
    "train",
]
