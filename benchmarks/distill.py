"""Few-step students of the default run, measured: progressive distillation's rounds against
the teacher's own DDIM at the same step counts and its DDPM at 100 steps.

Trains the README's default run as the teacher (or takes ``--teacher RUN``), distils it with
``vidiff distill`` from ``--teacher-steps`` (DDIM on trailing timesteps) down to one step,
``--round-steps`` optimizer steps a round (each round's student is the next round's teacher,
and each is scored), then samples ``--num`` clips of each and scores them against held-out
real clips (`_claims.Scorer`: steady frame pairs, FVD-lite, tracking score): the teacher with
its DDPM 100 steps, the teacher's DDIM at 1, 2, 4, 8 steps, the students at 1, 2, 4, 8.
Network calls per video count the doubled batch of guidance as two. Prints a markdown table,
writes ``OUT/distill.json`` and ``OUT/distill.png`` (steady share against steps).

    .venv/bin/python benchmarks/distill.py --out runs/distill              # ~25 min, 2 cores
    .venv/bin/python benchmarks/distill.py --teacher runs/default_run --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import _claims as C

STUDENTS = (8, 4, 2, 1)


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of a command."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.perf_counter() - t0, cpu


def sample(pipe, num: int, seed: int, batch: int):
    import torch

    out = []
    for k, start in enumerate(range(0, num, batch)):
        g = torch.Generator().manual_seed(seed * 1000 + k)
        out.append(pipe(min(batch, num - start), generator=g, batch_size=batch).cpu())
    return torch.cat(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/distill")
    p.add_argument("--teacher", help="an existing run (default: train the default run)")
    p.add_argument("--teacher-steps", type=int, default=32)
    p.add_argument("--round-steps", type=int, default=200)
    p.add_argument("--num", type=int, default=64, help="sampled clips per row and seed")
    p.add_argument("--ref-num", type=int, default=256)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--replot", action="store_true", help="only redraw OUT/distill.png from "
                                                        "OUT/distill.json")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.replot:
        facts = json.loads((out / "distill.json").read_text())
        print(plot(out, facts["rows"], facts["real"]))
        return 0
    import torch

    from vidiff.modelio.pipeline import Pipeline
    from vidiff.train.rounds import round_folders, round_plan

    vidiff = [sys.executable, "-m", "vidiff"]
    teacher = Path(args.teacher or out / "teacher")
    facts: dict = {}
    if not args.teacher:
        facts["teacher_wall_s"], facts["teacher_cpu_s"] = timed(
            [*vidiff, "train", "--out", str(teacher)])
    student_root = out / "student"
    facts["distill_wall_s"], facts["distill_cpu_s"] = timed(
        [*vidiff, "distill", str(teacher), "--steps", "1", "--teacher-steps",
         str(args.teacher_steps), "--round-steps", str(args.round_steps), "--out",
         str(student_root)])
    plan = round_plan(args.teacher_steps, 1)
    students = {m // 2: f for m, f in zip(plan, round_folders(student_root, plan), strict=True)}
    config = C.saved_config(teacher)
    scorer = C.Scorer(argparse.Namespace(num=args.num, ref_num=args.ref_num), config)
    guided = 2 if config.data.use_labels and config.sample.guidance_scale != 1 else 1
    rows = []

    def score(name: str, pipe, steps: int) -> None:
        agg = C.aggregate([scorer.score(sample(pipe, args.num, seed, 16))
                           for seed in args.seeds])
        rows.append({"name": name, "steps": steps, "calls": steps * guided, **agg})
        C.log("distill", f"{name}: {C.summary(agg)}")

    base = Pipeline.from_pretrained(teacher)
    score("teacher DDPM 100", base, 100)
    for k in STUDENTS:
        ddim = Pipeline.from_pretrained(teacher)
        ddim.spec = replace(ddim.spec, sampling=replace(ddim.spec.sampling, sampler="ddim",
                                                        steps=k, spacing="trailing"))
        score(f"teacher DDIM {k}", ddim, k)
        score(f"student {k}", Pipeline.from_pretrained(students[k]), k)
    facts.update({"rows": rows, "real": scorer.floor, "round_steps": args.round_steps,
                  "teacher_steps": args.teacher_steps, "seeds": args.seeds,
                  "machine": C.machine(argparse.Namespace(device="cpu",
                                                          threads=torch.get_num_threads()))})
    (out / "distill.json").write_text(json.dumps(facts, indent=2))
    print("| sampler | steps | network calls / video | steady pairs | FVD-lite | tracking |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['steps']} | {r['calls']} | {C.fmt(r['steady'])} | "
              f"{C.fmt(r['fvd_lite'], 1)} | {C.fmt(r['track'])} |")
    real = scorer.floor
    print(f"| real clips | - | - | {C.fmt(real['steady'])} | {C.fmt(real['fvd_lite'], 1)} | "
          f"{C.fmt(real['track'])} |")
    print(f"\ndistillation: {facts['distill_cpu_s']:.0f} CPU s ({facts['distill_wall_s']:.0f} s "
          f"wall), {len(plan)} rounds of {args.round_steps} steps; {facts['machine']}")
    print(plot(out, rows, real))
    return 0


def plot(out: Path, rows: list[dict], real: dict) -> str:
    """``out/distill.png``: each metric against the steps, the teacher's DDIM and the
    students, the real clips' band."""
    series = {prefix: ([r["steps"] for r in rows if r["name"].startswith(prefix)],
                       [r for r in rows if r["name"].startswith(prefix)])
              for prefix in ("teacher DDIM", "student")}
    panels = [{"key": key, "xlabel": "sampling steps", "series": series, "floor": real,
               "xlog": True} for key in C.METRICS]
    return C.plot(out / "distill.png", panels, "progressive distillation of the default run")


if __name__ == "__main__":
    sys.exit(main())
