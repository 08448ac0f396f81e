"""Ulysses sequence parallelism of diffusers' Wan and LTX-Video transformers (through their
`_cp_plan`): 2 processes (gloo, launched by torchrun on this file) give the output of one
process and, summed over the ranks, its parameter gradients; refusals name their cause.

Run as a script (by torchrun), this file is the worker: rank 0 saves the reference and the
parallel results of every case to the folder given as its argument."""

import os
import subprocess
import sys

import pytest
import torch
from _tolerance import BACKWARD, NETWORK, assert_close_to

CASES = ["wan", "wan_checkpointing", "ltx_masked"]
NAMES = ("ring", "ulysses")


def _wan(heads: int = 2):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=8, in_channels=4,
        out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=32)


def _ltx():
    from diffusers import LTXVideoTransformer3DModel

    return LTXVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, num_layers=2, caption_channels=16)


def _inputs(case: str) -> dict:
    if case.startswith("wan"):
        return dict(hidden_states=torch.randn(1, 4, 4, 8, 8), timestep=torch.tensor([500]),
                    encoder_hidden_states=torch.randn(1, 6, 16))
    mask = torch.tensor([[1.0, 1, 1, 1, 0, 0]])  # the last two text tokens are padding
    return dict(hidden_states=torch.randn(1, 2 * 4 * 4, 4), encoder_hidden_states=torch.randn(
        1, 6, 16), timestep=torch.tensor([500]), encoder_attention_mask=mask, num_frames=2,
        height=4, width=4)


def _step(model, inputs, weights=None):
    """Output and gradients of ``(output * weights).sum()``."""
    model.zero_grad(set_to_none=True)
    out = model(**inputs, return_dict=False)[0]
    weights = torch.randn_like(out) if weights is None else weights
    (out * weights).sum().backward()
    out = out.detach().clone()  # a gathered output is an AsyncCollectiveTensor: a plain copy
    return out, weights, {n: p.grad.clone() for n, p in model.named_parameters()}


def _worker(folder: str) -> None:
    import copy

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from vidiff.models.video_sequence_parallel import (
        all_reduce_sequence_parallel_grads,
        enable_video_sequence_parallel,
    )

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    results = {}
    for case in CASES:
        torch.manual_seed(0)  # the same weights and inputs on both ranks
        model = (_ltx() if case.startswith("ltx") else _wan()).float()
        parallel = copy.deepcopy(model)
        inputs = _inputs(case)
        out, weights, grads = _step(model, inputs)
        if case == "wan":  # a 2-D mesh; the others build theirs from the world group
            wan, mesh = parallel, init_device_mesh("cpu", (1, 2), mesh_dim_names=NAMES)
        enable_video_sequence_parallel(parallel, mesh if case == "wan" else None, 2)
        if case == "wan_checkpointing":
            parallel.enable_gradient_checkpointing()
        p_out, _, local = _step(parallel, inputs, weights)
        all_reduce_sequence_parallel_grads(parallel)
        summed = {n: p.grad for n, p in parallel.named_parameters()}
        results[case] = dict(out=out, p_out=p_out, grads=grads, local=local, summed=summed)
    try:  # 3x3x3 tokens: refused on every rank before any communication
        wan(**dict(_inputs("wan"), hidden_states=torch.randn(1, 4, 3, 6, 6)))
    except ValueError as error:
        results["odd_tokens"] = str(error)
    if dist.get_rank() == 0:
        torch.save(results, os.path.join(folder, "results.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("video_sp")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", __file__, str(folder)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return torch.load(folder / "results.pt")


@pytest.mark.parametrize("case", CASES)
def test_two_processes_match_one(results, case):
    r = results[case]
    assert_close_to(r["p_out"], r["out"], NETWORK)
    assert r["summed"].keys() == r["grads"].keys()
    for name, grad in r["grads"].items():
        assert_close_to(r["summed"][name], grad, BACKWARD, msg=name)
    # each rank alone holds its sequence shard's share only: the sum is the gradient
    share = r["local"]["proj_out.weight"]
    assert (share - r["grads"]["proj_out.weight"]).abs().max() > 0.1 * share.abs().max()


def test_tokens_not_divisible_are_refused(results):
    assert results["odd_tokens"] == "27 video tokens, not divisible by 2"


def test_models_it_cannot_split_are_refused():
    from diffusers import CogVideoXTransformer3DModel

    from vidiff.models.video_sequence_parallel import (
        all_reduce_sequence_parallel_grads,
        enable_video_sequence_parallel,
    )

    cog = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        time_embed_dim=8, text_embed_dim=16, num_layers=1, sample_width=8, sample_height=8,
        sample_frames=5, max_text_seq_length=6)
    with pytest.raises(ValueError, match="CogVideoXTransformer3DModel has no diffusers _cp_plan"):
        enable_video_sequence_parallel(cog, None, 2)
    with pytest.raises(ValueError, match="3 attention heads, not divisible by 2"):
        enable_video_sequence_parallel(_wan(heads=3), None, 2)
    with pytest.raises(ValueError, match="not enabled"):
        all_reduce_sequence_parallel_grads(_wan())


if __name__ == "__main__":
    _worker(sys.argv[1])
