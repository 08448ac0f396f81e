"""Conditional generation with an unconditional video model (VDM section 3.1).

One mechanism serves extension, interpolation and super-resolution: sample a window of the
model's length in which some frames are known, conditioning with `ReconstructionGuidance`
(VDM eq. 7, prior-aware) or with the replacement method alone (`method="replacement"`).

- `fill`: windows slide left to right over a timeline with known frames; each window starts
  `overlap` frames before the first unknown frame, so it sees that many (or more) known or
  already generated frames, and generates the rest.
- `extend`: the timeline is the given video followed by unknown frames.
- `interpolate`: the given frames every `factor` frames, the frames between them unknown.
- `upsample_guided`: a high-resolution video whose 2D average-pooled version must match a
  low-resolution one: reconstruction guidance through the downsampling operator.
- `upsample_conditioned`: the same with a super-resolution model (`UNetConfig.cond_channels`)
  that takes the low-resolution video as its `lowres` input, guidance optional; clips longer
  than the model's window are sampled in windows as `fill` does.

>>> cs = ConditionalSampler(model, diffusion, prior, method="reconstruction", weight=2.0)
>>> long = cs.extend(clip, frames=64, window=16, overlap=8, generator=g)  # (B, C, 64, H, W)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from vidiff.cond import Cond
from vidiff.diffusion.priors import NoisePrior
from vidiff.diffusion.process import NoisingProcess
from vidiff.sampling.guidance import RECONSTRUCTION_WEIGHT, Denoiser, ReconstructionGuidance
from vidiff.sampling.samplers import SamplingConfig, sample, sampler_steps

METHODS = ("reconstruction", "replacement")


def downsample(video: torch.Tensor, factor: int) -> torch.Tensor:
    """Average `factor` x `factor` pixel blocks: (B, C, F, H, W) -> (B, C, F, H/f, W/f)."""
    return F.avg_pool3d(video, kernel_size=(1, factor, factor))


def downsample_to(video: torch.Tensor, size: int) -> torch.Tensor:
    """`downsample` (B, C, F, H, W) to `size` x `size`: the low-res condition of an upsampler."""
    if video.shape[-1] % size or video.shape[-2] % size:
        raise ValueError(f"{size} does not divide the frame size "
                         f"{video.shape[-2]}x{video.shape[-1]}")
    return downsample(video, video.shape[-1] // size)


def upsample_nearest(video: torch.Tensor, factor: int) -> torch.Tensor:
    """Repeat every pixel `factor` x `factor` times: (B, C, F, h, w) -> (B, C, F, fh, fw)."""
    return video.repeat_interleave(factor, dim=3).repeat_interleave(factor, dim=4)


def window_starts(known: torch.Tensor, window: int, overlap: int) -> list[int]:
    """The first frame of every window `fill` samples, for known frames `known` (bool (N,))."""
    known, starts = known.clone(), []
    n = len(known)
    while not known.all():
        first = int((~known).nonzero()[0])
        start = min(max(0, first - overlap), n - window)
        starts.append(start)
        known[start:start + window] = True
    return starts


def interpolation_mask(given: int, factor: int) -> torch.Tensor:
    """bool ((given - 1) * factor + 1,): True at the given frames, every `factor`-th frame."""
    known = torch.zeros((given - 1) * factor + 1, dtype=torch.bool)
    known[::factor] = True
    return known


@dataclass
class ConditionalSampler:
    """A model, its noising process and noise prior, and how to condition and sample each
    window.

    method: "reconstruction" (VDM eq. 7 with weight w_r, plus replacement) or "replacement".
    cond:   the denoiser's conditions (`vidiff.Cond`: class labels, text, a low-res video,
            whose frames are cut to each window's).
    Any `vidiff.diffusion.process.NoisingProcess` works the same way (a rectified-flow
    model's denoiser is its velocity function of float time, `process.denoiser_of(network)`):
    guidance needs only the process's x0 estimate and a_t (VDM eq. 7's derivation holds for any x_t
    = a x0 + s eps), and the sampler is one the process offers (`NoisingProcess.samplers`).
    """

    denoiser: Denoiser
    diffusion: NoisingProcess  # a vidiff.Diffusion or a vidiff.FlowMatching
    prior: NoisePrior
    method: str = "reconstruction"  # reconstruction | replacement (the baseline)
    weight: float = RECONSTRUCTION_WEIGHT  # w_r of VDM eq. 7 (ignored by replacement)
    sampler: str = SamplingConfig.sampler  # ddpm | ddim | dpmpp_2m; flow: euler | heun | ...
    steps: int | None = SamplingConfig.steps  # sampler steps (None: the sampler's default)
    cond: Cond = field(default_factory=Cond)  # the denoiser's conditions
    progress: bool = False  # a progress bar (one for all the windows of a fill)
    clip_x0: bool = True  # clamp x0 estimates to [-1, 1] (pixels); False for latents
    callback: Callable | None = None  # called after every sampler step (`vidiff.sample`'s)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} is unknown; choose one of "
                             f"{', '.join(METHODS)}")
        if self.weight < 0:
            raise ValueError(f"the guidance weight must be >= 0, got {self.weight}")

    @property
    def guidance_weight(self) -> float:
        """w_r as applied: 0 for the replacement method."""
        return self.weight if self.method == "reconstruction" else 0.0

    def _sample(self, denoiser, shape, generator, like: torch.Tensor,
                frames: slice = slice(None)) -> torch.Tensor:
        return sample(denoiser, shape, diffusion=self.diffusion, prior=self.prior,
                      sampler=self.sampler, steps=self.steps, generator=generator,
                      cond=self.cond.frames(frames), clip_x0=self.clip_x0,
                      device=like.device, dtype=like.dtype,
                      progress=self.progress, callback=self.callback)

    def sample_window(self, values: torch.Tensor, known: torch.Tensor,
                      generator: torch.Generator | None = None,
                      frames: slice = slice(None)) -> torch.Tensor:
        """One window (B, C, F, H, W): `values` where `known` (bool (F,)), sampled elsewhere.
        The known frames are returned exactly. `frames`: the window's frames of the low-res
        condition."""
        mask = known.to(values.device).view(1, 1, -1, 1, 1)  # (1, 1, F, 1, 1)
        denoiser = self.denoiser
        if known.any():
            denoiser = ReconstructionGuidance(self.denoiser, self.diffusion, values, mask=mask,
                                              weight=self.guidance_weight, prior=self.prior)
        out = self._sample(denoiser, values.shape, generator, values, frames)
        return torch.where(mask, values, out)

    def fill(self, video: torch.Tensor, known: torch.Tensor, window: int, overlap: int,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample the unknown frames (`known` False, bool (N,)) of `video` (B, C, N, H, W) in
        windows of `window` frames that overlap the known or generated ones by `overlap`."""
        n = video.shape[2]
        if len(known) != n:
            raise ValueError(f"known has {len(known)} entries for a video of {n} frames")
        if n <= window:  # one window holds the whole video: no overlap to choose
            window, overlap = n, 0
        if not 0 <= overlap < window:
            raise ValueError(f"overlap must be in [0, {window - 1}] for windows of {window} "
                             f"frames, got {overlap}")
        video, known = video.clone(), known.clone()
        starts = window_starts(known, window, overlap)
        bar, each = self._job_bar(len(starts))
        try:
            for start in starts:
                part = slice(start, start + window)
                video[:, :, part] = each.sample_window(video[:, :, part], known[part],
                                                       generator, part)
                known[part] = True
        finally:
            if bar is not None:
                bar.close()
        return video

    def _job_bar(self, windows: int):
        """(one progress bar over every step of every window, the sampler that feeds it);
        (None, self) without `progress`."""
        if not self.progress:
            return None, self

        steps = sampler_steps(self.diffusion, self.sampler, self.steps)
        bar = tqdm(total=windows * steps, desc=f"{windows} window(s)", unit="step",
                   dynamic_ncols=True)
        outer = self.callback

        def step(info):
            bar.update(1)
            if outer is not None:
                outer(info)

        return bar, replace(self, progress=False, callback=step)

    def extend(self, video: torch.Tensor, frames: int, window: int, overlap: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """`video` (B, C, F0, H, W) continued to `frames` frames (its first F0 kept)."""
        b, c, given, h, w = video.shape
        if frames < given:
            raise ValueError(f"cannot extend a {given}-frame video to {frames} frames")
        timeline = video.new_zeros(b, c, frames, h, w)  # (B, C, N, H, W)
        timeline[:, :, :given] = video
        known = torch.arange(frames) < given
        return self.fill(timeline, known, window, overlap, generator)

    def interpolate(self, video: torch.Tensor, factor: int, window: int, overlap: int,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """`factor` - 1 new frames between consecutive frames of `video` (B, C, K, H, W):
        (B, C, (K - 1) factor + 1, H, W), the given frames at 0, factor, 2 factor, ..."""
        b, c, given, h, w = video.shape
        if factor < 2 or given < 2:
            raise ValueError(f"interpolation needs factor >= 2 and >= 2 frames, got factor "
                             f"{factor} and {given} frames")
        known = interpolation_mask(given, factor)
        timeline = video.new_zeros(b, c, len(known), h, w)  # (B, C, N, H, W)
        timeline[:, :, known] = video
        return self.fill(timeline, known, window, overlap, generator)

    def upsample_guided(self, low: torch.Tensor, factor: int,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """A video `factor` times larger whose `downsample` matches `low` (B, C, F, h, w):
        reconstruction guidance through the downsampling (VDM section 3.1), whole clip at once.
        """
        if self.method != "reconstruction" or self.weight == 0:
            raise ValueError("guided upsampling needs the reconstruction method with weight > 0")
        b, c, f, h, w = low.shape
        guided = ReconstructionGuidance(self.denoiser, self.diffusion, low, weight=self.weight,
                                        operator=lambda x: downsample(x, factor),
                                        prior=self.prior)
        return self._sample(guided, (b, c, f, h * factor, w * factor), generator, low)

    def upsample_conditioned(self, low: torch.Tensor, factor: int, window: int, overlap: int,
                             generator: torch.Generator | None = None) -> torch.Tensor:
        """A video `factor` times larger from `low` (B, C, F, h, w) with a super-resolution
        model, which gets `low` as its `lowres` input; with the reconstruction method and
        weight > 0, plus guidance through `downsample` (as `upsample_guided`). Clips longer than
        `window` frames: windows as `fill`'s, each conditioned on its low-res frames and, by the
        method, on the `overlap` frames generated before it (no guidance through the
        downsampling there)."""
        b, c, f, h, w = low.shape
        cs = replace(self, cond=self.cond.replace(lowres=low))
        if f > window:
            timeline = low.new_zeros(b, c, f, h * factor, w * factor)  # (B, C, F, H, W)
            return cs.fill(timeline, torch.zeros(f, dtype=torch.bool), window, overlap,
                           generator)
        if self.guidance_weight > 0:
            return cs.upsample_guided(low, factor, generator)
        return cs._sample(self.denoiser, (b, c, f, h * factor, w * factor), generator, low)
