"""benchmarks/parallel_memory.py on a tiny Wan: the counted single-GPU state against an
analytic count, the DDP / FSDP / sequence-parallel / offload rows against the module's
formulas, and the assumptions they rest on (checkpointing lowers the activations, the token
part of the activations is linear in the tokens, more GPUs never cost more memory)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("peft")
pytest.importorskip("diffusers")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import parallel_memory as P  # noqa: E402
import video_model_memory as V  # noqa: E402

LAYERS = P.TINY_WAN["num_layers"]


@pytest.fixture(scope="module")
def wan() -> dict:
    return P.count_model(P.models(tiny=True)["wan-14b"])


@pytest.fixture(scope="module")
def rows(wan) -> dict:
    """(strategy, checkpointing) -> row."""
    return {(r["strategy"], r["checkpointing"]): r for r in P.rows("wan", wan)}


def _tiny_spec() -> V.VideoModel:
    return replace(V.MODELS["wan-1.3b"], config=P.TINY_WAN, text_tokens=8, text_dim=64)


def test_counted_state_matches_analytic(wan):
    net = P.models(tiny=True)["wan-14b"].build(True)
    params = list(net.parameters())
    n = sum(p.numel() for p in params)
    block = sum(p.numel() for p in net.blocks[0].parameters())
    assert wan["params"] == n
    assert wan["master"] == 4 * n  # float32 master weights (buffers apart)
    assert wan["buffers"] == sum(b.numel() * b.dtype.itemsize for b in net.buffers()) > 0
    assert wan["optimizer"] == 8 * n + 4 * len(params)  # two moments + a step per tensor
    assert wan["compute"] == wan["grads"] == 2 * n  # bf16
    assert P.state_bytes(wan) == 16 * n + 4 * len(params)
    assert (wan["units"], wan["largest_unit"], wan["root"]) == (LAYERS, block, n - LAYERS * block)


@pytest.mark.parametrize("ckpt", [True, False], ids=["ckpt", "no-ckpt"])
def test_fsdp_shards_the_state_by_the_formulas(rows, wan, ckpt):
    ddp = rows["DDP", ckpt]
    state, buffers = P.state_bytes(wan), wan["buffers"]
    assert ddp["state"] == state + buffers and ddp["gather"] == 0
    u, root = wan["largest_unit"], wan["root"]
    for n in (8, 64):
        fsdp = rows[f"FSDP-{n}", ckpt]
        assert fsdp["state"] == (ddp["state"] - buffers) / n + buffers
        assert fsdp["gather"] == 2 * (root + 2 * u) + 2 * u
        assert fsdp["activations"] == ddp["activations"]  # per GPU unchanged
    for r in (ddp, rows["FSDP-8", ckpt], rows["FSDP-64", ckpt]):
        assert r["total"] == r["state"] + r["gather"] + r["activations"]
        assert r["activations"] == wan["act_ckpt" if ckpt else "act_no_ckpt"]
    # more GPUs, less memory per GPU: the gather term is smaller than what sharding saves
    assert ddp["total"] > rows["FSDP-8", ckpt]["total"] > rows["FSDP-64", ckpt]["total"]


def test_checkpointing_lowers_activations(wan, rows):
    assert 0 < wan["act_ckpt"] < wan["act_no_ckpt"]
    assert 0 < wan["act_short_ckpt"] < wan["act_short_no_ckpt"]
    # every block's two attentions run again in checkpointing's recompute
    assert wan["attention_calls_ckpt"] == 2 * wan["attention_calls_no_ckpt"] == 2 * 2 * LAYERS
    for strategy, *_ in P.STRATEGIES:
        assert rows[strategy, True]["total"] < rows[strategy, False]["total"]


@pytest.mark.parametrize("ckpt", [True, False], ids=["ckpt", "no-ckpt"])
def test_sequence_parallel_divides_only_the_token_part(rows, wan, ckpt):
    key = "ckpt" if ckpt else "no_ckpt"
    act, short, tok = wan[f"act_{key}"], wan[f"act_short_{key}"], wan[f"act_tokens_{key}"]
    assert wan["tokens"] > wan["short_tokens"] and act > short
    assert 0 < tok < act  # a fixed part (text, timestep) stays whole
    sp, fsdp = rows["FSDP-8 + SP-8", ckpt], rows["FSDP-8", ckpt]
    assert sp["activations"] == pytest.approx(act - tok + tok / 8, rel=1e-12)
    assert sp["state"] == fsdp["state"] and sp["gather"] == fsdp["gather"]
    assert act / 8 < sp["activations"] < act


def test_token_part_is_linear_in_the_tokens(wan):
    """The SP split extrapolates A = A_fix + b * T from two clips: a third clip (13 frames,
    between the two) lands on the line."""
    mid = P._wan(_tiny_spec(), 13, 32, 32, 9, "")
    t_mid = mid.tokens("full")
    assert wan["short_tokens"] < t_mid < wan["tokens"]
    counted, _ = P.count_activations(mid.build(True), lambda: mid.batch("full"), mid.forward)
    b = (wan["act_ckpt"] - wan["act_short_ckpt"]) / (wan["tokens"] - wan["short_tokens"])
    assert counted == pytest.approx(wan["act_short_ckpt"] + b * (t_mid - wan["short_tokens"]),
                                    rel=0.02)


@pytest.mark.parametrize("ckpt", [True, False], ids=["ckpt", "no-ckpt"])
def test_offload_takes_the_state_off_the_gpu(rows, wan, ckpt):
    off, fsdp = rows["FSDP-8 + offload", ckpt], rows["FSDP-8", ckpt]
    assert off["offload"] and not fsdp["offload"]
    assert off["state"] == wan["buffers"]  # parameters, grads, AdamW: on the host
    assert off["host"] == fsdp["state"] - wan["buffers"] == P.state_bytes(wan) / 8
    assert off["total"] == fsdp["total"] - off["host"]
    assert off["gather"] == fsdp["gather"] and off["activations"] == fsdp["activations"]


def test_table_and_cli(rows, capsys, monkeypatch):
    text = P.table(list(rows.values()))
    lines = text.splitlines()
    assert len(lines) == 2 + 2 * len(P.STRATEGIES)
    assert "| FSDP-8 + SP-8 | yes |" in text and "| DDP | no |" in text
    monkeypatch.setattr(sys, "argv", ["parallel_memory.py", "--tiny", "--models", "nope"])
    with pytest.raises(SystemExit):  # refused before anything is counted
        P.main()
    assert "unknown model 'nope'" in capsys.readouterr().err
