"""Tolerances for comparing the float results of two different computations (other kernels,
another summation order, a batched against a per-sample path): they follow from the dtype's
machine epsilon and the magnitude of the compared values, never from one machine's rounding
(CI runs on AMD and Intel CPUs, whose BLAS kernels round differently).

``atol = k * eps(dtype) * max|expected|`` with ``k`` the roundings of the result's magnitude
the two computations may differ by, stated for the depth of the computation below. Two sides
that are provably the same computation (the same kernels on the same inputs: one code path run
twice with one seed) are compared exactly instead, with ``rtol=0, atol=0``.
"""

from __future__ import annotations

import torch

__all__ = ["BACKWARD", "NETWORK", "ONE_OP", "assert_close_to", "assert_parity", "tolerance"]

ONE_OP = 16  # one reduction: a matrix product, a convolution, a norm in another order
NETWORK = 128  # a forward pass through a small network (tens of layers, attention, norms)
BACKWARD = 512  # gradients: the backward pass on top of a network's forward


def tolerance(expected: torch.Tensor, k: int = NETWORK) -> dict[str, float]:
    """``assert_close`` keywords for a result that may differ from `expected` by `k` roundings
    of its largest magnitude in its dtype (``rtol=0``: one bound for every element)."""
    eps = torch.finfo(expected.dtype).eps
    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    return {"atol": k * eps * max(scale, torch.finfo(expected.dtype).tiny), "rtol": 0.0}


def assert_close_to(actual: torch.Tensor, expected: torch.Tensor, k: int = NETWORK,
                    msg: str | None = None) -> None:
    """`actual` equals `expected` to `tolerance(expected, k)`."""
    torch.testing.assert_close(actual, expected, msg=msg, **tolerance(expected, k))


def assert_parity(actual: torch.Tensor, expected: torch.Tensor, bound: float = 1e-5) -> None:
    """A parity claim of the docs (1e-5 with a reference implementation in fp32): `actual`
    within ``bound * max(1, max|expected|)`` of `expected`, the bound relative to the
    magnitude where that exceeds 1 and never looser than `bound`."""
    scale = max(1.0, float(expected.detach().abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, atol=bound * scale, rtol=0.0)
