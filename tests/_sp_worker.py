"""One rank of tests/test_sequence_parallel.py (launched by torchrun, gloo): a tiny DiT's
output and summed parameter gradients with Ulysses sequence parallelism over the world group
against the same model run whole on this process. Prints one JSON line of the largest
differences per case, then OK."""

import json

import torch
import torch.distributed as dist
from _sd_helpers import random_weights

from vidiff.models import DiT, dit_config
from vidiff.models.sequence_parallel import sum_gradients

BOUND = 1e-5  # fp32: within BOUND * max(1, max|reference|)


def _run(model, x, t, kwargs, weight):
    """(output, {name: gradient}) of the loss sum(output * weight)."""
    model.zero_grad(set_to_none=True)
    out = model(x, t, **kwargs)
    (out * weight).sum().backward()
    if model.sequence_group is not None:
        sum_gradients(model, model.sequence_group)
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                          if p.grad is not None}


def _case(name, cfg, x, kwargs, checkpointing=False):
    torch.manual_seed(0)  # the same weights on every rank
    model = random_weights(DiT(cfg), std=0.1)
    model.set_gradient_checkpointing(checkpointing)
    g = torch.Generator().manual_seed(1)
    t = torch.tensor([3, 870])
    weight = torch.randn(x.shape, generator=g)
    want, want_grads = _run(model, x, t, kwargs, weight)
    model.enable_sequence_parallel(dist.group.WORLD)
    got, got_grads = _run(model, x, t, kwargs, weight)
    model.enable_sequence_parallel(None)
    assert want.abs().max() > 0.1 and got.shape == x.shape
    assert got_grads.keys() == want_grads.keys() and len(want_grads) > 0
    diffs = {"out": float((got - want).abs().max())}
    ok = diffs["out"] <= BOUND * max(1.0, float(want.abs().max()))
    diffs["grad"] = diffs["grad_relative"] = 0.0
    for key, ref in want_grads.items():
        diff, scale = float((got_grads[key] - ref).abs().max()), max(1.0, float(ref.abs().max()))
        assert diff <= BOUND * scale, (name, key, diff)
        diffs["grad"] = max(diffs["grad"], diff)
        diffs["grad_relative"] = max(diffs["grad_relative"], diff / scale)
    assert ok, (name, diffs)
    return diffs


def main():
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    video = torch.randn(2, 3, 4, 8, 8, generator=g)  # 4x4 patches: 8 tokens per rank
    text = torch.randn(2, 5, 12, generator=g)
    text_mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    cond = {"class_labels": torch.tensor([1, 4]), "text_emb": text, "text_mask": text_mask}
    cfg = dit_config("dit-tiny", heads=4, num_classes=5, text_dim=12)
    diffs = {
        "video": _case("video", cfg, video,
                       {**cond, "num_images": 1, "cond_mask": torch.tensor([True, False])}),
        "image": _case("image", dit_config("dit-tiny", temporal=False, num_classes=5,
                                           text_dim=12), video[:, :, 0], cond),
        "checkpointing": _case("checkpointing", dit_config(
            "dit-tiny", adaln="single", num_classes=5, text_dim=12), video, cond,
            checkpointing=True),
    }
    if dist.get_rank() == 0:
        print(json.dumps(diffs))
    dist.barrier()
    dist.destroy_process_group()
    print("OK")


if __name__ == "__main__":
    main()
