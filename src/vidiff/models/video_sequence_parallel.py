"""Ulysses sequence parallelism for training diffusers' video transformers (Wan, LTX-Video).

Built on diffusers' own context parallelism: the model's `_cp_plan` hooks split the video
tokens along the sequence before the first block and all-gather them after `proj_out`; each
self-attention does the Ulysses all-to-all (sequence shards -> head shards and back) in
`TemplatedUlyssesAttention`, whose autograd backward does the reverse all-to-alls. Only the
`native` (SDPA) attention backend runs there in fp32 and on CPU. vidiff adds three things:

- the parallel config is set up here: `ModelMixin.enable_parallelism` computes
  ``rank % torch.accelerator.device_count()`` (diffusers 0.42.1 modeling_utils.py:1719), a
  ZeroDivisionError on a CPU-only machine, even with a mesh given;
- LTX-Video keeps the text whole and its cross-attention local (as Wan's processor does
  itself): diffusers' plan splits `encoder_hidden_states` and sends cross-attention through
  Ulysses, whose backward reshapes the key/value gradients with the query's length
  (attention_dispatch.py:2629, an error unless text and video have as many tokens) and whose
  mask keeps every head after the heads were split (attention_dispatch.py:888);
- the gradient rule. The gather's backward hands each rank the gradient of its own tokens,
  so every rank's parameter gradients are those of its sequence shard only: SUM them over
  the sequence-parallel group (`all_reduce_sequence_parallel_grads`), never average. Every
  rank of a group must see the same inputs (latents, noise, timestep, text) and compute the
  same loss on the full gathered output. Under DDP over all ranks (which averages), scale
  the loss by `degree` instead.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh

__all__ = ["all_reduce_sequence_parallel_grads", "enable_video_sequence_parallel"]


def _plan(transformer: torch.nn.Module) -> dict:
    """The diffusers `_cp_plan`; for LTX-Video without the split of the text, and its
    cross-attention (`attn2`, run after `_parallel_config` is set everywhere) made local."""
    plan = dict(type(transformer)._cp_plan)
    if type(transformer).__name__ == "LTXVideoTransformer3DModel":
        plan[""] = {"hidden_states": plan[""]["hidden_states"]}
        for block in transformer.transformer_blocks:
            block.attn2.processor._parallel_config = None
    return plan


def _mesh(mesh_or_group: DeviceMesh | dist.ProcessGroup | None, degree: int,
          device_type: str) -> DeviceMesh:
    """A ("ring", "ulysses") mesh of shape (1, degree) from a mesh or a process group."""
    if isinstance(mesh_or_group, DeviceMesh) and mesh_or_group.ndim == 2:
        if mesh_or_group.mesh_dim_names != ("ring", "ulysses") or mesh_or_group.shape != (
                1, degree):
            raise ValueError(f"a 2-D mesh must be ('ring', 'ulysses') of shape (1, {degree})")
        return mesh_or_group
    if isinstance(mesh_or_group, DeviceMesh):
        group = mesh_or_group.get_group()
    else:
        group = mesh_or_group if mesh_or_group is not None else dist.group.WORLD
    if dist.get_world_size(group) != degree:
        raise ValueError(f"the group has {dist.get_world_size(group)} ranks, degree is {degree}")
    solo = dist.new_group([dist.get_rank()], use_local_synchronization=True)
    ranks = torch.tensor(dist.get_process_group_ranks(group)).view(1, degree)
    return DeviceMesh.from_group([solo, group], device_type, mesh=ranks,
                                 mesh_dim_names=("ring", "ulysses"))


def _tokens(transformer: torch.nn.Module, hidden_states: torch.Tensor) -> int:
    """The number of video tokens `hidden_states` becomes (Wan patchifies 5-D input)."""
    if hidden_states.ndim == 5:
        patch = transformer.config.patch_size
        count = 1
        for size, step in zip(hidden_states.shape[2:], patch, strict=True):
            count *= size // step
        return count
    return hidden_states.shape[1]


def enable_video_sequence_parallel(transformer: torch.nn.Module,
                                   mesh_or_group: DeviceMesh | dist.ProcessGroup | None,
                                   degree: int) -> DeviceMesh:
    """Split `transformer`'s video tokens over `degree` ranks with Ulysses attention.

    `mesh_or_group`: a ("ring", "ulysses") DeviceMesh of shape (1, degree), a 1-D mesh or a
    process group of `degree` ranks (None: the world). Every rank of the group calls this,
    then runs the same forward on the same inputs, and gets the full output. Returns the
    mesh; reduce the gradients with `all_reduce_sequence_parallel_grads` (a sum, see the
    module docstring)."""
    from diffusers import ContextParallelConfig
    from diffusers.hooks.context_parallel import apply_context_parallel
    from diffusers.models._modeling_parallel import ParallelConfig
    from diffusers.models.attention_dispatch import AttentionBackendName as Name
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry as Registry

    name = type(transformer).__name__
    if getattr(type(transformer), "_cp_plan", None) is None:
        raise ValueError(f"{name} has no diffusers _cp_plan: no sequence parallelism for it")
    if degree < 2:
        raise ValueError(f"sequence parallel degree must be at least 2, got {degree}")
    heads = transformer.config.num_attention_heads
    if heads % degree:
        raise ValueError(f"{name} has {heads} attention heads, not divisible by {degree}")
    if getattr(transformer, "_parallel_config", None) is not None:
        raise ValueError(f"{name} already has parallelism enabled")
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        if hasattr(processor, "_attention_backend"):
            backend = Name(processor._attention_backend or Registry.get_active_backend()[0])
            if not Registry._is_context_parallel_available(backend):
                raise ValueError(f"attention backend {backend.value} has no context parallelism")

    device = next(transformer.parameters()).device
    mesh = _mesh(mesh_or_group, degree, device.type)
    context = ContextParallelConfig(ulysses_degree=degree, mesh=mesh)
    config = ParallelConfig(context_parallel_config=context)
    config.setup(dist.get_rank(), dist.get_world_size(), device, mesh=mesh)
    transformer._parallel_config = config
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(processor, "_parallel_config"):
            processor._parallel_config = config

    def check_length(module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if hidden is not None and _tokens(module, hidden) % degree:
            raise ValueError(f"{_tokens(module, hidden)} video tokens, not divisible by {degree}")

    transformer.register_forward_pre_hook(check_length, with_kwargs=True)
    apply_context_parallel(transformer, context, _plan(transformer))
    return mesh


def all_reduce_sequence_parallel_grads(transformer: torch.nn.Module) -> None:
    """Sum every parameter gradient over the sequence-parallel group (after backward): each
    rank holds only its sequence shard's share of the gradient."""
    config = getattr(transformer, "_parallel_config", None)
    if config is None or config.context_parallel_config is None:
        raise ValueError("sequence parallelism is not enabled on this transformer")
    group = config.context_parallel_config._flattened_mesh.get_group()
    for parameter in transformer.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM, group=group)
