"""benchmarks/video_lora_step.py at its smallest size: one LoRA step of the tiny Wan 2.1
transformer in vidiff's Trainer and in the plain diffusers+peft step (the finetrainers row
needs its own venv, so it is asked for as not run and must say so in the table)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "video_lora_step.py"
pytest.importorskip("diffusers", reason="the benchmark's Wan transformer is diffusers'")
pytest.importorskip("peft", reason="LoRA needs peft")


def _load():
    spec = importlib.util.spec_from_file_location("video_lora_step", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_step_benchmark_prints_its_table_and_the_losses_agree(tmp_path, capsys):
    bench = _load()
    out = tmp_path / "step.json"
    report = bench.main(["--size", "small", "--steps", "1", "--finetrainers-python", "none",
                         "--in-process", "--json", str(out)])
    assert out.is_file()
    rows = report["rows"]
    assert list(rows) == ["vidiff", "diffusers-peft", "finetrainers"]
    for side in ("vidiff", "diffusers-peft"):
        r = rows[side]
        assert "error" not in r, r
        assert r["cpu_s"] > 0 and len(r["cpu_all"]) == 1
        assert r["rss_delta_mib"] == r["rss_delta_mib"]  # a number, not NaN
    assert rows["vidiff"]["lora_layers"] == 16  # 2 blocks x 2 attentions x 4 projections
    # the same weights, LoRA init, latents, text, noise and t: the same objective
    a, b = rows["vidiff"]["loss1"], rows["diffusers-peft"]["loss1"]
    assert abs(a - b) <= 1e-5 * abs(a), (a, b)
    assert "--finetrainers-python none" in rows["finetrainers"]["error"]

    printed = capsys.readouterr().out
    assert printed.strip().endswith(report["table"])
    lines = report["table"].splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["side", "CPU s / step (median)", "peak RSS delta (MiB)",
                      "loss at step 1", "abs diff vs vidiff", "vidiff/peer CPU"]
    assert re.fullmatch(r"\|(---\|){6}", lines[1])
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [r[0] for r in body] == [bench.LABELS[s] for s in rows]
    assert all(len(r) == 6 for r in body)
    assert body[0][5] == "1.00" and float(body[1][5]) > 0
    assert body[2][1].startswith("not run: ")  # said in the table, not skipped silently
