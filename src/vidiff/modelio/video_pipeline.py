"""A diffusers video pipeline folder (Wan 2.1, LTX-Video, CogVideoX) as a vidiff model.

>>> pipe = vidiff.Pipeline.from_pretrained("Wan2.1-T2V-1.3B-Diffusers")   # untrained, as is
>>> video = pipe(captions=["a red ball"], num_frames=81, height=480, width=832)

`read_video_pipeline` reads the root's model_index.json, finds the kind whose pipeline class
it names (`vidiff.kinds.video`), and builds what a vidiff spec holds from the root's parts:
the transformer (with the empty prompt's embedding as the null text), the diffusion of
``scheduler/`` (`vidiff.models.diffusers_schedule`), the VAE and the T5 text encoder (both
named by the root's path), an independent prior (the models' own) and the family's default
clip. Nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from vidiff.diffusion.priors import PriorConfig
from vidiff.kinds import MODEL_KINDS, VideoModelKind
from vidiff.modelio.spec import (
    AutoencoderSpec,
    ClipShape,
    Conditioning,
    ModelSpec,
    Preprocess,
    TextEncoderSpec,
)
from vidiff.models.autoencoder import VideoAutoencoder, load_diffusers_vae
from vidiff.models.diffusers_schedule import (
    diffusion_config_from_scheduler,
    scheduler_spacing,
)
from vidiff.sampling.samplers import SamplingConfig
from vidiff.text.t5 import is_t5_root, load_t5
from vidiff.utils.config_io import model_index_class

__all__ = ["DEFAULT_CLIPS", "is_video_pipeline", "read_video_pipeline", "video_pipeline_kind"]

# each family's pipeline defaults: (frames, height, width, fps, sampler, steps, guidance)
DEFAULT_CLIPS = {
    "wan": (81, 480, 832, 16.0, "euler", 50, 5.0),  # WanPipeline.__call__
    "ltx": (161, 512, 704, 25.0, "euler", 50, 3.0),  # LTXPipeline.__call__
    "cogvideox": (49, 480, 720, 8.0, "ddim", 50, 6.0),  # CogVideoXPipeline.__call__
}


def video_pipeline_kind(root: str | os.PathLike) -> type[VideoModelKind] | None:
    """The video kind whose diffusers pipeline class `root`'s model_index.json names."""
    name = model_index_class(root)
    for kind_name in MODEL_KINDS.names():
        kind = MODEL_KINDS.get(kind_name)
        if issubclass(kind, VideoModelKind) and kind.pipeline_class() == name:
            return kind
    return None


def is_video_pipeline(path: str | os.PathLike) -> bool:
    """True for a Wan / LTX-Video / CogVideoX diffusers pipeline root with a transformer."""
    return video_pipeline_kind(path) is not None and (Path(path) / "transformer").is_dir()


def read_video_pipeline(root: str | os.PathLike
                        ) -> tuple[ModelSpec, nn.Module, VideoAutoencoder]:
    """(spec, network, autoencoder) of the pretrained pipeline at `root` (module
    docstring); a ValueError naming the part that does not read."""
    root = Path(root)
    kind = video_pipeline_kind(root)
    if kind is None:
        raise ValueError(f"{str(root)!r} is not a Wan / LTX-Video / CogVideoX pipeline root "
                         f"(model_index.json)")
    network = kind.import_image(root)
    frames, height, width, fps, sampler, steps, guidance = DEFAULT_CLIPS[kind.name]
    vae = load_diffusers_vae(root)
    c, f, h, w = vae.latent_shape((3, frames, height, width))
    text = None
    if is_t5_root(root):
        encoder = load_t5(root)
        text = TextEncoderSpec(str(root), encoder.dim, encoder.max_tokens)
        emb, mask = encoder([""])  # guidance's null condition: the empty prompt, as diffusers
        network.set_null_text(emb[0], mask[0])
    diffusion = diffusion_config_from_scheduler(root, seq_len=f * h * w)
    spec = ModelSpec(
        kind=kind.name, network=kind.network_config(network), diffusion=diffusion,
        prior=PriorConfig("independent"), shape=ClipShape.of(c, f, h, w),
        preprocess=Preprocess(fps=fps), conditioning=Conditioning([], text),
        sampling=SamplingConfig(sampler, steps, None, guidance,
                                scheduler_spacing(root, diffusion)),
        autoencoder=AutoencoderSpec(str(root), ClipShape.of(3, frames, height, width)))
    return spec.check(), network, vae
