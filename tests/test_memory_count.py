"""The training-memory counter of benchmarks/_memory.py (used by video_model_memory.py): its
parameter and optimizer bytes against an analytic count, its activation bytes for a plain MLP
(with and without checkpointing) and for attention against hand derivations, the fused
attention stand-in against PyTorch's own fused CPU kernel, and the video benchmark's recipes
end to end on a tiny Wan."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import _memory as M  # noqa: E402
import video_model_memory as V  # noqa: E402

B, D, H = 4, 8, 32  # MLP batch, width, hidden width (H > D)
F32 = torch.float32


def _mlp() -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.GELU(), torch.nn.Linear(H, D))


def _mode(fake: bool):
    return FakeTensorMode() if fake else contextlib.nullcontext()


def _count_mlp(fake: bool, run):
    """(counter, mlp, out) of `run(mlp, x)` counted, the MLP's weights tracked as such."""
    with _mode(fake):
        mlp, x = _mlp(), torch.empty(B, D)
        counter = M.StorageCounter()
        for p in mlp.parameters():
            counter.track(p, "weights")
        with counter:
            out = run(mlp, x)
    return counter, mlp, out


@pytest.mark.parametrize("fake", [True, False], ids=["fake", "real"])
def test_mlp_activations_match_hand_derivation(fake):
    counter, mlp, out = _count_mlp(fake, lambda mlp, x: mlp(x))
    # saved for the backward: GELU's input y1 (B, H), the second Linear's input y2 (B, H);
    # and the output (B, D) we hold. x existed before and is not counted.
    expected = M.tensor_bytes((B, H), F32) * 2 + M.tensor_bytes((B, D), F32)
    assert counter.live["activations"] == expected
    assert counter.at_peak["activations"] == expected
    assert counter.live["weights"] == 4 * sum(p.numel() for p in mlp.parameters())
    del out


@pytest.mark.parametrize("fake", [True, False], ids=["fake", "real"])
def test_checkpointing_keeps_only_the_output(fake):
    counter, mlp, out = _count_mlp(fake, lambda mlp, x: checkpoint(mlp, x,
                                                                    use_reentrant=False))
    assert counter.live["activations"] == M.tensor_bytes((B, D), F32)  # nothing saved inside
    # inside, y1 and y2 are both live when y2 is made; then y2 and the output (H > D)
    assert counter.at_peak["activations"] == 2 * M.tensor_bytes((B, H), F32)
    del out


L, HEADS, E = 64, 2, 8  # attention tokens, heads, head width


def _qkv(dtype):
    return [torch.empty(1, HEADS, L, E, dtype=dtype, requires_grad=True) for _ in range(3)]


def _attention_bytes(run, dtype=torch.bfloat16) -> int:
    """Activation bytes live after `run(q, k, v)` (it returns the output, held while counting)
    on q, k, v of `dtype` made before the count."""
    with FakeTensorMode():
        qkv = _qkv(dtype)
        counter = M.StorageCounter()
        with counter:
            out = run(*qkv)
        bytes_ = counter.live["activations"]
        del out
    return bytes_


def test_attention_keeps_output_and_logsumexp_not_scores():
    out = M.tensor_bytes((1, HEADS, L, E), torch.bfloat16)
    lse = M.tensor_bytes((1, HEADS, L), F32)

    def fused(q, k, v):
        with M.FusedAttention() as attention:
            y = F.scaled_dot_product_attention(q, k, v)
        assert attention.calls == 1
        return y

    def native_flash(q, k, v):  # PyTorch's fused CPU kernel keeps the same
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v)

    def math(q, k, v):
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v)

    assert _attention_bytes(fused) == out + lse
    assert _attention_bytes(native_flash) == out + lse
    # the math path holds at least the L x L probabilities per head
    assert _attention_bytes(math) >= M.tensor_bytes((1, HEADS, L, L), torch.bfloat16)


def test_attention_under_autocast_keeps_bf16_copies_of_fp32_inputs():
    def run(q, k, v):
        with torch.autocast("cpu", dtype=torch.bfloat16), M.FusedAttention():
            y = F.scaled_dot_product_attention(q, k, v)
        assert y.dtype == torch.bfloat16
        return y

    bf16 = M.tensor_bytes((1, HEADS, L, E), torch.bfloat16)
    assert _attention_bytes(run, F32) == 4 * bf16 + M.tensor_bytes((1, HEADS, L), F32)
    assert F.scaled_dot_product_attention.__class__ is not M.FusedAttention  # restored


def test_training_step_weights_and_optimizer_match_analytic():
    with torch.device("meta"):
        net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64))
    net[0].requires_grad_(False)  # a frozen bf16 base, a trained fp32 part
    net[0].to(torch.bfloat16)

    def forward(model, batch):
        return model(batch["x"])

    step = M.count_training_step(net, lambda: {"x": torch.empty(1, 64, dtype=torch.bfloat16),
                                               "target": torch.empty(1, 64)}, forward)
    trained = 64 * 64 + 64
    assert step.params == 2 * trained and step.trainable == trained
    assert step.weights == 2 * trained + 4 * trained  # bf16 base + fp32 trained layer
    assert step.optimizer == 8 * trained + 4 * 2  # two fp32 moments + a step count per tensor
    # a tiny batch: the peak is AdamW's step (foreach keeps a sqrt of the second moment)
    assert step.peak_phase == "optimizer"
    assert step.gradients == 4 * trained
    assert 4 * trained <= step.activations < 4 * trained + 1024
    assert step.peak == step.weights + step.optimizer + step.gradients + step.activations


TINY_WAN = {**V.WAN_1_3B, "num_attention_heads": 2, "attention_head_dim": 16, "text_dim": 64,
            "freq_dim": 32, "ffn_dim": 64, "num_layers": 2}
TINY_RECIPE = V.Recipe("wan-1.3b", "lora", 4, height=32, width=32, frames=5, batch=1)


def _tiny_wan():
    return replace(V.MODELS["wan-1.3b"], config=TINY_WAN, text_tokens=8, text_dim=64)


def test_tiny_wan_lora_step_is_counted():
    spec = _tiny_wan()
    net = V.build(spec, TINY_RECIPE)
    lora = {n: p.numel() for n, p in net.named_parameters() if "lora_" in n}
    base = {n: p for n, p in net.named_parameters() if "lora_" not in n}
    weights = 4 * sum(lora.values()) + sum(p.numel() * p.dtype.itemsize for p in base.values())
    weights += sum(b.numel() * b.dtype.itemsize for b in net.buffers())
    assert {p.dtype for p in base.values()} == {torch.bfloat16, F32}  # kept fp32 modules too
    row = V.count(spec, TINY_RECIPE)
    assert row["trainable"] == sum(lora.values()) > 0
    # 6 LoRA targets per block (4 attention projections x 2 attentions + 2 feed-forward)
    assert len(lora) == 2 * TINY_WAN["num_layers"] * (2 * 4 + 2)
    assert row["weights"] == weights
    assert row["optimizer"] == 8 * row["trainable"] + 4 * len(lora)
    # 2 attentions per block, run in the forward and again in checkpointing's recompute
    assert row["attention_calls"] == 2 * 2 * TINY_WAN["num_layers"]
    assert row["latent"] == (2, 4, 4)


def test_tiny_wan_trains_for_real_on_cpu():
    """The path the CUDA measurement takes: only the LoRA weights change."""
    seen = {}

    def snapshot(net):  # the weights after the warm-up step
        seen.update({n: p.detach().clone() for n, p in net.named_parameters()})

    net = V.run_steps(_tiny_wan(), TINY_RECIPE, "cpu", after_warmup=snapshot)
    changed = {n for n, p in net.named_parameters() if not torch.equal(p, seen[n])}
    assert changed == {n for n, p in net.named_parameters() if p.requires_grad}
    assert changed and all("lora_" in n for n in changed)


@pytest.mark.parametrize(("name", "latent"), [("wan-1.3b-lora-r32", (21, 60, 104)),
                                              ("cogvideox-2b-lora-r64", (13, 60, 90)),
                                              ("ltx-video-lora-r32", (13, 16, 24))])
def test_recipe_latents(name, latent):
    recipe = V.RECIPES[name]
    assert V.latent_shape(V.MODELS[recipe.model], recipe) == latent


def test_bad_clip_is_refused_before_compute():
    bad = replace(V.RECIPES["wan-1.3b-lora-r32"], frames=80)
    with pytest.raises(ValueError, match="frames"):
        V.latent_shape(V.MODELS["wan-1.3b"], bad)
    with pytest.raises(ValueError, match="width"):
        V.latent_shape(V.MODELS["ltx-video"], replace(V.RECIPES["ltx-video-lora-r32"], width=700))


@pytest.mark.parametrize(("model", "low", "high"), [("wan-1.3b", 1.3e9, 1.5e9),
                                                    ("wan-14b", 13.5e9, 15e9),
                                                    ("cogvideox-2b", 1.6e9, 1.8e9),
                                                    ("cogvideox-5b", 5.3e9, 5.8e9),
                                                    ("ltx-video", 1.8e9, 2.0e9)])
def test_full_size_configs_have_the_checkpoints_size(model, low, high):
    net = V.build(V.MODELS[model], V.Recipe(model, "full", 0, 480, 832, 81, 1))
    assert low < sum(p.numel() for p in net.parameters()) < high
