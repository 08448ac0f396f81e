"""torch.distributed helpers: a `torchrun` launch is detected from its environment variables.

`torchrun --nproc_per_node N -m vidiff train ...` sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT; `setup` then joins the process group (env:// init, NCCL on CUDA,
else Gloo) and picks this rank's device. Without them the run is a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "all_mean", "all_sum", "any_rank", "barrier", "broadcast_module",
           "broadcast_object",
           "sequence_group", "setup", "teardown"]


@dataclass
class DistInfo:
    """Where this process stands."""

    rank: int = 0  # global rank
    world: int = 1  # number of processes
    local_rank: int = 0  # rank on this node
    local_world: int = 1  # processes on this node
    device: torch.device = torch.device("cpu")  # this rank's device
    initialized_here: bool = False  # whether `setup` created the process group
    sequence: int = 1  # ranks that split each clip (train.sequence_parallel): one data shard

    @property
    def data_rank(self) -> int:
        """This rank's data shard: the ranks of a sequence-parallel group share one."""
        return self.rank // self.sequence

    @property
    def data_world(self) -> int:
        """The number of data shards (processes / sequence-parallel degree)."""
        return self.world // self.sequence

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that writes logs, checkpoints and samples."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world > 1


def _pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("train.device asks for CUDA, but torch sees no CUDA device; "
                             "use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def setup(device: str = "auto") -> DistInfo:
    """Join the process group if launched by torchrun; this rank's `DistInfo`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    dev = _pick_device(device, local_rank)
    created = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, init_method="env://", rank=rank,
                                world_size=world, **kwargs)
        created = True
    return DistInfo(rank, world, local_rank, local_world, dev, created)


def teardown(info: DistInfo) -> None:
    """Leave the process group if `setup` joined it, once every rank has come here: a rank
    that tore its connections down while another still used them made that one abort at
    exit (gloo: "terminate called without an active exception")."""
    if info.initialized_here and dist.is_initialized():
        try:
            barrier(info)
        finally:
            dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.distributed and dist.is_initialized():
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def all_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean of a tensor over ranks (itself in a single process)."""
    if info.distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world
    return value


def all_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The sum of a tensor over ranks (itself in a single process)."""
    if info.distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when `flag` is True on any rank (the flag itself in one process):
    how the ranks agree to stop after the same step."""
    if not (info.distributed and dist.is_initialized()):
        return bool(flag)
    value = torch.tensor([float(flag)], device=info.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def sequence_group(info: DistInfo):
    """The process group of this rank's sequence-parallel group: ranks ``k * sequence`` to
    ``(k + 1) * sequence - 1`` (neighbours, so one node's on a cluster). Every rank creates
    every group (a collective); the whole world when it is one group."""
    size = info.sequence
    if size == info.world:
        return dist.group.WORLD
    mine = None
    for start in range(0, info.world, size):
        group = dist.new_group(list(range(start, start + size)))
        if start <= info.rank < start + size:
            mine = group
    return mine


def broadcast_module(module, info: DistInfo) -> None:
    """Rank 0's parameters and buffers on every rank (what DDP does when it wraps a model;
    FSDP shards each rank's own copy, so they must agree before)."""
    if not (info.distributed and dist.is_initialized()):
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def broadcast_object(value, info: DistInfo):
    """Rank 0's `value` on every rank (a picklable object; itself in one process)."""
    if not (info.distributed and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=info.device)
    return box[0]
