"""Type tests against torch.distributed's classes without importing them (importing FSDP and
DTensor costs about a second): no object can be an instance of a class whose module was never
loaded."""

from __future__ import annotations

import sys

__all__ = ["is_dtensor", "is_fsdp_module", "local"]


def _loaded(module: str, name: str):
    found = sys.modules.get(module)
    return None if found is None else getattr(found, name, None)


def is_fsdp_module(obj) -> bool:
    """Whether `obj` is a module sharded by FSDP2 (`torch.distributed.fsdp.FSDPModule`)."""
    cls = _loaded("torch.distributed.fsdp", "FSDPModule")
    return cls is not None and isinstance(obj, cls)


def is_dtensor(obj) -> bool:
    """Whether `obj` is a `torch.distributed.tensor.DTensor`."""
    cls = _loaded("torch.distributed.tensor", "DTensor")
    return cls is not None and isinstance(obj, cls)


def local(tensor):
    """This rank's part of a `DTensor` (FSDP's sharded parameters), else the tensor."""
    return tensor.to_local() if is_dtensor(tensor) else tensor
