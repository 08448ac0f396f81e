"""`vidiff.Cond`: one typed object for a batch's conditions, equal to the keyword form."""

import pytest
import torch
from _tolerance import NETWORK, assert_close_to

import vidiff
from vidiff import Cond
from vidiff.models import build_unet, build_videofusion
from vidiff.sampling.guidance import ClassifierFreeGuidance


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = build_unet("tiny", num_classes=4, text_dim=8).eval()
    with torch.no_grad():  # the class and null embeddings start at zero: make them matter
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _inputs(gen, b=2, frames=3):
    x = torch.randn(b, 3, frames, 16, 16, generator=gen)
    t = torch.randint(0, 1000, (b,), generator=gen)
    return x, t


def test_a_cond_equals_its_keywords(net, gen):
    x, t = _inputs(gen)
    labels, mask = torch.tensor([1, 3]), torch.tensor([True, False])
    text = torch.randn(2, 5, 8, generator=gen)
    tmask = torch.ones(2, 5, dtype=torch.bool)
    cond = Cond(class_labels=labels, cond_mask=mask, text_emb=text, text_mask=tmask)
    with torch.no_grad():
        want = net(x, t, class_labels=labels, cond_mask=mask, text_emb=text, text_mask=tmask)
        # exact: a Cond is unpacked into these very keywords, the same computation follows
        torch.testing.assert_close(net(x, t, cond), want, rtol=0, atol=0)
        # part in the Cond, part as keywords
        part = net(x, t, Cond(class_labels=labels), cond_mask=mask, text_emb=text,
                   text_mask=tmask)
        torch.testing.assert_close(part, want, rtol=0, atol=0)
        assert not torch.equal(net(x, t, Cond(class_labels=labels.flip(0))), net(x, t, cond))
    with pytest.raises(TypeError, match=r"\['class_labels'\] given both"):
        net(x, t, Cond(class_labels=labels), class_labels=labels)


def test_videofusion_takes_a_cond(gen):
    torch.manual_seed(1)
    model = build_videofusion("tiny", "tiny", base_overrides={"num_classes": 4},
                              num_classes=4).eval()
    x, t = _inputs(gen, frames=4)
    labels = torch.tensor([0, 2])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, Cond(class_labels=labels)),
                                   model(x, t, class_labels=labels), rtol=0, atol=0)


def test_of_kwargs_repeat_and_frames(gen):
    low = torch.randn(2, 3, 6, 4, 4, generator=gen)
    cond = Cond.of({"class_labels": torch.tensor([1, 2]), "lowres": low, "num_images": 2})
    assert set(cond.kwargs()) == {"class_labels", "lowres", "num_images"}
    assert Cond().kwargs() == {} and not Cond(num_images=3) and cond and cond.conditional
    twice = cond.repeat(2)
    assert twice.class_labels.tolist() == [1, 2, 1, 2] and twice.lowres.shape[0] == 4
    assert twice.num_images == 2  # not a tensor: unchanged
    window = cond.frames(slice(2, 5))
    torch.testing.assert_close(window.lowres, low[:, :, 2:5])
    assert Cond.of(cond) is cond and Cond.of(None) == Cond()
    with pytest.raises(TypeError, match="unknown condition.*'labels'.*class_labels"):
        Cond.of({"labels": torch.tensor([1])})


def test_sampling_and_guidance_take_a_cond_or_a_dict(net):
    diffusion = vidiff.Diffusion(schedule="cosine", timesteps=50, prediction="v")
    labels = torch.tensor([0, 3])
    runs = []
    for cond in (Cond(class_labels=labels), {"class_labels": labels}):
        guided = ClassifierFreeGuidance(net, 2.0)
        runs.append(vidiff.sample(guided, (2, 3, 3, 16, 16), diffusion=diffusion,
                                  sampler="ddim", steps=3, cond=cond,
                                  generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    # guidance: uncond + w (cond - uncond) with the batched forward = two forwards
    x, t = torch.randn(2, 3, 3, 16, 16), torch.tensor([10, 40])
    with torch.no_grad():
        both = ClassifierFreeGuidance(net, 3.0)(x, t, class_labels=labels)
        two = ClassifierFreeGuidance(net, 3.0, batched=False)(x, t, class_labels=labels)
        c = net(x, t, class_labels=labels, cond_mask=torch.ones(2, dtype=torch.bool))
        u = net(x, t, class_labels=labels, cond_mask=torch.zeros(2, dtype=torch.bool))
    # w = 3: (1 - w) u + w c amplifies the forwards' rounding up to |1 - w| + w = 5 times
    assert_close_to(both, two, 8 * NETWORK)
    assert_close_to(both, u + 3.0 * (c - u), 8 * NETWORK)


def test_diffusion_loss_takes_a_cond(net, gen):
    diffusion = vidiff.Diffusion(schedule="cosine", timesteps=1000, prediction="v")
    x, t = _inputs(gen)
    noise = torch.randn(x.shape, generator=gen)
    labels = torch.tensor([2, 1])
    with torch.no_grad():
        a = vidiff.diffusion_loss(net, diffusion, x, t, noise, cond=Cond(class_labels=labels))
        b = vidiff.diffusion_loss(net, diffusion, x, t, noise, class_labels=labels)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
