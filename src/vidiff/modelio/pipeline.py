"""`Pipeline`: a trained video model, ready to sample.

>>> pipe = vidiff.Pipeline.from_pretrained("runs/balls")         # run, checkpoint or export
>>> videos = pipe(num_videos=8, generator=torch.Generator().manual_seed(0))
>>> videos.shape                                                   # (8, 3, 8, 24, 24) in [-1, 1]

A pipeline is the network, its `ModelSpec` (`pipe.spec`) and what the spec builds once: the
diffusion, the noise prior and the text encoder. Calling it samples: the sampler, steps and
guidance scale default to the spec's ``sampling`` (a run's ``[sample]`` section); a
class-conditional model cycles through its classes unless given ``class_labels``, a
text-conditional one through its caption vocabulary unless given ``captions``. Videos are
drawn ``batch_size`` at a time, every batch's noise from the one ``generator`` in turn.

`from_pretrained` reads a run folder (its newest checkpoint), a checkpoint folder, a single
``.safetensors`` checkpoint file, or a folder written by `vidiff export` (``config.json`` +
``model.safetensors``). Loading never runs pickled code. This module does not import
`vidiff.train`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from vidiff.cond import Cond
from vidiff.diffusion.process import build_process
from vidiff.modelio.checkpoint import CheckpointError, load_weights
from vidiff.modelio.pretrained import (
    EXPORT_CONFIG,
    EXPORT_WEIGHTS,
    Pretrained,
    is_exported,
    read_pretrained,
    read_spec,
)
from vidiff.modelio.spec import (
    ClipShape,
    ModelSpec,
    TextEncoderSpec,
)
from vidiff.modelio.video_pipeline import is_video_pipeline, read_video_pipeline
from vidiff.models import load_diffusers_vae
from vidiff.models.diffusers_schedule import shift_for_tokens
from vidiff.sampling.guidance import ClassifierFreeGuidance, GuidanceInput
from vidiff.sampling.samplers import SamplingConfig, SamplingError, sample
from vidiff.text import text_encoder_named

__all__ = ["EXPORT_CONFIG", "EXPORT_WEIGHTS", "ConditionError", "Pipeline", "Pretrained",
           "is_exported", "read_pretrained", "read_spec"]



class ConditionError(ValueError):
    """A condition the model does not take: `field` (a `Pipeline.conditions` keyword) and
    what is wrong."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem

    def named(self, name: str) -> str:
        """The message with the condition called `name` (``--class``, ...)."""
        return f"{name}: {self.problem}"


DEFAULT_BATCH = 16  # videos per sampling batch unless told otherwise
OUTPUT_TYPES = ("video", "latent")  # what a call returns: decoded videos | a latent model's


def build_text_encoder(text: TextEncoderSpec | None, root: Path | None = None):
    """The frozen text encoder a spec names (None for a model without text); a folder named
    relative to an exported model's `root` is its bundled copy."""
    if text is None:
        return None
    bundled = root / text.name if root is not None and text.name != "hash" else None
    name = str(bundled) if bundled is not None and bundled.is_dir() else text.name
    return text_encoder_named(name, text.dim, text.max_tokens)


def build_autoencoder(spec: ModelSpec, root: Path | None = None):
    """A latent model's autoencoder (None for a pixel model); a folder named relative to an
    exported model's `root` is its bundled copy."""
    if spec.autoencoder is None:
        return None
    name = spec.autoencoder.name
    bundled = root / name if root is not None else None
    folder = bundled if bundled is not None and bundled.is_dir() else Path(name).expanduser()
    try:
        return load_diffusers_vae(folder)
    except (FileNotFoundError, ValueError, ImportError, OSError) as err:
        raise CheckpointError(f"the model's autoencoder {name!r}: {err}") from None


class Pipeline:
    """A network with its `ModelSpec`: sample videos by calling it (module docstring)."""

    def __init__(self, model: nn.Module, spec: ModelSpec, text_encoder=None,
                 source: Path | None = None, autoencoder: nn.Module | None = None):
        self.model, self.spec, self.source = model.eval(), spec, source
        self.diffusion = spec.build_diffusion()
        self.prior = spec.build_prior()
        self.text_encoder = text_encoder
        if spec.autoencoder is not None and autoencoder is None:
            raise ValueError("a latent model's pipeline needs its autoencoder")
        self.autoencoder = autoencoder  # a latent model's: samples are decoded by it
        self.weights = spec.provenance.weights  # "ema" | "model" | None (not recorded)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, weights: str | None = None,
                        device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32) -> Pipeline:
        """The model at `path` (run, checkpoint, .safetensors, exported folder, or a diffusers
        Wan / LTX-Video / CogVideoX pipeline root, `vidiff.modelio.video_pipeline`) with its
        "ema" or "model" weights (None: the EMA ones, or the one set an export holds; see
        `read_pretrained`), on `device` in `dtype`. `pipe.weights` says which it loaded."""
        if is_video_pipeline(path):  # a diffusers Wan / LTX / CogVideoX root, untrained
            if weights is not None:
                raise CheckpointError(f"{str(path)!r} is a diffusers pipeline: it holds one set "
                                      f"of weights (weights={weights!r} does not apply)")
            try:
                spec, model, vae = read_video_pipeline(path)
            except (ValueError, OSError, ImportError) as err:
                raise CheckpointError(f"{str(path)!r}: {err}") from None
            text = build_text_encoder(spec.conditioning.text_encoder)
            return cls(model, spec, text, Path(path), vae).to(device, dtype)
        found = read_pretrained(path, weights)
        try:
            model = found.spec.build_network()
        except ValueError as err:
            raise CheckpointError(f"{str(found.source)!r}: {err}") from None
        load_weights(model, found.weights, str(found.source))
        text = build_text_encoder(found.spec.conditioning.text_encoder, found.root)
        vae = build_autoencoder(found.spec, found.root)
        return cls(model, found.spec, text, found.source, vae).to(device, dtype)

    # -- placement -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the network's weights are."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The network's weight dtype (sampling itself runs in float32 around it)."""
        return next(self.model.parameters()).dtype

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> Pipeline:
        """Move the network and the autoencoder (in place) and return the pipeline."""
        self.model.to(device=device, dtype=dtype)
        if self.autoencoder is not None:
            self.autoencoder.to(device=device, dtype=dtype)
        return self

    # -- conditions and denoiser -----------------------------------------------------------
    def conditions(self, count: int, *, class_labels: list[int] | torch.Tensor | None = None,
                   captions: list[str] | None = None, lowres: torch.Tensor | None = None,
                   negative_prompt: list[str] | None = None) -> Cond:
        """The model's conditions for `count` videos: class labels (default 0, 1, ... cycled),
        caption embeddings (default: the class names, cycled) and a super-resolution model's
        low-res clips `lowres` (count, C, F, h, w)."""
        cond: dict = {}  # Cond's fields
        num_classes, device = self.spec.num_classes, self.device
        self.check_conditions(class_labels=class_labels, captions=captions, lowres=lowres,
                              negative_prompt=negative_prompt)
        if num_classes is not None:
            labels = list(range(num_classes)) if class_labels is None else list(
                torch.as_tensor(class_labels).flatten().tolist())
            if not labels or not all(0 <= int(c) < num_classes for c in labels):
                raise ValueError(f"class_labels {labels} must lie in [0, {num_classes})")
            chosen = [int(labels[i % len(labels)]) for i in range(count)]
            cond["class_labels"] = torch.tensor(chosen, dtype=torch.long, device=device)
        if self.text_encoder is not None:
            vocab = captions or self.spec.conditioning.class_names or [""]
            chosen = [vocab[i % len(vocab)] for i in range(count)]
            cond["text_emb"], cond["text_mask"] = self.text_encoder(chosen, device)
        if lowres is not None:
            cond["lowres"] = lowres.to(device)
        if negative_prompt:
            chosen = [negative_prompt[i % len(negative_prompt)] for i in range(count)]
            cond["null_emb"], cond["null_mask"] = self.text_encoder(chosen, device)
        return Cond(**cond)

    def check_conditions(self, *, class_labels=None, captions=None, lowres=None,
                         negative_prompt=None) -> None:
        """A `ConditionError` naming a given (not None) condition this model does not take;
        the commands name their option with its `named`."""
        spec, text = self.spec, self.text_encoder is not None
        if class_labels is not None and spec.num_classes is None:
            raise ConditionError("class_labels", "this model is not class-conditional (it was "
                                 "trained without data.use_labels" + ("; it takes captions)"
                                                                      if text else ")"))
        if captions is not None and not text:
            raise ConditionError("captions", "this model is not text-conditional (it was "
                                 "trained without data.use_captions" + (
                                     "; it takes class labels)" if spec.num_classes else ")"))
        if lowres is not None and spec.conditioning.lowres_size is None:
            raise ConditionError("lowres", "this model is not a super-resolution model")
        if negative_prompt is not None and not spec.model_kind.negative_prompts:
            raise ConditionError("negative_prompt", f"a {spec.kind} model's null condition is "
                                 f"learned, not a text (the video transformer kinds take one)")
        if negative_prompt is not None and not text:
            raise ConditionError("negative_prompt", "this model is not text-conditional")

    def denoiser(self, guidance_scale: float | None = None) -> Callable[..., torch.Tensor]:
        """The network as a float32 denoiser ``(xt, t, **cond)``, with classifier-free
        guidance at `guidance_scale` (None: the spec's) for a conditional model."""
        scale = self.spec.sampling.guidance_scale if guidance_scale is None else guidance_scale
        net = self.model if self.dtype == torch.float32 else _cast(self.model, self.dtype)
        net = self.diffusion.denoiser_of(net)  # called at the process's time (a flow's: float)
        if self.spec.takes_guidance:  # a guidance-distilled student: the scale is an input
            return GuidanceInput(net, scale)
        if self.spec.conditional and scale != 1.0:
            return ClassifierFreeGuidance(net, scale)
        return net

    def sampling(self, sampler: str | None = None, steps: int | None = None,
                 eta: float | None = None, guidance_scale: float | None = None
                 ) -> SamplingConfig:
        """The spec's sampling settings with the given ones in place: the spec's steps and eta
        are kept only for the sampler they were set for (another sampler takes its own
        defaults); a `vidiff.sampling.samplers.SamplingError` for a bad value."""
        base = self.spec.sampling
        chosen = sampler or base.sampler
        same = chosen == base.sampler
        config = SamplingConfig(
            chosen, (base.steps if same else None) if steps is None else steps,
            (base.eta if same else None) if eta is None else eta,
            base.guidance_scale if guidance_scale is None else guidance_scale,
            base.spacing if same else None).check()
        problem = self.diffusion.sampler_problem(config.sampler)
        if problem is not None:
            raise SamplingError("sampler", f"{config.sampler!r}: {problem}")
        problem = self.diffusion.steps_problem(config.steps)
        if problem is not None:
            raise SamplingError("steps", problem)
        return config

    # -- sampling --------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, num_videos: int | None = None, *, sampler: str | None = None,
                 steps: int | None = None, eta: float | None = None,
                 guidance_scale: float | None = None,
                 class_labels: list[int] | torch.Tensor | None = None,
                 captions: list[str] | None = None, negative_prompt: str | list[str] | None = None,
                 lowres: torch.Tensor | None = None, num_frames: int | None = None,
                 height: int | None = None, width: int | None = None,
                 latents: torch.Tensor | None = None, generator: torch.Generator | None = None,
                 batch_size: int | None = None, progress: bool = False, decode: bool = True,
                 output_type: str = "video") -> torch.Tensor:
        """`num_videos` videos (N, C, F, H, W), float32 in [-1, 1] on the pipeline's device.

        sampler / steps / eta / guidance_scale: None takes the spec's ``sampling``. Labels
        and captions are cycled over the videos; `negative_prompt` is the text of guidance's
        null condition (the video transformer kinds; default: their empty prompt); `lowres`
        (N, C, F, h, w) conditions a super-resolution model. `num_frames`, `height`, `width`:
        the videos' size (default the spec's; a latent model's latents follow from its
        autoencoder, whose frame rule is checked). `generator` (default: seed 0) draws all the
        noise; `latents` (N, *clip_shape) is the initial noise x_T instead. A latent model's
        samples are decoded unless ``output_type="latent"`` (or ``decode=False``). The names
        follow diffusers' pipelines: ``pipe(captions=[...], num_frames=9, height=32,
        width=32, latents=x_T, output_type="latent")``."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type={output_type!r}: choose one of "
                             f"{', '.join(OUTPUT_TYPES)}")
        clip = self.clip_for(num_frames, height, width)
        num_videos = _count(num_videos, latents, clip)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (None: up to {DEFAULT_BATCH}), got "
                             f"{batch_size}")
        s = self.sampling(sampler, steps, eta, guidance_scale)
        if self.spec.conditioning.lowres_size is not None and lowres is None:
            raise ValueError("a super-resolution model needs `lowres`, its low-res videos")
        if generator is None:
            generator = torch.Generator(device=self.device).manual_seed(0)
        batch = batch_size or min(num_videos, DEFAULT_BATCH)
        denoiser = self.denoiser(s.guidance_scale)
        decode = decode and output_type == "video" and self.autoencoder is not None
        out = []
        for start in range(0, num_videos, batch):
            n = min(batch, num_videos - start)
            labels = _cycled(class_labels, start, n)
            cond = self.conditions(n, class_labels=labels, captions=_cycled(captions, start, n),
                                   lowres=None if lowres is None else lowres[start:start + n],
                                   negative_prompt=_cycled(_listed(negative_prompt), start, n))
            z = sample(denoiser, (n, *clip), diffusion=self.process_for(clip),
                       prior=self.prior, sampler=s.sampler, steps=s.steps, eta=s.eta,
                       spacing=s.spacing,
                       generator=generator, cond=cond, device=self.device,
                       clip_x0=self.autoencoder is None,  # latents are not in [-1, 1]
                       x_T=None if latents is None else latents[start:start + n],
                       progress=progress)
            out.append(self.decode(z) if decode else z)
        return torch.cat(out)

    def process_for(self, clip: tuple[int, int, int, int]):
        """The noising process that samples clips of shape `clip` (C, F, H, W): the spec's,
        with a dynamic flow shift (LTX-Video's) resolved for the clip's f h w tokens."""
        config = self.spec.diffusion
        if not config.flow_dynamic_shift:
            return self.diffusion
        return build_process(shift_for_tokens(config, clip[1] * clip[2] * clip[3]))

    def clip_for(self, num_frames: int | None = None, height: int | None = None,
                 width: int | None = None) -> tuple[int, int, int, int]:
        """(C, F, H, W) of the model's clips for videos of `num_frames` x `height` x `width`
        (None: the spec's); a ValueError naming a size the model or autoencoder does not
        take."""
        if num_frames is None and height is None and width is None:
            return self.clip_shape
        video = self.video_shape
        f0, h0, w0 = video.fhw
        f, h, w = num_frames or f0, height or h0, width or w0
        if self.autoencoder is None:
            clip = (video.channels, f, h, w)
        else:
            clip = tuple(self.autoencoder.latent_shape((video.channels, f, h, w)))
        div = self.spec.backbone_config.size_multiple
        if clip[-2] % div or clip[-1] % div:
            raise ValueError(f"height x width {h}x{w} do not fit the model: its clips' height "
                             f"and width must be multiples of {div} (in latents: "
                             f"{clip[-2]}x{clip[-1]})")
        return clip

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """A latent model's latents (N, c, f, h, w) as videos (N, C, F, H, W) in [-1, 1]."""
        return self.autoencoder.decode(latents).clamp(-1, 1)

    def encode(self, videos: torch.Tensor) -> torch.Tensor:
        """Videos (N, C, F, H, W) in [-1, 1] as a latent model's latents (the mode)."""
        return self.autoencoder.encode(videos.to(self.device))

    @property
    def video_shape(self) -> ClipShape:
        """The shape of the videos it makes (a latent model's: decoded)."""
        a = self.spec.autoencoder
        return self.spec.shape if a is None else a.pixel_shape

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """(C, F, H, W) of one of the model's clips (a latent model's: its latents)."""
        return (self.spec.shape.channels, *self.spec.shape.fhw)


def _count(num_videos: int | None, latents: torch.Tensor | None,
           clip: tuple[int, int, int, int]) -> int:
    """How many videos a call makes: `num_videos` (default 1), or the initial `latents`'
    count, which must then agree and have the clips' shape."""
    if latents is not None:
        if tuple(latents.shape[1:]) != tuple(clip) or latents.ndim != 5:
            want = ", ".join(map(str, clip))
            raise ValueError(f"latents {tuple(latents.shape)} must be (N, {want}) (the "
                             f"initial noise of the clips asked for)")
        if num_videos not in (None, latents.shape[0]):
            raise ValueError(f"num_videos={num_videos} but latents hold {latents.shape[0]}")
        num_videos = latents.shape[0]
    num_videos = 1 if num_videos is None else num_videos
    if num_videos < 1:
        raise ValueError(f"num_videos must be >= 1, got {num_videos}")
    return num_videos


def _listed(value: str | list[str] | None) -> list[str] | None:
    return [value] if isinstance(value, str) else value


def _cycled(values, start: int, count: int):
    """values[start:start+count], cycling; None stays None. Labels and captions cycle over the
    whole set of videos, not per batch."""
    if values is None:
        return None
    items = torch.as_tensor(values).flatten().tolist() if torch.is_tensor(values) else list(values)
    if not items:
        return None
    return [items[(start + i) % len(items)] for i in range(count)]


def _cast(model: nn.Module, dtype: torch.dtype):
    """`model` as a float32-in, float32-out denoiser over weights of `dtype`."""

    def denoise(xt, t, **cond):
        cond = {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v
                for k, v in cond.items()}
        return model(xt.to(dtype), t, **cond).float()

    return denoise
