"""One evaluation, start to end: the generated and reference sets scored and compared.

>>> job = EvalJob(generated=open_videos("samples.npy"), reference=dataset_clips(...),
...               config=EvalConfig(tracking=True))
>>> outcome = run_job(job)           # outcome.metrics, outcome.reference_describe, ...

`vidiff eval` builds an `EvalJob` from its arguments and prints and saves the `EvalOutcome`.
Every failure that the request itself causes (clips too short for I3D, a saved reference of
other weights or settings, mismatched clip shapes) is an `EvalError` naming the argument at
fault (``flag``), raised before the expensive pass where it can be told in advance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from vidiff.evaluate.run import accumulate, versions
from vidiff.evaluate.sources import ClipSource
from vidiff.evaluate.suite import EvalConfig, SetStats, compare, save_reference
from vidiff.metrics.fvd import ClipsTooShortError

__all__ = ["EvalError", "EvalJob", "EvalOutcome", "check_saved_reference", "run_job"]


class EvalError(ValueError):
    """An evaluation that cannot be done as asked; `flag` is the argument at fault."""

    def __init__(self, message: str, flag: str | None = None):
        super().__init__(message)
        self.flag = flag


@dataclass
class EvalJob:
    """What to evaluate: the generated clips, the reference (statistics saved by an earlier
    job, or a function from the generated set's clip shape (C, F, H, W) and clip count to
    the reference clips), the metric settings and networks."""

    generated: ClipSource
    reference: SetStats | Callable[[tuple, int], ClipSource]
    config: EvalConfig
    i3d: nn.Module | None = None  # FVD's network (None: no FVD)
    inception: nn.Module | None = None  # FID's / IS's network (None: neither)
    weights: dict = field(default_factory=dict)  # {"i3d"/"inception": path, sha256, kind}
    device: torch.device | str = "cpu"
    progress: bool | None = None  # progress bars (None: when on a terminal)
    save_reference: str | None = None  # save the reference statistics here (.npz)


@dataclass
class EvalOutcome:
    """The scored sets and their comparison (`vidiff.evaluate.compare`'s metrics)."""

    generated: SetStats
    reference: SetStats
    metrics: dict
    reference_describe: dict


def check_saved_reference(reference: SetStats, weights: dict, config: EvalConfig) -> None:
    """A saved reference must hold the statistics of this job's networks and settings."""
    meta = reference.meta
    for flag in ("i3d", "inception"):
        if flag not in weights:
            continue
        if flag not in reference.stats:
            raise EvalError(f"it holds no {flag} statistics: save it again with --{flag}",
                            "reference")
        saved = meta.get("weights", {}).get(flag, {}).get("sha256")
        if saved != weights[flag]["sha256"]:
            raise EvalError(f"it was computed with other {flag} weights (sha256 {saved}); "
                            f"recompute it with {weights[flag]['path']!r}", "reference")
    settings = config.settings()
    keys = (["fvd"] if "i3d" in weights else []) + (
        ["fid", "is_splits"] if "inception" in weights else [])
    for key in keys:  # the settings that decide the numbers of this job
        if meta.get("settings", {}).get(key) != settings[key]:
            raise EvalError(f"it was computed with other {key} settings: "
                            f"{meta.get('settings', {}).get(key)} vs {settings[key]}",
                            "reference")
    if config.tracking and reference.tracking is None:
        raise EvalError("it holds no ball tracking statistics", "reference")


def _score(job: EvalJob, source: ClipSource, label: str) -> SetStats:
    try:
        return accumulate(source, job.config, i3d=job.i3d, inception=job.inception,
                          device=job.device, label=label, progress=job.progress)
    except ClipsTooShortError as err:
        raise EvalError(f"{err}; evaluate 16-frame clips or leave out --i3d", "i3d") from None
    except ValueError as err:
        raise EvalError(str(err), label) from None


def run_job(job: EvalJob) -> EvalOutcome:
    """Score both sets (a saved reference is checked first) and compare them."""
    saved = isinstance(job.reference, SetStats)
    if saved:
        check_saved_reference(job.reference, job.weights, job.config)
    generated = _score(job, job.generated, "generated")
    if saved:
        reference, describe = job.reference, job.reference.meta["reference"]
    else:
        source = job.reference(generated.shape, generated.count)
        reference, describe = _score(job, source, "reference"), source.describe
    if reference.shape != generated.shape:
        hint = "" if saved else "; pass --frames / --size"
        raise EvalError(f"mismatched sizes: the reference clips are {reference.shape} "
                        f"(C, F, H, W), the generated ones {generated.shape}{hint}")
    if job.save_reference and not saved:
        save_reference(reference, job.save_reference,
                       {"reference": describe, "weights": job.weights,
                        "settings": job.config.settings(), "versions": versions()})
    return EvalOutcome(generated, reference, compare(reference, generated), describe)
