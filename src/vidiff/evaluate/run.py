"""Running an evaluation: stream the sets through the metrics with a progress bar, compute the
variational bound on reference clips, and describe the run (versions, weight file hashes).
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from vidiff import __version__
from vidiff.diffusion.likelihood import quantize_256, vlb_terms
from vidiff.evaluate.sources import ClipSource
from vidiff.evaluate.suite import EvalConfig, SetStats

__all__ = ["accumulate", "nll_bits_per_dim_on", "file_sha256", "versions", "quantize_256"]


def accumulate(
    source: ClipSource,
    config: EvalConfig,
    *,
    i3d: nn.Module | None = None,
    inception: nn.Module | None = None,
    device: torch.device | str = "cpu",
    label: str = "clips",
    progress: bool | None = None,
) -> SetStats:
    """Stream all clips of ``source`` through the metrics, ``config.batch_size`` at a time.

    ``progress``: a tqdm bar on stderr (None: only when stderr is a terminal).
    """
    stats = SetStats(source.count, config, i3d, inception)
    bar = tqdm(total=source.count, desc=label, unit="clip", disable=_disable(progress),
               file=sys.stderr)
    with bar, torch.no_grad():
        for batch in source.batches(config.batch_size):
            stats.update(batch.to(device))
            bar.update(batch.shape[0])
    if stats.temporal.count != source.count:
        raise ValueError(f"{source.describe}: expected {source.count} clips, got "
                         f"{stats.temporal.count}")
    return stats


def _disable(progress: bool | None) -> bool | None:
    return None if progress is None else not progress


def nll_bits_per_dim_on(
    source: ClipSource,
    pipe,
    *,
    batch_size: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool | None = None,
) -> dict:
    """The variational bound (DDPM eq. 5) in bits/dim on every clip of ``source``.

    ``pipe``: a `vidiff.Pipeline`; the bound uses the model's own diffusion and noise
    prior. Clips are rounded to 256 levels first. Class-conditional models
    are not supported here (the bound would need the clips' labels). Returns the mean, its
    standard error over clips, and the mean of each term.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    totals, priors, decoders = [], [], []
    bar = tqdm(total=source.count, desc="nll", unit="clip", disable=_disable(progress),
               file=sys.stderr)
    with bar:
        for batch in source.batches(batch_size):
            x0 = quantize_256(batch.to(device))
            terms = vlb_terms(pipe.model, pipe.diffusion, x0, prior=pipe.prior,
                              generator=generator)
            totals.append(terms["total"].cpu())
            priors.append(terms["prior"].cpu())
            decoders.append(terms["decoder"].cpu())
            bar.update(batch.shape[0])
    total = torch.cat(totals).double()
    sem = float(total.std() / total.numel() ** 0.5) if total.numel() > 1 else float("nan")
    return {"bits_per_dim": float(total.mean()), "bits_per_dim_sem": sem,
            "prior_term": float(torch.cat(priors).mean()),
            "decoder_term": float(torch.cat(decoders).mean()), "clips": total.numel(),
            "timesteps": pipe.diffusion.timesteps, "prior": pipe.prior.name}


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, hex (weight files are identified by it in reports)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict:
    """The versions that can change the numbers."""
    return {"vidiff": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}
