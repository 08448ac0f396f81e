"""Sampling from trained models: rebuild a model from a checkpoint, draw videos.

>>> model, info = load_model("runs/balls")              # EMA weights, eval mode
>>> videos = sample_videos(model, info.diffusion, info.prior, count=4, channels=3,
...                        frames=8, size=32, sampler="ddim", steps=50, seed=0)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidiff.checkpoint import Checkpoint, load_checkpoint, load_weights
from vidiff.diffusion import Diffusion
from vidiff.guidance import ClassifierFreeGuidance
from vidiff.priors import NoisePrior, noise_prior
from vidiff.samplers import sample
from vidiff.text import BertTextEncoder, build_text_encoder
from vidiff.text.hash import HashTextEncoder

__all__ = ["LoadedModel", "guided", "load_model", "sample_videos"]


@dataclass
class LoadedModel:
    """A checkpoint's model and everything needed to sample from it."""

    checkpoint: Checkpoint
    diffusion: Diffusion
    prior: NoisePrior
    unet_config: object  # the `UNetConfig`
    class_names: list
    text_encoder: HashTextEncoder | BertTextEncoder | None
    channels: int
    frames: int
    size: int
    lowres_size: int | None = None  # set: a super-resolution model conditioned on this size
    config: Any = None  # the checkpoint's `RunConfig`


def load_model(path: str | Path, weights: str = "ema",
               device: torch.device | str = "cpu") -> tuple[nn.Module, LoadedModel]:
    """The model of a checkpoint (run folder, checkpoint folder or .safetensors file): a U-Net
    or a VideoFusion model, with its "ema" (default) or "model" weights, in eval mode on
    `device`."""
    from vidiff.train.build import rebuild_model
    from vidiff.train.config import RunConfig

    ckpt = load_checkpoint(path)
    model, unet_config = rebuild_model(ckpt)  # VideoFusion: the residual's U-Net config
    tensors = ckpt.weights(weights)
    load_weights(model, tensors, str(ckpt.path))
    model.to(device).eval()
    config = RunConfig.from_dict(ckpt.config)
    prior = noise_prior(config.prior.name, **config.prior.params)
    text = build_text_encoder(config.data) if config.data.use_captions else None
    info = LoadedModel(
        ckpt, Diffusion.from_config(config.diffusion), prior, unet_config,
        list(ckpt.meta.get("class_names") or []), text,
        int(ckpt.meta.get("channels", unet_config.in_channels)),
        int(ckpt.meta.get("frames", config.data.frames)),
        int(ckpt.meta.get("size", config.data.size)),
        ckpt.meta.get("lowres_size", config.data.lowres_size), config,
    )
    return model, info


def guided(model: nn.Module, scale: float):
    """Classifier-free guidance around `model` (see `vidiff.guidance.ClassifierFreeGuidance`)."""
    return ClassifierFreeGuidance(model, scale)


@torch.no_grad()
def sample_videos(
    model: nn.Module,
    diffusion: Diffusion,
    prior: NoisePrior,
    *,
    count: int,
    channels: int,
    frames: int,
    size: int,
    sampler: str = "ddim",
    steps: int | None = 50,
    eta: float | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    labels: list[int] | None = None,
    num_classes: int | None = None,
    captions: list[str] | None = None,
    text_encoder: HashTextEncoder | BertTextEncoder | None = None,
    guidance_scale: float = 1.0,
    progress: bool = False,
    lowres: torch.Tensor | None = None,
) -> torch.Tensor:
    """`count` videos (count, C, F, H, W) in [-1, 1]; the noise comes from `prior` with a
    generator seeded by `seed`. A class-conditional model gets `labels` (default 0, 1, ...
    cycling through `num_classes`); a text-conditional one gets `captions` (cycled) through
    `text_encoder`. `guidance_scale` != 1 applies classifier-free guidance. `eta`: DDIM's.
    A super-resolution model gets `lowres` (count, C, F, h, w), its low-res videos."""
    device = torch.device(device)
    cond: dict = {}
    if num_classes is not None:
        labels = labels if labels is not None else list(range(num_classes))
        idx = [labels[i % len(labels)] for i in range(count)]
        cond["class_labels"] = torch.tensor(idx, dtype=torch.long, device=device)
    if text_encoder is not None:
        captions = captions or [""]
        chosen = [captions[i % len(captions)] for i in range(count)]
        cond["text_emb"], cond["text_mask"] = text_encoder(chosen, device)
    if lowres is not None:
        cond["lowres"] = lowres.to(device)
    denoiser = guided(model, guidance_scale) if guidance_scale != 1.0 and cond else model
    g = torch.Generator(device=device).manual_seed(seed)
    return sample(denoiser, (count, channels, frames, size, size), diffusion=diffusion,
                  prior=prior, sampler=sampler, steps=steps, eta=eta, generator=g, cond=cond,
                  device=device, progress=progress)
