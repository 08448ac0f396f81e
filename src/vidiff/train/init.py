"""`model.init_from`: start a run from a pretrained image model (PYoCo's and VideoFusion's recipe).

The source is an image model of the run's kind's `image_kind` (a U-Net for ``unet`` and
``videofusion``, a DiT for ``dit``) in one of two forms:

- a vidiff run trained as an image model (``model.overrides.temporal = false``, e.g.
  ``configs/pretrain_image.toml``): its run folder (newest checkpoint), a checkpoint folder or
  a ``.safetensors`` file; its EMA weights are used;
- a diffusers folder that the kind imports (`ModelKind.import_image`): a ``UNet2DModel``, a
  Stable Diffusion 1.x / 2.x pipeline root (or its ``unet/``, a ``UNet2DConditionModel``), a
  ``DiTTransformer2DModel`` or ``PixArtTransformer2DModel``. A Stable Diffusion pipeline's
  parts come with it (`with_pipeline_parts`): ``data.autoencoder`` defaults to the root's
  ``vae/``, a captioned run's ``data.text_encoder`` to its CLIP text encoder, and the null
  condition of guidance starts as the text encoder's embedding of the empty prompt.

`load_image_model` returns it; the kind's `build_for_run` inflates it into the run's video
model (the temporal blocks start as the identity, so at step 0 the video model denoises every
frame as the image model did) or makes it VideoFusion's base generator. Every bad source is a
`ConfigError` that names ``model.init_from``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from torch import nn

from vidiff.diffusion.ddpm import UNREAD_FIELDS, DiffusionConfig
from vidiff.kinds import MODEL_KINDS, ModelKind, is_imported
from vidiff.modelio.checkpoint import CheckpointError, load_checkpoint, load_weights
from vidiff.modelio.spec import spec_from_checkpoint
from vidiff.modelio.video_pipeline import is_video_pipeline
from vidiff.models.autoencoder import vae_folder
from vidiff.models.diffusers_files import check_safetensors, check_weights, read_config
from vidiff.models.diffusers_schedule import (
    diffusion_config_from_scheduler,
    find_scheduler_config,
    scheduler_spacing,
)
from vidiff.models.diffusers_sd import sd_config_to_unet_config
from vidiff.models.sd_folder import is_latent_unet, pipeline_root, unet_folder, unet_json
from vidiff.text import text_width
from vidiff.text.clip import is_clip_root
from vidiff.text.t5 import is_t5_root
from vidiff.train.config import RunConfig
from vidiff.utils.config_io import ConfigError

__all__ = ["check_init_source", "load_image_model", "with_init_schedule", "with_pipeline_parts"]

_KEY = "model.init_from"


def check_init_source(config: RunConfig) -> None:
    """``model.init_from`` read as far as it goes without its tensors, before any data is
    read: it exists, holds an image model of the run's kind's `image_kind` (a vidiff run: of
    its process too), its config converts and its weight files' headers read. A
    `ConfigError` names ``model.init_from`` and the file otherwise."""
    path = Path(config.model.init_from)
    kind = MODEL_KINDS.get(MODEL_KINDS.get(config.model.kind).image_kind)
    if not path.exists():
        raise ConfigError(f"{_KEY} {str(path)!r} does not exist; {_how(kind)}")
    try:
        if is_imported(path):
            _check_diffusers_source(kind, path)
        else:
            _check_vidiff_source(config, kind, path)
    except ConfigError:
        raise
    except (CheckpointError, FileNotFoundError, ValueError, KeyError, OSError) as err:
        raise ConfigError(f"{_KEY} {str(path)!r}: {err}") from None


def _check_diffusers_source(kind: type[ModelKind], path: Path) -> None:
    subfolders = dict.fromkeys([kind.diffusers_subfolder, *(
        MODEL_KINDS.get(name).diffusers_subfolder for name in MODEL_KINDS.names())])
    folder = next((f for f in (path, *(path / s for s in subfolders))
                   if (f / "config.json").is_file()), path)
    file, raw = read_config(folder)
    cls = raw.get("_class_name", "UNet2DModel")
    if cls not in kind.diffusers_classes:
        raise ConfigError(f"{_KEY} {str(path)!r} holds a diffusers {cls} ({file}); model.kind "
                          f"= {kind.name!r} starts from a {' or '.join(kind.diffusers_classes)} "
                          f"folder")
    kind.check_diffusers_config(raw, str(file))
    check_weights(folder)


def _check_vidiff_source(config: RunConfig, kind: type[ModelKind], path: Path) -> None:
    ckpt = load_checkpoint(path)
    spec = spec_from_checkpoint(ckpt.config, ckpt.meta)
    if spec.kind != kind.name:
        raise ConfigError(f"{_KEY} {str(path)!r} is a {spec.kind} checkpoint (model.kind), not "
                          f"an image {kind.name}; {_how(kind)}")
    if kind.is_video(spec.network):
        raise ConfigError(f"{_KEY} {str(path)!r} is a video model (temporal = true); "
                          f"{_how(kind)}. To continue training a video run, use train.resume="
                          f"{str(path)!r}")
    theirs, ours = spec.diffusion.process, config.diffusion.process
    if theirs != ours:
        raise ConfigError(f"{_KEY} {str(path)!r} was trained with diffusion.process = "
                          f"{theirs!r} and this run has {ours!r}: its network predicts for "
                          f"the other process; set diffusion.process = {theirs!r}")
    for name in ("ema", "model"):
        if name in ckpt.files:
            check_safetensors(ckpt.files[name])


def load_image_model(source: str | Path, kind: type[ModelKind]) -> nn.Module:
    """The image network (of `kind`, train mode) stored at `source`: a diffusers folder that
    `kind` imports, or a vidiff image run, checkpoint folder or .safetensors file (its EMA
    weights); every bad source is a `ConfigError` naming ``model.init_from``."""
    path, what = Path(source), f"{_KEY} {str(source)!r}"
    if not path.exists():
        raise ConfigError(f"{what} does not exist; {_how(kind)}")
    if is_imported(path):
        try:
            return kind.import_image(path).train()
        except (FileNotFoundError, ValueError, KeyError, OSError) as err:
            raise ConfigError(f"{what} (diffusers folder, model.kind = {kind.name!r}): "
                              f"{err}") from None
    try:
        ckpt = load_checkpoint(path)
        spec = spec_from_checkpoint(ckpt.config, ckpt.meta)
    except (CheckpointError, ValueError) as err:
        raise ConfigError(f"{what}: {err}; {_how(kind)}") from None
    if spec.kind != kind.name:
        raise ConfigError(f"{what} is a {spec.kind} checkpoint (model.kind), not an image "
                          f"{kind.name}; "
                          f"{_how(kind)}")
    try:
        video = kind.is_video(spec.network)
        model = kind.build(spec.network)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{what}: {err}") from None
    if video:
        raise ConfigError(f"{what} is a video model (temporal = true); {_how(kind)}. To "
                          f"continue training a video run, use train.resume={str(source)!r}")
    try:
        load_weights(model, ckpt.weights("ema"), str(ckpt.path))
    except CheckpointError as err:
        raise ConfigError(f"{what}: {err}") from None
    return model.train()


def _how(kind: type[ModelKind]) -> str:
    return (f"give an image {kind.name}: a vidiff run trained with model.kind = {kind.name!r} "
            f"and model.overrides.temporal=false (configs/pretrain_image.toml), one of its "
            f"checkpoint folders or .safetensors files, or a diffusers folder of that family")


def with_init_schedule(config: RunConfig) -> tuple[RunConfig, str | None]:
    """`config` on the schedule of its ``model.init_from`` when that is a diffusers model with
    a scheduler config and ``model.init_schedule`` is on (`vidiff.models.diffusers_schedule`),
    and a sentence saying what changed (None: nothing)."""
    m = config.model
    if m.init_from is None or not m.init_schedule or not is_imported(m.init_from):
        return config, None
    file = find_scheduler_config(m.init_from)
    if file is None:
        return config, None
    try:
        diffusion = diffusion_config_from_scheduler(file)
    except ValueError as err:
        raise ConfigError(f"{_KEY} {m.init_from!r}: {err} (model.init_schedule = false keeps "
                          f"the [diffusion] section)") from None
    if diffusion.process != config.diffusion.process:  # e.g. a DDPM scheduler's betas
        return config, (f"model.init_schedule: kept the [diffusion] section ({file} is a "
                        f"{diffusion.process} schedule, this run diffusion.process = "
                        f"{config.diffusion.process!r})")
    # the fields this process does not read stay the run's (the check of unread settings)
    diffusion = replace(diffusion, **{k: getattr(config.diffusion, k)
                                      for k in UNREAD_FIELDS[diffusion.process]})
    spacing = scheduler_spacing(file, diffusion)
    sample = config.sample
    if spacing is not None and sample.spacing is None:  # CogVideoX samples "trailing"
        sample = replace(sample, spacing=spacing)
    if diffusion == config.diffusion and sample == config.sample:
        return config, None
    return replace(config, diffusion=diffusion, sample=sample), \
        f"diffusion from {file}: {describe_schedule(diffusion, spacing)} (model.init_schedule)"


def describe_schedule(d: DiffusionConfig, spacing: str | None = None) -> str:
    """One phrase for a [diffusion] section taken from a scheduler (the log's note)."""
    if d.process == "flow":
        shift = ("shift by the clip's latent tokens (dynamic)" if d.flow_dynamic_shift
                 else f"shift {d.flow_shift:g}")
        end = f", terminal {d.flow_shift_terminal:g}" if d.flow_shift_terminal else ""
        return f"flow matching, {shift}, {d.flow_grid} grid{end}"
    extra = [f"SNR shift {d.snr_shift:g}"] if d.snr_shift != 1 else []
    extra += ["zero terminal SNR"] if d.zero_terminal_snr else []
    extra += [f"{spacing} spacing"] if spacing else []
    return (f"{d.schedule} schedule, T={d.timesteps}, predicts {d.prediction}"
            + "".join(f", {e}" for e in extra))



def with_pipeline_parts(config: RunConfig) -> tuple[RunConfig, list[str]]:
    """`config` with the parts of its ``model.init_from`` pipeline where a Stable Diffusion
    U-Net needs them and the config leaves them unset: ``data.autoencoder`` (None) -> the
    root's vae/, for a captioned run ``data.text_encoder`` ("hash") -> its CLIP text
    encoder, and ``data.use_labels`` (None) -> false unless the U-Net has class embeddings;
    with a sentence per change. A latent U-Net without an autoencoder is a
    `ConfigError`."""
    m, d = config.model, config.data
    if m.init_from is not None and is_video_pipeline(Path(m.init_from)):
        return _video_parts(config)
    if m.init_from is None or not is_latent_unet(Path(m.init_from)):
        return config, []
    root, notes, changes = pipeline_root(Path(m.init_from)), [], {}
    if d.use_labels is None and unet_json(Path(m.init_from)).get("num_class_embeds") is None:
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


def _video_parts(config: RunConfig) -> tuple[RunConfig, list[str]]:
    """A Wan / LTX-Video / CogVideoX root's parts where the run leaves them unset: its VAE,
    its T5 text encoder (captioned runs) and no class labels."""
    d, root = config.data, str(config.model.init_from)
    changes, notes = {}, []
    if d.use_labels is None:
        changes["use_labels"] = False
        notes.append(f"data.use_labels = false: {_KEY} takes text, no class labels")
    if d.autoencoder is None:
        if not (Path(root) / "vae").is_dir():
            raise ConfigError(f"{_KEY} {root!r} has no vae/: set data.autoencoder to its VAE")
        changes["autoencoder"] = root
        notes.append(f"data.autoencoder = {root!r}: the VAE of {_KEY}")
    if d.use_captions and d.text_encoder == "hash":
        if not is_t5_root(root):
            raise ConfigError(f"{_KEY} {root!r} has no text_encoder/ and tokenizer/: set "
                              f"data.text_encoder to the pipeline root that has them")
        changes["text_encoder"] = root
        notes.append(f"data.text_encoder = {root!r}: the T5 text encoder of {_KEY}")
    config = replace(config, data=replace(d, **changes))
    _check_video_parts(config)
    return config, notes


def _check_video_parts(config: RunConfig) -> None:
    """The text width and the VAE's latent channels fit the root's transformer: checked from
    the config files, before any clip is encoded."""
    d, root = config.data, Path(config.model.init_from)
    _, net = read_config(root / "transformer")
    kind = MODEL_KINDS.get(config.model.kind)
    want = kind.backbone_config({"family": kind.family, "diffusers": {
        k: v for k, v in net.items() if not k.startswith("_")}})
    if d.use_captions and text_width(d) != want.text_dim:
        raise ConfigError(f"data.text_encoder {d.text_encoder!r} gives {text_width(d)}-wide "
                          f"text; {_KEY} {str(root)!r} takes {want.text_dim}-wide text")
    if d.autoencoder is not None:
        folder = vae_folder(Path(d.autoencoder))
        _, vae = read_config(folder)
        channels = vae.get("z_dim", vae.get("latent_channels"))
        if channels is not None and channels != want.in_channels:
            raise ConfigError(f"data.autoencoder {d.autoencoder!r} makes {channels}-channel "
                              f"latents; {_KEY} {str(root)!r} takes {want.in_channels}")


def _check_conditions(config: RunConfig) -> None:
    """The data's conditions fit the imported U-Net: checked before any data is read."""
    d, unet = config.data, unet_json(Path(config.model.init_from))
    try:  # what vidiff cannot import at all is named first (SDXL's added embeddings, ...)
        sd_config_to_unet_config(unet, str(unet_folder(Path(config.model.init_from))
                                            / "config.json"))
    except ValueError as err:
        raise ConfigError(f"{_KEY} {config.model.init_from!r}: {err}") from None
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
