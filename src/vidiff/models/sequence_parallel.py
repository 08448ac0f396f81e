"""Ulysses sequence parallelism for the DiT (Jacobs et al. 2023, "DeepSpeed Ulysses").

The P ranks of a process group hold the same batch and the same weights, and split every
frame's N patch tokens between them: after the patch and position embedding rank r keeps the
contiguous slice h[:, r*N/P:(r+1)*N/P] (`split_tokens`). Everything per token then runs on the
slice alone: the MLPs and adaLN modulation (per row), the cross-attention (local queries, the
text is whole on every rank), the temporal attention (over the frames at one patch position,
all on the rank holding that position) and the final layer. The spatial self-attention is the
one place that needs every token of a frame; there an all-to-all trades the token split for a
head split (`heads_to_tokens`): q, k, v (R, heads, N/P, d) -> (R, heads/P, N, d), so each rank
attends with all N tokens for heads/P of the heads, and a second all-to-all
(`tokens_to_heads`) trades back before the output projection. At the end the slices are
gathered to the full N (`gather_tokens`).

Autograd: an all-to-all's backward is the all-to-all of the gradient (the exchange is its own
inverse). Downstream of the gather every rank computes the same loss on the same full output,
so the gather's backward keeps only this rank's slice of the gradient (a sum over the ranks
would count it P times). Each rank's parameter gradients are then the part flowing through
its slice; the full gradient is their sum over the group (`sum_gradients`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["SequenceGroup", "gather_tokens", "heads_to_tokens", "split_tokens",
           "sum_gradients", "tokens_to_heads"]

# torch >= 2.13 names it all_gather_single; older releases all_gather_into_tensor (both: gloo)
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


@dataclass(frozen=True)
class SequenceGroup:
    """The process group a model's tokens are split over, with its size and this rank's
    index in it (read once, when sequence parallelism is enabled)."""

    group: Any  # a torch.distributed ProcessGroup (anything with .size() and .rank())
    size: int
    rank: int

    @classmethod
    def of(cls, group: Any) -> SequenceGroup:
        size, rank = int(group.size()), int(group.rank())
        if not 0 <= rank < size:
            raise ValueError(f"this process is not a member of the group (rank {rank})")
        return cls(group, size, rank)

    def __deepcopy__(self, memo) -> SequenceGroup:
        return self  # a process group is a handle of this process: a copied model shares it


class _AllToAll(torch.autograd.Function):
    """x (P, ...): chunk j goes to rank j; chunk i of the result came from rank i. Its own
    inverse, so the backward is the same exchange of the gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, sp: SequenceGroup) -> Tensor:
        ctx.sp = sp
        x = x.contiguous()
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x, group=sp.group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _AllToAll.apply(grad, ctx.sp), None


class _Gather(torch.autograd.Function):
    """x (...) -> (P, ...) stacked over the ranks; backward: this rank's slice of the
    gradient (every rank holds the same loss of the same gathered output)."""

    @staticmethod
    def forward(ctx, x: Tensor, sp: SequenceGroup) -> Tensor:
        ctx.rank = sp.rank
        out = x.new_empty((sp.size * x.shape[0], *x.shape[1:]))  # the concatenated form
        _all_gather(out, x.contiguous(), group=sp.group)
        return out.view(sp.size, *x.shape)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad[ctx.rank], None


def split_tokens(h: Tensor, sp: SequenceGroup) -> Tensor:
    """(R, N, D) -> this rank's contiguous slice (R, N/P, D). A plain slice: its backward
    fills the other ranks' tokens with zeros, which `sum_gradients` makes whole."""
    n = h.shape[1]
    if n % sp.size:
        raise ValueError(f"{n} tokens cannot be split evenly over {sp.size} ranks")
    part = n // sp.size
    return h[:, sp.rank * part:(sp.rank + 1) * part]


def gather_tokens(h: Tensor, sp: SequenceGroup) -> Tensor:
    """Every rank's slice (R, N/P, C) -> the whole (R, N, C), in rank order."""
    r, part, c = h.shape
    out = _Gather.apply(h, sp)  # (P, R, N/P, C)
    return out.transpose(0, 1).reshape(r, sp.size * part, c)  # (R, P, N/P, C) -> (R, N, C)


def heads_to_tokens(x: Tensor, sp: SequenceGroup) -> Tensor:
    """(..., heads, N/P, d) -> (..., heads/P, N, d): all the tokens, this rank's heads."""
    *lead, heads, part, d = x.shape
    if heads % sp.size:
        raise ValueError(f"{heads} heads cannot be split evenly over {sp.size} ranks")
    # (..., P, heads/P, N/P, d) -> (P, ..., heads/P, N/P, d): chunk j holds rank j's heads
    x = x.reshape(*lead, sp.size, heads // sp.size, part, d).movedim(-4, 0)
    x = _AllToAll.apply(x, sp)  # chunk i: rank i's tokens of this rank's heads
    # (P, ..., heads/P, N/P, d) -> (..., heads/P, P, N/P, d) -> (..., heads/P, N, d)
    return x.movedim(0, -3).reshape(*lead, heads // sp.size, sp.size * part, d)


def tokens_to_heads(x: Tensor, sp: SequenceGroup) -> Tensor:
    """The inverse of `heads_to_tokens`: (..., heads/P, N, d) -> (..., heads, N/P, d)."""
    *lead, local_heads, n, d = x.shape
    part = n // sp.size
    # (..., heads/P, P, N/P, d) -> (P, ..., heads/P, N/P, d): chunk j holds rank j's tokens
    x = x.reshape(*lead, local_heads, sp.size, part, d).movedim(-3, 0)
    x = _AllToAll.apply(x, sp)  # chunk i: this rank's tokens of rank i's heads
    # (P, ..., heads/P, N/P, d) -> (..., P, heads/P, N/P, d) -> (..., heads, N/P, d)
    return x.movedim(0, -4).reshape(*lead, sp.size * local_heads, part, d)


def sum_gradients(model: nn.Module, group: Any) -> None:
    """Sum every parameter's gradient over `group` (a ProcessGroup or a `SequenceGroup`):
    after a sequence-parallel backward each rank holds the part from its tokens."""
    group = group.group if isinstance(group, SequenceGroup) else group
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM, group=group)
