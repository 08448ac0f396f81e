"""Checkpoints written by earlier versions keep loading and sample exactly as they did."""

from pathlib import Path

import numpy as np
import pytest
import torch
from _tolerance import NETWORK, assert_close_to
from safetensors.torch import load_file

from vidiff import Pipeline
from vidiff.cli import main
from vidiff.io import to_uint8

FIXTURE = Path(__file__).parent / "fixtures" / "v1_checkpoint"
CASES = {  # name in expected.safetensors -> (sampler, labels, guidance scale)
    "ddim5_seed3": ("ddim", None, 1.0),
    "ddpm5_seed3": ("ddpm", None, 1.0),
    "ddim5_seed3_class1_w2": ("ddim", [1], 2.0),
}


def expected(name: str) -> torch.Tensor:
    return load_file(FIXTURE / "expected.safetensors")[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_v1_checkpoint_samples_as_before(name):
    sampler, labels, scale = CASES[name]
    pipe = Pipeline.from_pretrained(FIXTURE)
    spec = pipe.spec
    assert spec.conditioning.class_names[1] == "a green ball" and spec.num_classes == 8
    assert (spec.shape.frames, spec.shape.size, spec.prior.name) == (4, 8, "progressive")
    videos = pipe(3, sampler=sampler, steps=5, class_labels=labels, guidance_scale=scale,
                  generator=torch.Generator().manual_seed(3))
    # recorded on another CPU: each of the 5 steps' forwards may round otherwise, and
    # guidance w amplifies a forward's rounding |1 - w| + w times
    amplified = abs(1 - scale) + scale
    assert_close_to(videos, expected(name), round(5 * amplified * NETWORK))


def test_v1_checkpoint_keeps_its_sampling_defaults(tmp_path):
    """A first-format run sampled with train.sampler / train.sample_steps and no guidance:
    `vidiff sample` with no options still does exactly that."""
    spec = Pipeline.from_pretrained(FIXTURE).spec
    assert (spec.sampling.sampler, spec.sampling.steps) == ("ddim", 5)
    assert spec.sampling.guidance_scale == 1.0
    out = tmp_path / "v.npy"
    assert main(["sample", str(FIXTURE), "-n", "3", "--seed", "3", "--out", str(out),
                 "--threads", "1"]) == 0
    want = to_uint8(expected("ddim5_seed3")).numpy()  # (N, F, H, W, C)
    assert np.abs(np.load(out).astype(int) - want.astype(int)).max() <= 1
