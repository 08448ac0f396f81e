"""VideoFusion's decomposed denoiser (Luo et al., CVPR 2023): a base generator and a residual one.

The decomposed noise prior (`vidiff.diffusion.priors.DecomposedPrior`) makes the noise of frame i
e_i = sqrt(lambda_i) b_t + sqrt(1 - lambda_i) r^i_t (VideoFusion eq. 7), with a base noise b_t
shared by all frames and the key frame k = floor(F/2) at lambda_k = 1, so that
z^k_t = sqrt(abar_t) x^k + sqrt(1 - abar_t) b_t (eq. 11). The network matches the decomposition:

1. the base generator, an image denoiser (a pretrained image model, e.g. a vidiff image U-Net or
   one loaded from a diffusers `UNet2DModel` directory), estimates the base noise from the
   noisy key frame alone, once per step for all frames: bhat_t = base(z^k_t, t) (eq. 11);
2. the base noise is removed from every frame: z'^i_t = z^i_t - sqrt(1 - abar_t)
   sqrt(lambda_i) bhat_t (section 3.3);
3. the residual generator, smaller and conditioned on the frame index i, estimates the
   residual noise from z'_t: rhat^i_t = residual(z'_t, t, i);
4. the prediction is ehat_i = sqrt(lambda_i) bhat_t + sqrt(1 - lambda_i) rhat^i_t (eq. 7 with
   the two estimates), so the key frame's prediction is bhat_t itself.

`VideoFusion` is an ordinary vidiff denoiser (`model(x, t, **cond) -> eps`), so every sampler
(`vidiff.sample`) and `vidiff.diffusion_loss` work with it unchanged; train and sample it with
the same `DecomposedPrior` (same lambda and key frame) and the DDPM schedule it was built for.
The network holds no diffusion and no prior: its architecture fields are the decomposition
(`vidiff.diffusion.priors.Decomposition`: lambda, key frame) and the schedule
(`DiffusionConfig`), whose abar_t it keeps as a buffer for the noise scale s_t = sqrt(1 - abar_t)
(not saved: rebuilt from the config). Rectified flow is refused: its network predicts the velocity,
not the noise.
Frame-index conditioning: the residual generator is a video U-Net (`temporal=True`) wrapped in
`FrameConditionedUNet`, which adds a learned embedding of each frame's index i to that frame's
conditioning embedding (timestep + class + text), through `UNet.forward(frame_emb=...)`. Every
residual block of frame i thus sees i, the way it sees t and the class label; the temporal
attention, with its relative positions, relates the frames to each other. Any module with the
signature `residual(z, t, *, frame_index, **cond)` can serve as residual generator.

Checkpoint layout: `model.state_dict()` holds `base.*` (the image U-Net's own names, so
`base.*` of a checkpoint is a loadable image U-Net) and `residual.unet.*` plus
`residual.frame_embed.weight`; `model.config_dict()` is a JSON-safe dict from which
`VideoFusion.from_config` rebuilds the same architecture (then load the state dict). Its
``prior`` (lambda, key frame) and ``diffusion`` (the schedule) keys are those of every earlier
version, whose checkpoints load unchanged. Optimizer groups (the base at its own learning
rate) are the trainer's (`vidiff.train.build.optimizer_groups`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from vidiff.cond import call_conditions

if TYPE_CHECKING:
    from vidiff.cond import Cond

from vidiff.diffusion.ddpm import UNREAD_FIELDS, Diffusion, DiffusionConfig
from vidiff.diffusion.priors import Decomposition
from vidiff.models.config import UNetConfig, unet_config_from_dict, unet_config_to_dict
from vidiff.models.diffusers_io import load_diffusers_unet2d
from vidiff.models.frame_index import DEFAULT_MAX_FRAMES, FrameConditionedUNet
from vidiff.models.presets import UNET_PRESETS, unet_config
from vidiff.models.unet import UNet

FORMAT = "vidiff-videofusion-1"


def schedule_table(schedule: DiffusionConfig) -> Tensor:
    """abar_t at every training step t = 0..T-1 of a DDPM schedule, float64 (T,): what the
    noise scale s_t = sqrt(1 - abar_t) comes from; a ValueError for a schedule VideoFusion
    cannot remove its base noise under."""
    if schedule.process != "ddpm":
        raise ValueError(f"VideoFusion needs diffusion.process = 'ddpm', not "
                         f"{schedule.process!r}: its decomposition predicts the noise, a flow "
                         f"model the velocity")
    if schedule.prediction != "eps":
        raise ValueError(f"VideoFusion predicts eps (it decomposes the noise), but the diffusion "
                         f"predicts {schedule.prediction!r}; use prediction = 'eps'")
    return Diffusion.from_config(schedule).alphas_cumprod


_PER_SAMPLE_NDIM = {"class_labels": 1, "cond_mask": 1, "text_emb": 3, "text_mask": 2,
                    "guidance": 1}


def _frame_of(cond: dict, k: int) -> dict:
    """The conditions of frame `k` alone: a per-frame condition (joint training gives every
    frame its own: class_labels / cond_mask (B, F), text_emb (B, F, L, D), text_mask
    (B, F, L)) as its column k, for the image model that sees frame k."""
    return {key: value[:, k] if value.ndim > _PER_SAMPLE_NDIM[key] else value
            for key, value in cond.items()}


def _guidance_for(generator: nn.Module, guidance: Tensor) -> dict:
    """{"guidance": scales} for a generator built with a guidance embedding, else {}."""
    net = getattr(generator, "unet", generator)  # a FrameConditionedUNet's U-Net
    return {"guidance": guidance} if getattr(net, "guidance_embed", None) is not None else {}


class VideoFusion(nn.Module):
    """VideoFusion's decomposed denoiser: eps-prediction from a base and a residual generator.

    Args:
        base: image denoiser `base(z (B, C, H, W), t, **cond) -> bhat (B, C, H, W)`, e.g. a
            vidiff image U-Net (`temporal=False`) or `load_diffusers_unet2d(path, False)`.
        residual: `residual(z (B, C, F, H, W), t, *, frame_index (F,), **cond) -> rhat`, e.g.
            a `FrameConditionedUNet` (a plain vidiff video `UNet` is wrapped in one).
        lam, key_frame: the decomposition of the noise (the `DecomposedPrior`'s, which the
            model is trained and sampled with): lambda (scalar or per frame) and key frame.
        schedule: the DDPM schedule (`DiffusionConfig`, default linear T = 1000, eps); its
            s_t removes the base noise. eps prediction only.
        freeze_base: the base gets no gradient and stays in eval mode (no dropout).
        condition_base: pass the conditioning (class_labels, text_emb, text_mask, cond_mask)
            to the base too; False for an unconditional pretrained base.
        detach_base: stop the gradient of bhat where it is removed from z_t (z'_t = z_t -
            s sqrt(lambda) sg[bhat]): VideoFusion's loss (section 3.3) has a stop-gradient,
            read here as this one. The base then learns from its own term sqrt(lambda_i) bhat
            only; the residual generator's input is a constant to it. False: full backprop.
    """

    def __init__(
        self,
        base: nn.Module,
        residual: nn.Module,
        *,
        lam: float | Sequence[float] = 0.5,
        key_frame: int | None = None,
        schedule: DiffusionConfig | None = None,
        freeze_base: bool = False,
        condition_base: bool = True,
        detach_base: bool = True,
    ):
        super().__init__()
        if isinstance(base, UNet) and base.config.temporal:
            raise ValueError(
                "the base generator must be an image U-Net (temporal=False); "
                "build it with temporal=False or load_diffusers_unet2d(path, False)"
            )
        if isinstance(residual, UNet):
            residual = FrameConditionedUNet(residual)
        self.decomposition = Decomposition(lam, key_frame)
        s = schedule if schedule is not None else DiffusionConfig()
        # what defines the noise scales (abar_t, SNR shift and zero terminal SNR included);
        # the flow's fields of a DDPM config are unused, so they stay at their defaults
        unused = {k: getattr(DiffusionConfig(), k) for k in UNREAD_FIELDS["ddpm"]}
        self.schedule = replace(s, schedule_kwargs=dict(s.schedule_kwargs), **unused)
        # abar_t on the network's time grid (int64 steps), for s_t: float32 (what the float64
        # table gives a float32 x, and MPS has no float64); rebuilt from the schedule, not saved
        self.register_buffer("alphas_cumprod", schedule_table(self.schedule).float(),
                             persistent=False)
        self.base = base
        self.residual = residual
        self.condition_base = bool(condition_base)
        self.detach_base = bool(detach_base)
        self.base_frozen = False
        self.freeze_base(freeze_base)

    # -- training helpers ----------------------------------------------------------------
    def freeze_base(self, frozen: bool = True) -> VideoFusion:
        """Freeze (or unfreeze) the base generator: no gradient, eval mode while frozen."""
        self.base_frozen = bool(frozen)
        self.base.requires_grad_(not self.base_frozen)
        self.base.train(self.training and not self.base_frozen)
        return self

    def train(self, mode: bool = True) -> VideoFusion:
        """Like `nn.Module.train`, but a frozen base stays in eval mode."""
        super().train(mode)
        if self.base_frozen:
            self.base.eval()
        return self

    # -- the denoiser --------------------------------------------------------------------
    def frame_lambdas(self, frames: int, num_images: int = 0) -> Tensor:
        """lambda_i (float64 (F,)) of the F = video + `num_images` frames; images get 0."""
        video = frames - num_images
        if not 0 <= num_images < frames:
            raise ValueError(
                f"num_images must be in [0, {frames - 1}] for {frames} frames, "
                f"got {num_images} (the video part needs a key frame)"
            )
        lam = self.decomposition.lambdas(video)  # lambda_k = 1 at the key frame
        # joint image+video batches: the images' noise is independent, all residual
        return torch.cat([lam, torch.zeros(num_images, dtype=torch.float64)])

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        cond: Cond | None = None,
        *,
        class_labels: Tensor | None = None,
        text_emb: Tensor | None = None,
        text_mask: Tensor | None = None,
        cond_mask: Tensor | None = None,
        num_images: int = 0,
        guidance: Tensor | None = None,
    ) -> Tensor:
        """The eps prediction for x_t (B, C, F, H, W) at int64 timesteps t (B,), given the
        conditions as keywords or as one `vidiff.Cond` (`guidance`: a guidance-distilled
        model's scales (B,), given to each generator built with `guidance_embed`).

        A (B, C, H, W) image is a one-frame clip, its own key frame: the base alone predicts
        it. With `num_images` = K the last K frames are independent images (lambda 0).
        """
        (class_labels, text_emb, text_mask, cond_mask, num_images, lowres,
         guidance) = call_conditions(
            cond, class_labels=class_labels, text_emb=text_emb, text_mask=text_mask,
            cond_mask=cond_mask, num_images=num_images, lowres=None, guidance=guidance)
        if lowres is not None:
            raise ValueError("VideoFusion takes no low-resolution video (lowres): it is not a "
                             "super-resolution model")
        if t.dtype != torch.int64:
            raise ValueError(f"VideoFusion takes DDPM's int64 timesteps, got {t.dtype}")
        cond = {
            "class_labels": class_labels,
            "text_emb": text_emb,
            "text_mask": text_mask,
            "cond_mask": cond_mask,
        }
        cond = {k: v for k, v in cond.items() if v is not None}
        base_cond = cond if self.condition_base else {}
        if guidance is not None:  # each generator built to take it (a guided student's)
            into_base, into_residual = (_guidance_for(g, guidance)
                                        for g in (self.base, self.residual))
            if not into_residual:
                raise ValueError("guidance given to a VideoFusion whose residual generator "
                                 "has guidance_embed=False")
            base_cond, cond = {**base_cond, **into_base}, {**cond, **into_residual}
        if x.ndim == 4:
            return self._base(x, t, base_cond)
        if x.ndim != 5:
            raise ValueError(f"x must be (B, C, F, H, W) or (B, C, H, W), got {tuple(x.shape)}")
        frames = x.shape[2]
        lam = self.frame_lambdas(frames, num_images).to(device=x.device, dtype=x.dtype)
        root_lam = lam.sqrt().view(1, 1, frames, 1, 1)  # sqrt(lambda_i)
        root_res = (1 - lam).sqrt().view(1, 1, frames, 1, 1)  # sqrt(1 - lambda_i)
        k = self.decomposition.key_index(frames - num_images)
        abar = self.alphas_cumprod[t].to(x.dtype).view(-1, 1, 1, 1, 1)  # (B, 1, 1, 1, 1)
        sigma = (1 - abar).sqrt()  # s_t = sqrt(1 - abar_t), as `Diffusion.alpha_sigma`

        # VideoFusion eq. 11: z^k_t = sqrt(abar_t) x^k + sqrt(1 - abar_t) b_t, so the base
        # generator estimates b_t from the key frame alone, once for all frames
        bhat = self._base(x[:, :, k], t, _frame_of(base_cond, k))[:, :, None]  # (B, C, 1, H, W)
        removed = bhat.detach() if self.detach_base else bhat
        # section 3.3, remove the base noise: z'^i_t = z^i_t - s_t sqrt(lambda_i) bhat_t
        z_prime = x - sigma * root_lam * removed  # (B, C, F, H, W)
        # the residual generator, conditioned on the frame index i, estimates r^i_t
        index = torch.arange(frames)  # (F,) on the CPU: the residual moves it
        extra = {"num_images": num_images} if num_images else {}
        rhat = self.residual(z_prime, t, frame_index=index, **cond, **extra)
        # eq. 7 with the estimates: ehat_i = sqrt(lambda_i) bhat_t + sqrt(1 - lambda_i) rhat^i_t
        return root_lam * bhat + root_res * rhat

    def _base(self, z: Tensor, t: Tensor, cond: dict) -> Tensor:
        if self.base_frozen:
            with torch.no_grad():
                return self.base(z, t, **cond)
        return self.base(z, t, **cond)

    # -- config --------------------------------------------------------------------------
    def config_dict(self) -> dict:
        """A JSON-safe description of the architecture, for `VideoFusion.from_config`.

        Needs a vidiff image `UNet` as base and a `FrameConditionedUNet` as residual (what
        `build_videofusion` makes; a diffusers base is a vidiff image UNet once loaded).
        """
        if not isinstance(self.base, UNet) or not isinstance(self.residual, FrameConditionedUNet):
            raise TypeError(
                "config_dict needs a vidiff image UNet as base and a "
                "FrameConditionedUNet as residual generator"
            )
        lam = self.decomposition.lam
        return {
            "format": FORMAT,
            "base": {"unet": unet_config_to_dict(self.base.config)},
            "residual": {
                "unet": unet_config_to_dict(self.residual.config),
                "max_frames": self.residual.max_frames,
            },
            "prior": {  # the decomposition (the key of every version)
                "lam": lam if isinstance(lam, float) else list(lam),
                "key_frame": self.decomposition.key_frame,
            },
            "diffusion": asdict(self.schedule),
            "freeze_base": self.base_frozen,
            "condition_base": self.condition_base,
            "detach_base": self.detach_base,
        }

    @classmethod
    def from_config(cls, config: dict) -> VideoFusion:
        """A freshly initialized VideoFusion of the architecture `config_dict()` described;
        load the weights with `load_state_dict`."""
        if config.get("format") != FORMAT:
            raise ValueError(
                f"not a VideoFusion config (format {config.get('format')!r}, expected {FORMAT!r})"
            )
        base = UNet(unet_config_from_dict(config["base"]["unet"]))
        res = config["residual"]
        max_frames = int(res.get("max_frames", DEFAULT_MAX_FRAMES))
        residual = FrameConditionedUNet(UNet(unet_config_from_dict(res["unet"])), max_frames)
        return cls(
            base,
            residual,
            **config["prior"],
            schedule=DiffusionConfig(**config["diffusion"]),
            freeze_base=bool(config.get("freeze_base", False)),
            condition_base=bool(config.get("condition_base", True)),
            detach_base=bool(config.get("detach_base", True)),
        )

    def extra_repr(self) -> str:
        return (
            f"decomposition={self.decomposition}, schedule={self.schedule.schedule!r} "
            f"T={self.schedule.timesteps}, base_frozen={self.base_frozen}, "
            f"condition_base={self.condition_base}"
        )


def build_videofusion(
    base: str | Path | UNetConfig | nn.Module,
    residual: str | UNetConfig | nn.Module = "small",
    *,
    lam: float | Sequence[float] = 0.5,
    key_frame: int | None = None,
    schedule: DiffusionConfig | None = None,
    max_frames: int = DEFAULT_MAX_FRAMES,
    freeze_base: bool = False,
    condition_base: bool = True,
    detach_base: bool = True,
    base_overrides: dict | None = None,
    **residual_overrides,
) -> VideoFusion:
    """A VideoFusion model from presets, configs, modules or a diffusers directory.

    Args:
        base: a diffusers `UNet2DModel` directory (a `Path`, or a string naming an existing
            directory and no preset), a preset name or `UNetConfig` (built as an image U-Net,
            temporal=False, with `base_overrides`), or a ready image denoiser module.
        residual: a preset name or `UNetConfig` (built as a video U-Net, temporal=True, with
            the base's channels and conditioning unless `residual_overrides` say otherwise),
            a vidiff video `UNet`, or any module with the residual generator's signature.
        lam, key_frame: the decomposed prior's lambda (scalar or per frame) and key frame.
        schedule: the DDPM schedule, default `DiffusionConfig()` (linear, T=1000, eps).
        max_frames: frames the frame-index embedding covers.

    >>> model = build_videofusion("ddpm-cifar10", "small", lam=0.5)
    >>> model = build_videofusion(Path("ddpm-cifar10-32/"), "tiny", base_overrides={"dropout": 0})
    """
    base_overrides = dict(base_overrides or {})
    named_dir = isinstance(base, str) and base not in UNET_PRESETS and Path(base).is_dir()
    if isinstance(base, Path) or named_dir:
        base = load_diffusers_unet2d(base, temporal=False, **base_overrides).train()
    elif isinstance(base, (str, UNetConfig)):
        base = UNet(unet_config(base, **{"temporal": False, **base_overrides}))
    elif base_overrides:
        raise ValueError("base_overrides apply only to a base built here (preset, config, path)")
    if isinstance(residual, (str, UNetConfig)):
        overrides = {"temporal": True}
        if isinstance(base, UNet):
            bc = base.config
            overrides.update(
                in_channels=bc.in_channels,
                out_channels=bc.out_channels,
                num_classes=bc.num_classes,
                text_dim=bc.text_dim,
            )
        overrides.update(residual_overrides)
        residual = FrameConditionedUNet(UNet(unet_config(residual, **overrides)), max_frames)
    elif residual_overrides:
        raise ValueError("residual overrides apply only to a residual built from a preset")
    elif isinstance(residual, UNet):
        residual = FrameConditionedUNet(residual, max_frames)
    return VideoFusion(
        base,
        residual,
        lam=lam,
        key_frame=key_frame,
        schedule=schedule,
        freeze_base=freeze_base,
        condition_base=condition_base,
        detach_base=detach_base,
    )


__all__ = [
    "FrameConditionedUNet",
    "VideoFusion",
    "build_videofusion",
]
