"""`model.init_from`: start a run from a pretrained image model (PYoCo's and VideoFusion's recipe).

The source is an image U-Net (`temporal=False`) in one of two forms:

- a vidiff run trained as an image model (``model.overrides.temporal = false``, e.g.
  ``configs/pretrain_image.toml``): its run folder (newest checkpoint), a checkpoint folder or
  a ``.safetensors`` file; its EMA weights are used;
- a diffusers ``UNet2DModel`` directory (``config.json`` + ``diffusion_pytorch_model.*``, or a
  pipeline directory with a ``unet/`` subfolder), read without diffusers;
- a Stable Diffusion 1.x / 2.x pipeline root (or its ``unet/``, a ``UNet2DConditionModel``):
  a latent U-Net that cross-attends to its text encoder. Its pipeline's parts come with it
  (`with_pipeline_parts`): ``data.autoencoder`` defaults to the root's ``vae/``, a
  captioned run's ``data.text_encoder`` to its CLIP text encoder, and the null condition of
  guidance starts as the text encoder's embedding of the empty prompt (SD's convention).

`load_image_unet` returns it; `vidiff.train.build` inflates it into the run's video U-Net (the
temporal blocks start as the identity, so at step 0 the video model denoises every frame as
the image model did) or makes it VideoFusion's base generator. Every bad source is a
`ConfigError` that names ``model.init_from``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from vidiff.checkpoint import (
    CheckpointError,
    architecture_mismatch,
    load_checkpoint,
    load_weights,
)
from vidiff.config_io import ConfigError
from vidiff.models import UNet, UNetConfig, inflate, load_diffusers_unet
from vidiff.spec import spec_from_checkpoint
from vidiff.train.config import RunConfig

__all__ = ["check_init_source", "inflate_to", "is_diffusers_dir", "load_image_unet",
           "with_init_schedule", "with_pipeline_parts"]

_KEY = "model.init_from"
_HOW = ("give an image model: a vidiff run trained with model.overrides.temporal=false "
        "(configs/pretrain_image.toml), one of its checkpoint folders or .safetensors files, "
        "or a diffusers UNet2DModel / UNet2DConditionModel directory or pipeline root")


def is_diffusers_dir(path: Path) -> bool:
    """Whether `path` is a diffusers model directory (or a pipeline with a unet/ folder)."""
    for folder in (path, path / "unet"):
        config = folder / "config.json"
        if config.is_file() and any(folder.glob("diffusion_pytorch_model*")):
            return True
    return False


def _unet_folder(path: Path) -> Path:
    return path / "unet" if (path / "unet" / "config.json").is_file() else path


def _unet_json(path: Path) -> dict:
    try:
        return json.loads((_unet_folder(path) / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def is_latent_unet(path: Path) -> bool:
    """Whether `path` (a folder or pipeline root) holds a diffusers UNet2DConditionModel."""
    return _unet_json(path).get("_class_name") == "UNet2DConditionModel"


def pipeline_root(path: Path) -> Path | None:
    """The pipeline root of a diffusers U-Net at `path` (the root itself, or the parent of a
    unet/ folder that has a model_index.json beside it); None for a lone U-Net folder."""
    if (path / "unet").is_dir():
        return path
    if path.name == "unet" and (path.parent / "model_index.json").is_file():
        return path.parent
    return None


def _empty_prompt(path: Path):
    """(L, D) the pipeline's text encoder's embedding of "" (None without a text encoder)."""
    from vidiff.text.clip import is_clip_root, load_clip

    root = pipeline_root(path)
    if root is None or not is_clip_root(root):
        return None
    emb, _ = load_clip(root)([""])
    return emb[0]


def check_init_source(config: RunConfig) -> None:
    """``model.init_from`` read as far as it goes without its tensors, before any data is
    read: it exists, holds a model of the run's kind (and, a vidiff run, of its process),
    its config converts and its weight files' headers read. A `ConfigError` names
    ``model.init_from`` and the file otherwise."""
    path = Path(config.model.init_from)
    if not path.exists():
        raise ConfigError(f"{_KEY} {str(path)!r} does not exist; {_HOW}")
    try:
        if is_diffusers_dir(path) or (path / "transformer" / "config.json").is_file():
            _check_diffusers_source(config, path)
        else:
            _check_vidiff_source(config, path)
    except ConfigError:
        raise
    except (CheckpointError, FileNotFoundError, ValueError, KeyError, OSError) as err:
        raise ConfigError(f"{_KEY} {str(path)!r}: {err}") from None


def _check_diffusers_source(config: RunConfig, path: Path) -> None:
    from vidiff.models.diffusers_dit import CLASSES, diffusers_transformer_config
    from vidiff.models.diffusers_files import check_weights, read_config
    from vidiff.models.diffusers_io import diffusers_config_to_unet_config

    dit = config.model.kind == "dit"
    order = ("transformer", "unet") if dit else ("unet", "transformer")
    folder = next((f for f in (path, *(path / c for c in order))
                   if (f / "config.json").is_file()), path)
    file, raw = read_config(folder)
    cls = raw.get("_class_name", "UNet2DModel")
    if dit and cls not in CLASSES:
        raise ConfigError(f'{_KEY} {str(path)!r} holds a diffusers {cls} ({file}): model.kind '
                          f'= "dit" starts from a {" or ".join(CLASSES)} folder (a U-Net '
                          f'starts model.kind = "unet")')
    if not dit and cls in CLASSES:
        raise ConfigError(f'{_KEY} {str(path)!r} holds a diffusers {cls} ({file}), a '
                          f'transformer: it starts model.kind = "dit", not '
                          f'{config.model.kind!r}')
    if dit:
        diffusers_transformer_config(raw, str(file))
    else:
        diffusers_config_to_unet_config(raw, str(file))
    check_weights(folder)


def _check_vidiff_source(config: RunConfig, path: Path) -> None:
    from vidiff.models.diffusers_files import check_safetensors

    ckpt = load_checkpoint(path)
    spec = spec_from_checkpoint(ckpt.config, ckpt.meta)
    want = "dit" if config.model.kind == "dit" else "unet"
    if spec.kind != want:
        raise ConfigError(f"{_KEY} {str(path)!r} is a {spec.kind} model; model.kind = "
                          f"{config.model.kind!r} starts from an image {want}; {_HOW}")
    if spec.unet_config.temporal:
        raise ConfigError(f"{_KEY} {str(path)!r} is a video model (temporal=true); {_HOW}. "
                          f"To continue training a video run, use train.resume="
                          f"{str(path)!r} instead")
    theirs, ours = spec.diffusion.process, config.diffusion.process
    if theirs != ours:
        raise ConfigError(f"{_KEY} {str(path)!r} was trained with diffusion.process = "
                          f"{theirs!r} and this run has {ours!r}: its network predicts "
                          f"{'the velocity' if theirs == 'flow' else spec.diffusion.prediction}"
                          f" at {'flow' if theirs == 'flow' else 'DDPM'} times; set "
                          f"diffusion.process = {theirs!r}")
    for kind in ("ema", "model"):
        if kind in ckpt.files:
            check_safetensors(ckpt.files[kind])


def load_image_unet(source: str | Path) -> UNet:
    """The image U-Net (temporal=False, train mode) stored at `source` (see the module doc)."""
    path = Path(source)
    if not path.exists():
        raise ConfigError(f"{_KEY} {str(source)!r} does not exist; {_HOW}")
    if is_diffusers_dir(path):
        try:
            null = _empty_prompt(path) if is_latent_unet(path) else None
            return load_diffusers_unet(path, inflate=False, null_text=null).train()
        except (FileNotFoundError, ValueError, KeyError, OSError) as err:
            raise ConfigError(f"{_KEY} {str(source)!r} (diffusers U-Net): {err}") from None
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as err:
        raise ConfigError(f"{_KEY} {str(source)!r}: {err}; {_HOW}") from None
    try:
        spec = spec_from_checkpoint(ckpt.config, ckpt.meta)
    except ValueError as err:
        raise ConfigError(f"{_KEY} {str(source)!r}: checkpoint {ckpt.path}: {err}") from None
    if spec.kind != "unet":
        kind = {"videofusion": "VideoFusion"}.get(spec.kind, spec.kind)
        raise ConfigError(f"{_KEY} {str(source)!r} is a {kind} checkpoint, not an image "
                          f"U-Net; {_HOW}")
    try:
        config = spec.unet_config
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{_KEY} {str(source)!r}: {err}") from None
    if config.temporal:
        raise ConfigError(
            f"{_KEY} {str(source)!r} is a video model (its U-Net has temporal=true); {_HOW}. "
            f"To continue training a video run, use train.resume={str(source)!r} instead"
        )
    unet = UNet(config)
    try:
        load_weights(unet, ckpt.weights("ema"), str(ckpt.path))
    except CheckpointError as err:
        raise ConfigError(f"{_KEY} {str(source)!r}: {err}") from None
    return unet.train()


def inflate_to(image: UNet, target: UNetConfig, source: str, what: str) -> UNet:
    """`image` made into the model of `target` (a video U-Net: inflated, temporal blocks at
    the identity; an image U-Net: `image` itself). A `ConfigError` lists the fields where the
    architectures differ beyond what inflation may set; `what` names the run's model."""
    fields = {k: v for k, v in asdict(target).items() if k != "temporal"}
    options = {k: v for k, v in fields.items() if v != getattr(image.config, k)}
    try:
        if target.temporal:
            model = inflate(image, **options)
        elif options:
            raise ValueError(options)
        else:
            model = image
    except ValueError:
        wanted = asdict(replace(target, temporal=False))
        diff = architecture_mismatch(asdict(image.config), wanted)
        raise ConfigError(
            f"{_KEY} {source!r} has another architecture than {what}: "
            f"{'; '.join(d.replace('checkpoint', 'image model') for d in diff)}. Use the image "
            f"model's preset and overrides (only temporal blocks and execution fields "
            f"may differ)"
        ) from None
    return model


def with_init_schedule(config: RunConfig) -> tuple[RunConfig, str | None]:
    """`config` on the schedule of its ``model.init_from`` when that is a diffusers model with
    a scheduler config and ``model.init_schedule`` is on (`vidiff.models.diffusers_schedule`),
    and a sentence saying what changed (None: nothing)."""
    from vidiff.models.diffusers_schedule import (
        diffusion_config_from_scheduler,
        find_scheduler_config,
    )

    m = config.model
    if m.init_from is None or not m.init_schedule or not is_diffusers_dir(Path(m.init_from)):
        return config, None
    if config.diffusion.process == "flow":  # a DDPM scheduler's betas do not apply
        return config, "model.init_schedule: kept the flow-matching [diffusion] section"
    file = find_scheduler_config(m.init_from)
    if file is None:
        return config, None
    try:
        diffusion = diffusion_config_from_scheduler(file)
    except ValueError as err:
        raise ConfigError(f"{_KEY} {m.init_from!r}: {err} (model.init_schedule = false keeps "
                          f"the [diffusion] section)") from None
    if diffusion == config.diffusion:
        return config, None
    note = (f"diffusion from {file}: {diffusion.schedule} schedule, T={diffusion.timesteps}, "
            f"predicts {diffusion.prediction} (model.init_schedule)")
    return replace(config, diffusion=diffusion), note



def with_pipeline_parts(config: RunConfig) -> tuple[RunConfig, list[str]]:
    """`config` with the parts of its ``model.init_from`` pipeline where a Stable Diffusion
    U-Net needs them and the config leaves them unset: ``data.autoencoder`` (None) -> the
    root's vae/, for a captioned run ``data.text_encoder`` ("hash") -> its CLIP text
    encoder, and ``data.use_labels`` (None) -> false unless the U-Net has class embeddings;
    with a sentence per change. A latent U-Net without an autoencoder is a
    `ConfigError`."""
    from vidiff.text.clip import is_clip_root

    m, d = config.model, config.data
    if m.init_from is None or not is_latent_unet(Path(m.init_from)):
        return config, []
    root, notes, changes = pipeline_root(Path(m.init_from)), [], {}
    if d.use_labels is None and _unet_json(Path(m.init_from)).get("num_class_embeds") is None:
        changes["use_labels"] = False  # the model has no class embedding to take them
        notes.append(f"data.use_labels = false: {_KEY} takes no class labels")
    if d.autoencoder is None:
        if root is None or not (root / "vae").is_dir():
            raise ConfigError(f"{_KEY} {m.init_from!r} is a latent U-Net "
                              f"(UNet2DConditionModel) and has no vae/ beside it: set "
                              f"data.autoencoder to its VAE folder")
        changes["autoencoder"] = str(root)
        notes.append(f"data.autoencoder = {str(root)!r}: the VAE of {_KEY}")
    if d.use_captions and d.text_encoder == "hash" and root is not None and is_clip_root(root):
        changes["text_encoder"] = str(root)
        notes.append(f"data.text_encoder = {str(root)!r}: the text encoder of {_KEY}")
    config = replace(config, data=replace(d, **changes))
    _check_conditions(config)
    return config, notes


def _check_conditions(config: RunConfig) -> None:
    """The data's conditions fit the imported U-Net: checked before any data is read."""
    from vidiff.text import text_width

    d, unet = config.data, _unet_json(Path(config.model.init_from))
    if d.use_labels and unet.get("num_class_embeds") is None:
        raise ConfigError(f"data.use_labels = true, but {_KEY} {config.model.init_from!r} "
                          f"takes no class labels (no num_class_embeds); set "
                          f"data.use_labels = false")
    width = unet.get("cross_attention_dim", 1280)
    given = text_width(d) if d.use_captions else width
    if given != width:
        raise ConfigError(f"data.text_encoder {d.text_encoder!r} gives {given}-wide "
                          f"text; {_KEY} {config.model.init_from!r} cross-attends to "
                          f"{width}-wide text (its own text encoder's)")


def load_image_dit(source: str | Path):
    """The image `DiT` (train mode) at `source`: a diffusers DiTTransformer2DModel /
    PixArtTransformer2DModel folder (or a root with transformer/), or a vidiff image DiT
    run, checkpoint folder or .safetensors file (EMA weights)."""
    from vidiff.models import DiT, load_diffusers_transformer

    path = Path(source)
    if not path.exists():
        raise ConfigError(f"{_KEY} {str(source)!r} does not exist")
    if is_diffusers_dir(path) or (path / "transformer" / "config.json").is_file():
        try:
            return load_diffusers_transformer(path, inflate=False).train()
        except (FileNotFoundError, ValueError, KeyError, OSError) as err:
            raise ConfigError(f"{_KEY} {str(source)!r} (diffusers transformer): {err}"
                              ) from None
    try:
        ckpt = load_checkpoint(path)
        spec = spec_from_checkpoint(ckpt.config, ckpt.meta)
    except (CheckpointError, ValueError) as err:
        raise ConfigError(f"{_KEY} {str(source)!r}: {err}") from None
    if spec.kind != "dit" or spec.unet_config.temporal:
        raise ConfigError(f"{_KEY} {str(source)!r} is not an image DiT (a run with "
                          f"model.kind = dit and model.overrides.temporal = false)")
    model = DiT(spec.unet_config)
    try:
        load_weights(model, ckpt.weights("ema"), str(ckpt.path))
    except CheckpointError as err:
        raise ConfigError(f"{_KEY} {str(source)!r}: {err}") from None
    return model.train()


def inflate_dit_to(image, target, source: str):
    """`image` (an image DiT) made into the DiT of `target` (inflated when it is a video
    DiT); a `ConfigError` naming the fields where the architectures differ otherwise."""
    from vidiff.models import inflate_dit

    fields = {k: v for k, v in asdict(target).items() if k != "temporal"}
    options = {k: v for k, v in fields.items() if v != getattr(image.config, k)}
    try:
        if target.temporal:
            return inflate_dit(image, **options)
        if options:
            raise ValueError(options)
        return image
    except ValueError:
        diff = architecture_mismatch(asdict(image.config),
                                     asdict(replace(target, temporal=False)))
        raise ConfigError(f"{_KEY} {source!r} has another architecture than this run's DiT: "
                          f"{'; '.join(diff)}") from None
