"""The Inception-v1 I3D network (Carreira & Zisserman, 2017) of FVD, loadable from local files.

`InceptionI3d` is written from scratch to be state-dict compatible with
``piergiaj/pytorch-i3d`` (``pytorch_i3d.py``): the same module names
(``Conv3d_1a_7x7.conv3d.weight``, ``Conv3d_1a_7x7.bn.running_mean``,
``Mixed_3b.b1b.conv3d.weight``, ``logits.conv3d.bias``, ...), shapes, BatchNorm settings
(eps 1e-3) and the same forward pass:

- every convolution and max pool pads like TensorFlow's ``'SAME'`` at run time: along an axis of
  size ``s`` with kernel ``k`` and stride ``r`` the total padding is ``max(k - r, 0)`` if ``r``
  divides ``s`` else ``max(k - s % r, 0)``, split ``pad // 2`` before and the rest after
  (`same_padding`). The max pools pad with zeros, as pytorch-i3d does (``F.pad``); all of
  them follow a ReLU, so this equals TensorFlow's padding that never wins the max;
- the head is ``AvgPool3d((2, 7, 7), stride 1)`` -> dropout -> 1x1x1 conv with bias, giving
  per-time-step logits ``(B, classes, T')`` (``T' = ceil(F / 8) - 1``).

So the network needs at least 9 frames and 193x193 pixels (224x224 is the trained size).

`I3D` wraps the network with the call signature of the TorchScript detector of StyleGAN-V's
FVD (``i3d_torchscript.pt``): ``detector(x, rescale=False, resize=False, return_features=False)``
with

- ``rescale``: ``x`` holds values in [0, 255] (uint8 or float) -> ``x / 255 * 2 - 1``;
- ``resize``: resize every frame to 224x224 (trilinear with the time axis unchanged, i.e.
  bilinear per frame, ``align_corners=False``, like the commented-out resizes in StyleGAN-V's
  ``metric_utils.py``; the exact resize inside StyleGAN-V's file could not be checked here, and
  when that file is loaded its own code runs, so this only concerns our wrapper);
- ``return_features``: return the 400 Kinetics logits averaged over time, before the softmax
  (the tensor ``RGB/inception_i3d/Mean:0`` that the TF-hub FVD of Unterthiner et al. embeds
  with); otherwise the softmax probabilities.

`load_i3d` reads either file people have: a pytorch-i3d state dict (``rgb_imagenet.pt``,
``rgb_charades.pt`` with 157 classes, TATS' ``i3d_pretrained_400.pt``), or the TorchScript
``i3d_torchscript.pt``. The wrapper is scriptable, so ``torch.jit.script(I3D(net))`` saved with
``torch.jit.save`` is called exactly like StyleGAN-V's file.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidiff.metrics.weights import (
    is_torchscript_file,
    load_state_dict_into,
    load_torchscript,
    read_state_dict,
)

__all__ = [
    "same_padding",
    "Unit3D",
    "MaxPool3dSamePadding",
    "InceptionModule",
    "InceptionI3d",
    "I3D",
    "load_i3d",
    "I3D_STATE_DICT",
    "I3D_TORCHSCRIPT",
    "I3D_MIN_FRAMES",
    "I3D_MIN_SIZE",
]

#: Descriptions of the expected files, used in error messages.
I3D_STATE_DICT = (
    "a pytorch-i3d InceptionI3d state dict (rgb_imagenet.pt / rgb_charades.pt; keys like "
    "'Conv3d_1a_7x7.conv3d.weight', 'Mixed_3b.b0.conv3d.weight', 'logits.conv3d.weight')"
)
I3D_TORCHSCRIPT = (
    "the TorchScript I3D of StyleGAN-V's FVD (i3d_torchscript.pt, called as "
    "detector(x, rescale=..., resize=..., return_features=...))"
)
I3D_MIN_FRAMES = 9  # the (2, 7, 7) head pool needs 2 time steps after three stride-2 stages
I3D_MIN_SIZE = 193  # ... and 7x7 pixels after a total spatial stride of 32
I3D_RESOLUTION = 224  # the trained input size; ``resize=True`` resizes to it


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF ``'SAME'`` padding ``(before, after)`` along one axis, as pytorch-i3d computes it."""
    if size % stride == 0:
        pad = max(kernel - stride, 0)
    else:
        pad = max(kernel - size % stride, 0)
    return pad // 2, pad - pad // 2


def _pad_same(x: Tensor, kernel: list[int], stride: list[int]) -> Tensor:
    t0, t1 = same_padding(x.shape[2], kernel[0], stride[0])
    h0, h1 = same_padding(x.shape[3], kernel[1], stride[1])
    w0, w1 = same_padding(x.shape[4], kernel[2], stride[2])
    return F.pad(x, [w0, w1, h0, h1, t0, t1])  # zeros, as pytorch-i3d


class Unit3D(nn.Module):
    """Conv3d (no padding, 'SAME' padding added at run time) -> BatchNorm3d -> ReLU.

    Keys: ``conv3d.weight`` (+ ``conv3d.bias`` without batch norm), ``bn.*``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        relu: bool = True,
        batch_norm: bool = True,
        bias: bool = False,
        bn_eps: float = 1e-3,
    ):
        super().__init__()
        self.kernel = list(kernel)
        self.stride = list(stride)
        self.relu = relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=0, bias=bias)
        # eps and momentum as pytorch-i3d (momentum only matters in training)
        self.bn = nn.BatchNorm3d(out_channels, eps=bn_eps, momentum=0.01) if batch_norm else (
            nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv3d(_pad_same(x, self.kernel, self.stride)))
        return F.relu(x) if self.relu else x


class MaxPool3dSamePadding(nn.Module):
    """Max pooling with run-time 'SAME' zero padding (no parameters)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel = list(kernel)
        self.stride = list(stride)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """The four-branch Inception block; ``out`` = (b0, b1a, b1b, b2a, b2b, b3b) channels."""

    def __init__(self, in_channels: int, out: tuple[int, ...], bn_eps: float = 1e-3):
        super().__init__()
        e = bn_eps
        self.b0 = Unit3D(in_channels, out[0], bn_eps=e)
        self.b1a = Unit3D(in_channels, out[1], bn_eps=e)
        self.b1b = Unit3D(out[1], out[2], (3, 3, 3), bn_eps=e)
        self.b2a = Unit3D(in_channels, out[3], bn_eps=e)
        self.b2b = Unit3D(out[3], out[4], (3, 3, 3), bn_eps=e)
        self.b3a = MaxPool3dSamePadding((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, out[5], bn_eps=e)

    def forward(self, x: Tensor) -> Tensor:
        b0 = self.b0(x)
        b1 = self.b1b(self.b1a(x))
        b2 = self.b2b(self.b2a(x))
        b3 = self.b3b(self.b3a(x))
        return torch.cat([b0, b1, b2, b3], dim=1)


# (name, in channels, branch channels) of the Inception blocks, as in the I3D paper / pytorch-i3d
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class InceptionI3d(nn.Module):
    """Inception-v1 I3D, state-dict compatible with pytorch-i3d's ``InceptionI3d``.

    ``forward(x)``: ``x`` ``(B, in_channels, F, H, W)`` in [-1, 1] -> logits
    ``(B, num_classes, T')`` per time step (``F >= 9``, ``H, W >= 193``; 224 is the trained
    size). ``extract_features(x)``: the pooled ``(B, 1024, T', 1, 1)`` features before the
    logits layer.
    """

    def __init__(self, num_classes: int = 400, in_channels: int = 3, bn_eps: float = 1e-3):
        super().__init__()
        self.num_classes = num_classes
        e = bn_eps
        # the head first: pytorch-i3d registers it before the end points (state-dict order)
        self.avg_pool = nn.AvgPool3d(kernel_size=(2, 7, 7), stride=(1, 1, 1))
        self.dropout = nn.Dropout(0.5)  # pytorch-i3d passes its dropout_keep_prob=0.5 as p
        self.logits = Unit3D(1024, num_classes, relu=False, batch_norm=False, bias=True)
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2), bn_eps=e)
        self.MaxPool3d_2a_3x3 = MaxPool3dSamePadding((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, bn_eps=e)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), bn_eps=e)
        self.MaxPool3d_3a_3x3 = MaxPool3dSamePadding((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(*_MIXED["Mixed_3b"], bn_eps=e)
        self.Mixed_3c = InceptionModule(*_MIXED["Mixed_3c"], bn_eps=e)
        self.MaxPool3d_4a_3x3 = MaxPool3dSamePadding((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionModule(*_MIXED["Mixed_4b"], bn_eps=e)
        self.Mixed_4c = InceptionModule(*_MIXED["Mixed_4c"], bn_eps=e)
        self.Mixed_4d = InceptionModule(*_MIXED["Mixed_4d"], bn_eps=e)
        self.Mixed_4e = InceptionModule(*_MIXED["Mixed_4e"], bn_eps=e)
        self.Mixed_4f = InceptionModule(*_MIXED["Mixed_4f"], bn_eps=e)
        self.MaxPool3d_5a_2x2 = MaxPool3dSamePadding((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule(*_MIXED["Mixed_5b"], bn_eps=e)
        self.Mixed_5c = InceptionModule(*_MIXED["Mixed_5c"], bn_eps=e)

    def extract_features(self, x: Tensor) -> Tensor:
        """The average-pooled Mixed_5c features ``(B, 1024, T', 1, 1)``."""
        x = self.Conv3d_1a_7x7(x)  # (B, 64, F/2, H/2, W/2)
        x = self.MaxPool3d_2a_3x3(x)  # (B, 64, F/2, H/4, W/4)
        x = self.Conv3d_2b_1x1(x)
        x = self.Conv3d_2c_3x3(x)  # (B, 192, F/2, H/4, W/4)
        x = self.MaxPool3d_3a_3x3(x)  # (B, 192, F/2, H/8, W/8)
        x = self.Mixed_3b(x)
        x = self.Mixed_3c(x)  # (B, 480, F/2, H/8, W/8)
        x = self.MaxPool3d_4a_3x3(x)  # (B, 480, F/4, H/16, W/16)
        x = self.Mixed_4b(x)
        x = self.Mixed_4c(x)
        x = self.Mixed_4d(x)
        x = self.Mixed_4e(x)
        x = self.Mixed_4f(x)  # (B, 832, F/4, H/16, W/16)
        x = self.MaxPool3d_5a_2x2(x)  # (B, 832, F/8, H/32, W/32)
        x = self.Mixed_5b(x)
        x = self.Mixed_5c(x)  # (B, 1024, F/8, H/32, W/32), sizes rounded up
        return self.avg_pool(x)  # (B, 1024, F/8 - 1, H/32 - 6, W/32 - 6)

    def forward(self, x: Tensor) -> Tensor:
        """Per-time-step logits ``(B, num_classes, T')`` (pytorch-i3d's spatial squeeze)."""
        x = self.logits(self.dropout(self.extract_features(x)))  # (B, classes, T', 1, 1)
        return x.squeeze(3).squeeze(3)


class I3D(nn.Module):
    """`InceptionI3d` behind the call signature of StyleGAN-V's ``i3d_torchscript.pt``.

    ``forward(x, rescale=False, resize=False, return_features=False)`` with ``x``
    ``(B, 3, F, H, W)``; see the module docstring for the flags. ``features="logits"`` (default)
    returns the time-averaged ``num_classes`` logits as features (the FVD embedding of the
    TF-hub reference and of StyleGAN-V); ``features="pool"`` returns the 1024-d pooled features
    averaged over time instead (the penultimate layer; not what published FVDs use).
    Scriptable with ``torch.jit.script``.
    """

    def __init__(self, net: InceptionI3d, features: str = "logits"):
        super().__init__()
        if features not in ("logits", "pool"):
            raise ValueError(f"features must be 'logits' or 'pool', got {features!r}")
        self.net = net
        self.pool_features = features == "pool"
        self.resolution = I3D_RESOLUTION

    def forward(
        self, x: Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> Tensor:
        x = x.to(self.net.logits.conv3d.weight.dtype)
        if rescale:
            x = x / 255.0 * 2.0 - 1.0  # [0, 255] -> [-1, 1]
        if resize:
            size = [x.shape[2], self.resolution, self.resolution]
            x = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
        pooled = self.net.extract_features(x)  # (B, 1024, T', 1, 1)
        if return_features and self.pool_features:
            return pooled.mean(dim=(2, 3, 4))  # (B, 1024)
        logits = self.net.logits(self.net.dropout(pooled))  # (B, classes, T', 1, 1)
        logits = logits.mean(dim=(2, 3, 4))  # (B, classes): TF's reduce_mean over time
        if return_features:
            return logits
        return torch.softmax(logits, dim=1)


def _check_detector_signature(module: torch.jit.ScriptModule, path) -> None:
    names = [a.name for a in module.forward.schema.arguments]
    missing = [n for n in ("rescale", "resize", "return_features") if n not in names]
    if missing:
        raise ValueError(
            f"{str(path)!r} is a TorchScript module whose forward takes {names[1:]}, without "
            f"{missing}; expected {I3D_TORCHSCRIPT}"
        )


def load_i3d(
    path: str | os.PathLike,
    *,
    kind: str = "auto",
    features: str = "logits",
    bn_eps: float = 1e-3,
) -> nn.Module:
    """Load an I3D detector from a local file, on the CPU in eval mode.

    ``kind``: ``"state_dict"`` (a pytorch-i3d state dict -> `I3D` around `InceptionI3d`, the
    class count read from ``logits.conv3d.weight``), ``"torchscript"`` (StyleGAN-V's
    ``i3d_torchscript.pt``, returned as loaded), or ``"auto"`` (by the file's contents).
    ``features``: ``"logits"`` or ``"pool"`` (state dicts only; see `I3D`). ``bn_eps``: the
    BatchNorm epsilon (pytorch-i3d: 1e-3; TATS' copy of the code uses 1e-5 with its
    ``i3d_pretrained_400.pt``). Either way the result is called as
    ``detector(x, rescale=..., resize=..., return_features=...)``.

    Raises ``FileNotFoundError`` if the file is missing and ``ValueError`` if it is not the
    expected kind of file (with the keys that differ).
    """
    if kind not in ("auto", "state_dict", "torchscript"):
        raise ValueError(f"kind must be 'auto', 'state_dict' or 'torchscript', got {kind!r}")
    if kind == "auto":
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"weights file not found: {str(path)!r} (expected {I3D_STATE_DICT} or "
                f"{I3D_TORCHSCRIPT})"
            )
        kind = "torchscript" if is_torchscript_file(path) else "state_dict"
    if kind == "torchscript":
        if features != "logits":
            raise ValueError("a TorchScript detector returns its own features; use "
                             "features='logits' (the pooled features need a state dict)")
        module = load_torchscript(path, I3D_TORCHSCRIPT)
        _check_detector_signature(module, path)
        for p in module.parameters():
            p.requires_grad_(False)
        return module
    state = read_state_dict(path, I3D_STATE_DICT)
    weight = state.get("logits.conv3d.weight")
    num_classes = weight.shape[0] if weight is not None and weight.ndim == 5 else 400
    net = InceptionI3d(num_classes=num_classes, bn_eps=bn_eps)
    load_state_dict_into(net, state, path, I3D_STATE_DICT)
    return I3D(net, features=features).eval().requires_grad_(False)
