"""Few-step students of the default run, measured: progressive distillation's rounds, guided
distillation (stage one, then progressive rounds with the scale an input) and consistency
distillation, against the teacher's own DDIM at the same step counts and its DDPM at 100.

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


METHODS = ("progressive", "guided", "consistency")


def distil(vidiff, teacher: Path, out: Path, method: str, args, facts: dict) -> dict:
    """Run one method's `vidiff distill` (a finished one is skipped by the command, its
    earlier time kept); {student steps: folder} of what it made."""
    from vidiff.train.rounds import round_folders, round_plan

    root = out / ("student" if method == "progressive" else method)
    plan = round_plan(args.teacher_steps, 1)
    rounds = args.round_steps * len(plan)  # every method gets the same optimizer steps
    cmd = {"progressive": ["--steps", "1", "--round-steps", str(args.round_steps)],
           "guided": ["--method", "guided", "--steps", "1", "--round-steps",
                      str(args.round_steps)],
           "consistency": ["--method", "consistency", "--steps", "1", "--round-steps",
                           str(rounds)]}[method]
    done = (root / "config.json").exists()
    wall, cpu = timed([*vidiff, "distill", str(teacher), "--teacher-steps",
                       str(args.teacher_steps), *cmd, "--out", str(root)])
    if not done:  # a rerun skips the training: keep the time of the run that trained
        facts[f"{method}_wall_s"], facts[f"{method}_cpu_s"] = wall, cpu
    if method == "consistency":  # one model, sampled with any steps of the teacher's grid
        return {k: root for k in STUDENTS}
    return {m // 2: f for m, f in zip(plan, round_folders(root, plan), strict=True)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/distill")
    p.add_argument("--teacher", help="an existing run (default: train the default run)")
    p.add_argument("--teacher-steps", type=int, default=32)
    p.add_argument("--round-steps", type=int, default=200)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--num", type=int, default=64, help="sampled clips per row and seed")
    p.add_argument("--ref-num", type=int, default=256)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--replot", action="store_true", help="only redraw OUT/distill.png from "
                                                        "OUT/distill.json")
    args = p.parse_args(argv)
    out = Path(args.out)
    old = json.loads((out / "distill.json").read_text()) if (out / "distill.json").exists() \
        else {}
    if args.replot:
        print(plot(out, old["rows"], old["real"]))
        return 0
    import torch

    from vidiff.modelio.pipeline import Pipeline

    vidiff = [sys.executable, "-m", "vidiff"]
    teacher = Path(args.teacher or out / "teacher")
    facts: dict = {k: v for k, v in old.items() if k.endswith("_s")}
    if not (teacher / "config.json").exists():
        facts["teacher_wall_s"], facts["teacher_cpu_s"] = timed(
            [*vidiff, "train", "--out", str(teacher)])
    if "distill_cpu_s" in facts:  # the first version's name of progressive's time
        facts.setdefault("progressive_cpu_s", facts.pop("distill_cpu_s"))
        facts.setdefault("progressive_wall_s", facts.pop("distill_wall_s"))
    students = {m: distil(vidiff, teacher, out, m, args, facts) for m in args.methods}
    config = C.saved_config(teacher)
    scorer = C.Scorer(argparse.Namespace(num=args.num, ref_num=args.ref_num), config)
    guided = 2 if config.data.use_labels and config.sample.guidance_scale != 1 else 1
    rows = []

    def score(name: str, pipe, steps: int) -> None:
        calls = steps * (1 if pipe.spec.takes_guidance else guided)
        agg = C.aggregate([scorer.score(sample(pipe, args.num, seed, 16))
                           for seed in args.seeds])
        rows.append({"name": name, "steps": steps, "calls": calls, **agg})
        C.log("distill", f"{name}: {C.summary(agg)}")

    score("teacher DDPM 100", Pipeline.from_pretrained(teacher), 100)
    if "guided" in students:  # stage one: the teacher's own sampler, one call a step
        score("guided DDPM 100", Pipeline.from_pretrained(
            out / "guided" / "rounds" / "guided"), 100)
    for k in STUDENTS:
        ddim = Pipeline.from_pretrained(teacher)
        ddim.spec = replace(ddim.spec, sampling=replace(ddim.spec.sampling, sampler="ddim",
                                                        steps=k, spacing="trailing"))
        score(f"teacher DDIM {k}", ddim, k)
        for method, folders in students.items():
            pipe = Pipeline.from_pretrained(folders[k])
            pipe.spec = replace(pipe.spec, sampling=replace(pipe.spec.sampling, steps=k))
            score(f"{method} {k}", pipe, k)
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
    times = ", ".join(f"{m} {facts.get(m + '_cpu_s', float('nan')):.0f} CPU s "
                      f"({facts.get(m + '_wall_s', float('nan')):.0f} s wall)"
                      for m in args.methods)
    print(f"\ndistillation: {times}; {args.round_steps * len(STUDENTS) + args.round_steps} "
          f"optimizer steps per method (guided: + {args.round_steps} for its stage one); "
          f"{facts['machine']}")
    print(plot(out, rows, real))
    return 0


def plot(out: Path, rows: list[dict], real: dict) -> str:
    """``out/distill.png``: each metric against the steps, the teacher's DDIM and the
    students, the real clips' band."""
    prefixes = ("teacher DDIM", *sorted({r["name"].rsplit(" ", 1)[0] for r in rows
                                         if not r["name"].startswith("teacher")
                                         and r["steps"] <= max(STUDENTS)}))
    series = {prefix: ([r["steps"] for r in rows if r["name"].rsplit(" ", 1)[0] == prefix],
                       [r for r in rows if r["name"].rsplit(" ", 1)[0] == prefix])
              for prefix in prefixes}
    panels = [{"key": key, "xlabel": "sampling steps", "series": series, "floor": real,
               "xlog": True} for key in C.METRICS]
    return C.plot(out / "distill.png", panels, "distilled students of the default run")


if __name__ == "__main__":
    sys.exit(main())
