"""The InceptionV3 of FID and IS (TensorFlow's 2015-12-05 graph), loadable from a local file.

`FIDInceptionV3` is written from scratch to be state-dict compatible with pytorch-fid's
``fid_inception_v3()`` (``mseitzer/pytorch-fid``, ``src/pytorch_fid/inception.py``: torchvision's
``Inception3(num_classes=1008, aux_logits=False)`` with the blocks patched to the TF graph) and
its weight file ``pt_inception-2015-12-05-6726825d.pth`` (torch-fidelity's
``weights-inception-2015-12-05-6726825d.pth`` uses the same key names). Keys like
``Conv2d_1a_3x3.conv.weight``, ``Conv2d_1a_3x3.bn.running_mean``,
``Mixed_5b.branch1x1.conv.weight``, ``Mixed_7c.branch_pool.conv.weight``, ``fc.weight``
(1008 x 2048), ``fc.bias``.

The forward pass is pytorch-fid's:

- input ``(N, 3, H, W)`` in [0, 1]; ``resize_input``: bilinear resize to 299x299
  (``align_corners=False``); ``normalize_input``: ``2 x - 1``;
- every convolution is conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU;
- the average-pool branches of the A, C and E blocks use ``count_include_pad=False`` (TF's
  average pool ignores the padding), and the last E block (``Mixed_7c``) max-pools its pool
  branch (a quirk of the TF graph);
- the FID features are the 2048-d global average pool ("pool3").

Inception Score uses ``logits(pool, bias=False)``: the original IS code (Salimans et al.,
``openai/improved-gan``) takes the softmax over all 1008 outputs of ``pool3 @ W`` with the weight
``W`` of ``softmax/logits/MatMul`` and no bias; torch-fidelity reproduces it as its
``logits_unbiased`` feature. We do the same (1008 classes, no bias, no truncation to 1000).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidiff.metrics.weights import load_state_dict_into, read_state_dict

__all__ = ["FIDInceptionV3", "load_fid_inception", "INCEPTION_STATE_DICT"]

#: Description of the expected file, used in error messages.
INCEPTION_STATE_DICT = (
    "the FID InceptionV3 state dict of pytorch-fid (pt_inception-2015-12-05-6726825d.pth; keys "
    "like 'Conv2d_1a_3x3.conv.weight', 'Mixed_5b.branch1x1.conv.weight', 'fc.weight' 1008x2048)"
)
INCEPTION_RESOLUTION = 299


class BasicConv2d(nn.Module):
    """Conv2d without bias -> BatchNorm2d(eps=1e-3) -> ReLU; keys ``conv.*``, ``bn.*``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: Tensor) -> Tensor:
    # TF's 3x3 'SAME' average pool divides by the number of real (unpadded) inputs
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pool branches."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """35x35 -> 17x17 reduction block."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class FIDInceptionC(nn.Module):
    """17x17 block with factorized 7x7 convolutions."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        bd = self.branch7x7dbl_3(self.branch7x7dbl_2(bd))
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(bd))
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 reduction block."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_2(self.branch7x7x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(b7))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class FIDInceptionE(nn.Module):
    """8x8 block with split 3x3 convolutions; ``max_pool`` for the pool branch of Mixed_7c."""

    def __init__(self, in_channels: int, max_pool: bool = False):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.max_pool:  # FIDInceptionE_2 of pytorch-fid
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _tf_avg_pool(x)
        bp = self.branch_pool(pooled)
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionV3(nn.Module):
    """InceptionV3 as pytorch-fid's ``fid_inception_v3`` (see the module docstring).

    ``forward(x)``: images ``(N, 3, H, W)`` in [0, 1] -> pool3 features ``(N, 2048)``.
    ``features_and_logits(x)``: ``(pool3, logits)`` with the IS logits (no bias by default).
    ``resize_input=False`` feeds images at their own size (at least 75x75); published FID/IS
    numbers use the default resize to 299.
    """

    def __init__(self, resize_input: bool = True, normalize_input: bool = True):
        super().__init__()
        self.resize_input = resize_input
        self.normalize_input = normalize_input
        # attribute order = torchvision Inception3's = the weight file's key order
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280)
        self.Mixed_7c = FIDInceptionE(2048, max_pool=True)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=0.5)
        self.fc = nn.Linear(2048, 1008)

    def _prepare(self, x: Tensor) -> Tensor:
        x = x.to(self.fc.weight.dtype)
        if self.resize_input:
            size = (INCEPTION_RESOLUTION, INCEPTION_RESOLUTION)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if self.normalize_input:
            x = 2 * x - 1  # [0, 1] -> [-1, 1]
        return x

    def forward(self, x: Tensor) -> Tensor:
        """pool3 features ``(N, 2048)`` of images ``(N, 3, H, W)`` in [0, 1]."""
        x = self._prepare(x)  # (N, 3, 299, 299)
        x = self.Conv2d_1a_3x3(x)  # (N, 32, 149, 149)
        x = self.Conv2d_2a_3x3(x)  # (N, 32, 147, 147)
        x = self.Conv2d_2b_3x3(x)  # (N, 64, 147, 147)
        x = self.maxpool1(x)  # (N, 64, 73, 73)
        x = self.Conv2d_3b_1x1(x)  # (N, 80, 73, 73)
        x = self.Conv2d_4a_3x3(x)  # (N, 192, 71, 71)
        x = self.maxpool2(x)  # (N, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (N, 288, 35, 35)
        x = self.Mixed_6a(x)  # (N, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # (N, 768, 17, 17)
        x = self.Mixed_7a(x)  # (N, 1280, 8, 8)
        x = self.Mixed_7c(self.Mixed_7b(x))  # (N, 2048, 8, 8)
        return torch.flatten(self.avgpool(x), 1)  # (N, 2048)

    def logits(self, pool: Tensor, bias: bool = False) -> Tensor:
        """The 1008 class logits of pool3 features; ``bias=False`` as the IS reference."""
        return F.linear(pool, self.fc.weight, self.fc.bias if bias else None)

    def features_and_logits(self, x: Tensor, bias: bool = False) -> tuple[Tensor, Tensor]:
        """``(pool3 (N, 2048), logits (N, 1008))`` of images in [0, 1]."""
        pool = self.forward(x)
        return pool, self.logits(pool, bias=bias)


def load_fid_inception(path: str | os.PathLike, **kwargs) -> FIDInceptionV3:
    """Load `FIDInceptionV3` from pytorch-fid's weight file, on the CPU in eval mode.

    ``kwargs`` go to `FIDInceptionV3` (``resize_input``, ``normalize_input``). Raises
    ``FileNotFoundError`` if the file is missing and ``ValueError`` if it is not that state dict
    (a TorchScript file, another network's weights, not a PyTorch file), listing keys that
    differ.
    """
    state = read_state_dict(path, INCEPTION_STATE_DICT)
    net = FIDInceptionV3(**kwargs)
    load_state_dict_into(net, state, path, INCEPTION_STATE_DICT)
    return net.eval().requires_grad_(False)
