"""The DiT against the U-Net at equal compute on the built-in bouncing balls.

Two backbones behind the same spec, prior, sampler and trainer: the default run's `mini`
U-Net (0.89M parameters) and a DiT of the same step time on this data (`dit-tiny` with 3
spatial + 3 temporal blocks of width 64, patch 2: 0.48M parameters, 0.33 s per step of 8
clips of 8x24x24 on 2 cores, like the U-Net). Each is trained for the same budget of
process CPU seconds (``train.max_seconds`` on the ``cpu`` clock), ``--seeds`` seeds each, and
scored on ``--num`` sampled videos (the run's sampler, EMA weights) against held-out real
clips (`_claims`: steady pairs, FVD-lite, tracking score).

    .venv/bin/python benchmarks/claim_dit.py                       # ~25 min of 2 CPU cores
    # on 2 cores: train the backbones side by side (one core each), then score
    .venv/bin/python benchmarks/claim_dit.py --train-only --models unet --threads 1 &
    .venv/bin/python benchmarks/claim_dit.py --train-only --models dit --threads 1
    .venv/bin/python benchmarks/claim_dit.py --threads 2
"""

from __future__ import annotations

import sys
from pathlib import Path

import _claims as C

SCALES = {
    "cpu": {"num": 48, "seeds": 1, "budget": 360.0, "out": "runs/claims/dit"},
    "cuda": {"num": 256, "seeds": 3, "budget": 1200.0, "sample_batch": 256,
             "out": "runs/claims/dit_gpu",
             "overrides": ["data.size=32", "data.frames=16"]},
}
BACKBONES = {  # name -> (label, overrides)
    "unet": ("U-Net mini (0.89M)", ["model.kind=unet", "model.preset=mini"]),
    "dit": ("DiT tiny, depth 3 (0.48M)", ["model.kind=dit", "model.preset=dit-tiny",
                                          "model.overrides.depth=3"]),
}


def add(p) -> None:
    p.add_argument("--models", default="unet,dit", help="backbones (comma list): unet, dit")
    p.add_argument("--budget", type=float,
                   help="process CPU seconds per run (on CUDA: wall seconds)")
    p.add_argument("--train-only", action="store_true",
                   help="train the runs and stop (a later call reuses them and scores all)")


def main(argv=None) -> int:
    args = C.parse(__doc__, SCALES, add, argv)
    out = Path(args.out)
    machine = C.start(args, "dit")
    budget, clock = C.budget(args)
    scorer = None if args.train_only else C.Scorer(args, C.run_config(args, out, budget))
    rows, steps = {}, {}
    for name in args.models.split(","):
        label, overrides = BACKBONES[name]
        scores, done = [], []
        for seed in range(args.seeds):
            run = out / f"{name}_seed{seed}"
            facts = C.train_run(args, run, [*budget, *overrides], seed, "dit")
            done.append(facts["steps"])
            if not args.train_only:
                scores.append(scorer.score(C.sample_run(args, run, args.num)))
        if args.train_only:
            continue
        rows[label], steps[label] = C.aggregate(scores), done
        C.log("dit", f"{label}: {C.summary(rows[label])}")
    if args.train_only:
        return 0
    setup = (f"Budget: {args.budget:.0f} {clock} seconds per run; {args.seeds} training "
             f"seed(s) per backbone; {args.num} sampled clips per run (its own sampler), "
             f"{args.ref_num} held-out real reference clips.")
    C.report(out, args, machine, setup, rows, steps, scorer.floor, "steps per seed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
