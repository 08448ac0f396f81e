"""Normalization computed in float32, whatever the activations' dtype (bf16 autocast)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm whose statistics are computed in float32 (as in ADM), output in x's dtype.

    Under bf16 autocast the mean and variance of large groups lose too many bits in bf16; the
    upcast is a no-op for float32 inputs. Works on channels-last inputs without a copy.
    """

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, ...) -> (N, C, ...), same dtype and memory format as x."""
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        if _needs_contiguous(x, w):
            x = x.contiguous()  # see _needs_contiguous
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


def _needs_contiguous(x: Tensor, weight: Tensor | None) -> bool:
    """True where torch's CPU group-norm backward crashes (segfault, torch 2.13): a
    channels-last input that needs no gradient under a weight that does: the first trained
    norm of a partly frozen model (``train.trainable = "temporal"``). That input is copied
    to the standard layout, which costs one copy and changes no value."""
    return (weight is not None and weight.requires_grad and torch.is_grad_enabled()
            and not x.requires_grad and x.device.type == "cpu" and x.dim() == 4
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last))


def zero_(module: nn.Module) -> nn.Module:
    """Zero all parameters of `module` in place and return it (DDPM/ADM zero-init)."""
    for p in module.parameters():
        p.detach().zero_()
    return module
