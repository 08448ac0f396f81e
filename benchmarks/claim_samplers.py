"""Sample quality against sampler steps: is DPM-Solver++ at 20 steps as good as DDPM at 1000?

One model (the default run's config, ``--train-steps`` steps, or the run folder ``--run``) is
sampled with DDPM (1000 and 250 steps: ancestral, the posterior variance), DDIM (eta 0) and
DPM-Solver++(2M) at 10, 20 and 50 steps, every setting from the same noise seeds (``--seeds``
sample sets of ``--num`` clips each), and scored against held-out real clips (`_claims`).
A setting "matches" DDPM 1000 when every metric is within the larger of two sd of the real
clips' own spread (the metric's noise at that clip count) and the sd across sample sets.

    .venv/bin/python benchmarks/claim_samplers.py                     # ~30 min of 1 CPU core
    .venv/bin/python benchmarks/claim_samplers.py --run runs/balls    # a model you trained
    .venv/bin/python benchmarks/claim_samplers.py --device cuda       # larger: 256 clips x 3
    .venv/bin/python benchmarks/claim_samplers.py --train-steps 5 --num 8 --ref-num 16 \\
        --settings ddpm:20,ddim:5 --seeds 1 --out /tmp/claim_samplers   # smoke test
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import _claims as C

SETTINGS = "ddpm:1000,ddpm:250,ddim:10,ddim:20,ddim:50,dpmpp_2m:10,dpmpp_2m:20,dpmpp_2m:50"
SCALES = {
    "cpu": {"num": 48, "seeds": 1, "train_steps": 1000, "out": "runs/claims/samplers"},
    "cuda": {"num": 256, "seeds": 3, "train_steps": 20000, "sample_batch": 256,
             "out": "runs/claims/samplers_gpu",
             "overrides": ["data.size=32", "data.frames=16", "model.preset=small"]},
}


def add(p) -> None:
    p.add_argument("--run", help="sample this run folder instead of training one")
    p.add_argument("--train-steps", type=int, help="steps of the trained model")
    p.add_argument("--settings", default=SETTINGS, help="comma list of SAMPLER:STEPS")


def report(args, rows: dict, floor: dict, facts: dict, seconds: dict, machine: str) -> str:
    timing = {"sampling s / set": {k: f"{v:.0f}" for k, v in seconds.items()}}
    return "\n".join([
        f"Machine: {machine}.",
        f"Model: {facts.get('out')} ({facts.get('steps')} steps); {args.seeds} sample set(s) of "
        f"{args.num} clips per setting (mean ± sd over sets; one set: sd 0), "
        f"{args.ref_num} held-out real reference clips.", "",
        C.table(list(rows.items()), floor, timing), "",
        "Against DDPM 1000 (a difference counts when it exceeds 2 standard errors: over sample "
        "sets, or the metric's own noise at this clip count for one set):", "",
        *(C.verdicts(rows, "ddpm:1000", floor) if "ddpm:1000" in rows else [])])


def main(argv=None) -> int:
    args = C.parse(__doc__, SCALES, add, argv)
    out = Path(args.out)
    machine = C.start(args, "samplers")
    run = Path(args.run) if args.run else out / "model"
    if args.run:
        facts = {"out": str(run), "steps": "given"}
    else:
        facts = C.train_run(args, run, [f"train.steps={args.train_steps}"], tag="samplers")
    config = C.saved_config(run)
    scorer = C.Scorer(args, config)
    rows, seconds = {}, {}
    for spec in args.settings.split(","):
        sampler, _, steps = spec.partition(":")
        scores, t0 = [], time.perf_counter()
        for s in range(args.seeds):
            videos = C.sample_run(args, run, args.num, sampler=sampler, steps=int(steps),
                                  seed=1000 * s)
            scores.append(scorer.score(videos))
        seconds[spec] = (time.perf_counter() - t0) / args.seeds
        rows[spec] = C.aggregate(scores)
        C.log("samplers", f"{spec}: {C.summary(rows[spec])}")
    text = report(args, rows, scorer.floor, facts, seconds, machine)
    C.write(out, {"machine": machine, "args": vars(args), "facts": facts, "floor": scorer.floor,
                  "rows": rows, "seconds": seconds}, text)
    groups: dict[str, tuple[list, list]] = {}
    for spec, agg in rows.items():
        sampler, _, steps = spec.partition(":")
        groups.setdefault(sampler, ([], []))
        groups[sampler][0].append(int(steps))
        groups[sampler][1].append(agg)
    panels = [{"key": k, "xlabel": "sampler steps", "xlog": True, "series": groups,
               "floor": scorer.floor} for k in C.METRICS]
    print(C.plot(out / "samplers.png", panels, "quality against sampler steps"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
