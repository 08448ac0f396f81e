"""Joint image + video training (VDM): do K independent images per video improve video quality
at equal compute?

VDM (Ho et al. 2022, section 4.3) appends K frames of other videos to each training clip; the
temporal attention is masked so that they are images, and the spatial layers learn from more
independent frames per step (text-to-video FVD 202 -> 58 with 8 images per video). Here every
run is the default run with ``data.num_images = K``, for the same budget of process CPU seconds
(``train.max_seconds`` on the ``cpu`` clock: the images make each step dearer, so a K > 0 run
takes fewer steps), ``--seeds`` training seeds per K, and is scored on ``--num`` sampled videos
(the run's sampler, EMA weights) against held-out real clips (`_claims`).

    .venv/bin/python benchmarks/claim_joint_training.py                # ~45 min of 1 CPU core
    .venv/bin/python benchmarks/claim_joint_training.py --device cuda  # larger, longer runs
    # on 2 cores: train the two seeds side by side, then score every run
    .venv/bin/python benchmarks/claim_joint_training.py --train-only --seeds 1 --first-seed 0 &
    .venv/bin/python benchmarks/claim_joint_training.py --train-only --seeds 1 --first-seed 1
    .venv/bin/python benchmarks/claim_joint_training.py --threads 2
    .venv/bin/python benchmarks/claim_joint_training.py --budget 10 --num 8 --ref-num 16 \\
        --ks 0,4 --seeds 1 --out /tmp/claim_joint                          # smoke test
"""

from __future__ import annotations

import sys
from pathlib import Path

import _claims as C

SCALES = {
    "cpu": {"num": 48, "seeds": 2, "budget": 360.0, "out": "runs/claims/joint_training"},
    "cuda": {"num": 256, "seeds": 3, "budget": 1200.0, "sample_batch": 256,
             "out": "runs/claims/joint_training_gpu",
             "overrides": ["data.size=32", "data.frames=16", "model.preset=small"]},
}


def add(p) -> None:
    p.add_argument("--ks", default="0,4,8", help="independent images per video (comma list)")
    p.add_argument("--budget", type=float,
                   help="process CPU seconds per run (on CUDA: wall seconds)")
    p.add_argument("--first-seed", type=int, default=0, help="the first training seed")
    p.add_argument("--train-only", action="store_true",
                   help="train the runs and stop (a later call reuses them and scores all): "
                        "train seeds in parallel processes, one core each")


def main(argv=None) -> int:
    args = C.parse(__doc__, SCALES, add, argv)
    out = Path(args.out)
    machine = C.start(args, "joint")
    budget, clock = C.budget(args)
    scorer = None if args.train_only else C.Scorer(args, C.run_config(args, out, budget))
    rows, steps = {}, {}
    for k in [int(v) for v in args.ks.split(",")]:
        scores, done = [], []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            run = out / f"k{k}_seed{seed}"
            facts = C.train_run(args, run, [*budget, f"data.num_images={k}"], seed, "joint")
            done.append(facts["steps"])
            if not args.train_only:
                scores.append(scorer.score(C.sample_run(args, run, args.num)))
        if args.train_only:
            continue
        rows[f"K={k}"], steps[f"K={k}"] = C.aggregate(scores), done
        C.log("joint", f"K={k}: {C.summary(rows[f'K={k}'])}")
    if args.train_only:
        return 0
    setup = (f"Budget: {args.budget:.0f} {clock} seconds per run; {args.seeds} training "
             f"seed(s) per K (mean ± sd over seeds); {args.num} sampled clips per run (its own "
             f"sampler), {args.ref_num} held-out real reference clips.")
    C.report(out, args, machine, setup, rows, steps, scorer.floor, "steps per seed")
    ks = [int(n[2:]) for n in rows]
    series = {"joint training": (ks, list(rows.values()))}
    panels = [{"key": key, "xlabel": "independent images per video K", "series": series,
               "floor": scorer.floor} for key in C.METRICS]
    print(C.plot(out / "joint_training.png", panels,
                 f"joint image+video training at {args.budget:.0f} {clock}-s per run"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
