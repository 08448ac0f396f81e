"""Flow matching against DDPM with the same network, prior and budget, and against the number
of sampling steps.

Two runs of the default run's `mini` U-Net on the bouncing balls under PYoCo's mixed noise
(alpha 1), each for the same budget of process CPU seconds: DDPM (the default run's v
prediction on the cosine schedule) and rectified flow (`configs/flow_balls.toml`'s
``diffusion.process = "flow"``: logit-normal times, the velocity). Each is sampled at 4, 8, 16
and 50 steps (DDPM with DDIM, eta 0, and its own ancestral sampler at 50 and 100, the default
run's; flow with Euler, and with Heun at half the steps: the same number of network calls,
less one) and scored on ``--num`` clips against held-out real
ones (`_claims`: steady pairs, FVD-lite, tracking score).

    .venv/bin/python benchmarks/claim_flow.py                      # ~25 min of 2 CPU cores
    # on 2 cores: train the two side by side (one core each), then score
    .venv/bin/python benchmarks/claim_flow.py --train-only --models ddpm --threads 1 &
    .venv/bin/python benchmarks/claim_flow.py --train-only --models flow --threads 1
    .venv/bin/python benchmarks/claim_flow.py --threads 2
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import _claims as C

SCALES = {
    "cpu": {"num": 48, "seeds": 1, "budget": 360.0, "out": "runs/claims/flow"},
    "cuda": {"num": 256, "seeds": 3, "budget": 1200.0, "sample_batch": 256,
             "out": "runs/claims/flow_gpu", "overrides": ["data.size=32", "data.frames=16"]},
}
PRIOR = ["prior.name=mixed", "prior.params.alpha=1.0"]
MODELS = {  # name -> (overrides, [(sampler, steps), ...])
    "ddpm": ([], [("ddim", n) for n in (4, 8, 16, 50)] + [("ddpm", 50), ("ddpm", 100)]),
    "flow": (["diffusion.process=flow", "sample.sampler=euler", "sample.steps=50"],
             [("euler", n) for n in (4, 8, 16, 50)] + [("heun", n) for n in (2, 4, 8, 25)]),
}


def add(p) -> None:
    p.add_argument("--models", default="ddpm,flow", help="comma list: ddpm, flow")
    p.add_argument("--budget", type=float,
                   help="process CPU seconds per run (on CUDA: wall seconds)")
    p.add_argument("--train-only", action="store_true",
                   help="train the runs and stop (a later call reuses them and scores all)")
    p.add_argument("--replot", action="store_true",
                   help="redraw the plot from OUT/results.json and stop")


def plot(out: Path, rows: dict, floor: dict, title: str) -> str:
    """Each metric against the network calls per sample, a line per (process, sampler)."""
    series: dict = {}
    for label, agg in rows.items():
        m = re.match(r"(\w+), (\w+) (\d+) steps \((\d+) calls\)", label)
        if m:
            xs, aggs = series.setdefault(f"{m[1]} {m[2]}", ([], []))
            xs.append(int(m[4]))
            aggs.append(agg)
    panels = [{"key": key, "xlabel": "network calls per sample", "series": series,
               "floor": floor, "xlog": True} for key in C.METRICS]
    return C.plot(out / "flow.png", panels, title)


def main(argv=None) -> int:
    args = C.parse(__doc__, SCALES, add, argv)
    out = Path(args.out)
    if args.replot:
        saved = json.loads((out / "results.json").read_text())
        print(plot(out, saved["rows"], saved["floor"], "flow matching vs DDPM at equal CPU time"))
        return 0
    machine = C.start(args, "flow")
    budget, clock = C.budget(args)
    scorer = None if args.train_only else C.Scorer(args, C.run_config(args, out, budget))
    rows, steps = {}, {}
    for name in args.models.split(","):
        overrides, samplers = MODELS[name]
        runs = [(out / f"{name}_seed{seed}",
                 C.train_run(args, out / f"{name}_seed{seed}", [*budget, *PRIOR, *overrides],
                             seed, "flow")) for seed in range(args.seeds)]
        if args.train_only:
            continue
        for sampler, n in samplers:
            label = f"{name}, {sampler} {n} steps ({n if sampler != 'heun' else 2 * n - 1} calls)"
            scores = [scorer.score(C.sample_run(args, run, args.num, sampler=sampler, steps=n))
                      for run, _ in runs]
            rows[label], steps[label] = C.aggregate(scores), [f["steps"] for _, f in runs]
            C.log("flow", f"{label}: {C.summary(rows[label])}")
    if args.train_only:
        return 0
    setup = (f"Budget: {args.budget:.0f} {clock} seconds per run, mixed noise (alpha 1); "
             f"{args.seeds} training seed(s); {args.num} sampled clips per row, "
             f"{args.ref_num} held-out real reference clips.")
    C.report(out, args, machine, setup, rows, steps, scorer.floor, "training steps")
    print(plot(out, rows, scorer.floor, f"flow matching vs DDPM at {args.budget:.0f} "
                                         f"{clock}-s per run"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
