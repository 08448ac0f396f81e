"""Training-step memory counted without allocating: a live-storage counter over fake tensors.

`StorageCounter` is a `TorchDispatchMode` that sees every tensor an operator returns, keeps a
weak reference to each new storage (the bytes are added when it is created and taken off when
Python finalizes it: the storage's last tensor, autograd's saved copy included, is gone) and
records the peak of the live total, broken down by kind (weights, optimizer state, gradients,
activations) at the moment of the peak. Under `FakeTensorMode` the operators compute shapes
only, so a 14B-parameter model's training step is counted on a laptop: the bytes are those a
device would hold, the time is that of the Python dispatch.

`count_training_step` runs one optimizer step of a model built on the meta device:

- the model is materialised as fake CPU tensors (`Module.to_empty` under the fake mode);
- AdamW (`foreach=True`, the CUDA default) gets its two moments per trainable parameter from a
  warm-up step with zero gradients, so the counted step is a steady-state one;
- the counted step is the forward under bf16 autocast, an fp32 MSE loss, the backward, the
  optimizer step and `zero_grad(set_to_none=True)`, all with the counter on;
- scaled-dot-product attention is counted as a fused GPU kernel (FlashAttention-2 / PyTorch's
  memory-efficient kernel): it keeps q, k, v (cast to the autocast dtype, as CUDA autocast
  casts them), the output and a float32 log-sum-exp per query for the backward, whose result
  is dq, dk, dv. The L x L score matrix of the CPU math path is never held (`AttentionCount`).

Why not `torch.distributed._tools.mem_tracker.MemTracker` (built for this, and it runs under
`FakeTensorMode` on CPU): in torch 2.13 it registers a gradient hook on every parameter of each
module it enters and fails on a frozen one, so a LoRA step (a frozen base) cannot be tracked.

What the count cannot see: the CUDA context (~0.5 GiB), the caching allocator's rounding and
fragmentation, cuBLAS workspaces, and kernel-internal buffers (the flash backward's float32 dq
accumulator, about twice q's bytes while one attention's backward runs).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["KINDS", "AttentionCount", "FusedAttention", "StepCount", "StorageCounter",
           "count_training_step", "train_step"]

KINDS = ("weights", "optimizer", "gradients", "activations")
GIB = 2**30


class StorageCounter(TorchDispatchMode):
    """Live bytes of the storages created under this mode (or `track`ed), and their peak.

    A storage is counted once (views and in-place results share it) under the kind it was
    tracked with: operator outputs are ``"activations"``; `track` registers tensors made
    before (weights, optimizer state, the batch) and re-tags gradients. ``phase`` names the
    part of the step running (set by the caller); `peak_phase` is the one the peak fell in.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = dict.fromkeys(KINDS, 0)  # bytes per kind now
        self.peak = 0  # the largest live total seen (bytes)
        self.at_peak = dict(self.live)  # the breakdown at that moment
        self.phase = ""  # set by the caller: "forward", "backward", "optimizer"
        self.peak_phase = ""
        self._kind = WeakIdKeyDictionary()  # storage -> [kind] (a cell: re-tagging edits it)

    @property
    def total(self) -> int:
        """Bytes live now."""
        return sum(self.live.values())

    def track(self, tensor: torch.Tensor, kind: str, retag: bool = False) -> None:
        """Count `tensor`'s storage as `kind` if it is new; with `retag`, move a counted one."""
        if kind not in self.live:
            raise ValueError(f"unknown memory kind {kind!r}; valid: {', '.join(KINDS)}")
        storage = tensor.untyped_storage()
        nbytes = storage.nbytes()
        cell = self._kind.get(storage)
        if cell is not None:
            if retag and cell[0] != kind:
                self.live[cell[0]] -= nbytes
                self.live[kind] += nbytes
                cell[0] = kind
            return
        cell = [kind]
        self._kind[storage] = cell
        self.live[kind] += nbytes
        weakref.finalize(storage, self._free, cell, nbytes)
        if self.total > self.peak:
            self.peak, self.at_peak, self.peak_phase = self.total, dict(self.live), self.phase

    def _free(self, cell: list[str], nbytes: int) -> None:
        self.live[cell[0]] -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.track(t, "activations")
        return out


class AttentionCount(torch.autograd.Function):
    """Attention as a fused kernel holds it (FlashAttention-2, Dao 2023, Alg. 1-2): the forward
    saves q, k, v, the output O and the log-sum-exp L (float32, one per query row); the
    backward returns dq, dk, dv. Shapes only: the values are left uninitialised."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = q.new_empty(q.shape[:-1] + v.shape[-1:])  # (B, H, Lq, Dv)
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)  # (B, H, Lq)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


class FusedAttention:
    """Within its context `F.scaled_dot_product_attention` is `AttentionCount`, with q, k, v
    cast to the autocast dtype first as CUDA autocast does (SDPA is on its lower-precision
    list). A module attribute patch rather than a function mode: checkpointing's recompute in
    the backward must see it too. The mask, dropout and scale do not change what the kernel
    keeps. ``calls`` counts the attentions (recomputed ones included)."""

    def __init__(self) -> None:
        self.calls = 0
        self._original = None

    def __call__(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                 scale=None, enable_gqa=False):
        self.calls += 1
        device = query.device.type
        if torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
            query, key, value = (t.to(dtype) for t in (query, key, value))
        return AttentionCount.apply(query, key, value)

    def __enter__(self) -> FusedAttention:
        self._original = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = self
        return self

    def __exit__(self, *exc) -> None:
        F.scaled_dot_product_attention = self._original


def _phase(counter: StorageCounter | None, name: str) -> None:
    if counter is not None:
        counter.phase = name


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               batch: Mapping[str, object], forward: Callable, dtype: torch.dtype = torch.bfloat16,
               counter: StorageCounter | None = None) -> None:
    """One training step: `forward(model, batch)` under autocast to `dtype`, MSE against
    ``batch["target"]`` in float32, backward, `optimizer.step()`, gradients set to None."""
    device = batch["target"].device.type
    _phase(counter, "forward")
    with torch.autocast(device, dtype=dtype):
        pred = forward(model, batch)
    loss = F.mse_loss(pred.float(), batch["target"].float())  # flow matching / v-prediction MSE
    _phase(counter, "backward")
    loss.backward()
    del pred, loss
    _phase(counter, "optimizer")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@dataclass(frozen=True)
class StepCount:
    """The counted memory of one training step (bytes; the breakdown is at the peak)."""

    params: int  # parameters of the model (LoRA included)
    trainable: int  # of them trained
    weights: int  # parameter and buffer bytes
    optimizer: int  # AdamW moments (+ step counters)
    gradients: int  # gradients live at the peak
    activations: int  # everything else live at the peak: saved tensors, temporaries, batch
    peak: int  # the largest total (= weights + optimizer + gradients + activations)
    peak_phase: str  # "forward", "backward" or "optimizer"
    attention_calls: int  # SDPA calls counted as a fused kernel

    def gib(self, field: str) -> float:
        """`field` in GiB."""
        return getattr(self, field) / GIB


def _materialise_fake(model: torch.nn.Module) -> None:
    """Meta parameters and buffers -> fake CPU tensors (must run under the fake mode)."""
    model.to_empty(device="cpu")
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if not isinstance(t, FakeTensor):
            raise RuntimeError(f"{name} is not a fake tensor after to_empty")


def count_training_step(model: torch.nn.Module, make_batch: Callable[[], dict],
                        forward: Callable, lr: float = 1e-4,
                        dtype: torch.dtype = torch.bfloat16) -> StepCount:
    """Count the memory of one steady-state AdamW training step of `model`.

    `model` is on the meta device with its dtypes and ``requires_grad`` flags set (it is
    materialised as fake tensors in place); `make_batch()` is called under the fake mode and
    returns the batch (tensors made with ``torch.empty``, a ``"target"`` of the prediction's
    shape among them); `forward(model, batch)` returns the prediction.
    """
    params = sum(p.numel() for p in model.parameters())
    trained = [p for p in model.parameters() if p.requires_grad]
    if not trained:
        raise ValueError("the model has no trainable parameter")
    with FakeTensorMode(allow_non_fake_inputs=True):  # allows the meta tensors of to_empty
        _materialise_fake(model)
        trained = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trained, lr=lr, foreach=True)
        for p in trained:  # a warm-up step creates AdamW's moments
            p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        batch = make_batch()
        counter = StorageCounter()
        for t in [*model.parameters(), *model.buffers()]:
            counter.track(t, "weights")
        for state in optimizer.state.values():
            for t in state.values():
                counter.track(t, "optimizer")
        for t in tree_flatten(batch)[0]:
            if isinstance(t, torch.Tensor):
                counter.track(t, "activations")
        hooks = [p.register_post_accumulate_grad_hook(
            lambda p: counter.track(p.grad, "gradients", retag=True)) for p in trained]
        attention = FusedAttention()
        try:
            with counter, attention:
                train_step(model, optimizer, batch, forward, dtype, counter)
        finally:
            for h in hooks:
                h.remove()
    at = counter.at_peak
    return StepCount(params=params, trainable=sum(p.numel() for p in trained),
                     weights=at["weights"], optimizer=at["optimizer"],
                     gradients=at["gradients"], activations=at["activations"],
                     peak=counter.peak, peak_phase=counter.peak_phase,
                     attention_calls=attention.calls)


def tensor_bytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """Bytes of a dense tensor of `shape` and `dtype` (for hand derivations)."""
    return math.prod(shape) * dtype.itemsize
