"""`Cond`: the conditions of one batch, built once and passed down as one object.

>>> cond = vidiff.Cond(class_labels=torch.tensor([0, 3]))
>>> eps = model(x, t, cond)                          # the same as model(x, t, class_labels=...)
>>> video = vidiff.sample(model, shape, diffusion=d, cond=cond, generator=g)

Every field is optional; a model reads the ones it was built for. Shapes, for a batch of B
videos of F frames (+ K joint-training images):

| field          | shape                       | meaning                                          |
|----------------|-----------------------------|--------------------------------------------------|
| `class_labels` | int64 (B,) or (B, F + K)    | class of each video (or of each frame slot)      |
| `text_emb`     | float (B, L, D) / (B, F+K, L, D) | caption token embeddings                    |
| `text_mask`    | bool (B, L) / (B, F+K, L)   | True = a real token                              |
| `cond_mask`    | bool (B,) or (B, F + K)     | False = the learned null condition (CFG)         |
| `lowres`       | float (B, C, F, h, w)       | a super-resolution model's low-resolution video  |
| `num_images`   | int                         | K: the last K frames are independent images      |
| `null_emb`     | float (B, L, D)             | the text the null condition stands for (a        |
|                |                             | negative prompt; None: the model's own null)     |
| `null_mask`    | bool (B, L)                 | its token mask                                   |
| `guidance`     | float (B,)                  | the guidance scale a guidance-distilled model    |
|                |                             | takes as an input (None: 1, the conditional one) |

Samplers and guidance call a plain denoiser with ``**cond.kwargs()``, so any callable
``denoiser(xt, t, **keywords)`` keeps working; vidiff's models also take the `Cond` itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor

__all__ = ["Cond"]

TENSOR_FIELDS = ("class_labels", "text_emb", "text_mask", "cond_mask", "lowres", "null_emb",
                 "null_mask", "guidance")


@dataclass(frozen=True)
class Cond:
    """The conditions of one batch (see the module docstring for each field's shape)."""

    class_labels: Tensor | None = None
    text_emb: Tensor | None = None
    text_mask: Tensor | None = None
    cond_mask: Tensor | None = None
    lowres: Tensor | None = None
    num_images: int = 0
    null_emb: Tensor | None = None
    null_mask: Tensor | None = None
    guidance: Tensor | None = None

    @classmethod
    def of(cls, value: Cond | Mapping[str, Any] | None) -> Cond:
        """`value` as a Cond: a Cond as it is, a dict of its field names, or None (empty).
        An unknown key is a TypeError naming it and the fields."""
        if isinstance(value, Cond):
            return value
        value = dict(value or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise TypeError(f"unknown condition(s) {unknown}; Cond fields: "
                            f"{', '.join(sorted(names))}")
        return cls(**{k: v for k, v in value.items() if v is not None})

    def kwargs(self) -> dict[str, Any]:
        """The set fields as a model's keywords (num_images only when > 0)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in TENSOR_FIELDS
                               if getattr(self, k) is not None}
        if self.num_images:
            out["num_images"] = self.num_images
        return out

    def __bool__(self) -> bool:
        """True when any condition other than num_images is set."""
        return any(getattr(self, k) is not None for k in TENSOR_FIELDS)

    @property
    def conditional(self) -> bool:
        """True when a class or a caption is given (what classifier-free guidance drops)."""
        return self.class_labels is not None or self.text_emb is not None

    def merged(self, **keywords) -> Cond:
        """This Cond with the keyword conditions of a model call added (None or 0: not
        given); a TypeError when both give the same field."""
        given = {k: v for k, v in keywords.items() if v is not None and not (
            k == "num_images" and v == 0)}
        Cond.of(given)  # unknown names are a TypeError that lists the fields
        clash = sorted(k for k in given if _is_set(getattr(self, k)))
        if clash:
            raise TypeError(f"condition(s) {clash} given both in the Cond and as keywords")
        return replace(self, **given) if given else self

    def replace(self, **changes) -> Cond:
        """A copy with `changes` (field name -> value)."""
        return replace(self, **changes)

    def repeat(self, times: int = 2) -> Cond:
        """Every tensor stacked `times` times along the batch (one batched CFG forward)."""
        return self._map(lambda v: torch.cat([v] * times))

    def to(self, device: torch.device | str) -> Cond:
        """Every tensor on `device`."""
        return self._map(lambda v: v.to(device))

    def frames(self, index) -> Cond:
        """The conditions of a window of frames: the low-res video cut to `index` (dim 2)."""
        return self if self.lowres is None else replace(self, lowres=self.lowres[:, :, index])

    def _map(self, fn) -> Cond:
        return replace(self, **{k: fn(getattr(self, k)) for k in TENSOR_FIELDS
                                if getattr(self, k) is not None})


def _is_set(value) -> bool:
    return value is not None and not (isinstance(value, int) and value == 0)


CALL_FIELDS = ("class_labels", "text_emb", "text_mask", "cond_mask", "num_images", "lowres",
               "guidance")


def call_conditions(cond: Cond | None, **keywords) -> tuple:
    """The conditions of a network call, given as one `Cond` and / or as keywords, merged
    (`Cond.merged`): the values of CALL_FIELDS in that order. What the U-Net and the DiT
    do first with their arguments."""
    if cond is None:
        return tuple(keywords[k] for k in CALL_FIELDS)
    merged = cond.merged(**keywords)
    return tuple(getattr(merged, k) for k in CALL_FIELDS)
