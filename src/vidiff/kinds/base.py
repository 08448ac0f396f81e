"""`ModelKind`: everything vidiff knows about one model family, in one class.

A kind is found through `MODEL_KINDS` by the name that a run's ``model.kind`` and a spec's
``kind`` hold. It owns, for its family:

- the network from a spec: `build`, `network_config` (the JSON-safe dict a spec stores),
  `backbone_config` (the config of the network that takes the data and the conditions: its
  channels, class count, text width, `temporal`, `size_multiple`);
- what resume compares: `architecture` (every architectural field, defaults filled, execution
  fields such as dropout left out);
- the network of a run: its `presets`, `resolve` (preset + overrides + what the data asks),
  `validate` (the ``[model]`` settings at config load, before any data is read),
  `build_for_run` (from scratch or from an image model), the image model it starts from
  (`image_kind`, `import_image` for a diffusers folder, `inflate`);
- what `vidiff info` and a model card say about it (`summary`, `describe`, `describe_settings`).

A new model family is one module with one `ModelKind` subclass registered in
`vidiff.kinds` (see docs/DESIGN.md, "Adding a model kind"); the spec, the pipeline, the
trainer and the commands need no change.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from vidiff.utils.config_io import ConfigError
from vidiff.utils.loaded import is_fsdp_module
from vidiff.utils.registry import Registry

__all__ = ["EXECUTION_FIELDS", "MODEL_KINDS", "ModelKind", "architecture_mismatch",
           "block_modules", "check_fields",
           "config_from_dict", "config_to_dict", "imported_target", "is_diffusers_dir",
           "is_imported", "kind_of", "network_type", "split_decay"]

# `config` below is a run config (`vidiff.train.config.RunConfig`), read by attribute: nothing
# outside train/ imports train/.

# fields that change how a network runs, not what it computes: free to change on resume
EXECUTION_FIELDS = frozenset({"dropout", "channels_last", "gradient_checkpointing"})


class ModelKind(ABC):
    """A model family (see the module doc). Subclasses set the class attributes and implement
    the abstract methods; the registry holds the classes, whose methods are class methods."""

    name: ClassVar[str]  # the registered name (model.kind, spec.kind)
    network_class: ClassVar[type[nn.Module]]  # what `build` returns (kind_of finds it)
    config_class: ClassVar[type]  # the backbone's config dataclass (model.overrides' fields)
    presets: ClassVar[Registry]  # model.preset's names
    default_preset: ClassVar[str]  # model.preset when a run leaves it unset
    tiny_preset: ClassVar[str]  # the smallest preset: tests, the kind x process matrix
    image_kind: ClassVar[str]  # the kind of the image model that model.init_from gives
    processes: ClassVar[tuple[str, ...]] = ("ddpm", "flow")  # the noising processes it takes
    priors: ClassVar[tuple[str, ...] | None] = None  # the noise priors it takes (None: all)
    prior_reason: ClassVar[str] = ""  # why only those, for the refusal of another
    summary: ClassVar[str]  # one phrase for a model card: "a factorized space-time U-Net"
    own_settings: ClassVar[tuple[str, ...]] = ()  # model.* fields only this kind reads
    upsampler: ClassVar[bool] = False  # can be a super-resolution model (data.lowres_size)
    negative_prompts: ClassVar[bool] = False  # its null condition is a text (a negative prompt)
    # the layers LoRA adapts unless train.lora.targets says (module-name suffixes): attention
    lora_targets: ClassVar[tuple[str, ...]] = ("qkv", "proj")
    # its image model in diffusers: the pipeline root's subfolder and the config classes
    diffusers_subfolder: ClassVar[str] = "unet"
    diffusers_classes: ClassVar[tuple[str, ...]] = ()
    # what makes its network take the guidance scale as an input (a guided distillation's
    # student, `vidiff.train.rounds`): settings; () when it cannot
    guidance_settings: ClassVar[tuple[str, ...]] = ("model.overrides.guidance_embed=true",)
    # why it cannot split a clip's tokens over ranks (train.sequence_parallel); "" when it can
    no_sequence_parallel: ClassVar[str] = ("its convolutions need every pixel of a frame: "
                                           "sequence parallelism is for transformers")

    # -- the network of a spec ----------------------------------------------------------------
    @classmethod
    def owns(cls, model: nn.Module) -> bool:
        """Whether `model` is a network of this kind (`kind_of`): its exact type, by default."""
        return network_type(model) is cls.network_class

    @classmethod
    def build(cls, network: dict) -> nn.Module:
        """A freshly initialized network of the config `network` (load its weights next)."""
        return cls.network_class(cls.backbone_config(network))

    @classmethod
    def network_config(cls, model: nn.Module) -> dict:
        """The JSON-safe config that `build` turns back into `model`'s architecture."""
        return config_to_dict(model.config)

    @classmethod
    def backbone_config(cls, network: dict):
        """The config of the network that takes the data and the conditions (channels,
        ``num_classes``, ``text_dim``, ``temporal``, ``size_multiple``)."""
        return config_from_dict(cls.config_class, network)

    @classmethod
    def architecture(cls, network: dict) -> dict[str, Any]:
        """Every field that defines the architecture of `network` (defaults filled, so an old
        checkpoint's record compares with today's), execution fields left out."""
        return _flat(asdict(cls.backbone_config(network)))

    @classmethod
    def describe(cls, network: dict) -> str:
        """One line on the network for `vidiff info`."""
        return f"{cls.name} network"

    @classmethod
    def describe_settings(cls, model: dict) -> str:
        """The ``[model]`` settings of a run (a dict of `ModelConfig`) as `vidiff info` says
        them: the preset and its overrides."""
        extra = f" with {json.dumps(model['overrides'])}" if model.get("overrides") else ""
        return f"{cls.name}, preset {model.get('preset')!r}{extra}"

    # -- the network of a run -----------------------------------------------------------------
    @classmethod
    @abstractmethod
    def resolve(cls, preset: str, overrides: dict):
        """The backbone config of `preset` with `overrides` (a ValueError names a bad one)."""

    @classmethod
    def validate(cls, config) -> None:
        """The run's ``[model]`` settings as this kind reads them: a `ConfigError` naming the
        key. The base checks the preset, the override fields and the process."""
        m = config.model
        if m.preset not in cls.presets:
            raise ConfigError(f"model.preset = {m.preset!r} is not a {cls.name} preset; valid: "
                              f"{', '.join(cls.presets.names())}")
        check_fields("model.overrides", m.overrides, cls.config_class)
        if m.init_from is None:
            try:
                cls.resolve(m.preset, m.overrides)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"model.overrides: {err}") from None
        if config.diffusion.process not in cls.processes:
            raise ConfigError(f"model.kind = {cls.name!r} does not combine with "
                              f"diffusion.process = {config.diffusion.process!r}; it takes "
                              f"{' or '.join(cls.processes)}")
        if cls.priors is not None and config.prior.name not in cls.priors:
            wanted = " or ".join(f'"{name}"' for name in cls.priors)
            why = f" {cls.prior_reason}" if cls.prior_reason else ""
            raise ConfigError(f'model.kind = "{cls.name}" needs prior.name = {wanted}{why}, '
                              f"got {config.prior.name!r}")

    @classmethod
    def tiny_settings(cls, process: str) -> tuple[str, ...]:
        """The run settings (``--set`` overrides) of this kind's smallest model under
        `process`: what tests and the kind x process matrix train."""
        return (f"model.kind={cls.name}", f"model.preset={cls.tiny_preset}")

    @classmethod
    def build_for_run(cls, config, backbone, image: nn.Module | None) -> nn.Module:
        """The run's network: of `backbone` (the resolved config) from scratch, or from
        `image`, the image model of ``model.init_from`` (of kind `image_kind`)."""
        if image is None:
            return cls.network_class(backbone)
        model, source = config.model, str(config.model.init_from)
        if is_imported(source):
            target = imported_target(image.config, backbone, model, source)
            return cls.inflate(image, target, source, "what model.overrides may change")
        return cls.inflate(image, backbone, source,
                           f"this run's model (preset {model.preset!r} + model.overrides)")

    @classmethod
    def param_groups(cls, model: nn.Module, config) -> list[dict]:
        """AdamW parameter groups: ``train.weight_decay`` on matrices, none on vectors
        (biases, norm scales); frozen parameters are left out."""
        decay, no_decay = split_decay(model.parameters())
        return [{"params": decay, "weight_decay": config.train.weight_decay},
                {"params": no_decay, "weight_decay": 0.0}]

    @classmethod
    def shard_units(cls, model: nn.Module) -> list[nn.Module]:
        """The modules FSDP shards one by one before the root (``train.parallel = "fsdp"``),
        innermost first: by default `block_modules`, the model's blocks."""
        return block_modules(model)

    @classmethod
    def split_sequence(cls, model: nn.Module, group, degree: int) -> None:
        """Split `model`'s tokens over the `degree` ranks of the process group `group`
        (Ulysses attention; ``train.sequence_parallel``): each rank's gradients become its
        tokens' share, summed over the group by the trainer. Only kinds with an empty
        `no_sequence_parallel` implement it."""
        raise ValueError(f"model.kind = {cls.name!r} cannot split its clips over ranks: "
                         f"{cls.no_sequence_parallel}")

    @classmethod
    def init_null_text(cls, model: nn.Module, text_encoder, config) -> None:
        """Set what a new run's null condition stands for from its text encoder (None for a
        run without captions); by default nothing: the null condition is learned."""
        return None

    @classmethod
    def write_diffusers_lora(cls, model: nn.Module, lora, folder: Path) -> None:
        """Write `model`'s LoRA adapters (a `vidiff.models.lora.LoraSpec` `lora`) into
        `folder` in diffusers' format, for a kind with a diffusers pipeline; by default
        nothing (vidiff's own networks have none)."""
        return None

    # -- image models -------------------------------------------------------------------------
    @classmethod
    def import_image(cls, path: Path) -> nn.Module:
        """The image network of a diffusers folder at `path` (a ValueError if this kind reads
        no such folder)."""
        raise ValueError(f"model.kind = {cls.name!r} imports no diffusers model")

    @classmethod
    def check_diffusers_config(cls, config: dict, source: str) -> None:
        """A ValueError naming `source` unless the diffusers `config` (one of
        `diffusers_classes`) converts to this kind's image network (no weights read)."""
        raise ValueError(f"{source}: model.kind = {cls.name!r} imports no diffusers model")

    @classmethod
    def is_video(cls, network: dict) -> bool:
        """Whether `network` models frames jointly (an image model: False)."""
        return bool(cls.backbone_config(network).temporal)

    @classmethod
    def inflate(cls, image: nn.Module, target, source: str, what: str) -> nn.Module:
        """`image` made into the network of `target` (a video model: inflated, its temporal
        blocks at the identity; an image model: `image` itself); a `ConfigError` naming the
        fields where the architectures differ beyond what inflation may set."""
        options = {k: v for k, v in asdict(target).items()
                   if k != "temporal" and v != getattr(image.config, k)}
        try:
            if target.temporal:
                return cls.inflate_network(image, options)
            if options:
                raise ValueError(options)
            return image
        except ValueError:
            diff = architecture_mismatch(asdict(image.config),
                                         asdict(replace(target, temporal=False)))
            raise ConfigError(
                f"model.init_from {source!r} has another architecture than {what}: "
                f"{'; '.join(d.replace('checkpoint', 'image model') for d in diff)}. Use the "
                f"image model's preset and overrides (only temporal blocks and execution "
                f"fields may differ)") from None

    @classmethod
    def inflate_network(cls, image: nn.Module, options: dict) -> nn.Module:
        """The video network holding `image`'s weights (`options`: the temporal and execution
        fields to set); a ValueError if `options` asks for more."""
        raise ValueError(f"a {cls.name} cannot be inflated")


MODEL_KINDS: Registry[type[ModelKind]] = Registry("model kind")


def block_modules(model: nn.Module) -> list[nn.Module]:
    """The outermost elements of `model`'s `nn.ModuleList`s that hold parameters: a U-Net's
    levels and middle blocks, a DiT's blocks (and temporal blocks), a video transformer's
    blocks. Lists nested inside one (an attention's ``to_out``) belong to it."""
    units: list[nn.Module] = []
    taken: set[int] = set()

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if id(child) in taken:
                continue
            if isinstance(module, nn.ModuleList) and any(True for _ in child.parameters()):
                units.append(child)
                taken.add(id(child))
            else:
                visit(child)

    visit(model)
    return units


def network_type(model: nn.Module) -> type:
    """The class `model` was built as: its type, or for a module sharded by FSDP2 (whose
    class becomes ``FSDP<Name>``, a subclass of `FSDPModule` and the original) the original."""
    cls = type(model)
    if is_fsdp_module(model):
        return next(c for c in cls.__bases__ if c.__name__ != "FSDPModule")
    return cls


def kind_of(model: nn.Module) -> type[ModelKind]:
    """The registered kind whose network class `model` is (a TypeError for none)."""
    for name in MODEL_KINDS.names():
        if MODEL_KINDS.get(name).owns(model):
            return MODEL_KINDS.get(name)
    raise TypeError(f"no model kind for {type(model).__name__}; kinds: "
                    f"{', '.join(MODEL_KINDS.names())}")


def architecture_mismatch(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The fields where two architectures (`ModelKind.architecture` dicts, or config dicts of
    one class) differ, as "name: checkpoint X, model Y"; execution fields aside."""
    keys = sorted((set(saved) | set(current)) - EXECUTION_FIELDS)
    return [f"{k}: checkpoint {saved.get(k)!r}, model {current.get(k)!r}" for k in keys
            if _norm(saved.get(k)) != _norm(current.get(k))]


def split_decay(params: Iterable[nn.Parameter]) -> tuple[list, list]:
    """(matrices, vectors) of the trainable `params`: weight decay applies to the first only
    (biases and norm scales are left undecayed)."""
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return decay, no_decay


def check_fields(key: str, overrides: dict, config_class: type) -> None:
    """`overrides` name fields of `config_class`: a `ConfigError` naming `key` otherwise."""
    names = [f.name for f in fields(config_class)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ConfigError(f"{key}: unknown field(s) {unknown}; valid: the fields of "
                          f"{config_class.__name__}: {', '.join(names)}")


def is_diffusers_dir(path: Path, subfolder: str = "unet") -> bool:
    """Whether `path` is a diffusers model folder (or a pipeline with `subfolder`/)."""
    for folder in (path, path / subfolder):
        config = folder / "config.json"
        if config.is_file() and any(folder.glob("diffusion_pytorch_model*")):
            return True
    return False


def is_imported(source: str | Path | None) -> bool:
    """Whether `source` is a diffusers model folder or pipeline root (a U-Net or a
    transformer): an architecture of its own, read again on resume."""
    return source is not None and any(is_diffusers_dir(Path(source), sub)
                                      for sub in ("unet", "transformer"))


def imported_target(imported, backbone, model, source: str):
    """The run's config on an imported architecture: the folder's config with only
    ``model.overrides`` (inflation fields) and the temporal switch of `backbone`; the
    conditioning the data asks for must be the folder's."""
    target = replace(imported, **{**model.overrides, "temporal": backbone.temporal})
    for key in ("num_classes", "text_dim"):
        if getattr(backbone, key) not in (None, getattr(target, key)):
            raise ConfigError(f"model.init_from {source!r} has {key}={getattr(target, key)}, "
                              f"the data needs {getattr(backbone, key)}")
    return target


def config_to_dict(config) -> dict:
    """The JSON form of a config dataclass (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def config_from_dict(config_class: type, data: dict):
    """A `config_class` from its JSON form (lists back to tuples); an unknown field is a
    ValueError naming it (a record written by a newer vidiff)."""
    unknown = sorted(set(data) - {f.name for f in fields(config_class)})
    if unknown:
        raise ValueError(f"unknown {config_class.__name__} fields (written by a newer "
                         f"vidiff?): {unknown}")
    return config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif k not in EXECUTION_FIELDS:
            out[f"{prefix}{k}"] = v
    return out


def _norm(value):
    return list(value) if isinstance(value, tuple) else value
