"""The guidance scale as a network input (guided distillation's student): the U-Net, the DiT
and VideoFusion built with `guidance_embed` compute, at every scale, what the same weights
without it compute until the embedding is trained; after a change to it the scale matters,
per sample and per frame row; a model built without it refuses a scale in one line."""

import pytest
import torch

from vidiff import Cond
from vidiff.models.dit import DiT
from vidiff.models.dit_config import DiTConfig
from vidiff.models.presets import build_unet
from vidiff.models.videofusion import build_videofusion

pytestmark = pytest.mark.usefixtures("one_thread")


def unet(guided):
    return build_unet("tiny", num_classes=3, guidance_embed=guided)


def dit(guided):
    return DiT(DiTConfig(in_channels=3, out_channels=3, patch_size=4, hidden=32, depth=2,
                         heads=2, num_classes=3, guidance_embed=guided))


def videofusion(guided):
    return build_videofusion(build_unet("tiny", temporal=False, num_classes=3,
                                        guidance_embed=guided), "tiny", num_classes=3,
                             guidance_embed=guided)


@pytest.mark.parametrize("build", [unet, dit, videofusion], ids=["unet", "dit", "videofusion"])
def test_the_scale_starts_inert_then_matters_per_sample(build):
    torch.manual_seed(0)
    guided, plain = build(True), build(False)
    with torch.no_grad():  # zero-initialized output layers would hide every input
        for name, p in guided.named_parameters():
            if "guidance_embed." not in name and p.ndim and not p.any():
                p.normal_(0, 0.1)
    own = guided.state_dict()
    plain.load_state_dict({k: v for k, v in own.items() if "guidance_embed." not in k})
    assert any("guidance_embed." in k for k in own)
    x, t = torch.randn(2, 3, 4, 16, 16), torch.tensor([3, 700])
    cond = Cond(class_labels=torch.tensor([0, 2]), cond_mask=torch.tensor([True, False]))
    with torch.no_grad():
        base = plain(x, t, cond)
        for w in (None, torch.tensor([1.0, 4.0])):
            assert torch.equal(guided(x, t, cond.replace(guidance=w)), base)
        for name, p in guided.named_parameters():  # train the embedding a little
            if "guidance_embed." in name:
                p.add_(0.05 * torch.randn_like(p))
        one = guided(x, t, cond.replace(guidance=torch.tensor([1.0, 1.0])))
        two = guided(x, t, cond.replace(guidance=torch.tensor([1.0, 4.0])))
    assert torch.equal(one[0], two[0])  # sample 0's scale did not change
    assert not torch.allclose(one[1], two[1])
    with pytest.raises(ValueError, match="guidance_embed=False"):
        plain(x, t, cond.replace(guidance=torch.ones(2)))
