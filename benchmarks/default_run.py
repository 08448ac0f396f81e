"""The README's main job, measured: train + sample wall time and the quality of 64 samples.

Runs ``vidiff train --out OUT`` (the defaults, plus any ``--set``) and ``vidiff sample OUT
--out OUT/balls.gif`` as the README does, timing each on the wall clock, then samples
``--num`` clips with the run's own sampler and scores them against held-out real clips of the
run's data (`_claims.Scorer`: steady pairs, FVD-lite, tracking score). ``--run DIR`` scores an
existing run instead (``--options`` gives the dataset options its clips were drawn with, for
runs made before the bouncing-balls defaults changed). Prints a markdown row and writes
``OUT/default_run.json`` and ``OUT/sheet.png`` (8 samples, a row per video).

    .venv/bin/python benchmarks/default_run.py --out runs/default_run      # ~7 min, 2 cores
    .venv/bin/python benchmarks/default_run.py --run runs/old --options \\
        '{"max_balls": 3, "radius_range": [0.09, 0.14]}'                  # score an old run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import _claims as C


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/default_run", help="run folder to train into")
    p.add_argument("--run", help="score this existing run instead of training one")
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE")
    p.add_argument("--options", default=None, help="JSON dataset options of --run's data")
    p.add_argument("--num", type=int, default=64, help="sampled clips to score")
    p.add_argument("--ref-num", type=int, default=256, help="held-out real clips")
    p.add_argument("--threads", type=int, default=0, help="scoring threads (0: all)")
    args = p.parse_args(argv)
    import torch

    from vidiff.io import write_video
    from vidiff.modelio.pipeline import read_spec

    if args.threads:
        torch.set_num_threads(args.threads)
    run = Path(args.run or args.out)
    times = {}
    if not args.run:
        vidiff = [sys.executable, "-m", "vidiff"]
        extra = ["--set", *args.overrides] if args.overrides else []
        times["train_s"] = timed([*vidiff, "train", "--out", str(run), *extra])
        times["sample_s"] = timed([*vidiff, "sample", str(run), "--out",
                                   str(run / "balls.gif")])
    config = C.saved_config(run)
    if args.options is not None:
        config.data.options = json.loads(args.options)
    s = config.sample
    ns = argparse.Namespace(device="cpu", sample_batch=16, num=args.num, ref_num=args.ref_num)
    scorer = C.Scorer(ns, config)
    t0 = time.perf_counter()
    videos = C.sample_run(ns, run, args.num)  # the run's sampler, steps and guidance
    times["score_sampling_s"] = time.perf_counter() - t0
    score = scorer.score(videos)
    write_video(run / "sheet.png", videos[:8])
    facts = {"run": str(run), "preset": config.model.preset, "sampler": s.sampler,
             "sample_steps": s.steps, "steps": read_spec(run).provenance.step,
             "guidance_scale": s.guidance_scale, "use_labels": config.data.use_labels,
             "options": config.data.options, **times, **score,
             "real": {k: v["mean"] for k, v in scorer.floor.items()},
             "machine": C.machine(argparse.Namespace(device="cpu",
                                                     threads=torch.get_num_threads()))}
    (run / "default_run.json").write_text(json.dumps(facts, indent=2))
    total = times.get("train_s", float("nan")) + times.get("sample_s", float("nan"))
    print("| run | train + sample s | steady pairs | FVD-lite | tracking score |")
    print("|---|---|---|---|---|")
    print(f"| {run} | {total:.0f} | {score['steady']:.3f} | {score['fvd_lite']:.1f} | "
          f"{score['track']:.3f} |")
    real = scorer.floor
    print(f"| real clips ({args.num}) | - | {C.fmt(real['steady'])} | "
          f"{C.fmt(real['fvd_lite'], 1)} | {C.fmt(real['track'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
