"""Evaluation of generated videos against a reference: every metric in one streamed pass.

>>> from vidiff.evaluate import EvalConfig, open_videos, dataset_clips, accumulate, compare
>>> config = EvalConfig(tracking=True)
>>> fake = accumulate(open_videos("samples.npy"), config, i3d=load_i3d("i3d_torchscript.pt"))
>>> real = accumulate(dataset_clips("bouncing_balls", 16, 64, fake.count), config, i3d=...)
>>> compare(real, fake)["fvd"]

`vidiff eval` (docs/EVAL.md) is the command-line front end: it adds the weights, the JSON
report, saved reference statistics and the NLL of a checkpoint.
"""

from vidiff.evaluate.job import EvalError, EvalJob, EvalOutcome, run_job
from vidiff.evaluate.run import (
    accumulate,
    file_sha256,
    nll_bits_per_dim_on,
    quantize_256,
    versions,
)
from vidiff.evaluate.sources import ClipSource, checkpoint_clips, dataset_clips, open_videos
from vidiff.evaluate.suite import EvalConfig, SetStats, compare, load_reference, save_reference

__all__ = [
    "ClipSource",
    "EvalConfig",
    "EvalError",
    "EvalJob",
    "EvalOutcome",
    "SetStats",
    "accumulate",
    "checkpoint_clips",
    "compare",
    "dataset_clips",
    "file_sha256",
    "load_reference",
    "nll_bits_per_dim_on",
    "open_videos",
    "quantize_256",
    "run_job",
    "save_reference",
    "versions",
]
