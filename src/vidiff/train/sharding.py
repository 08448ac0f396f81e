"""How a run's network is spread over processes: ``train.parallel`` = ddp | fsdp | hsdp.

- ``ddp``: every rank holds the whole model, its gradients and AdamW's moments; gradients are
  averaged by `DistributedDataParallel`.
- ``fsdp``: PyTorch's FSDP2 (`torch.distributed.fsdp.fully_shard`) on a 1-D mesh of every rank.
  Each shard unit (`shard_units`: the kind's blocks, U-Net levels, DiT and video-transformer
  blocks, VideoFusion's two generators, then the root) keeps 1/N of its parameters on each
  rank, all-gathers them for its forward and backward and reduce-scatters the gradients, so
  weights, gradients and optimizer state take 1/N of the memory. With ``train.precision =
  "bf16"`` the gathered parameters are bf16 and the gradients are reduced in fp32
  (`MixedPrecisionPolicy`); the sharded master weights stay fp32.
- ``hsdp``: shard within groups of ``train.shard_size`` ranks (0: the ranks of one node) and
  replicate across groups: a 2-D mesh (replicate, shard), gradients all-reduced across groups.

``train.offload`` keeps the sharded parameters, their gradients and AdamW's state in CPU
memory (`CPUOffloadPolicy`), the optimizer step on the CPU. Frozen parameters (LoRA's base,
``train.trainable = "temporal"``) are sharded like the rest and get no gradients.

Under FSDP the parameters are `DTensor`s; everything that touches them goes through this
module or DTensor-aware torch code: gradient clipping (`clip_grad_norm_` reduces the sharded
norm), the EMA (a second model sharded the same way, averaged shard by shard), sampling (every
rank runs the sharded EMA model; rank 0 writes) and checkpoints (`vidiff.train.shards`).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from vidiff.kinds import kind_of
from vidiff.kinds.base import block_modules
from vidiff.train.distributed import DistInfo
from vidiff.utils.loaded import is_fsdp_module

__all__ = ["PARALLEL", "build_mesh", "is_sharded", "shard",
           "shard_units", "sync_gradients"]

PARALLEL = ("ddp", "fsdp", "hsdp")  # train.parallel's values


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules `shard` wraps one by one before the root, innermost first: the kind's own
    (`ModelKind.shard_units`) for a registered network, else `block_modules`."""
    try:
        kind = kind_of(model)
    except TypeError:  # a network given by hand
        return block_modules(model)
    return kind.shard_units(model)


def build_mesh(dist: DistInfo, parallel: str, shard_size: int = 0):
    """The device mesh of ``train.parallel``: 1-D ("shard",) for fsdp, 2-D ("replicate",
    "shard") for hsdp with `shard_size` ranks per shard group (0: the node's ranks)."""
    from torch.distributed.device_mesh import init_device_mesh

    device = dist.device.type
    if parallel == "fsdp":
        return init_device_mesh(device, (dist.world,), mesh_dim_names=("shard",))
    size = shard_size or dist.local_world
    if size < 1 or dist.world % size:
        raise ValueError(f"train.shard_size = {size} must divide the {dist.world} processes "
                         f"(hsdp shards within groups of that many ranks)")
    return init_device_mesh(device, (dist.world // size, size),
                            mesh_dim_names=("replicate", "shard"))


def shard(model: nn.Module, mesh, *, precision: str = "fp32", offload: bool = False,
          trained: bool = True) -> nn.Module:
    """`model` sharded in place with FSDP2 over `mesh` (see the module doc): each of
    `shard_units` first, then the root. `trained` False (the EMA's copy): no mixed
    precision, the parameters resharded after every forward."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    options = {"mesh": mesh}
    if trained and precision == "bf16":  # bf16 compute, fp32 gradient reduction
        options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16,
                                                    reduce_dtype=torch.float32)
    if offload:
        options["offload_policy"] = CPUOffloadPolicy(pin_memory=torch.cuda.is_available())
    for unit in shard_units(model):
        fully_shard(unit, **options)
    fully_shard(model, **options)
    return model


def is_sharded(model: nn.Module) -> bool:
    """Whether `model` is an FSDP2 module (its parameters `DTensor`s)."""
    return is_fsdp_module(model)


@contextmanager
def sync_gradients(wrapped: nn.Module, sync: bool):
    """Within it, a backward reduces gradients over the ranks only when `sync` (the last
    micro-batch of a step); the earlier ones accumulate locally (DDP's ``no_sync``, FSDP's
    ``set_requires_gradient_sync``)."""
    if sync:
        yield
    elif is_sharded(wrapped):
        wrapped.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            wrapped.set_requires_gradient_sync(True)
    elif hasattr(wrapped, "no_sync"):
        with wrapped.no_sync():
            yield
    else:
        yield
