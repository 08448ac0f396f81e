"""Latent space: autoencoders over videos ``(B, C, F, H, W)``.

>>> vae = load_diffusers_vae("stable-diffusion-v1-5")     # a pipeline root or its vae/ folder
>>> z = vae.encode(video)                                  # (B, 4, F, H/8, W/8), scaled
>>> video = vae.decode(z)                                  # (B, 3, F, H, W) in [-1, 1]
>>> vae.latent_shape((3, 16, 256, 256))                    # (4, 16, 32, 32)

`VideoAutoencoder` is the interface the rest of vidiff uses: `encode`, `decode` and
`latent_shape`, the last because a video VAE may compress time too (CogVideoX- and Wan-style
3D VAEs): the latent clip shape comes from the autoencoder, never from ``F // 1``.

`FrameAutoencoder` is an image VAE applied frame by frame: diffusers' `AutoencoderKL`, used as
the reference implementation it is (the optional dependency ``pip install 'vidiff[latent]'``).
Frames go through in chunks of ``batch_size`` for bounded memory; `encode` returns the
posterior's mode (a sample when given a generator) times the VAE's ``scaling_factor`` (after
subtracting its ``shift_factor`` when it has one, as SD3 / Flux VAEs do), `decode` inverts
that. Weights may be bf16 / fp16 (`to`); inputs and outputs stay float32.

`load_diffusers_vae` reads config.json's ``_class_name``: diffusers' video VAEs (Wan,
LTX-Video, CogVideoX) load as `vidiff.models.video_vae.DiffusersVideoAutoencoder`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from vidiff.models.diffusers_files import check_weights
from vidiff.utils.config_io import read_json
from vidiff.utils.quiet import quiet_loading

__all__ = ["FrameAutoencoder", "VideoAutoencoder", "load_diffusers_vae", "vae_folder"]

DEFAULT_FRAME_BATCH = 16  # frames per encoder / decoder call


class VideoAutoencoder(nn.Module, ABC):
    """The interface of a video autoencoder (see the module docstring); `FrameAutoencoder`
    implements it for image VAEs."""

    latent_channels: int

    @abstractmethod
    def latent_shape(self, shape: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """The latent (c, f, h, w) of a clip of shape (C, F, H, W)."""

    @abstractmethod
    def encode(self, video: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents (B, c, f, h, w) of videos (B, C, F, H, W) in [-1, 1]."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Videos (B, C, F, H, W) of latents (B, c, f, h, w)."""

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype (inputs and outputs stay float32)."""
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode_settings(self) -> dict:
        """Settings beside the weights and config that change `encode`'s latents (what the
        latent cache's fingerprint adds to them); none by default."""
        return {}


class FrameAutoencoder(VideoAutoencoder):
    """An image VAE (diffusers `AutoencoderKL`) applied to every frame of a video."""

    def __init__(self, vae: nn.Module, batch_size: int = DEFAULT_FRAME_BATCH):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.vae, self.batch_size = vae.eval().requires_grad_(False), int(batch_size)
        config = vae.config
        self.latent_channels = int(config.latent_channels)
        self.scale = float(getattr(config, "scaling_factor", None) or 1.0)
        self.shift = float(getattr(config, "shift_factor", None) or 0.0)
        self.factor = 2 ** (len(config.block_out_channels) - 1)  # spatial downsampling

    def latent_shape(self, shape: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        c, f, h, w = shape
        if h % self.factor or w % self.factor:
            raise ValueError(f"frames of {h}x{w} pixels do not fit this VAE: height and width "
                             f"must be multiples of {self.factor}")
        return self.latent_channels, f, h // self.factor, w // self.factor

    def _frames(self, video: torch.Tensor) -> tuple[torch.Tensor, int]:
        if video.ndim != 5:
            raise ValueError(f"expected videos (B, C, F, H, W), got {tuple(video.shape)}")
        b, c, f, h, w = video.shape
        return video.transpose(1, 2).reshape(b * f, c, h, w), b  # (B*F, C, H, W)

    @staticmethod
    def _video(frames: torch.Tensor, batch: int) -> torch.Tensor:
        n, c, h, w = frames.shape
        return frames.view(batch, n // batch, c, h, w).transpose(1, 2)  # (B, C, F, H, W)

    @torch.no_grad()
    def encode(self, video: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        frames, batch = self._frames(video)
        self.latent_shape(tuple(video.shape[1:]))  # a clear error for a size that does not fit
        out = []
        for chunk in frames.split(self.batch_size):
            dist = self.vae.encode(chunk.to(self.device, self.dtype)).latent_dist
            z = dist.mode() if generator is None else dist.sample(generator=generator)
            out.append((z.float() - self.shift) * self.scale)
        return self._video(torch.cat(out), batch)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        frames, batch = self._frames(latents)
        out = []
        for chunk in frames.split(self.batch_size):
            z = chunk / self.scale + self.shift
            out.append(self.vae.decode(z.to(self.device, self.dtype)).sample.float())
        return self._video(torch.cat(out), batch)


def vae_folder(path: Path) -> Path:
    """The folder of the VAE: `path` itself, or a pipeline root's ``vae/``."""
    if (path / "model_index.json").is_file() or not (path / "config.json").is_file():
        folder = path / "vae"
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{str(path)!r} is neither a diffusers VAE folder (with "
                                    f"config.json) nor a pipeline root with vae/config.json")
        return folder
    return path


def _class_name(file: Path) -> str | None:
    """The ``_class_name`` of a config.json; a one-line error naming a broken file."""
    name = read_json(file).get("_class_name")
    return None if name is None else str(name)


def load_diffusers_vae(path: str | os.PathLike, *, batch_size: int = DEFAULT_FRAME_BATCH,
                       device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                       tiling: bool | Mapping = False,
                       slicing: bool = False) -> VideoAutoencoder:
    """The VAE of a diffusers ``vae/`` folder or pipeline root (local files only: nothing is
    downloaded), by its config's ``_class_name``: an `AutoencoderKL` as a `FrameAutoencoder`,
    a video VAE (Wan, LTX-Video, CogVideoX) as a `vidiff.models.video_vae`
    `DiffusersVideoAutoencoder` with diffusers' ``tiling`` / ``slicing`` (video VAEs only)."""
    from vidiff.models.video_vae import FAMILIES, DiffusersVideoAutoencoder

    folder = vae_folder(Path(path))
    kind = _class_name(folder / "config.json") or "AutoencoderKL"
    if kind != "AutoencoderKL" and kind not in FAMILIES:
        raise ValueError(f"{str(folder / 'config.json')!r}: a {kind} is not a VAE vidiff "
                         f"reads: AutoencoderKL (frame by frame), {', '.join(FAMILIES)}")
    if kind == "AutoencoderKL" and (tiling or slicing):
        raise ValueError(f"tiling / slicing are for video VAEs; {str(folder)!r} holds an "
                         f"AutoencoderKL (its frames go through in chunks of batch_size)")
    try:
        import diffusers  # optional dependency
    except ImportError:
        raise ImportError("latent models need diffusers: pip install 'vidiff[latent]' "
                          "(after torch, under the torch constraint)") from None


    check_weights(folder)  # a truncated weights file is named, before diffusers reads it
    try:
        with quiet_loading():
            vae = getattr(diffusers, kind).from_pretrained(folder, local_files_only=True,
                                                           torch_dtype=dtype).to(device)
    except (OSError, ValueError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{str(folder)!r}: diffusers cannot load its {kind} ({first})") from None
    if kind == "AutoencoderKL":
        return FrameAutoencoder(vae, batch_size)
    return DiffusersVideoAutoencoder(vae, tiling=tiling, slicing=slicing)
