"""Speed of vidiff's video U-Net against video-diffusion-pytorch and diffusers: one run, one table.

The models (see `_peers.py`): vidiff's `vdm-matched` preset (37.8M parameters), the one
parameter-matched to video-diffusion-pytorch 0.7.0's `Unet3D(dim=64, dim_mults=(1, 2, 4, 8))`
(35.7M), that Unet3D itself, and a diffusers `UNet3DConditionModel` of matched size (35.6M).
Inputs: batch 2 of 3x8x32x32 and batch 1 of 3x16x64x64 clips.

Each (model, input) is measured in its own subprocess (`_measure.py`, which documents exactly
what is timed and how memory and FLOPs are counted); this script prints the machine and one
markdown table:

- FLOPs/forward: `torch.utils.flop_counter.FlopCounterMode` on one forward (matmul, conv and
  attention FLOPs; the same counter for all models).
- train step: forward + MSE loss + backward + AdamW step, train mode; sampling step: one
  no-grad forward in eval mode. 1 warmup, then the median of `--repeats`.
- GFLOP/s: 3 x forward FLOPs / train step time (on CUDA: TFLOP/s and % of `--peak-tflops`).
- peak mem: peak memory of the train (and sampling) phase above the built model.
- vs vdp: ratio to video-diffusion-pytorch's Unet3D at the same input (< 1 = vidiff better).

    python benchmarks/unet_speed.py                          # CPU, fp32, both inputs
    python benchmarks/unet_speed.py --configs 8x32x32 --repeats 5 --compile
    python benchmarks/unet_speed.py --device cuda --dtype bf16 --batch 32 --compile
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _peers  # noqa: E402  (imports torch only)

from vidiff.utils.machine import cpu_model  # noqa: E402

# input size -> (frames, height = width, default batch)
CONFIGS = {"8x32x32": (8, 32, 2), "16x32x32": (16, 32, 1), "16x64x64": (16, 64, 1)}
REFERENCE = "vdp"


def machine(args) -> dict:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": cores,
        "torch": torch.__version__,
        "threads": args.threads or torch.get_num_threads(),
        "python": platform.python_version(),
        "load_start": os.getloadavg(),
    }


def run_worker(spec: dict, timeout: float) -> dict:
    """Measure one (model, input) in a fresh interpreter; returns its result or an error."""
    cmd = [sys.executable, os.path.join(HERE, "_measure.py"), json.dumps(spec)]
    env = dict(os.environ)
    if spec.get("threads"):
        env.setdefault("OMP_NUM_THREADS", str(spec["threads"]))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=HERE
        )
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f}s"}
    for line in proc.stderr.splitlines():
        if line.startswith("  ["):
            print(line, file=sys.stderr)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
            result["wall_s"] = time.perf_counter() - t0
            return result
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {**spec, "error": f"exit {proc.returncode}: {tail[:200]}"}


def combine(rounds: list[dict]) -> dict:
    """Several rounds of one (model, input): the fastest round's times (load only adds time),
    the largest memory; errors if every round failed."""
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return rounds[-1]
    best = dict(min(ok, key=lambda r: r["train_s"]))
    fastest_sample = min(ok, key=lambda r: r["sample_s"])
    best["sample_s"] = fastest_sample["sample_s"]
    best["cpu_share"] = [fastest_sample["cpu_share"][0], best["cpu_share"][1]]
    best["others_cores"] = [fastest_sample["others_cores"][0], best["others_cores"][1]]
    best["sample_gflops"] = best["flops_forward"] / best["sample_s"] / 1e9
    best["train_peak_gib"] = max(r["train_peak_gib"] for r in ok)
    best["sample_peak_gib"] = max(r["sample_peak_gib"] for r in ok)
    best["rounds"] = [{k: r.get(k) for k in ("train_s", "sample_s", "error")} for r in rounds]
    return best


# -- the table -----------------------------------------------------------------------------------
def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _others(r: dict) -> str:
    """Cores other processes kept busy during this row's timed steps (the worse phase)."""
    v = [c for c in r.get("others_cores", []) if c is not None]
    return f"{max(v):.2f}" if v else "?"


def table(results: list[dict], args) -> str:
    cuda = args.device == "cuda"
    unit = "ms" if cuda else "s"
    tscale, tfmt = (1e3, ".1f") if cuda else (1.0, ".3f")
    rate = "TFLOP/s (% peak)" if cuda else "GFLOP/s"
    head = [
        "model",
        "params (M)",
        "input",
        "FLOPs/forward (G)",
        f"train step ({unit})",
        f"sampling step ({unit})",
        rate,
        "peak mem train (GiB)",
        "peak mem sampling (GiB)",
        f"train vs {args.reference}",
        f"sampling vs {args.reference}",
        f"mem vs {args.reference}",
    ]
    if not cuda:
        head.append("other procs (cores)")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    refs = {
        r["input"]: r
        for r in results
        if r["model"] == args.reference and not r.get("compile") and "error" not in r
    }
    for r in results:
        label = _peers.LABELS[r["model"]] + (" +compile" if r.get("compile") else "")
        if "error" in r:
            b, (f, s, _) = r["batch"], CONFIGS[r["config"]]
            lines.append(f"| {label} | - | {b}x3x{f}x{s}x{s} | failed: {r['error']} |")
            continue
        ref = refs.get(r["input"])

        def ratio(key, r=r, ref=ref):
            return None if ref is None else r[key] / ref[key]

        if cuda:
            tflops = r["train_gflops"] / 1e3
            speed = f"{tflops:.1f} ({100 * tflops / args.peak_tflops:.1f}%)"
        else:
            speed = f"{r['train_gflops']:.1f}"
        lines.append(
            "| "
            + " | ".join(
                [
                    label,
                    f"{r['params'] / 1e6:.1f}",
                    r["input"],
                    f"{r['flops_forward'] / 1e9:.1f}",
                    format(r["train_s"] * tscale, tfmt),
                    format(r["sample_s"] * tscale, tfmt),
                    speed,
                    f"{r['train_peak_gib']:.2f}",
                    f"{r['sample_peak_gib']:.2f}",
                    _fmt(ratio("train_s"), ".2f"),
                    _fmt(ratio("sample_s"), ".2f"),
                    _fmt(ratio("train_peak_gib"), ".2f"),
                ]
                + ([] if cuda else [_others(r)])
            )
            + " |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16 = autocast")
    p.add_argument("--compile", action="store_true", help="also run torch.compile'd models")
    p.add_argument(
        "--compile-models",
        default="vidiff",
        help="comma list of models that get a +compile row with --compile (default vidiff)",
    )
    p.add_argument("--configs", default="8x32x32,16x64x64", help="comma list of input sizes: "
                   + ", ".join(CONFIGS))
    p.add_argument("--models", default="vidiff,vdp,diffusers", help="comma list of models: "
                   + ", ".join(_peers.MODELS))
    p.add_argument("--reference", default=REFERENCE, help="the model the ratios are to")
    p.add_argument(
        "--repeats", type=int, default=None, help="timed calls per phase (CPU 3, CUDA 20)"
    )
    p.add_argument(
        "--max-phase-s",
        type=float,
        default=60.0,
        help="stop repeating a phase once its timed calls took this long (at least one call)",
    )
    p.add_argument("--rounds", type=int, default=1, help="measure every model this many times, "
                   "alternating models; keep each one's fastest round")  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    p.add_argument("--batch", type=int, default=None, help="batch for every input size")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="CUDA: dense peak, TFLOP/s")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per subprocess")
    p.add_argument("--json", default=None, help="write machine + results here")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 20 if args.device == "cuda" else 3
    for name in args.models.split(","):
        if name not in _peers.MODELS:
            p.error(f"unknown model {name!r}; choose from {', '.join(_peers.MODELS)}")
    for name in args.configs.split(","):
        if name not in CONFIGS:
            p.error(f"unknown config {name!r}; choose from {', '.join(CONFIGS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    info = machine(args)
    load = ", ".join(f"{v:.2f}" for v in info["load_start"])
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
        f"{info['threads']} threads, python {info['python']}; load average at start: {load}"
    )
    sys.stdout.flush()
    models = args.models.split(",")
    variants = [(m, False) for m in models]
    if args.compile:
        variants += [(m, True) for m in args.compile_models.split(",") if m in models]
    results = []
    t0 = time.perf_counter()
    for config in args.configs.split(","):
        frames, size, batch = CONFIGS[config]
        rounds: dict[tuple, list] = {v: [] for v in variants}
        for k in range(args.rounds):
            order = variants if k % 2 == 0 else variants[::-1]
            for name, comp in order:
                spec = {
                    "model": name,
                    "config": config,
                    "compile": comp,
                    "device": args.device,
                    "dtype": args.dtype,
                    "batch": args.batch or batch,
                    "frames": frames,
                    "size": size,
                    "repeats": args.repeats,
                    "max_phase_s": args.max_phase_s,
                    "threads": args.threads,
                }
                rounds[(name, comp)].append(run_worker(spec, args.timeout))
        results += [combine(rounds[v]) for v in variants]
    info["load_end"] = os.getloadavg()
    info["wall_s"] = time.perf_counter() - t0
    gpu = next((r["gpu"] for r in results if "gpu" in r), None)
    if gpu:
        info["gpu"] = gpu

    load_end = ", ".join(f"{v:.2f}" for v in info["load_end"])
    print()
    where = f"GPU {gpu}, " if gpu else ""
    print(
        f"machine: {where}{info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
        f"{info['threads']} threads; {args.device} {args.dtype}"
        f"{', batch ' + str(args.batch) if args.batch else ''}"
    )
    print(f"load average (1, 5, 15 min): start {load}; end {load_end}")
    if args.device == "cpu":
        # the run's own threads raise the load average by up to --threads; what tells whether
        # other processes took cores is the load before the run and each row's contention
        others = [c for r in results for c in r.get("others_cores", []) if c is not None]
        worst = max(others, default=0.0)
        if info["load_start"][0] > 1.0 or worst > 0.1:
            print(
                f"note: load average {info['load_start'][0]:.2f} before the run (> 1.0 is busy), "
                f"other processes kept up to {worst:.2f} cores busy during timed steps: times "
                "of those rows are inflated, more than in proportion (threads wait for each other)"
            )
        print(
            "other procs = cores kept busy by other processes during a row's timed steps "
            "(/proc/stat minus this run's CPU time); 0.00 = the machine was the run's alone"
        )
    print(
        f"median of up to {args.repeats} timed calls after 1 warmup"
        + (f", fastest of {args.rounds} rounds" if args.rounds > 1 else "")
        + f"; total {info['wall_s'] / 60:.1f} min"
    )
    print()
    print(table(results, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "args": vars(args), "results": results}, f, indent=1)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
