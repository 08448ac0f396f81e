"""Step time of ``train.parallel`` = ddp against fsdp (and fsdp with the clips split over the
ranks, ``train.sequence_parallel = 2``), 2 processes under torchrun, the same global batch.

Each variant trains `--steps` steps in its own processes, the variants alternating, `--rounds`
times; the table gives the median seconds per step after the first logged interval and the
CPU seconds per step of rank 0 (all its threads), and each variant's ratio to DDP. On the CPU
(gloo) FSDP's all-gathers and reduce-scatters are memory copies through loopback sockets, so
the ratio says what sharding costs where it saves nothing; on GPUs with NVLink the same
collectives overlap with compute (`benchmarks/gpu_check.sh` has no multi-GPU section: one GPU
is lent at most).

    python benchmarks/parallel_step.py                       # CPU: DiT and U-Net, small sizes
    python benchmarks/parallel_step.py --kinds dit --steps 60 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MODELS = {  # kind: the settings of its model (a DiT's patches split evenly over 2 ranks)
    "dit": ["model.kind=dit", "model.preset=dit-tiny"],
    "unet": ["model.kind=unet", "model.preset=small"],
}
VARIANTS = {  # name: (settings, whether the kind must be a transformer)
    "ddp": ([], False),
    "fsdp": (["train.parallel=fsdp"], False),
    "fsdp + sequence 2": (["train.parallel=fsdp", "train.sequence_parallel=2"], True),
}


def run_variant(kind: str, variant: str, args, out: Path) -> tuple[float, float]:
    """(median s/step after the first interval, rank 0's CPU s/step)."""
    settings, split = VARIANTS[variant]
    # one data shard of two ranks: twice the videos per shard, the same global batch
    batch = args.batch * (2 if split else 1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "vidiff", "train", "--out", str(out), "--steps", str(args.steps),
           "--device", "cpu", "--set", *MODELS[kind], *settings,
           f"data.frames={args.frames}", f"data.size={args.size}", f"data.batch_size={batch}",
           "data.use_labels=true", "train.progress=false", "train.sample_every=0",
           "train.sample_count=1", "sample.steps=1", f"train.threads={args.threads}",
           f"train.log_every={args.log_every}", "train.ckpt_every=0", "train.resume=never",
           "train.report_to=[]"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} {variant} failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    times = [1 / r["it_s"] for r in rows[1:]] or [1 / rows[0]["it_s"]]
    cpu = (rows[-1]["cpu_s"] - rows[0]["cpu_s"]) / max(1, rows[-1]["step"] - rows[0]["step"])
    return statistics.median(times), cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kinds", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=2, help="videos per process (DDP, FSDP)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    print(f"| model | parallel | s/step (median of {args.rounds} runs) | vs ddp | rank-0 CPU "
          f"s/step |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds:
            names = [v for v, (_, split) in VARIANTS.items() if kind == "dit" or not split]
            results: dict[str, list] = {v: [] for v in names}
            for r in range(args.rounds):
                for v in names:
                    out = Path(tmp) / f"{kind}-{len(results[v])}-{r}-{v.replace(' ', '')}"
                    results[v].append(run_variant(kind, v, args, out))
            base = statistics.median(t for t, _ in results["ddp"])
            for v, runs in results.items():
                step = statistics.median(t for t, _ in runs)
                cpu = statistics.median(c for _, c in runs)
                print(f"| {' '.join(MODELS[kind])} | {v} | {step:.4f} | {step / base:.2f}x | "
                      f"{cpu:.4f} |")
    print(f"\n2 processes on the CPU (gloo), {args.threads} thread(s) each, "
          f"{args.batch * 2}x3x{args.frames}x{args.size}x{args.size} videos per step, "
          f"{args.steps} steps")


if __name__ == "__main__":
    main()
