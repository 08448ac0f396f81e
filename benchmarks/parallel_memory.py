"""Per-GPU memory of a full fine-tune under DDP and FSDP (ZeRO-3), counted without a GPU.

For each model, the fake-tensor counter of benchmarks/_memory.py measures, on one GPU:

- the parameter and optimizer totals: `count_training_step` on the float32 network (a tiny
  clip: these bytes do not depend on it). ``master`` = the counted weight bytes less the
  buffers (float32 parameters), ``optimizer`` = the counted AdamW state (two float32 moments
  a parameter, a step counter a tensor); ``buf`` = the buffers (rotary tables: replicated);
- the activations: the peak of the activation bytes live during the forward and the
  backward of one step at batch 1 (bf16 autocast, attention as a fused flash kernel, the
  batch included) on the network held in bf16, as FSDP2's ``MixedPrecisionPolicy(
  param_dtype=bf16)`` presents it (so autocast makes no weight copies); optimizer-step
  temporaries are not activations and are left out (FSDP steps on the shards).

Mixed precision is ZeRO's (Rajbhandari et al. 2020, 2 + 2 + 12 bytes a parameter): bf16
compute parameters ``compute`` = 2 P, bf16 gradients ``grads`` = 2 P, float32 master weights
and float32 AdamW moments. FSDP2's layout (float32 sharded parameters all-gathered in bf16,
gradients reduce-scattered to float32 shards) has the same 16 bytes a parameter. Then, with
``state = compute + master + grads + optimizer`` (P = parameters, all trained):

    DDP (any N):           gpu = state + buf + A
    FSDP-N (ZeRO-3):       gpu = state / N + buf + gather + A
    FSDP-N + SP-S:         gpu = state / N + buf + gather + (A - A_tok) + A_tok / S
    FSDP-N + offload:      gpu = buf + gather + A;   host = state / N per GPU

    gather = 2 B * (root + GATHER_UNITS * U) + 2 B * U

The FSDP units are the blocks (each item of the network's ModuleLists: Wan's blocks, the
DiT's spatial and temporal blocks, the U-Net's stages); ``U`` is the largest unit's parameter
count, ``root`` the parameters outside the blocks (embedders, final layer), which FSDP2 keeps
gathered through the step. Assumed: GATHER_UNITS = 2 units gathered in bf16 at once (the one
running and the next, prefetched), plus one unit's unsharded bf16 gradient before its
reduce-scatter. Sequence parallelism (Ulysses-style, S GPUs share one sample) divides only
the part of A that scales with the tokens: A is counted at the clip and at a shorter one
(fewer frames), A = A_fix + b * T, and ``A_tok = b * T``; the fixed part (the text
embeddings and what is made from them, timestep embeddings and modulations) stays whole.
On the U-Net the split is over frames (its spatial layers are per frame). With offload
(FSDP2's CPUOffloadPolicy), the sharded parameters, gradients and AdamW state live in host
memory and the AdamW step runs on the CPU: they leave the GPU, which keeps the buffers, the
gathered units and the activations.

The sum is an upper bound in one respect: the full gradients (DDP) and the gathered units
are added to the activations' peak, though the gradients grow as the backward frees
activations. Not counted: the CUDA context and workspaces (~1 GiB, hence "fits" = at most
FIT_GIB of an 80 GB card's 79.1 GiB), allocator fragmentation, NCCL buffers, the all-to-all
buffers of sequence parallelism, DDP's gradient buckets (``gradient_as_bucket_view=True``).

    python benchmarks/parallel_memory.py [--models wan-14b,dit-xl,vdm-ucf101] [--tiny]
        [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import video_model_memory as V  # noqa: E402
from _memory import (  # noqa: E402
    GIB,
    FusedAttention,
    StorageCounter,
    count_training_step,
    train_step,
)

GATHER_UNITS = 2  # units all-gathered at once (the running one and the prefetched next)
FIT_GIB = 78  # "fits 80 GB": an H100 80GB shows 79.1 GiB; ~1 GiB for context and workspaces
BF16 = 2  # bytes of a bf16 number
# (label, GPUs N, sequence-parallel S, offload); DDP's row holds for any N
STRATEGIES = (("DDP", 1, 1, False), ("FSDP-8", 8, 1, False), ("FSDP-64", 64, 1, False),
              ("FSDP-8 + SP-8", 8, 8, False), ("FSDP-8 + offload", 8, 1, True))


@dataclass(frozen=True)
class Model:
    """A network to count: how to build it, its clip (full and short) and its forward."""

    clip: str  # the clip as the table states it
    build: Callable[[bool], nn.Module]  # checkpointing -> the float32 network on meta
    batch: Callable[[str], dict]  # "full" / "short" / "state" -> the batch (fake mode)
    tokens: Callable[[str], int]  # the same -> tokens (or positions) per sample
    forward: Callable  # (network, batch) -> prediction


# --- Wan 2.1 (diffusers) via video_model_memory ------------------------------------------------
def _wan(spec: V.VideoModel, frames: int, height: int, width: int, short: int,
         label: str) -> Model:
    clips = {"full": frames, "short": short, "state": 1}
    recipe = V.Recipe("wan", "full", 0, height, width, frames, 1)

    def build(checkpointing: bool) -> nn.Module:
        net = V.build(spec, recipe)  # float32, all trained, checkpointing on
        if not checkpointing:
            net.disable_gradient_checkpointing()
        return net

    def rec(which):
        small = which == "state"
        return replace(recipe, frames=clips[which], height=32 if small else height,
                       width=32 if small else width)

    def tokens(which):
        f, h, w = V.latent_shape(spec, rec(which))
        return f * (h // spec.patch) * (w // spec.patch)

    return Model(label, build, lambda which: spec.batch(spec, rec(which), "cpu"), tokens,
                 spec.forward)


# --- vidiff's own DiT and U-Net ----------------------------------------------------------------
def _video(make: Callable[[bool], nn.Module], channels: int, frames: int, size: int,
           short: int, patch: int, label: str) -> Model:
    shapes = {"full": (frames, size), "short": (short, size), "state": (1, 8)}

    def batch(which):
        f, s = shapes[which]
        x = torch.empty(1, channels, f, s, s, dtype=torch.bfloat16)
        return {"x": x, "target": torch.empty_like(x), "t": torch.full((1,), 500)}

    def tokens(which):
        f, s = shapes[which]
        return f * (s // patch) ** 2

    def build(checkpointing):
        with torch.device("meta"):
            return make(checkpointing).train()

    return Model(label, build, batch, tokens, lambda net, b: net(b["x"], b["t"]))


def _dit(preset: str) -> Callable[[bool], nn.Module]:
    from vidiff.models import DiT, dit_config

    return lambda ckpt: DiT(dit_config(preset, in_channels=4, out_channels=4,
                                       gradient_checkpointing=ckpt))


def _unet(preset: str) -> Callable[[bool], nn.Module]:
    from vidiff.models import build_unet

    return lambda ckpt: build_unet(preset, gradient_checkpointing=ckpt)


TINY_WAN = {**V.WAN_1_3B, "num_attention_heads": 2, "attention_head_dim": 16, "text_dim": 64,
            "freq_dim": 32, "ffn_dim": 64, "num_layers": 2}  # as tests/test_memory_count.py


def models(tiny: bool = False) -> dict[str, Model]:
    """The models of the table (full size), or tiny ones of the same kinds (the test's)."""
    if tiny:
        wan = replace(V.MODELS["wan-1.3b"], config=TINY_WAN, text_tokens=8, text_dim=64)
        return {
            "wan-14b": _wan(wan, 17, 32, 32, 9, "17x32x32 (tiny Wan)"),
            "dit-xl": _video(_dit("dit-tiny"), 4, 4, 8, 2, 2, "latent 4x4x8x8 (dit-tiny)"),
            "vdm-ucf101": _video(_unet("tiny"), 3, 4, 16, 2, 1, "4x16x16 RGB (unet tiny)"),
        }
    return {
        "wan-14b": _wan(V.MODELS["wan-14b"], 81, 480, 832, 41, "81x480x832 (latent 21x60x104)"),
        # DiT-XL/2 on SD-VAE latents (docs/DIT.md's inflated DiT-XL-2-256): 16 x 256 x 256
        "dit-xl": _video(_dit("dit-xl"), 4, 16, 32, 8, 2,
                         "16x256x256 (SD-VAE latent 4x16x32x32)"),
        # the VDM UCF-101 model's own clip: 16 frames of 64 x 64 RGB, pixel space
        "vdm-ucf101": _video(_unet("vdm-ucf101"), 3, 16, 64, 8, 1, "16x64x64 RGB (pixels)"),
    }


# --- the counts ----------------------------------------------------------------------------------
class _ActivationPeak(StorageCounter):
    """`StorageCounter` that also keeps the largest activation bytes live in the forward and
    the backward (``act_peak``), apart from the step's total peak."""

    def __init__(self) -> None:
        super().__init__()
        self.act_peak = 0

    def track(self, tensor: torch.Tensor, kind: str, retag: bool = False) -> None:
        super().track(tensor, kind, retag)
        if self.phase in ("forward", "backward"):
            self.act_peak = max(self.act_peak, self.live["activations"])


class _NoStep:
    """The optimizer of an activation count: no step (FSDP steps on the shards)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def step(self) -> None:
        pass

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.model.zero_grad(set_to_none=True)


def count_activations(net: nn.Module, make_batch: Callable[[], dict],
                      forward: Callable) -> tuple[int, int]:
    """(peak activation bytes of the forward and backward, attention calls) of one training
    step of `net` (on meta; materialised as fake tensors, held in bf16, all trained)."""
    for p in net.parameters():
        p.data = p.data.to(torch.bfloat16)
        p.requires_grad_(True)
    with FakeTensorMode(allow_non_fake_inputs=True):
        net.to_empty(device="cpu")
        batch = make_batch()
        counter = _ActivationPeak()
        for t in [*net.parameters(), *net.buffers()]:
            counter.track(t, "weights")
        for t in tree_flatten(batch)[0]:
            if isinstance(t, torch.Tensor):
                counter.track(t, "activations")
        hooks = [p.register_post_accumulate_grad_hook(
            lambda p: counter.track(p.grad, "gradients", retag=True)) for p in net.parameters()]
        try:
            with counter, FusedAttention() as attention:
                train_step(net, _NoStep(net), batch, forward, counter=counter)
        finally:
            for h in hooks:
                h.remove()
    return counter.act_peak, attention.calls


def unit_params(net: nn.Module) -> tuple[list[int], int]:
    """(parameters of each FSDP unit: the items of the network's ModuleLists, the root's)."""
    units = [sum(p.numel() for p in unit.parameters()) for child in net.children()
             if isinstance(child, nn.ModuleList) for unit in child]
    return units, sum(p.numel() for p in net.parameters()) - sum(units)


def count_model(model: Model) -> dict:
    """The counted single-GPU numbers of `model` (bytes): state totals, units, activations
    at the full and the short clip, with and without checkpointing."""
    start = time.perf_counter()
    step = count_training_step(model.build(True), lambda: model.batch("state"), model.forward)
    net = model.build(True)
    units, root = unit_params(net)
    buffers = sum(b.numel() * b.dtype.itemsize for b in net.buffers())
    out = {"clip": model.clip, "params": step.params, "master": step.weights - buffers,
           "buffers": buffers,
           "optimizer": step.optimizer, "compute": BF16 * step.params,
           "grads": BF16 * step.trainable, "units": len(units), "largest_unit": max(units),
           "root": root, "tokens": model.tokens("full"), "short_tokens": model.tokens("short")}
    for ckpt in (True, False):
        key = "ckpt" if ckpt else "no_ckpt"
        full, calls = count_activations(model.build(ckpt), lambda: model.batch("full"),
                                        model.forward)
        short, _ = count_activations(model.build(ckpt), lambda: model.batch("short"),
                                     model.forward)
        per_token = (full - short) / (out["tokens"] - out["short_tokens"])
        out[f"act_{key}"] = full
        out[f"act_short_{key}"] = short
        out[f"act_tokens_{key}"] = per_token * out["tokens"]  # A_tok = b * T
        out[f"attention_calls_{key}"] = calls
    out["count_seconds"] = round(time.perf_counter() - start, 1)
    return out


# --- the sharded rows, by the module docstring's formulas ----------------------------------------
def state_bytes(c: dict) -> int:
    """compute + master + grads + optimizer: the unsharded training state (bytes)."""
    return c["compute"] + c["master"] + c["grads"] + c["optimizer"]


def gather_bytes(c: dict) -> int:
    """FSDP's transient unsharded bytes: root + GATHER_UNITS units of bf16 parameters, one
    unit's bf16 gradient."""
    return BF16 * (c["root"] + GATHER_UNITS * c["largest_unit"]) + BF16 * c["largest_unit"]


def per_gpu(c: dict, strategy: str, gpus: int, sp: int, offload: bool,
            checkpointing: bool) -> dict:
    """One row: the per-GPU bytes of `c`'s model under a strategy."""
    key = "ckpt" if checkpointing else "no_ckpt"
    act, tok = c[f"act_{key}"], c[f"act_tokens_{key}"]
    activations = act - tok + tok / sp
    fsdp = strategy != "DDP"
    sharded = state_bytes(c) / gpus if fsdp else float(state_bytes(c))
    host = sharded if offload else 0.0
    gpu_state = (0.0 if offload else sharded) + c["buffers"]  # buffers: replicated, on GPU
    gather = gather_bytes(c) if fsdp else 0
    total = gpu_state + gather + activations
    return {"strategy": strategy, "gpus": gpus if fsdp else None, "sp": sp,
            "offload": offload, "checkpointing": checkpointing, "state": gpu_state,
            "gather": gather, "activations": activations, "total": total, "host": host,
            "fits": total <= FIT_GIB * GIB}


def rows(name: str, c: dict) -> list[dict]:
    """Every strategy, with and without checkpointing, for the counted model `c`."""
    return [{"model": name, "clip": c["clip"], **per_gpu(c, s, n, sp, off, ckpt)}
            for ckpt in (True, False) for s, n, sp, off in STRATEGIES]


def table(all_rows: list[dict]) -> str:
    """The markdown table of `all_rows`."""
    head = ["model", "clip", "strategy", "checkpointing", "per-GPU (GiB)", "fits 80 GB",
            "state (GiB)", "gather (GiB)", "activations (GiB)", "host per GPU (GiB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in all_rows:
        cells = [r["model"], r["clip"], r["strategy"], "yes" if r["checkpointing"] else "no",
                 f"{r['total'] / GIB:.1f}", "yes" if r["fits"] else "no",
                 f"{r['state'] / GIB:.2f}", f"{r['gather'] / GIB:.2f}",
                 f"{r['activations'] / GIB:.2f}",
                 f"{r['host'] / GIB:.2f}" if r["offload"] else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


NOTES = f"""\
Per GPU, batch 1 per data-parallel rank. state: bf16 parameters and gradients, float32 master
weights and AdamW moments (16 B a parameter; DDP full, FSDP-N / N; with offload, in host
memory: the host column). gather: FSDP's unsharded root + {GATHER_UNITS} blocks of bf16
parameters + one block's bf16 gradient. activations: counted peak of the forward and backward
(flash attention); SP-8 divides the part that scales with the tokens by 8. Fits: at most
{FIT_GIB} GiB (CUDA context, NCCL and allocator fragmentation not counted)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="wan-14b,dit-xl,vdm-ucf101",
                        help="comma list: wan-14b, dit-xl, vdm-ucf101")
    parser.add_argument("--tiny", action="store_true", help="tiny configs (the test's)")
    parser.add_argument("--json", default=None, help="write the machine, counts and rows here")
    args = parser.parse_args()
    table_models = models(args.tiny)
    names = [n for n in args.models.split(",") if n]
    for name in names:
        if name not in table_models:
            parser.error(f"unknown model {name!r}; choose from {', '.join(table_models)}")
    counted, all_rows = {}, []
    for name in names:
        counted[name] = count_model(table_models[name])
        print(f"  {name}: {counted[name]['params'] / 1e9:.3f}B parameters, counted in "
              f"{counted[name]['count_seconds']} s", file=sys.stderr, flush=True)
        all_rows += rows(name, counted[name])
    print(table(all_rows))
    print("\n" + NOTES)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": V.machine(), "tiny": args.tiny, "counted": counted,
                       "rows": all_rows, "strategies": [asdict_s(s) for s in STRATEGIES]},
                      f, indent=1)


def asdict_s(strategy: tuple) -> dict:
    """A STRATEGIES entry as JSON."""
    return dict(zip(("label", "gpus", "sp", "offload"), strategy, strict=True))


if __name__ == "__main__":
    main()
