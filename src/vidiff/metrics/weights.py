"""Loading the metric networks' pretrained weights from local files, with errors that say why.

Nothing here downloads: every loader takes a path to a file the user already has. Reading
uses ``torch.load(..., weights_only=True)`` (no arbitrary pickles) or ``torch.jit.load``.

- a missing file raises ``FileNotFoundError`` naming it;
- a file of the wrong kind (a TorchScript archive where a state dict is expected or the other
  way round, a state dict of another network, a file that is no PyTorch file at all) raises
  ``ValueError`` naming the file, the weights that were expected, and a few missing or
  unexpected keys.

`random_init_` gives a network variance-preserving random weights from a `torch.Generator`
(for tests and random-feature baselines; the metrics are only comparable to published
numbers with the pretrained weights).
"""

from __future__ import annotations

import math
import os
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "is_torchscript_file",
    "read_state_dict",
    "load_state_dict_into",
    "load_torchscript",
    "random_init_",
]

_SHOW = 5  # how many offending keys an error message lists


def _existing(path: str | os.PathLike, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {str(path)!r} (expected {what})")
    return path


def is_torchscript_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``), not a ``torch.save`` file.

    Both are zip files; only TorchScript archives hold ``constants.pkl`` and a ``code/`` folder.
    """
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _few(keys) -> str:
    keys = sorted(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > _SHOW else ""
    return ", ".join(repr(k) for k in keys[:_SHOW]) + more


def _unwrap(obj, path: Path, what: str) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: the dict itself, or under 'state_dict' / 'model'."""
    for _ in range(2):  # {"state_dict": {...}} or {"model": {"state_dict": ...}}
        if isinstance(obj, Mapping) and not any(torch.is_tensor(v) for v in obj.values()):
            inner = [obj[k] for k in ("state_dict", "model", "model_state_dict") if k in obj]
            if inner and isinstance(inner[0], Mapping):
                obj = inner[0]
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(
            f"{str(path)!r} does not hold a state dict (got {type(obj).__name__}); expected {what}"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ValueError(
            f"{str(path)!r} is not a state dict of tensors (entries {_few(map(str, bad))} are "
            f"not tensors); expected {what}"
        )
    prefix = "module."  # saved from nn.DataParallel
    if all(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix):]: v for k, v in obj.items()}
    return dict(obj)


def read_state_dict(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``torch.save`` file with ``weights_only=True``, on the CPU.

    ``what`` describes the expected weights for error messages. Checkpoints that wrap the state
    dict under ``"state_dict"`` or ``"model"``, and ``module.`` key prefixes from
    ``nn.DataParallel``, are unwrapped.
    """
    path = _existing(path, what)
    if is_torchscript_file(path):
        raise ValueError(
            f"{str(path)!r} is a TorchScript archive, not a state dict; expected {what}"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors come in many types
        detail = str(error).splitlines()[0][:200] if str(error) else ""
        raise ValueError(
            f"{str(path)!r} could not be read as a PyTorch state dict "
            f"({type(error).__name__}: {detail}); expected {what}"
        ) from error
    return _unwrap(obj, path, what)


def _is_counter(key: str) -> bool:
    # BatchNorm's num_batches_tracked: absent from files saved by PyTorch < 0.4.1, unused in eval
    return key.endswith("num_batches_tracked")


def load_state_dict_into(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, what: str
) -> nn.Module:
    """Load ``state_dict`` into ``module`` strictly, or raise ``ValueError`` saying what differs.

    Every parameter and buffer must be present with the module's shape (BatchNorm's
    ``num_batches_tracked`` counters may be absent); no extra keys are allowed. Returns
    ``module``.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict and not _is_counter(k)]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_few(unexpected)})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches (file vs expected: "
                         f"{_few(mismatched)})")
        raise ValueError(f"{str(path)!r} does not hold {what}: " + "; ".join(parts))
    full = dict(state_dict)
    for k in own:
        if k not in full:  # a counter that the file lacks
            full[k] = own[k]
    module.load_state_dict(full, strict=True)
    return module


def load_torchscript(path: str | os.PathLike, what: str) -> torch.jit.ScriptModule:
    """Load a TorchScript archive on the CPU in eval mode, or raise with the reason."""
    path = _existing(path, what)
    if not is_torchscript_file(path):
        kind = "a torch.save file (a state dict?)" if zipfile.is_zipfile(path) else (
            "not a zip archive"
        )
        raise ValueError(f"{str(path)!r} is not a TorchScript archive ({kind}); expected {what}")
    try:
        with warnings.catch_warnings():  # recent PyTorch deprecates TorchScript; the file is one
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch")
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as error:
        detail = str(error).splitlines()[0][:200] if str(error) else ""
        raise ValueError(
            f"{str(path)!r} could not be loaded as TorchScript ({type(error).__name__}: "
            f"{detail}); expected {what}"
        ) from error
    return module.eval()


@torch.no_grad()
def random_init_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Variance-preserving random weights, in place; returns ``module``.

    Convolutions and linear layers get He-normal weights (std ``sqrt(2 / fan_in)``) and zero
    biases; batch norms become the identity (weight 1, bias 0, running mean 0, variance 1), so
    activations keep their scale through deep networks (PyTorch's default initialization
    shrinks them by orders of magnitude over Inception's ~50 layers).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            fan_in = m.weight[0].numel()
            noise = torch.randn(m.weight.shape, generator=generator, dtype=torch.float32)
            m.weight.copy_(noise * math.sqrt(2.0 / fan_in))
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()  # weight 1, bias 0, running stats (0, 1), counter 0
    return module
