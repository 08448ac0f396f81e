"""VideoFusion's decomposition against a plain video U-Net of the same size and compute.

VideoFusion (Luo et al. 2023) splits each frame's noise into a base shared by all frames and a
residual (the ``decomposed`` prior, share ``lam``), and its network into a base generator (an
image U-Net that estimates the shared noise from the key frame) and a residual generator (a
small video U-Net). The claim: the decomposition makes a better video model than one network
that denoises the whole clip. Arms, all trained from scratch on the same data for the same
process CPU seconds, eps-prediction (VideoFusion predicts eps), ``--seeds`` seeds each:

- ``videofusion``: base = the default run's U-Net as an image model, residual = the same
  layout at ``--residual-channels`` base channels, decomposed prior (``--lam``);
- ``unet``: the default run's video U-Net, widened (``model_channels``) to the nearest
  parameter count of the VideoFusion model, independent noise (the non-decomposed model);
- ``unet+progressive`` (with ``--arms``): the same U-Net under vidiff's default prior.

    .venv/bin/python benchmarks/claim_videofusion.py                   # ~20 min of 1 CPU core
    .venv/bin/python benchmarks/claim_videofusion.py --device cuda     # larger, longer runs
    .venv/bin/python benchmarks/claim_videofusion.py --budget 10 --num 8 --ref-num 16 \\
        --seeds 1 --out /tmp/claim_vf                                     # smoke test
"""

from __future__ import annotations

import sys
from pathlib import Path

import _claims as C

SCALES = {
    "cpu": {"num": 48, "seeds": 2, "budget": 150.0, "out": "runs/claims/videofusion"},
    "cuda": {"num": 256, "seeds": 3, "budget": 1200.0, "sample_batch": 256,
             "out": "runs/claims/videofusion_gpu",
             "overrides": ["data.size=32", "data.frames=16", "model.preset=small"]},
}
ARMS = ("videofusion", "unet", "unet+progressive")


def add(p) -> None:
    p.add_argument("--arms", default="videofusion,unet", help=f"comma list of {ARMS}")
    p.add_argument("--budget", type=float,
                   help="process CPU seconds per run (on CUDA: wall seconds)")
    p.add_argument("--lam", type=float, default=0.5, help="decomposed prior: shared share")
    p.add_argument("--residual-channels", type=int, default=8,
                   help="VideoFusion residual generator's base channels")


def count_params(args, overrides: list[str]) -> int:
    from vidiff.train.build import build_model, resolve_backbone_config

    config = C.run_config(args, Path("/nonexistent"), overrides)
    model = build_model(config, resolve_backbone_config(config))[0]
    return sum(p.numel() for p in model.parameters())


def arm_overrides(args, budget: list[str]) -> tuple[dict[str, list[str]], dict[str, int]]:
    """The overrides of each arm, the U-Net width matched to VideoFusion's parameters."""
    default = C.run_config(args, Path("/nonexistent"), [])
    ov = dict(default.model.overrides)
    base = ["diffusion.prediction=eps", *budget]
    vf = [*base, "model.kind=videofusion", "prior.name=decomposed",
          f"prior.params.lam={args.lam}", f"model.base_preset={default.model.preset}",
          f"model.base_lr={default.train.lr}",
          f"model.overrides.model_channels={args.residual_channels}"]
    vf += [f"model.base_overrides.{k}={_toml(v)}" for k, v in ov.items()]
    target = count_params(args, vf)
    widths = {}
    for width in range(8, 129, 4):  # the nearest parameter count (norm groups must divide)
        if width % default_groups(default) == 0:
            widths[width] = count_params(args, [*base,
                                                f"model.overrides.model_channels={width}"])
    width = min(widths, key=lambda w: abs(widths[w] - target))
    unet = [*base, f"model.overrides.model_channels={width}"]
    arms = {"videofusion": vf, "unet": [*unet, "prior.name=independent", "prior.params={}"],
            "unet+progressive": unet}
    return arms, {"videofusion": target, "unet": widths[width], "unet+progressive": widths[width]}


def default_groups(config) -> int:
    from vidiff.models import unet_config

    return unet_config(config.model.preset, **config.model.overrides).norm_groups


def _toml(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def main(argv=None) -> int:
    args = C.parse(__doc__, SCALES, add, argv)
    out = Path(args.out)
    machine = C.start(args, "videofusion")
    budget, clock = C.budget(args)
    arms, params = arm_overrides(args, budget)
    scorer = C.Scorer(args, C.run_config(args, out, budget))
    rows, steps = {}, {}
    for arm in [a.strip() for a in args.arms.split(",")]:
        if arm not in arms:
            raise SystemExit(f"--arms: unknown arm {arm!r}; choose from {', '.join(ARMS)}")
        scores, done = [], []
        for seed in range(args.seeds):
            run = out / f"{arm.replace('+', '_')}_seed{seed}"
            facts = C.train_run(args, run, arms[arm], seed, "videofusion")
            done.append(facts["steps"])
            scores.append(scorer.score(C.sample_run(args, run, args.num)))
        rows[arm], steps[arm] = C.aggregate(scores), done
        C.log("videofusion", f"{arm}: {C.summary(rows[arm])}")
    extra = {"parameters": {a: f"{params[a]:,}" for a in rows},
             "steps per seed": {a: ", ".join(map(str, s)) for a, s in steps.items()}}
    base = "unet" if "unet" in rows else next(iter(rows))
    text = "\n".join([
        f"Machine: {machine}.",
        f"Budget: {args.budget:.0f} {clock} seconds per run, {args.seeds} seed(s) per arm "
        f"(mean ± sd over seeds), {args.num} sampled clips per run (its own sampler), "
        f"{args.ref_num} held-out real reference clips.", "",
        C.table(list(rows.items()), scorer.floor, extra), "",
        "A difference counts when it exceeds 2 standard errors (over seeds):",
        "", *C.verdicts(rows, base, scorer.floor)])
    C.write(out, {"machine": machine, "args": vars(args), "floor": scorer.floor, "rows": rows,
                  "steps": steps, "params": params}, text)
    panels = [{"key": key, "xlabel": "arm", "floor": scorer.floor,
               "series": {a: ([i], [rows[a]]) for i, a in enumerate(rows)}}
              for key in C.METRICS]
    print(C.plot(out / "videofusion.png", panels,
                 f"decomposed vs plain video U-Net at {args.budget:.0f} {clock}-s per run"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
