"""Small random networks with the interfaces of the metric networks (fast metric tests)."""

import torch

from vidiff.metrics import random_init_


class TinyVideoDetector(torch.nn.Module):
    """A small random 3D-conv detector with the StyleGAN-V call signature (scriptable)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 12, 3, stride=2)
        random_init_(self, torch.Generator().manual_seed(9))

    def forward(self, x, rescale: bool = False, resize: bool = False,
                return_features: bool = False):
        x = x.float() / 255 * 2 - 1 if rescale else x.float()
        h = torch.relu(self.conv(x))
        return torch.cat([h.mean((2, 3, 4)), h.std((2, 3, 4))], 1)  # (B, 24)


class TinyImageFeatures(torch.nn.Module):
    """A small random conv feature net with FIDInceptionV3's interface; ``logit_scale``
    sharpens the 10 class predictions taken from the features."""

    def __init__(self, logit_scale: float = 1.0):
        super().__init__()
        self.logit_scale = logit_scale
        self.conv = torch.nn.Conv2d(3, 16, 5, stride=2)
        random_init_(self, torch.Generator().manual_seed(10))

    def forward(self, x):
        h = torch.relu(self.conv(2 * x - 1))
        return torch.cat([h.mean((2, 3)), h.std((2, 3))], 1)  # (N, 32)

    def features_and_logits(self, x):
        pool = self.forward(x)
        return pool, self.logit_scale * pool[:, :10]
