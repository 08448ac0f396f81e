"""Shared pieces of the claim benchmarks (`claim_*.py`): options with a CPU and a GPU scale, a
training run, sampling a run, scoring clips against held-out real ones, and the report.

Every claim script trains small models on the built-in bouncing balls (the default run's data
and model unless it says otherwise), samples them and scores the samples with the weight-free
metrics against held-out real clips (dataset seed 1; training uses seed 0):

- **steady pairs** (`vidiff.metrics.steady_pairs`): the share of consecutive frame pairs that
  keep their balls (count, position within a few pixels, color, and moving); higher is better;
- **FVD-lite** (`vidiff.metrics.video_distance`): lower is better;
- **tracking score** (`vidiff.metrics.ball_tracking_score`): 1 ~ real.

"real" rows give each metric on other real clips of the same count (the floor and the noise of
the metric at that count). Each script writes ``results.json``, ``results.md`` and a PNG plot
under its ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from vidiff.utils.machine import cpu_model  # noqa: E402

REF_SEED, FLOOR_SEEDS = 1, (2, 3, 4)  # real data seeds (training: 0)
METRICS = {  # key -> (name, +1 higher is better / -1 lower is better)
    "steady": ("steady pairs", 1),
    "fvd_lite": ("FVD-lite", -1),
    "track": ("tracking score", 1),
}


def log(tag: str, msg: str) -> None:
    print(f"[{tag}] {msg}", file=sys.stderr, flush=True)


# -- options ------------------------------------------------------------------------------------
def parse(doc: str, scales: dict[str, dict], add=None, argv=None) -> argparse.Namespace:
    """Options of a claim script. ``scales["cpu"]`` / ``scales["cuda"]`` hold the defaults of
    each device (``--device cuda`` takes the larger ones); ``add(parser)`` adds the script's
    own options. Every default can be overridden on the command line."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--device", default="cpu")
    device = first.parse_known_args(argv)[0].device
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu | cuda (larger default sizes)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seeds", type=int, default=2, help="training seeds per setting")
    p.add_argument("--num", type=int, default=64, help="sampled clips per evaluation")
    p.add_argument("--ref-num", type=int, default=256, help="held-out real reference clips")
    p.add_argument("--sample-batch", type=int, default=64, help="clips per sampling call")
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                   help="run config overrides for every run (vidiff train --set)")
    p.add_argument("--out", required=False, help="output folder")
    if add is not None:
        add(p)
    p.set_defaults(**scales["cuda" if device.startswith("cuda") else "cpu"])
    return p.parse_args(argv)


def machine(args) -> str:
    """The CPU, cores, threads, device, versions and load average, for a report."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device = args.device
    if device.startswith("cuda") and torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    return (f"{cpu_model()}, {cores} cores, {args.threads} torch thread(s), device {device}, "
            f"torch {torch.__version__}, Python {platform.python_version()}, load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the start")


def start(args, tag: str) -> str:
    """Set the torch threads and log the machine; returns its description."""
    torch.set_num_threads(args.threads)
    text = machine(args)
    log(tag, text)
    return text


def budget(args) -> tuple[list[str], str]:
    """Overrides that stop a run after ``args.budget`` seconds of process CPU time (wall time
    on CUDA), its LR decay aimed at the budget's end, and the clock's name."""
    clock = "wall" if args.device.startswith("cuda") else "cpu"
    return [f"train.max_seconds={args.budget}", f"train.budget_clock={clock}",
            "train.steps=1000000"], clock


# -- training and sampling ------------------------------------------------------------------------
def run_config(args, out: Path, overrides: list[str], seed: int = 0):
    """The default run's config with the common settings, ``args.overrides``, then these."""
    from vidiff.train.config import load_run_config

    common = [f"train.out={out}", f"train.threads={args.threads}", f"train.device={args.device}",
              f"train.seed={seed}", "train.progress=false", "train.report_to=[]",
              "train.ckpt_every=0", "train.sample_every=0", "train.sample_count=8",
              "train.resume=never", "data.use_labels=false"]  # claims: unconditional unless set
    return load_run_config(None, [*common, *args.overrides, *overrides])


def train_run(args, out: Path, overrides: list[str], seed: int = 0, tag: str = "claim") -> dict:
    """Train one run (or reuse a finished one in ``out``); returns its facts."""
    from vidiff.train import train

    done = out / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    config = run_config(args, out, overrides, seed)
    t0, c0 = time.perf_counter(), time.process_time()
    result = train(config, echo=False)
    facts = {"out": str(out), "steps": result.step, "wall_s": time.perf_counter() - t0,
             "cpu_s": time.process_time() - c0, "overrides": overrides, "seed": seed}
    done.write_text(json.dumps(facts))
    log(tag, f"{out.name}: {result.step} steps in {facts['wall_s']:.0f} s")
    return facts


def saved_config(path):
    """The `RunConfig` a run (or checkpoint) was trained with."""
    from vidiff.modelio.checkpoint import load_checkpoint
    from vidiff.train.config import RunConfig

    return RunConfig.from_dict(load_checkpoint(path).config)


@torch.no_grad()
def sample_run(args, path, count: int, *, sampler: str | None = None,
               steps: int | None = None, seed: int = 0, labels: list[int] | None = None,
               guidance: float | None = None):
    """``count`` clips ``(N, C, F, H, W)`` of a run's EMA model (`vidiff.Pipeline`),
    ``args.sample_batch`` at a time (batch ``k`` uses seed ``seed + k``), with ``sampler``
    and ``steps`` (None: the run's own, ``sample.sampler`` / ``sample.steps``);
    class-conditional models get ``labels`` (None: the classes in turn) and the guidance
    scale ``guidance`` (None: the run's ``sample.guidance_scale``)."""
    from vidiff.modelio.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(path, device=args.device)
    chosen = pipe.sampling(sampler, steps, guidance_scale=guidance)
    out = []
    for k, start in enumerate(range(0, count, args.sample_batch)):
        n = min(args.sample_batch, count - start)
        part = None if labels is None else labels[start : start + n]
        g = torch.Generator(device=args.device).manual_seed(seed + k)
        out.append(pipe(n, sampler=chosen.sampler, steps=chosen.steps,
                        guidance_scale=chosen.guidance_scale, class_labels=part, generator=g,
                        batch_size=n).clamp(-1, 1).cpu())
    return torch.cat(out)


# -- scoring -------------------------------------------------------------------------------------
def real_clips(seed: int, count: int, frames: int, size: int, options: dict | None = None,
               with_labels: bool = False):
    """``count`` real bouncing-balls clips ``(N, C, F, H, W)`` (and their labels)."""
    from vidiff.data import make_synthetic

    data = make_synthetic("bouncing_balls", frames=frames, size=size, seed=seed,
                          num_videos=count, **(options or {}))
    items = [data[i] for i in range(count)]
    videos = torch.stack([it["video"] for it in items])
    if with_labels:
        return videos, torch.stack([it["label"] for it in items])
    return videos


class Scorer:
    """Scores clips against held-out real clips of a run config's data (`METRICS`)."""

    def __init__(self, args, config):
        from vidiff.metrics import ball_tracking_stats, reference_stats

        d = config.data
        self.shape = (d.frames, d.size, dict(d.options))
        ref = real_clips(REF_SEED, args.ref_num, *self.shape)
        self.ref_stats, self.ref_track = reference_stats(ref), ball_tracking_stats(ref)
        floors = [self.score(real_clips(s, args.num, *self.shape)) for s in FLOOR_SEEDS]
        self.floor = {k: mean_sd([f[k] for f in floors]) for k in METRICS}

    def score(self, videos: torch.Tensor) -> dict:
        from vidiff.metrics import ball_tracking_score, video_distance

        videos = videos.clamp(-1, 1).cpu()
        track = ball_tracking_score(videos, reference=self.ref_track)
        return {"steady": track["steady_pairs"],
                "fvd_lite": float(video_distance(self.ref_stats, videos)),
                "track": track["score"]}


def mean_sd(values: list[float]) -> dict:
    """{"mean", "sd", "n"}: the sample standard deviation (0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {"mean": mean, "sd": math.sqrt(var), "n": n}


def aggregate(scores: list[dict]) -> dict:
    """Per metric, the mean and sd over runs (seeds)."""
    return {k: mean_sd([s[k] for s in scores]) for k in METRICS}


def stderr(stat: dict, noise: float) -> float:
    """The standard error of a mean over ``stat["n"]`` runs; one run: the metric's ``noise``
    (its sd on real clips at the same count)."""
    return stat["sd"] / math.sqrt(stat["n"]) if stat["n"] > 1 else noise


def compare(agg: dict, base: dict, floor: dict) -> dict[str, str]:
    """Per metric, "better" / "worse" / "tie" of ``agg`` against ``base``: a difference counts
    when it exceeds 2 standard errors of the difference, ``2 sqrt(se_a^2 + se_b^2)`` (`stderr`:
    over seeds or sample sets, or the metric's noise on real clips for a single run)."""
    out = {}
    for key, (_, sign) in METRICS.items():
        noise = floor[key]["sd"]
        tol = 2 * math.hypot(stderr(agg[key], noise), stderr(base[key], noise))
        diff = sign * (agg[key]["mean"] - base[key]["mean"])
        out[key] = "tie" if abs(diff) <= tol else "better" if diff > 0 else "worse"
    return out


def verdicts(rows: dict[str, dict], base: str, floor: dict) -> list[str]:
    """A line per row against row ``base``: each metric's `compare` word and values."""
    lines = []
    for name, agg in rows.items():
        if name == base:
            continue
        words = compare(agg, rows[base], floor)
        parts = [f"{METRICS[k][0]} {w} ({agg[k]['mean']:.3f} vs {rows[base][k]['mean']:.3f})"
                 for k, w in words.items()]
        lines.append(f"- {name} vs {base}: " + "; ".join(parts))
    return lines


def summary(agg: dict) -> str:
    """"steady 0.812 ± 0.010, fvd_lite ..." for a log line."""
    return ", ".join(f"{k} {fmt(v)}" for k, v in agg.items())


def fmt(stat: dict, digits: int = 3) -> str:
    return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"


def table(rows: list[tuple[str, dict]], floor: dict | None, extra: dict | None = None) -> str:
    """A markdown table: a row per (name, aggregate) and the real-clips floor."""
    extra = extra or {}
    heads = [METRICS[k][0] + (" ↑" if METRICS[k][1] > 0 else " ↓") for k in METRICS]
    lines = ["| setting | " + " | ".join(heads + list(extra)) + " |",
             "|---|" + "---|" * (len(heads) + len(extra))]
    for name, agg in rows:
        cells = [fmt(agg[k]) for k in METRICS]
        cells += [str(col.get(name, "")) for col in extra.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if floor is not None:
        cells = [fmt(floor[k]) for k in METRICS] + [""] * len(extra)
        lines.append("| real clips | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(path: Path, panels: list[dict], title: str) -> str:
    """Save a row of panels: each {"title", "xlabel", "series": {name: (xs, aggs)}, "key",
    "floor" (optional aggregate), "xlog" (optional)} with sd error bars."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'vidiff[bench]'): no plot"
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        key = panel["key"]
        for name, (xs, aggs) in panel["series"].items():
            ax.errorbar(xs, [a[key]["mean"] for a in aggs], yerr=[a[key]["sd"] for a in aggs],
                        marker="o", capsize=3, label=name)
        floor = panel.get("floor")
        if floor is not None:
            lo, hi = floor[key]["mean"] - floor[key]["sd"], floor[key]["mean"] + floor[key]["sd"]
            ax.axhspan(lo, hi, color="grey", alpha=0.25, label="real clips (± sd)")
        if panel.get("xlog"):
            ax.set_xscale("log")
        name, sign = METRICS.get(key, (key, 1))
        ax.set_title(panel.get("title") or f"{name} ({'higher' if sign > 0 else 'lower'} "
                     "is better)")
        ax.set_xlabel(panel["xlabel"])
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"plot: {path}"


def write(out: Path, results: dict, text: str) -> None:
    """results.json and results.md in ``out``; the text also to stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(text + "\n")
    print(text)


def report(out: Path, args, machine: str, setup: str, rows: dict, steps: dict, floor: dict,
           steps_name: str = "steps per seed") -> None:
    """The claim's report: the machine, `setup` (a sentence on budget, seeds and clips), the
    table with each row's training steps, the verdicts against the first row; written by
    `write` with the rows, the floor and the steps."""
    text = "\n".join([
        f"Machine: {machine}.", setup, "",
        table(list(rows.items()), floor,
              {steps_name: {n: ", ".join(map(str, s)) for n, s in steps.items()}}), "",
        "A difference counts when it exceeds 2 standard errors (over seeds):",
        "", *verdicts(rows, next(iter(rows)), floor)])
    write(out, {"machine": machine, "args": vars(args), "floor": floor, "rows": rows,
                "steps": steps}, text)
