"""Video VAEs: diffusers' 3D autoencoders (Wan, LTX-Video, CogVideoX) as vidiff autoencoders.

>>> vae = load_diffusers_vae("Wan2.1-T2V-1.3B-Diffusers/vae")   # dispatches on _class_name
>>> vae.latent_shape((3, 81, 480, 832))                          # (16, 21, 60, 104)
>>> z = vae.encode(video)        # (B, 16, 21, 60, 104), normalised as WanPipeline's latents
>>> video = vae.decode(z)        # (B, 3, 81, 480, 832)

These VAEs compress time as well as space: a clip of F = 1 + k * t frames (t: the temporal
factor, 4 for Wan and CogVideoX, 8 for LTX-Video) becomes 1 + k latent frames, the first
frame encoded alone (causally), each later group of t frames into one latent frame.
`latent_shape` enforces the rule with a one-line error naming the nearest valid counts.
CogVideoX's decoder restores 1 + 4 (f - 1) frames only for an odd latent count f (an even
one decodes to 4 f frames), so its clips take F = 1 + 8 k frames (9, 17, ..., 49).

The networks are diffusers' own (the reference: encode and decode equal theirs); what each
family's pipeline does around them is written once, as data, in `FAMILIES`: the
compression factors (read from the VAE's config) and the latent normalisation
``z = (mu - mean) * scale / std`` (decode: ``mu = z * std / scale + mean``), with mean / std
/ scale from the config, the VAE's buffers or 0 / 1 / 1. `encode` returns the normalised
posterior mode (a sample when given a generator). ``tiling=True`` (or a dict of
``enable_tiling`` sizes) and ``slicing=True`` turn on diffusers' tiled and per-video
encode / decode for bounded memory; both are off by default, since tiles change the result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from vidiff.models.autoencoder import VideoAutoencoder

__all__ = ["FAMILIES", "DiffusersVideoAutoencoder", "VideoVAEFamily"]


@dataclass(frozen=True)
class VideoVAEFamily:
    """What vidiff needs to know about one diffusers video VAE class (see the module
    docstring): where its compression factors and latent statistics live."""

    label: str  # the family's name in messages
    channels: str  # the config key of the latent channels
    temporal: Callable[[nn.Module], int]  # frames per latent frame (after the first)
    spatial: Callable[[nn.Module], int]  # pixels per latent pixel, per side
    stats: str | None  # latents_mean / latents_std: "config" | "buffers" | None (0 and 1)
    scaled: bool  # times config.scaling_factor
    odd_latent_frames: bool = False  # the decoder restores odd latent clips only
    timestep_decoder: bool = False  # decode takes a timestep when timestep_conditioning


FAMILIES: dict[str, VideoVAEFamily] = {
    # diffusers/pipelines/wan/pipeline_wan.py, WanPipeline.__init__ (factors) and __call__
    # (decode: latents / (1 / latents_std) + latents_mean); pipeline_wan_i2v.py,
    # WanImageToVideoPipeline.prepare_latents (encode: (mode - mean) * (1 / std))
    # (a config without the factors: 2 per temporal / spatial downsampling, times the patch)
    "AutoencoderKLWan": VideoVAEFamily(
        "Wan", "z_dim", stats="config", scaled=False,
        temporal=lambda vae: vae.config.scale_factor_temporal
        or 2 ** sum(vae.config.temperal_downsample),
        spatial=lambda vae: vae.config.scale_factor_spatial
        or 2 ** len(vae.config.temperal_downsample) * (vae.config.patch_size or 1)),
    # diffusers/pipelines/ltx/pipeline_ltx.py, LTXPipeline._normalize_latents /
    # _denormalize_latents with vae.latents_mean, vae.latents_std (persistent buffers) and
    # config.scaling_factor; __call__ passes decode_timestep to a timestep-conditioned decoder.
    # The factors: AutoencoderKLLTXVideo.__init__ (config, or patch sizes x 2^scalings)
    "AutoencoderKLLTXVideo": VideoVAEFamily(
        "LTX-Video", "latent_channels", temporal=lambda vae: vae.temporal_compression_ratio,
        spatial=lambda vae: vae.spatial_compression_ratio, stats="buffers", scaled=True,
        timestep_decoder=True),
    # diffusers/pipelines/cogvideo/pipeline_cogvideox.py, CogVideoXPipeline.__init__ (factors)
    # and decode_latents (latents / scaling_factor; the VAE batches frames itself:
    # AutoencoderKLCogVideoX._encode / _decode, num_sample_frames_batch_size = 8,
    # num_latent_frames_batch_size = 2); encoding: mode * scaling_factor, as the image
    # latents of pipeline_cogvideox_image2video.py (whose invert_scale_latents concerns
    # CogVideoX 1.5's image condition only)
    "AutoencoderKLCogVideoX": VideoVAEFamily(
        "CogVideoX", "latent_channels",
        temporal=lambda vae: vae.config.temporal_compression_ratio,
        spatial=lambda vae: 2 ** (len(vae.config.block_out_channels) - 1), stats=None,
        scaled=True, odd_latent_frames=True),
}


def _frame_rule_error(frames: int, step: int, label: str, why: str) -> ValueError:
    below = 1 + (frames - 1) // step * step if frames > 1 else None
    nearest = f"{below} or {below + step}" if below else f"{1} or {1 + step}"
    return ValueError(f"{frames} frames do not fit the {label} VAE: a clip has 1 + {step}k "
                      f"frames{why} (nearest: {nearest})")


class DiffusersVideoAutoencoder(VideoAutoencoder):
    """A diffusers video VAE (a `FAMILIES` class) with its pipeline's latent normalisation;
    ``tiling`` / ``slicing``: diffusers' tiled / per-video encode and decode (module
    docstring); ``decode_timestep``: a timestep-conditioned LTX decoder's timestep (its
    pipeline's default 0, without decode noise)."""

    def __init__(self, vae: nn.Module, *, tiling: bool | Mapping = False,
                 slicing: bool = False, decode_timestep: float = 0.0):
        super().__init__()
        kind = type(vae).__name__
        if kind not in FAMILIES:
            raise ValueError(f"{kind} is not a supported video VAE: {', '.join(FAMILIES)}")
        self.family = family = FAMILIES[kind]
        self.vae = vae.eval().requires_grad_(False)
        config = vae.config
        self.latent_channels = int(config[family.channels])
        self.temporal, self.spatial = int(family.temporal(vae)), int(family.spatial(vae))
        self.frame_step = self.temporal * (2 if family.odd_latent_frames else 1)
        mean, std = self._stats(vae)
        self.scale = float(config.scaling_factor) if family.scaled else 1.0
        self.mean, self.std = mean.view(1, -1, 1, 1, 1), std.view(1, -1, 1, 1, 1)  # float32
        self.decode_timestep = float(decode_timestep)
        if tiling:
            vae.enable_tiling(**(dict(tiling) if isinstance(tiling, Mapping) else {}))
        if slicing:
            vae.enable_slicing()

    def _stats(self, vae: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """The latents' mean and std per channel (float32, CPU) as the family keeps them."""
        c, where = self.latent_channels, self.family.stats
        if where is None:
            return torch.zeros(c), torch.ones(c)
        if where == "buffers":
            return (vae.latents_mean.detach().float().cpu().clone(),
                    vae.latents_std.detach().float().cpu().clone())
        mean, std = vae.config.latents_mean, vae.config.latents_std
        if mean is None or std is None or len(mean) != c or len(std) != c:
            raise ValueError(f"the {self.family.label} VAE's config needs latents_mean and "
                             f"latents_std of {c} values each (z_dim)")
        return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)

    def encode_settings(self) -> dict:
        """What besides the weights and config changes the latents: the family, the
        normalisation and diffusers' tiling state (the latent cache's fingerprint)."""
        tiles = {k: v for k, v in sorted(vars(self.vae).items())
                 if k.startswith("tile_") or k in ("use_tiling", "use_framewise_encoding")}
        return {"family": self.family.label, "scale": self.scale,
                "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist(),
                "tiling": tiles}

    def latent_shape(self, shape: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        c, f, h, w = shape
        if c != self.vae.config.in_channels:
            raise ValueError(f"clips of {c} channels do not fit the {self.family.label} VAE: "
                             f"it takes {self.vae.config.in_channels}")
        if h % self.spatial or w % self.spatial:
            raise ValueError(f"frames of {h}x{w} pixels do not fit the {self.family.label} "
                             f"VAE: height and width must be multiples of {self.spatial}")
        if f < 1 or (f - 1) % self.frame_step:
            why = (" (its decoder restores odd latent clips only)"
                   if self.family.odd_latent_frames else "")
            raise _frame_rule_error(f, self.frame_step, self.family.label, why)
        return self.latent_channels, 1 + (f - 1) // self.temporal, h // self.spatial, \
            w // self.spatial

    def _stat(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean.to(like.device), self.std.to(like.device)

    @torch.no_grad()
    def encode(self, video: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        if video.ndim != 5:
            raise ValueError(f"expected videos (B, C, F, H, W), got {tuple(video.shape)}")
        want = (video.shape[0], *self.latent_shape(tuple(video.shape[1:])))
        dist = self.vae.encode(video.to(self.device, self.dtype)).latent_dist
        z = (dist.mode() if generator is None else dist.sample(generator=generator)).float()
        if tuple(z.shape) != want:
            raise ValueError(f"the {self.family.label} VAE encoded {tuple(video.shape)} to "
                             f"{tuple(z.shape)}, its config's factors say {want}")
        mean, std = self._stat(z)
        return (z - mean) * self.scale / std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"expected latents (B, {self.latent_channels}, f, h, w), got "
                             f"{tuple(latents.shape)}")
        mean, std = self._stat(latents)
        z = (latents.float() * std / self.scale + mean).to(self.device, self.dtype)
        if self.family.timestep_decoder and self.vae.config.timestep_conditioning:
            temb = torch.full((z.shape[0],), self.decode_timestep, device=z.device,
                              dtype=z.dtype)
            return self.vae.decode(z, temb).sample.float()
        return self.vae.decode(z).sample.float()
