"""LoRA (Hu et al. 2022) on any vidiff network, through peft.

    W x  ->  W x + (alpha / r) B A x,   A: (r, in), B: (out, r), B = 0 at the start   (eq. 3)

`add_lora` puts adapters on the modules whose names end with one of `LoraSpec.targets` (each
kind declares its own: `vidiff.kinds.ModelKind.lora_targets`) with peft's
``inject_adapter_in_model`` (the network keeps its class, so its kind still knows it) and
freezes everything else: only A and B train. A spec records the `LoraSpec`, so the network
of a checkpoint or an export is rebuilt with the same adapters before its weights load.

`lora_weights` gives the adapters in diffusers' LoRA format (the module paths of the network,
``lora_A.weight`` / ``lora_B.weight``, what ``save_lora_weights`` / ``load_lora_weights``
read); `merge_lora` folds B A into W and removes the adapters (``vidiff export --merge``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["LoraSpec", "add_lora", "is_adapted", "lora_weights", "merge_lora"]

ADAPTER = "default"  # peft's adapter name (the one adapter vidiff trains)


@dataclass
class LoraSpec:
    """The low-rank adapters of a network (``train.lora``)."""

    rank: int = 0  # r; 0: no LoRA (every parameter trains, or train.trainable's set)
    alpha: float | None = None  # the scale is alpha / r (None: alpha = r, scale 1)
    # module-name suffixes that get adapters (e.g. "to_q", "attn1.to_k"); empty: the kind's
    # default (its attention projections)
    targets: list[str] = field(default_factory=list)
    dropout: float = 0.0  # dropout on the adapters' input (training only)

    def check(self) -> LoraSpec:
        """`self`, or a ValueError naming the bad field."""
        if self.rank < 0:
            raise ValueError(f"rank = {self.rank} must be >= 0 (0: no LoRA)")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"alpha = {self.alpha} must be > 0")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout = {self.dropout} must be in [0, 1)")
        return self

    @property
    def scale(self) -> float:
        return (self.rank if self.alpha is None else self.alpha) / self.rank


def _peft():
    try:
        import peft  # optional dependency
    except ImportError:
        raise ImportError("LoRA needs peft: pip install 'vidiff[video]' (after torch, under "
                          "the torch constraint)") from None
    return peft


def _targets(model: nn.Module, targets: list[str]) -> list[str]:
    """The full names of the modules that get adapters; a ValueError when a suffix names
    none (a typo must not train nothing)."""
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d,
                                                                   nn.Conv2d, nn.Conv3d))]
    chosen = []
    for suffix in targets:
        found = [n for n in names if n == suffix or n.endswith("." + suffix)]
        if not found:
            ends = sorted({n.rsplit(".", 1)[-1] for n in names})
            raise ValueError(f"LoRA target {suffix!r} names no linear or conv layer of the "
                             f"network; its layers end with: {', '.join(ends)}")
        chosen += found
    return sorted(set(chosen))


def is_adapted(layer: nn.Module) -> bool:
    """Whether `layer` carries LoRA adapters (peft's layer around the original): code that
    reads its ``weight`` directly would skip them and must call the layer instead."""
    return hasattr(layer, "base_layer")


def add_lora(model: nn.Module, spec: LoraSpec) -> nn.Module:
    """`model` with adapters of `spec` on its target layers (in place) and everything else
    frozen; B starts at 0, so the network computes what it did."""
    spec.check()
    if spec.rank == 0:
        return model
    if not spec.targets:
        raise ValueError("LoRA needs targets (the kind's lora_targets when train.lora.targets "
                         "is empty)")
    peft = _peft()
    config = peft.LoraConfig(r=spec.rank, lora_alpha=spec.rank if spec.alpha is None
                             else spec.alpha, lora_dropout=spec.dropout,
                             target_modules=_targets(model, spec.targets))
    peft.inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_" in name)
    return model


def lora_weights(model: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """The adapters in diffusers' LoRA format: ``<module>.lora_A.weight`` /
    ``<module>.lora_B.weight`` (peft's adapter name dropped), names relative to the module
    `prefix` (e.g. "transformer." for a video transformer: diffusers' own names)."""
    out = {}
    for name, p in model.named_parameters():
        if ".lora_" not in name or not name.startswith(prefix):
            continue
        out[name[len(prefix):].replace(f".{ADAPTER}.", ".")] = p.detach().clone()
    if not out:
        raise ValueError("the network holds no LoRA adapters")
    return out


def merge_lora(model: nn.Module) -> nn.Module:
    """`model` with every adapter folded into its base layer, W + (alpha / r) B A, and the
    adapters removed (in place): the plain network, every parameter trainable again."""
    peft = _peft()
    for name, module in list(model.named_modules()):
        if isinstance(module, peft.tuners.lora.LoraLayer):
            module.merge(adapter_names=[ADAPTER])
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child,
                    module.get_base_layer())
    model.requires_grad_(True)
    return model
