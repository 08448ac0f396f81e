"""Sample quality at equal compute: vidiff vs video-diffusion-pytorch 0.7.0 on bouncing balls.

Both libraries train on the same clips for the same compute budget on this CPU, one after the
other, each in its own subprocess with the same torch thread count; then each samples and one
table compares them on the weight-free metrics of `vidiff.metrics`.

**Budget**: ``--budget-s`` seconds of training on ``--clock``: by default each training
process's own CPU time (`time.process_time`, all its threads) with one torch thread each, so
that both get the same compute even when other jobs share the cores (a wall-clock budget on
a shared machine hands whichever side runs during the quiet minutes more compute); ``--clock
wall`` gives a wall-clock budget for a quiet machine. Both stop through
`vidiff.train.budget.TimeBudget`: no step starts that would end more than half a step past the
budget.

**Data** (both sides, identical tensors in identical order): `configs/balls.toml`'s bouncing
balls, 8 frames of 24x24 (``make_synthetic("bouncing_balls", seed=0, ...)``), batch 8, the
order of `vidiff.train.data.ShardedOrder`. Training time counts everything inside the loop
(rendering the clips, forward, backward, optimizer, EMA), nothing before it (building the
model) or after it (sampling).

**vidiff**: ``vidiff train`` as a user runs it (`Trainer.run`) with the default run config of
`configs/balls.toml` (`mini` preset, 0.88M parameters, cosine schedule, v-prediction, AdamW
1e-3, 100 warmup steps, cosine LR decay to 0.1x, EMA 0.995, gradient clipping 1.0; the results
in benchmarks/README.md were measured with the earlier default, `tiny`, 0.21M) and
``train.max_seconds`` / ``train.budget_clock`` set to the budget: the trainer stops when the
budget is spent and aims its cosine LR decay at the step where the budget will end (re-estimated
every step from the mean step time). Samples: the EMA weights with the trainer's default
sampler (`Trainer.sample_videos`; DDIM 50 steps when the results were measured).

**video-diffusion-pytorch 0.7.0**: ``GaussianDiffusion(Unet3D(dim=32, dim_mults=(1, 2, 4)),
image_size=24, num_frames=8, timesteps=1000, loss_type="l2")`` (3.16M parameters): its README's
model with three levels instead of four, the usual pick for 24x24 frames (24 -> 12 -> 6; the
library's defaults for everything else: 8 attention heads of 32 dims, linear spatial attention,
temporal attention at every level). Its attention widths are fixed by those defaults, so
``dim=64`` (10.6M) costs about the same time per step on this CPU. Training mirrors its
`Trainer`: Adam (no weight decay, no gradient clipping), constant LR, EMA 0.995 updated every 10
steps from step 2000 (before that the EMA copy equals the model, so in a budget of a few hundred
steps the samples come from the trained weights themselves); without its gradient
accumulation (default 2), so that a step sees the same 8 clips as vidiff's. LR 3e-4
(``--peer-lr``): 3x its default 1e-4, because the budget gives it only tens to hundreds of steps
and a larger step helps most there (Adam at 3e-4 is stable for this 3M-parameter U-Net). Its
`GaussianDiffusion.forward` takes videos in [0, 1] (``normalize_img``: x * 2 - 1) and `sample`
returns [0, 1]: the benchmark feeds ``(x + 1) / 2`` and maps the samples back to [-1, 1].

Its sampler is the 1000-step ancestral DDPM loop (`GaussianDiffusion.sample`), the only one it
has: about 20x the denoiser calls of vidiff's DDIM 50, with a 15x larger network; on a 2-core
CPU 8 clips take tens of minutes, so it samples ``--peer-native-num`` clips (default 4). To
compare the trained networks on all ``--num`` clips with the same sampler, its Unet3D is also
sampled with vidiff's DDIM 50 (`vidiff.sample`), through an eps-prediction `Diffusion` with
exactly its schedule (cosine, s = 0.008, betas clipped at 0.9999, x0 clipped to [-1, 1]).

**Metrics** against one held-out real reference (``--ref-num`` clips, seed 1; training uses
seed 0): FVD-lite (`video_distance`, lower is better), the ball tracking score
(`ball_tracking_score`: count consistency x smoothness x count closeness, 1 ~ real), the
fraction of frame pairs that keep their (non-zero) ball count and of clips whose count
never changes, the
acceleration ratio (1 = as smooth as real, > 1 jerkier). FVD-lite has a finite-sample bias that
grows as the clip count shrinks, so rows are only comparable at the same clip count: "real vs
real" rows (another real set, seed 2) give the floor at each count, and "vidiff (first n)"
compares vidiff with the peer's native sampler at its n clips. Training loss is each library's
own objective (vidiff: v-MSE; the peer: eps-MSE) and not comparable across rows.

    .venv/bin/python benchmarks/quality_at_equal_compute.py                      # full run
    .venv/bin/python benchmarks/quality_at_equal_compute.py --budget-s 20 --num 8 \\
        --peer-native-num 2 --ref-num 64                                         # smoke test

Writes under ``--out`` (default runs/quality_at_equal_compute): ``{vidiff,vdp,vdp_native,
real}.png`` contact sheets (frames left to right, a row per clip), ``samples_*.pt``,
``worker_*.json`` (training results), ``results.json`` and ``results.md``; ``--rescore`` scores
the samples already there again (e.g. with another ``--ref-num``) without training.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = ROOT / "configs" / "balls.toml"

PEER_UNET = {"dim": 32, "dim_mults": (1, 2, 4)}  # see the module docstring
PEER_TIMESTEPS = 1000
PEER_EMA = {"decay": 0.995, "every": 10, "start": 2000}  # its Trainer's defaults
LOSS_TAIL = 25  # final loss: the mean of the last N steps
SHEET_CLIPS = 16  # clips per contact sheet
REF_SEED, REAL2_SEED = 1, 2  # real reference / second real set (training uses the config's 0)


def _log(msg: str) -> None:
    print(f"[quality] {msg}", file=sys.stderr, flush=True)


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _run_config(spec: dict):
    from vidiff.train.config import load_run_config

    return load_run_config(
        CONFIG,
        [
            f"train.out={spec['out']}/vidiff_run",
            f"train.threads={spec['threads']}",
            "train.device=cpu",
            "train.progress=false",
            "train.report_to=[]",
            "train.resume=never",
            "train.ckpt_every=0",
            "train.log_every=25",
            f"train.max_seconds={spec['budget_s']}",
            f"train.budget_clock={spec['clock']}",
            "train.steps=100000",  # the budget ends the run (and its LR decay)
            *spec.get("vidiff_set", []),
        ],
    )


def _result(
    name: str, steps: int, seconds: float, batch: int, losses: list[float], params: int
) -> dict:
    tail = losses[-LOSS_TAIL:]
    return {
        "name": name,
        "steps": steps,
        "train_s": seconds,
        "batch": batch,
        "samples_s": steps * batch / max(seconds, 1e-9),
        "params": params,
        "final_loss": sum(tail) / len(tail) if tail else float("nan"),
        "first_loss": losses[0] if losses else float("nan"),
    }


def _sample_chunks(fn, count: int, chunk: int) -> torch.Tensor:
    out = []
    for i in range(0, count, chunk):
        out.append(fn(i, min(chunk, count - i)))
    return torch.cat(out).clamp(-1, 1)


# -- workers (one per library, each in its own process) -------------------------------------------
def _worker_vidiff(spec: dict) -> dict:
    from vidiff.train.trainer import Trainer

    config = _run_config(spec)
    d = config.data
    trainer = Trainer(config, echo=False)  # sets torch threads to train.threads
    _log(
        f"vidiff: {trainer.num_params / 1e6:.2f}M parameters, {torch.get_num_threads()} "
        f"threads, budget {spec['budget_s']:.0f} {spec['clock']} s"
    )
    trainer.run()  # stops at train.max_seconds; its LR decay ends with the budget
    log = [json.loads(line) for line in (Path(config.train.out) / "log.jsonl").open()]
    last = log[-1]  # logged at the last step, before the final checkpoint and samples
    seconds = last["cpu_s" if spec["clock"] == "cpu" else "elapsed_s"]
    result = _result("vidiff", trainer.step, seconds, d.batch_size, [], trainer.num_params)
    result.update(
        first_loss=log[0]["loss"],
        final_loss=last["loss"],  # mean over the last log interval (25 steps)
        wall_s=last["elapsed_s"],
        cpu_s=last["cpu_s"],
        lr_horizon=trainer.schedule.total,
        final_lr=last["lr"],
    )
    _log(
        f"vidiff: {trainer.step} steps in {seconds:.1f} {spec['clock']} s, loss "
        f"{result['final_loss']:.4f}; sampling {spec['num']} clips "
        f"(DDIM {config.sample.steps})"
    )
    trainer.raw.eval()
    torch.set_num_threads(spec["sample_threads"])  # sampling is outside the budget
    t0 = time.perf_counter()
    videos = _sample_chunks(
        lambda i, n: trainer.sample_videos(count=n, seed=spec["sample_seed"] + i),
        spec["num"],
        spec["sample_batch"],
    )
    result["samples"] = {
        "vidiff": {
            "sampler": f"{config.sample.sampler} {config.sample.steps}",
            "clips": len(videos),
            "sample_s": time.perf_counter() - t0,
        }
    }
    torch.save(videos, Path(spec["out"]) / "samples_vidiff.pt")
    trainer.close()
    return result


def _peer_model(spec: dict):
    sys.path.insert(0, str(HERE))
    import _peers

    _peers._stub_torchvision()
    from video_diffusion_pytorch import GaussianDiffusion, Unet3D

    config = _run_config(spec)
    torch.manual_seed(config.train.seed)
    unet = Unet3D(**PEER_UNET, **spec["peer_kwargs"])
    model = GaussianDiffusion(
        unet,
        image_size=config.data.size,
        num_frames=config.data.frames,
        timesteps=PEER_TIMESTEPS,
        loss_type="l2",
    )
    return model, config


def _worker_vdp(spec: dict) -> dict:
    import copy

    from vidiff.diffusion.ddpm import Diffusion, DiffusionConfig
    from vidiff.sampling.samplers import sample
    from vidiff.train.budget import TimeBudget
    from vidiff.train.data import JointVideoDataset, ShardedOrder, build_dataset, make_loader

    torch.set_num_threads(spec["threads"])
    model, config = _peer_model(spec)
    from video_diffusion_pytorch.video_diffusion_pytorch import EMA  # after the stub

    d = config.data
    dataset = build_dataset(d)  # the same clips, in the same order, as vidiff's trainer
    order = ShardedOrder(len(dataset), d.batch_size, seed=d.seed, num_frames=d.frames)
    batches = make_loader(JointVideoDataset(dataset), order, d.workers)
    ema, ema_model = EMA(PEER_EMA["decay"]), copy.deepcopy(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec["peer_lr"])
    params = sum(p.numel() for p in model.parameters())
    _log(
        f"vdp: {params / 1e6:.2f}M parameters, {torch.get_num_threads()} threads, "
        f"budget {spec['budget_s']:.0f} {spec['clock']} s, Adam lr {spec['peer_lr']:g}"
    )
    losses: list[float] = []
    step = 0
    model.train()
    budget = TimeBudget(spec["budget_s"], spec["clock"])
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while budget.another():
        x = next(batches)["video"]  # (B, 3, F, H, W) in [-1, 1]
        loss = model((x + 1) / 2)  # it takes [0, 1] and normalizes to [-1, 1] itself
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % PEER_EMA["every"] == 0:  # its Trainer.step_ema
            if step < PEER_EMA["start"]:
                ema_model.load_state_dict(model.state_dict())
            else:
                ema.update_model_average(ema_model, model)
        step += 1
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise RuntimeError(f"vdp: the loss is {losses[-1]} at step {step}: lower --peer-lr")
        budget.done_step()
        if step % 10 == 0:
            _log(f"vdp: step {step}, {budget.elapsed:.0f} s, loss {losses[-1]:.4f}")
    seconds = budget.elapsed
    cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    del batches
    if step < PEER_EMA["start"]:  # its trainer syncs the EMA copy every 10 steps before 2000
        ema_model.load_state_dict(model.state_dict())
    result = _result("vdp", step, seconds, d.batch_size, losses, params)
    result.update(wall_s=wall_s, cpu_s=cpu_s)
    ema_model.eval()
    torch.set_num_threads(spec["sample_threads"])  # sampling is outside the budget
    result["samples"] = {}
    shape = (3, d.frames, d.size, d.size)

    # the same network sampled with vidiff's DDIM 50 through an exact copy of its schedule
    if spec["num"]:
        _log(
            f"vdp: {step} steps in {seconds:.1f} s, loss {result['final_loss']:.4f}; sampling "
            f"{spec['num']} clips with vidiff's DDIM {spec['ddim_steps']}"
        )
        diffusion = Diffusion.from_config(
            DiffusionConfig(
                schedule="cosine",
                timesteps=PEER_TIMESTEPS,
                prediction="eps",
                schedule_kwargs={"s": 0.008, "max_beta": 0.9999},
            )
        )
        gap = (diffusion.alphas_cumprod.float() - ema_model.alphas_cumprod).abs().max()
        assert gap < 1e-5, f"schedule mismatch {gap}"
        unet = ema_model.denoise_fn

        def ddim(i, n):
            g = torch.Generator().manual_seed(spec["sample_seed"] + i)
            return sample(
                lambda x, t: unet(x, t),
                (n, *shape),
                diffusion=diffusion,
                sampler="ddim",
                steps=spec["ddim_steps"],
                generator=g,
            )

        t0 = time.perf_counter()
        with torch.inference_mode():
            videos = _sample_chunks(ddim, spec["num"], spec["sample_batch"])
        result["samples"]["vdp"] = {
            "sampler": f"vidiff ddim {spec['ddim_steps']}",
            "clips": len(videos),
            "sample_s": time.perf_counter() - t0,
        }
        torch.save(videos, Path(spec["out"]) / "samples_vdp.pt")

    # its own sampler: GaussianDiffusion.sample, ancestral DDPM over all 1000 steps
    if spec["peer_native_num"]:
        _log(f"vdp: sampling {spec['peer_native_num']} clips with its own 1000-step sampler")
        torch.manual_seed(spec["sample_seed"])
        t0 = time.perf_counter()
        videos = _sample_chunks(
            lambda i, n: ema_model.sample(batch_size=n).float() * 2 - 1,  # [0, 1] -> [-1, 1]
            spec["peer_native_num"],
            spec["sample_batch"],
        )
        result["samples"]["vdp_native"] = {
            "sampler": f"own ddpm {PEER_TIMESTEPS}",
            "clips": len(videos),
            "sample_s": time.perf_counter() - t0,
        }
        torch.save(videos, Path(spec["out"]) / "samples_vdp_native.pt")
    return result


def _worker_main(name: str, spec_json: str) -> None:
    spec = json.loads(spec_json)
    result = {"vidiff": _worker_vidiff, "vdp": _worker_vdp}[name](spec)
    print("RESULT " + json.dumps(result), flush=True)


# -- the parent: run both workers, score, tabulate ------------------------------------------------
def _spawn(name: str, spec: dict) -> dict:
    env = dict(
        os.environ, OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"])
    )
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, json.dumps(spec)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"the {name} worker failed (exit status {proc.returncode})")
    return json.loads(lines[-1][len("RESULT ") :])


def _real(seed: int, count: int, frames: int, size: int) -> torch.Tensor:
    from vidiff.data import make_synthetic

    ds = make_synthetic("bouncing_balls", frames=frames, size=size, seed=seed)
    return torch.stack([ds[i]["video"] for i in range(count)])


def _scores(videos: torch.Tensor, ref: torch.Tensor, ref_track: dict) -> dict:
    from vidiff.metrics import ball_tracking_score, video_distance

    track = ball_tracking_score(videos, reference=ref_track)
    fvd = float(video_distance(ref, videos)) if len(videos) >= 2 else float("nan")
    return {
        "fvd_lite": fvd,
        "track": track["score"],
        "count_constant": track["count_constant"],
        "count_steady": track["count_steady"],
        "accel_ratio": track["accel_ratio"],
        "mean_count": track["mean_count"],
    }


def _fmt(x, spec: str = ".3f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec)


def _table(rows: list[dict]) -> str:
    head = [
        "run",
        "sampler",
        "clips",
        "FVD-lite ↓",
        "track score ↑",
        "count-steady ↑",
        "count-const ↑",
        "accel ratio (1 = real)",
        "train steps",
        "train s",
        "samples/s seen",
        "final loss*",
        "sample s/clip",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        t = r.get("train", {})
        lines.append(
            "| "
            + " | ".join(
                [
                    r["run"],
                    r["sampler"],
                    str(r["clips"]),
                    _fmt(r["fvd_lite"]),
                    _fmt(r["track"]),
                    _fmt(r["count_steady"], ".2f"),
                    _fmt(r["count_constant"], ".2f"),
                    _fmt(r["accel_ratio"], ".2f"),
                    str(t.get("steps", "-")),
                    _fmt(t.get("train_s"), ".0f"),
                    _fmt(t.get("samples_s"), ".1f"),
                    _fmt(t.get("final_loss"), ".4f"),
                    _fmt(r["sample_s"] / r["clips"] if r.get("sample_s") else None, ".2f"),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def _verdict(a: dict, b: dict) -> list[str]:
    """Per metric, is row `a` (vidiff) ahead of row `b` (the peer)?"""
    out = []
    for key, better in (
        ("fvd_lite", "low"),
        ("track", "high"),
        # the parts of the tracking score (diagnostics, not separate metrics)
        ("count_steady", "high"),
        ("count_constant", "high"),
        ("accel_ratio", "one"),
    ):
        x, y = a[key], b[key]
        if any(isinstance(v, float) and math.isnan(v) for v in (x, y)):
            out.append(f"{key}: n/a")
            continue
        if better == "one":  # closer to 1 in log scale (2x as jerky = half as jerky)
            x, y = (abs(math.log(max(v, 1e-9))) for v in (x, y))
            better = "low"
        gap = (y - x) if better == "low" else (x - y)  # > 0: vidiff ahead
        who = "tie" if abs(gap) < 1e-9 else ("vidiff ahead" if gap > 0 else "peer ahead")
        out.append(f"{key}: {who} ({a[key]:.3f} vs {b[key]:.3f})")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--budget-s",
        type=float,
        default=400.0,
        help="training seconds per library, on --clock (default 400)",
    )
    p.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="what the budget counts: each training process's CPU time (default: equal "
        "compute even when other jobs share the cores) or wall-clock time (quiet machine)",
    )
    p.add_argument("--num", type=int, default=32, help="clips sampled per model (default 32)")
    p.add_argument(
        "--peer-native-num",
        type=int,
        default=4,
        help="clips from video-diffusion-pytorch's own 1000-step sampler (0: skip)",
    )
    p.add_argument(
        "--ref-num",
        type=int,
        default=256,
        help="real reference clips (default 256; at least --num)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for both (0: the idle cores now, like vidiff train); with "
        "--clock cpu keep 1: waiting threads would count as compute",
    )
    p.add_argument("--peer-lr", type=float, default=3e-4, help="its Adam LR (its default 1e-4)")
    p.add_argument(
        "--peer-kwargs",
        type=json.loads,
        default={},
        help="more Unet3D keywords as JSON, e.g. '{\"attn_heads\": 4}'",
    )
    p.add_argument(
        "--vidiff-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a run-config override for vidiff's side (repeatable), as `vidiff train --set`",
    )
    p.add_argument("--ddim-steps", type=int, default=50, help="DDIM steps for the peer's Unet3D")
    p.add_argument(
        "--sample-threads",
        type=int,
        default=0,
        help="torch threads for sampling, after training (0: all cores)",
    )
    p.add_argument("--sample-batch", type=int, default=16, help="clips per sampling call")
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument(
        "--only",
        choices=("vidiff", "vdp"),
        default=None,
        help="run one side (the table scores what is there)",
    )
    p.add_argument("--out", default="runs/quality_at_equal_compute")
    p.add_argument(
        "--rescore",
        action="store_true",
        help="no training: score the samples an earlier run left in --out",
    )
    args = p.parse_args()

    from vidiff.io import write_video
    from vidiff.metrics import ball_tracking_stats
    from vidiff.train.trainer import auto_threads

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    threads = args.threads or auto_threads()
    config = _run_config({"out": str(out), "threads": threads, "budget_s": args.budget_s,
                          "clock": args.clock, "vidiff_set": args.vidiff_set})
    d = config.data
    load_before = _loadavg()
    machine = {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_before": load_before,
    }
    print(
        f"machine: {machine['cpu']}, {machine['cores']} cores, {threads} torch threads, "
        f"torch {torch.__version__}, load average (1/5/15 min) before: {load_before}"
    )
    if args.clock == "wall" and os.getloadavg()[0] > 0.5:
        print(
            "warning: the machine is busy; training speed (and so the steps each side fits "
            "into the budget) is not representative"
        )
    spec = {
        "out": str(out),
        "threads": threads,
        "budget_s": args.budget_s,
        "num": args.num,
        "peer_native_num": args.peer_native_num,
        "peer_lr": args.peer_lr,
        "peer_kwargs": args.peer_kwargs,
        "clock": args.clock,
        "vidiff_set": args.vidiff_set,
        "sample_threads": args.sample_threads or os.cpu_count() or 1,
        "ddim_steps": args.ddim_steps,
        "sample_batch": args.sample_batch,
        "sample_seed": args.sample_seed,
    }
    print(
        f"data: bouncing balls, {d.frames} frames of {d.size}x{d.size}, batch {d.batch_size}; "
        f"budget {args.budget_s:.0f} s of training ({args.clock} clock) per library, one "
        "after the other"
    )

    t_start = time.perf_counter()
    results, loads = {}, {}
    for name in ("vidiff", "vdp"):
        if args.only and name != args.only:
            continue
        saved = out / f"worker_{name}.json"
        if args.rescore:
            if not saved.exists():
                sys.exit(f"--rescore: {saved} is missing (run without --rescore first)")
            results[name] = json.loads(saved.read_text())
            continue
        results[name] = _spawn(name, spec)
        saved.write_text(json.dumps(results[name], indent=2))
        loads[name] = _loadavg()
        _log(f"{name} done; load average {loads[name]}")

    _log(f"scoring against {max(args.ref_num, args.num)} real clips (seed {REF_SEED})")
    ref = _real(REF_SEED, max(args.ref_num, args.num), d.frames, d.size)
    ref_track = ball_tracking_stats(ref)
    real2 = _real(REAL2_SEED, max(args.num, args.peer_native_num), d.frames, d.size)
    write_video(out / "real.png", real2[:SHEET_CLIPS])

    rows: list[dict] = []
    samples = {}
    for res in results.values():
        for key, info in res.pop("samples").items():
            videos = torch.load(out / f"samples_{key}.pt")
            samples[key] = videos
            write_video(out / f"{key}.png", videos[:SHEET_CLIPS])
            label = "vidiff" if key == "vidiff" else "video-diffusion-pytorch"
            rows.append(
                {
                    "run": label,
                    "key": key,
                    "sampler": info["sampler"],
                    "clips": info["clips"],
                    "sample_s": info["sample_s"],
                    "train": res,
                    **_scores(videos, ref, ref_track),
                }
            )
    rows.append(
        {
            "run": "real vs real",
            "key": "real",
            "sampler": "-",
            "clips": args.num,
            **_scores(real2[: args.num], ref, ref_track),
        }
    )
    n = args.peer_native_num
    if "vdp_native" in samples and n < args.num:  # the same clip count as the native sampler
        mine = next((r for r in rows if r["key"] == "vidiff"), None)
        if mine is not None:
            rows.append(
                {
                    "run": f"vidiff (first {n})",
                    "key": "vidiff_n",
                    "sampler": mine["sampler"],
                    "clips": n,
                    **_scores(samples["vidiff"][:n], ref, ref_track),
                }
            )
        rows.append(
            {
                "run": f"real vs real (first {n})",
                "key": "real_n",
                "sampler": "-",
                "clips": n,
                **_scores(real2[:n], ref, ref_track),
            }
        )
    load_after = _loadavg()
    machine["load_after"] = load_after
    machine["load_after_each"] = loads

    table = _table(rows)
    by_key = {r["key"]: r for r in rows}
    verdicts = []
    if "vidiff" in by_key and "vdp" in by_key:
        verdicts.append(
            (
                f"{args.num} clips, both DDIM {args.ddim_steps}",
                _verdict(by_key["vidiff"], by_key["vdp"]),
            )
        )
    if "vdp_native" in by_key:
        mine = by_key.get("vidiff_n") or by_key.get("vidiff")
        if mine is not None and mine["clips"] == by_key["vdp_native"]["clips"]:
            verdicts.append(
                (
                    f"{n} clips, vidiff DDIM vs its own 1000-step sampler",
                    _verdict(mine, by_key["vdp_native"]),
                )
            )
    ref_note = (
        f"reference: {len(ref)} real clips (seed {REF_SEED}); real vs real: another "
        f"real set (seed {REAL2_SEED}); training data seed {d.seed}"
    )
    footer = (
        "*final loss: mean of the last 25 steps of each library's own objective "
        "(vidiff v-MSE, video-diffusion-pytorch eps-MSE): not comparable across rows"
    )
    print()
    print(table)
    print(footer)
    print(ref_note)
    for title, lines in verdicts:
        print(f"{title}: " + "; ".join(lines))
    print(
        f"load average after: {load_after} (after vidiff: {loads.get('vidiff', '-')}, after "
        f"video-diffusion-pytorch: {loads.get('vdp', '-')}); total "
        f"{time.perf_counter() - t_start:.0f} s; contact sheets and results in {out}"
    )
    report = {
        "machine": machine,
        "args": vars(args),
        "results": results,
        "rows": rows,
        "verdicts": verdicts,
        "peer_unet": PEER_UNET,
    }
    (out / "results.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "results.md").write_text(
        f"machine: {machine}\n\n{table}\n\n{footer}\n\n{ref_note}\n\n"
        + "\n".join(f"- {t}: " + "; ".join(v) for t, v in verdicts)
        + "\n"
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        _worker_main(sys.argv[2], sys.argv[3])
    else:
        main()
