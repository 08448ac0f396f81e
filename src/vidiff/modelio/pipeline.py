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

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from vidiff.cond import Cond
from vidiff.modelio.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_weights,
    read_safetensors,
)
from vidiff.modelio.spec import (
    SPEC_FORMAT,
    ClipShape,
    ModelSpec,
    TextEncoderSpec,
    spec_from_checkpoint,
)
from vidiff.models import load_diffusers_vae
from vidiff.sampling.guidance import ClassifierFreeGuidance
from vidiff.sampling.samplers import SamplingConfig, SamplingError, sample
from vidiff.text import text_encoder_named

__all__ = ["EXPORT_CONFIG", "EXPORT_WEIGHTS", "Pipeline", "Pretrained", "is_exported",
           "read_pretrained", "read_spec"]

EXPORT_CONFIG = "config.json"  # an exported folder's spec
EXPORT_WEIGHTS = "model.safetensors"  # an exported folder's weights
DEFAULT_BATCH = 16  # videos per sampling batch unless told otherwise


@dataclass
class Pretrained:
    """What `read_pretrained` found: the spec, the weights and where they came from."""

    spec: ModelSpec
    weights: dict[str, torch.Tensor]
    source: Path  # the checkpoint folder or file, or the exported folder
    root: Path | None = None  # an exported folder (its bundled files), else None
    kind: str | None = None  # which weights: "ema" | "model" (None: not recorded or not read)


WEIGHT_SETS = ("ema", "model")  # the weights a checkpoint holds, the default first


def is_exported(path: Path) -> bool:
    """True for a folder written by `vidiff export`."""
    config = path / EXPORT_CONFIG
    if not (path.is_dir() and config.is_file() and (path / EXPORT_WEIGHTS).is_file()):
        return False
    try:
        return json.loads(config.read_text()).get("format") == SPEC_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_spec(path: str | os.PathLike) -> ModelSpec:
    """The `ModelSpec` at `path` (see `read_pretrained`) without reading any weights."""
    return _read(Path(path), None, load=False).spec


def read_pretrained(path: str | os.PathLike, weights: str | None = None) -> Pretrained:
    """The spec and weights at `path` (see the module docstring): `weights` "ema" or "model"
    of a checkpoint; None (default): the EMA weights, or the only set a file or an exported
    folder holds. Asking for weights that `path` does not hold is a `CheckpointError` naming
    the ones it holds; so is anything else wrong with it."""
    if weights is not None and weights not in WEIGHT_SETS:
        raise CheckpointError(f"weights={weights!r}: choose one of {', '.join(WEIGHT_SETS)}")
    return _read(Path(path), weights, load=True)


def _read(path: Path, weights: str | None, load: bool) -> Pretrained:
    if is_exported(path):
        try:
            spec = ModelSpec.from_json((path / EXPORT_CONFIG).read_text())
        except ValueError as err:
            raise CheckpointError(f"{str(path / EXPORT_CONFIG)!r}: {err}") from None
        kind = _export_weights(path, spec, weights)
        tensors = read_safetensors(path / EXPORT_WEIGHTS)[0] if load else {}
        return Pretrained(spec, tensors, path, root=path, kind=kind)
    ckpt = load_checkpoint(path)
    try:
        spec = spec_from_checkpoint(ckpt.config, ckpt.meta)
    except ValueError as err:
        raise CheckpointError(f"checkpoint {str(ckpt.path)!r}: {err}") from None
    kind = _checkpoint_weights(ckpt, weights) if load else None
    spec = replace(spec, provenance=replace(spec.provenance, step=ckpt.step, weights=kind))
    return Pretrained(spec, ckpt.weights(kind) if load else {}, ckpt.path, kind=kind)


def _export_weights(path: Path, spec: ModelSpec, asked: str | None) -> str | None:
    """The weights an exported folder holds (its spec's ``provenance.weights``), refusing a
    request for the other set."""
    held = spec.provenance.weights
    if asked is not None and held is not None and asked != held:
        raise CheckpointError(f"{str(path)!r} is an export of the {held} weights only; ask for "
                              f"{held!r} (--weights {held}) or export the run again with "
                              f"--weights {asked}")
    if asked is not None and held is None:
        warnings.warn(f"{str(path)!r} does not record which weights it holds (exported by an "
                      f"earlier vidiff); weights={asked!r} cannot be checked", stacklevel=3)
    return held


def _checkpoint_weights(ckpt, asked: str | None) -> str:
    """Which weights of `ckpt` to read: `asked`, or the first of `WEIGHT_SETS` it holds."""
    held = [w for w in WEIGHT_SETS if w in ckpt.files]
    if not held:
        raise CheckpointError(f"checkpoint {str(ckpt.path)!r} has no weights")
    if asked is not None and asked not in held:
        raise CheckpointError(f"{str(ckpt.path)!r} holds only the {' and '.join(held)} "
                              f"weights, not the {asked} ones; ask for {held[0]!r} "
                              f"(--weights {held[0]})")
    return asked or held[0]


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
        """The model at `path` (run, checkpoint, .safetensors or exported folder) with its
        "ema" or "model" weights (None: the EMA ones, or the one set an export holds; see
        `read_pretrained`), on `device` in `dtype`. `pipe.weights` says which it loaded."""
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
                   captions: list[str] | None = None,
                   lowres: torch.Tensor | None = None) -> Cond:
        """The model's conditions for `count` videos: class labels (default 0, 1, ... cycled),
        caption embeddings (default: the class names, cycled) and a super-resolution model's
        low-res clips `lowres` (count, C, F, h, w)."""
        cond: dict = {}  # Cond's fields
        num_classes, device = self.spec.num_classes, self.device
        self._check_conditions(class_labels, captions, lowres)
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
        return Cond(**cond)

    def _check_conditions(self, class_labels, captions, lowres) -> None:
        """A ValueError naming a condition this model does not take."""
        if class_labels is not None and self.spec.num_classes is None:
            raise ValueError("class_labels: this model is not class-conditional"
                             + (" (it takes captions)" if self.text_encoder is not None else ""))
        if captions is not None and self.text_encoder is None:
            raise ValueError("captions: this model is not text-conditional"
                             + (" (it takes class_labels)" if self.spec.num_classes else ""))
        if lowres is not None and self.spec.conditioning.lowres_size is None:
            raise ValueError("lowres: this model is not a super-resolution model")

    def denoiser(self, guidance_scale: float | None = None) -> Callable[..., torch.Tensor]:
        """The network as a float32 denoiser ``(xt, t, **cond)``, with classifier-free
        guidance at `guidance_scale` (None: the spec's) for a conditional model."""
        scale = self.spec.sampling.guidance_scale if guidance_scale is None else guidance_scale
        net = self.model if self.dtype == torch.float32 else _cast(self.model, self.dtype)
        net = self.diffusion.denoiser_of(net)  # called at the process's time (a flow's: float)
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
            base.guidance_scale if guidance_scale is None else guidance_scale).check()
        problem = self.diffusion.sampler_problem(config.sampler)
        if problem is not None:
            raise SamplingError("sampler", f"{config.sampler!r}: {problem}")
        problem = self.diffusion.steps_problem(config.steps)
        if problem is not None:
            raise SamplingError("steps", problem)
        return config

    # -- sampling --------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, num_videos: int = 1, *, sampler: str | None = None,
                 steps: int | None = None, eta: float | None = None,
                 guidance_scale: float | None = None,
                 class_labels: list[int] | torch.Tensor | None = None,
                 captions: list[str] | None = None, lowres: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, batch_size: int | None = None,
                 progress: bool = False, decode: bool = True) -> torch.Tensor:
        """`num_videos` videos (N, C, F, H, W), float32 in [-1, 1] on the pipeline's device.

        sampler / steps / eta / guidance_scale: None takes the spec's ``sampling``. Labels
        and captions are cycled over the videos; `lowres` (N, C, F, h, w) conditions a
        super-resolution model. `generator` (default: seed 0) draws all the noise. A latent
        model's samples are decoded unless ``decode=False`` (then: its latents)."""
        if num_videos < 1:
            raise ValueError(f"num_videos must be >= 1, got {num_videos}")
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
        out = []
        for start in range(0, num_videos, batch):
            n = min(batch, num_videos - start)
            labels = _cycled(class_labels, start, n)
            cond = self.conditions(n, class_labels=labels, captions=_cycled(captions, start, n),
                                   lowres=None if lowres is None else lowres[start:start + n])
            z = sample(denoiser, (n, *self.clip_shape), diffusion=self.diffusion,
                       prior=self.prior, sampler=s.sampler, steps=s.steps, eta=s.eta,
                       generator=generator, cond=cond, device=self.device,
                       clip_x0=self.autoencoder is None,  # latents are not in [-1, 1]
                       progress=progress)
            out.append(z if self.autoencoder is None or not decode else self.decode(z))
        return torch.cat(out)

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
        shape = self.spec.shape
        return shape.channels, shape.frames, shape.size, shape.size


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
