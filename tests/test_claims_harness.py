"""The claim benchmarks' shared harness (benchmarks/_claims.py) and scores: the statistics that
decide "holds / does not hold", the guidance sweep's IS-like score, and one script end to end."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import _claims as C  # noqa: E402
from claim_guidance import class_scores  # noqa: E402


def agg(mean, sd, n):
    return {k: {"mean": mean, "sd": sd, "n": n} for k in C.METRICS}


def test_mean_sd_and_stderr():
    stat = C.mean_sd([1.0, 2.0, 3.0])
    assert stat == {"mean": 2.0, "sd": 1.0, "n": 3}
    assert C.stderr(stat, noise=5.0) == pytest.approx(1 / math.sqrt(3))
    assert C.stderr(C.mean_sd([4.0]), noise=0.25) == 0.25  # one run: the metric's own noise


def test_compare_counts_only_differences_beyond_two_standard_errors():
    floor = agg(0.0, 0.1, 1)
    base = agg(0.5, 0.1, 4)  # standard error 0.05 per side -> tolerance 2 * 0.0707
    assert set(C.compare(agg(0.6, 0.1, 4), base, floor).values()) == {"tie"}
    words = C.compare(agg(0.7, 0.1, 4), base, floor)
    # steady pairs and the tracking score: higher is better; FVD-lite: lower is better
    assert words == {"steady": "better", "fvd_lite": "worse", "track": "better"}
    # single runs fall back on the metric's noise on real clips (sd 0.1 -> tolerance 0.283)
    assert set(C.compare(agg(0.7, 0.0, 1), agg(0.5, 0.0, 1), floor).values()) == {"tie"}
    lines = C.verdicts({"a": base, "b": agg(0.7, 0.1, 4)}, "a", floor)
    assert len(lines) == 1 and "b vs a" in lines[0] and "FVD-lite worse" in lines[0]


def test_is_like_score_spans_one_to_the_class_count():
    k = 8
    labels = torch.arange(64) % k
    confident = torch.nn.functional.one_hot(labels, k).double() * (1 - 1e-9) + 1e-9 / k
    perfect = class_scores(confident, labels)
    assert perfect["is_like"] == pytest.approx(k, rel=1e-6) and perfect["accuracy"] == 1.0
    uniform = class_scores(torch.full((64, k), 1.0 / k), labels)
    assert uniform["is_like"] == pytest.approx(1.0)
    collapsed = class_scores(torch.nn.functional.one_hot(torch.zeros(64).long(), k).double(),
                             labels)  # one class for every clip: confident but not diverse
    assert collapsed["is_like"] == pytest.approx(1.0) and collapsed["accuracy"] == 1 / k


def test_claim_samplers_end_to_end(tmp_path):
    out = tmp_path / "samplers"
    cmd = [sys.executable, str(BENCH / "claim_samplers.py"), "--train-steps", "2", "--num", "4",
           "--ref-num", "8", "--sample-batch", "4", "--settings", "ddpm:4,ddim:2", "--seeds", "2",
           "--out", str(out), "--set", "data.num_videos=16", "train.warmup=1",
           "train.sample_count=2", "sample.steps=2"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    results = json.loads((out / "results.json").read_text())
    assert set(results["rows"]) == {"ddpm:4", "ddim:2"}
    for row in results["rows"].values():
        assert set(row) == set(C.METRICS) and all(v["n"] == 2 for v in row.values())
    assert "| ddpm:4 |" in (out / "results.md").read_text()
