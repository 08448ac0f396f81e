"""Noise-prior ablation: does correlated noise fine-tune an image model into a video model
faster and better than independent noise (PYoCo's and VideoFusion's claim)?

1. **Pretrain** one image model (`configs/pretrain_image.toml`: the `tiny` U-Net with
   ``temporal = false``, ``--prediction`` (v by default), cosine schedule) on single frames of
   the embedded bouncing balls (seed 0), ``--pretrain-steps`` steps of ``--pretrain-batch`` frames.
2. **Fine-tune** it to 8x24x24 video ``--seeds`` times per run of ``--runs`` (``train.seed``
   = ``--seed`` + k: init of the new layers, timesteps, noise), every run with the same
   steps, batch, LR and data order, and for each seed the same timesteps and Gaussian draws
   turned into each prior's noise; every number is the mean ± sd over the seeds:
   - ``independent``, ``mixed:A``, ``progressive:A``: `configs/finetune_video.toml`, the
     image model inflated into a video U-Net (temporal blocks at the identity), PYoCo's
     recipe with that prior and alpha;
   - ``videofusion:L``: `configs/finetune_videofusion.toml`, the image model as VideoFusion's
     base generator (fine-tuned at ``--base-lr``) plus a residual generator (``tiny`` with 8
     base channels) learning from scratch, decomposed prior with lambda L.
3. **Evaluate** every ``--eval-every`` steps (step 0 included) with the EMA weights:
   - the video quality metric of the training issue, comparable across priors: FVD-lite
     (`vidiff.metrics.video_distance`, lower is better) of ``--num`` clips sampled with DDIM
     ``--sample-steps`` (noise from the run's own prior, seed fixed) against ``--ref-num``
     held-out real clips (seed 1), the same restricted to its motion features (the temporal
     statistics the priors act on), and the ball tracking score (`ball_tracking_score`, 1 ~
     real). "real" rows give each metric on ``--num`` other real clips (seeds 2..9: mean and
     standard deviation), the floor and the noise of the metric at that clip count;
   - the validation loss under the run's own prior (eps-MSE on ``--val-num`` held-out clips,
     seed 3, with fixed timesteps and fixed generator seeds for the noise draws): it tracks
     each run's own fit, but NOT comparable across priors (each prior is another task).

``--prediction`` (default v) is the image model's and every fine-tune's: the eps-predicting tiny
image model samples grey noise after this pretraining budget (every earlier run of this script:
no run drew a trackable ball), so nothing could be compared; VideoFusion runs predict eps and
are left out under v (``--prediction eps --runs ...,videofusion:0.5`` keeps them).

Writes ``results.json``, ``results.md`` (the tables and the verdict) and ``ablation.png``
(the curves; needs matplotlib, otherwise skipped with a message) under ``--out`` (default
``runs/noise_prior_ablation``); the pretrained image model stays in ``--out/pretrain`` and is
reused by a second call with the same pretraining options.

    .venv/bin/python benchmarks/noise_prior_ablation.py                 # ~30 min of 1 CPU core
    .venv/bin/python benchmarks/noise_prior_ablation.py --pretrain-steps 20 --steps 4 \\
        --eval-every 2 --num 4 --sample-steps 2 --ref-num 16 --val-num 4 --seeds 2  # smoke
    .venv/bin/python benchmarks/noise_prior_ablation.py --device cuda --steps 3000 \\
        --eval-every 500 --num 256 --sample-steps 50                    # a bigger run
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

PRETRAIN = ROOT / "configs" / "pretrain_image.toml"
FINETUNE = {"unet": ROOT / "configs" / "finetune_video.toml",
            "videofusion": ROOT / "configs" / "finetune_videofusion.toml"}
DEFAULT_RUNS = "independent,progressive:2"
REF_SEED, FLOOR_SEEDS, VAL_SEED = 1, range(2, 10), 3  # real data seeds (training: 0)
VAL_DRAWS = 2  # (t, noise) draws per held-out clip for the validation loss
SHEET_CLIPS = 8  # clips in each run's contact sheet of its final samples
# comparable quality metrics: key -> (name, +1 higher is better / -1 lower is better)
QUALITY = {"fvd_lite": ("FVD-lite", -1), "fvd_motion": ("FVD-lite motion", -1),
           "track": ("tracking", 1)}


def _log(msg: str) -> None:
    print(f"[ablation] {msg}", file=sys.stderr, flush=True)


# -- runs -----------------------------------------------------------------------------------
def parse_run(spec: str) -> dict:
    """"mixed:2" -> {"name": "mixed a=2", "kind": "unet", "overrides": [...]}."""
    prior, _, value = spec.strip().partition(":")
    if prior == "independent" and not value:
        return {"name": "independent", "kind": "unet",
                "overrides": ["prior.name=independent", "prior.params={}"]}
    if prior in ("mixed", "progressive") and value:
        return {"name": f"{prior} a={float(value):g}", "kind": "unet",
                "overrides": [f"prior.name={prior}", f"prior.params.alpha={float(value)}"]}
    if prior == "videofusion" and value:
        return {"name": f"videofusion l={float(value):g}", "kind": "videofusion",
                "overrides": [f"prior.params.lam={float(value)}"]}
    raise SystemExit(f"--runs: bad run {spec!r}; use independent, mixed:ALPHA, "
                     f"progressive:ALPHA or videofusion:LAMBDA")


def _common(args, out: Path, seed: int | None = None) -> list[str]:
    seed = args.seed if seed is None else seed
    return [f"train.out={out}", f"train.threads={args.threads}", f"train.device={args.device}",
            f"train.seed={seed}", "train.progress=false", "train.report_to=[]",
            "train.ckpt_every=0", f"data.size={args.size}",
            f"diffusion.prediction={args.prediction}"]


def pretrain(args) -> Path:
    """Train (or find) the image model; returns its run folder."""
    from vidiff.train import train
    from vidiff.train.config import load_run_config

    out = Path(args.out) / "pretrain"
    config = load_run_config(PRETRAIN, [
        *_common(args, out), f"train.steps={args.pretrain_steps}",
        f"data.batch_size={args.pretrain_batch}", "train.sample_count=8",
        "train.resume=auto"])
    t0 = time.perf_counter()
    result = train(config, echo=False)
    _log(f"pretrained image model: {result.step} steps in {time.perf_counter() - t0:.0f} s "
         f"({out})")
    return out


def finetune_config(args, run: dict, image: Path, seed: int):
    from vidiff.train.config import load_run_config

    out = Path(args.out) / "runs" / run["name"].replace(" ", "_").replace("=", "")
    out = out.with_name(f"{out.name}_seed{seed}")
    return load_run_config(FINETUNE[run["kind"]], [
        *_common(args, out, seed), f"model.init_from={image}", f"train.steps={args.steps}",
        f"train.lr={args.lr}", f"model.base_lr={args.base_lr}", f"data.frames={args.frames}",
        f"data.batch_size={args.batch}", "train.resume=never", "sample.sampler=ddim",
        f"sample.steps={args.sample_steps}", *run["overrides"]])


# -- evaluation -------------------------------------------------------------------------------
def real_clips(seed: int, count: int, args) -> torch.Tensor:
    from vidiff.data import make_synthetic

    data = make_synthetic("bouncing_balls", frames=args.frames, size=args.size, seed=seed,
                          num_videos=count)
    return torch.stack([data[i]["video"] for i in range(count)])  # (N, C, F, H, W)


class Evaluator:
    """The fixed references: real statistics, the metric floor, the held-out clips."""

    def __init__(self, args):
        from vidiff.metrics import ball_tracking_stats, reference_stats

        self.args = args
        ref = real_clips(REF_SEED, args.ref_num, args)
        self.ref_stats, self.ref_track = reference_stats(ref), ball_tracking_stats(ref)
        self.val_x0 = real_clips(VAL_SEED, args.val_num, args)
        floors = [self.quality(real_clips(s, args.num, args)) for s in FLOOR_SEEDS]
        self.floor = {k: _mean_std([f[k] for f in floors]) for k in QUALITY}

    def quality(self, videos: torch.Tensor) -> dict:
        from vidiff.metrics import ball_tracking_score, video_distance

        videos = videos.clamp(-1, 1).cpu()
        fvd = video_distance(self.ref_stats, videos, groups=True)
        return {"fvd_lite": float(fvd["total"]), "fvd_motion": float(fvd["motion"]),
                "track": float(ball_tracking_score(videos, reference=self.ref_track)["score"])}

    @torch.no_grad()
    def val_loss(self, model, diffusion, prior, device) -> float:
        """eps-MSE under `prior` on the held-out clips, the same (t, noise) seeds for every
        prior: draw r of clip i comes from generator seed (VAL_SEED, r, i)."""
        from vidiff.diffusion.losses import diffusion_loss

        x0, ts, noises = [], [], []
        for r in range(VAL_DRAWS):
            for i, clip in enumerate(self.val_x0):
                g = torch.Generator().manual_seed(VAL_SEED * 1_000_003 + r * 10_007 + i)
                ts.append(diffusion.sample_t(1, generator=g))
                noises.append(prior.sample((1, *clip.shape), generator=g))
                x0.append(clip[None])
        x0, ts, noises = torch.cat(x0), torch.cat(ts), torch.cat(noises)  # (R*N, C, F, H, W)
        total = 0.0
        for start, n in _chunks(len(x0), self.args.sample_batch):
            part = slice(start, start + n)
            loss = diffusion_loss(model, diffusion, x0[part].to(device), ts[part].to(device),
                                  noises[part].to(device))
            total += float(loss.mean()) * n
        return total / len(x0)

    def evaluate(self, trainer, sheet: Path | None = None) -> dict:
        """Quality and validation loss of the EMA model; its first clips to `sheet` (png)."""
        trainer.raw.eval()
        videos = torch.cat([trainer.sample_videos(count=min(c, self.args.sample_batch),
                                                  seed=self.args.sample_seed + c0)
                            for c0, c in _chunks(self.args.num, self.args.sample_batch)])
        out = self.quality(videos)
        if sheet is not None:
            from vidiff.io import write_video

            write_video(sheet, videos[:SHEET_CLIPS].clamp(-1, 1).cpu())
        out["val_loss"] = self.val_loss(trainer.ema.model, trainer.diffusion, trainer.prior,
                                        trainer.device)
        trainer.raw.train()
        return out


def _chunks(total: int, size: int):
    return [(start, min(size, total - start)) for start in range(0, total, size)]


def _mean_std(values: list[float]) -> dict:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1) if values[1:] else 0.0
    return {"mean": mean, "std": math.sqrt(var)}


# -- one fine-tune ------------------------------------------------------------------------------
def finetune(args, run: dict, image: Path, evaluator: Evaluator, seed: int) -> dict:
    """One fine-tune of ``run`` with ``train.seed = seed``, evaluated along the way."""
    from vidiff.train.data import ShardedOrder, make_loader
    from vidiff.train.trainer import Trainer

    config = finetune_config(args, run, image, seed)
    trainer = Trainer(config, echo=False)
    d = config.data
    order = ShardedOrder(len(trainer.dataset), d.batch_size, seed=d.seed, num_frames=d.frames)
    batches = make_loader(trainer.train_data, order, d.workers)
    evals, losses, t0 = [], [], time.perf_counter()
    train_s = 0.0
    while True:
        if trainer.step % args.eval_every == 0 or trainer.step == args.steps:
            sheet = Path(args.out) / f"samples_{Path(config.train.out).name}.png"
            last = trainer.step == args.steps
            evals.append({"step": trainer.step,
                          **evaluator.evaluate(trainer, sheet if last else None),
                          "train_loss": sum(losses[-25:]) / max(1, len(losses[-25:]))})
            values = ", ".join(f"{k} {v:.4g}" for k, v in evals[-1].items())
            _log(f"{run['name']} seed {seed}: {values}")
        if trainer.step >= args.steps:
            break
        s0 = time.perf_counter()
        losses.append(trainer.train_step(batches)[0])
        train_s += time.perf_counter() - s0
    del batches
    trainer.close()
    return {"name": run["name"], "kind": run["kind"], "prior": config.prior.name,
            "prior_params": config.prior.params, "params": trainer.num_params,
            "train_s": train_s, "total_s": time.perf_counter() - t0, "evals": evals}


def merge_seeds(per_seed: list[dict]) -> dict:
    """One run's fine-tunes over seeds: each eval's values as the mean, with ``KEY_sd`` (the
    sample sd over seeds, 0 for one seed); the single runs stay under ``"seeds"``."""
    first = per_seed[0]
    evals = []
    for i, e in enumerate(first["evals"]):
        merged = {"step": e["step"]}
        for key in e:
            if key != "step":
                stat = _mean_std([r["evals"][i][key] for r in per_seed])
                merged[key], merged[f"{key}_sd"] = stat["mean"], stat["std"]
        evals.append(merged)
    return {**{k: first[k] for k in ("name", "kind", "prior", "prior_params", "params")},
            "train_s": sum(r["train_s"] for r in per_seed) / len(per_seed),
            "total_s": sum(r["total_s"] for r in per_seed), "evals": evals,
            "seeds": per_seed}


# -- report -------------------------------------------------------------------------------------
def table(results: list[dict], key: str, floor: dict | None, fmt: str = ".3f") -> str:
    steps = [e["step"] for e in results[0]["evals"]]
    lines = ["| run | " + " | ".join(f"step {s}" for s in steps) + " |",
             "|---|" + "---|" * len(steps)]
    for r in results:
        values = [format(e[key], fmt) + (f" ± {e[key + '_sd']:{fmt}}" if key + "_sd" in e
                                         else "") for e in r["evals"]]
        lines.append(f"| {r['name']} | " + " | ".join(values) + " |")
    if floor is not None:
        text = f"{floor['mean']:{fmt}} ± {floor['std']:{fmt}}"
        lines.append("| real clips (floor ± sd) | " + " | ".join([text] * len(steps)) + " |")
    return "\n".join(lines)


def verdict(results: list[dict], floor: dict) -> list[str]:
    """Each correlated run against independent noise, early (first eval after 0) and at the
    end, on each comparable metric. A difference counts when it exceeds 2 standard errors of
    the difference of the means over seeds; with one seed, each side's error is the metric's
    noise (the real-vs-real sd at this clip count)."""
    base = next((r for r in results if r["prior"] == "independent"), None)
    if base is None:
        return ["(no independent run to compare with)"]
    early = 1 if len(base["evals"]) > 1 else 0
    n = len(base.get("seeds", [base]))
    lines = []
    for r in results:
        if r is base:
            continue
        parts = []
        for key, (name, sign) in QUALITY.items():
            for idx, when in ((early, "early"), (-1, "final")):
                ea, eb = r["evals"][idx], base["evals"][idx]
                se = [e.get(f"{key}_sd", 0.0) / math.sqrt(n) if n > 1 else floor[key]["std"]
                      for e in (ea, eb)]
                tol = 2 * math.hypot(*se)
                a, b = ea[key], eb[key]
                word = ("tie" if abs(a - b) <= tol else
                        "better" if sign * (a - b) > 0 else "worse")
                parts.append(f"{name} {when} {a:.3f} vs {b:.3f}: {word}")
        lines.append(f"- {r['name']} vs independent: " + "; ".join(parts))
    return lines


def plot(results: list[dict], floor: dict, path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ("matplotlib is not installed: no plot (pip install matplotlib -c "
                "/tmp/constraints.txt, then run again)")
    panels = (("fvd_lite", "FVD-lite vs real (lower is better)"),
              ("fvd_motion", "FVD-lite, motion features (lower is better)"),
              ("track", "ball tracking score (1 ~ real)"),
              ("val_loss", "validation loss under each run's own prior\n"
                           "(not comparable across priors)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.3 * len(panels), 4.5))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for r in results:
            ax.errorbar([e["step"] for e in r["evals"]], [e[key] for e in r["evals"]],
                        yerr=[e.get(f"{key}_sd", 0.0) for e in r["evals"]], capsize=3,
                        marker="o", label=r["name"],
                        linestyle="--" if r["kind"] != "unet" else "-")
        if key in floor:
            ax.axhspan(floor[key]["mean"] - floor[key]["std"],
                       floor[key]["mean"] + floor[key]["std"], color="grey", alpha=0.25,
                       label="real clips (± sd)")
        ax.set_title(title)
        ax.set_xlabel("fine-tuning step")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot: {path}"


def machine(args) -> str:
    from _claims import machine as describe

    return describe(args)


def report(args, results: list[dict], floor: dict, seconds: float, start_machine: str) -> str:
    parts = [
        f"Machine: {start_machine}; total {seconds / 60:.1f} min.",
        f"Pretraining: {args.pretrain_steps} steps x {args.pretrain_batch} frames; fine-tuning:"
        f" {args.steps} steps x {args.batch} clips of {args.frames}x{args.size}x{args.size}, "
        f"LR {args.lr} (VideoFusion base {args.base_lr}), seed {args.seed}, {args.prediction}-"
        f"prediction; eval: {args.num} "
        f"clips, DDIM {args.sample_steps}, EMA weights.",
        "", "FVD-lite (lower is better) against steps:", "", table(results, "fvd_lite",
                                                                   floor["fvd_lite"]),
        "", "FVD-lite restricted to its motion features (lower is better):", "",
        table(results, "fvd_motion", floor["fvd_motion"]),
        "", "Ball tracking score (higher is better, 1 ~ real):", "",
        table(results, "track", floor["track"]),
        "", f"Validation loss under each run's own prior ({args.prediction}-MSE; NOT comparable "
        "across priors):",
        "", table(results, "val_loss", None, ".4f"),
        "", "| run | parameters | train s | total s |", "|---|---|---|---|",
        *[f"| {r['name']} | {r['params']:,} | {r['train_s']:.0f} | {r['total_s']:.0f} |"
          for r in results],
        "", "Against independent noise (a difference counts beyond 2 standard errors of the "
        "difference over seeds; one seed: the real-vs-real sd per side):", "",
        *verdict(results, floor),
    ]
    return "\n".join(parts)


# -- main ---------------------------------------------------------------------------------------
def rebuild_report(out: Path) -> int:
    """results.md and the plot again from results.json (e.g. after changing the report)."""
    saved = json.loads((out / "results.json").read_text())
    args = argparse.Namespace(**saved["args"])
    args.prediction = getattr(args, "prediction", "eps")
    text = report(args, saved["runs"], saved["floor"], saved.get("seconds", float("nan")),
                  saved["machine"])
    (out / "results.md").write_text(text + "\n")
    print(text)
    print(plot(saved["runs"], saved["floor"], out / "ablation.png"))
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--runs", default=DEFAULT_RUNS,
                   help="comma list: independent, mixed:ALPHA, progressive:ALPHA, "
                        "videofusion:LAMBDA")
    p.add_argument("--pretrain-steps", type=int, default=1000)
    p.add_argument("--pretrain-batch", type=int, default=32, help="frames per pretrain step")
    p.add_argument("--steps", type=int, default=600, help="fine-tuning steps per run")
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--seeds", type=int, default=3,
                   help="fine-tunes per run (train.seed = --seed + k): mean ± sd over them")
    p.add_argument("--batch", type=int, default=8, help="clips per fine-tuning step")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=24)
    p.add_argument("--lr", type=float, default=1e-3, help="fine-tuning peak LR, every run")
    p.add_argument("--base-lr", type=float, default=1e-4, help="VideoFusion base generator LR")
    p.add_argument("--num", type=int, default=48, help="sampled clips per evaluation")
    p.add_argument("--sample-steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--sample-batch", type=int, default=64, help="clips per sampling call")
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--ref-num", type=int, default=256, help="held-out real reference clips")
    p.add_argument("--val-num", type=int, default=64, help="held-out clips of the val loss")
    p.add_argument("--seed", type=int, default=0, help="train.seed of every run")
    p.add_argument("--prediction", default="v", choices=("eps", "v"),
                   help="of the image model and every fine-tune (v: no VideoFusion runs, "
                        "which predict eps)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/noise_prior_ablation")
    p.add_argument("--report", action="store_true",
                   help="only rebuild results.md and the plot from --out's results.json")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:
        return rebuild_report(Path(args.out))
    torch.set_num_threads(args.threads)
    runs = [parse_run(s) for s in args.runs.split(",") if s.strip()]
    if args.prediction != "eps":
        _log(f"--prediction {args.prediction}: VideoFusion predicts eps, its runs are left out")
        runs = [r for r in runs if r["kind"] != "videofusion"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start, start_machine = time.perf_counter(), machine(args)
    _log(start_machine)
    evaluator = Evaluator(args)
    image = pretrain(args)
    results = []
    for run in runs:
        per_seed = [finetune(args, run, image, evaluator, args.seed + k)
                    for k in range(args.seeds)]
        results.append(merge_seeds(per_seed))
        (out / "results.json").write_text(json.dumps(
            {"machine": start_machine, "args": vars(args), "floor": evaluator.floor,
             "runs": results}, indent=2))
    seconds = time.perf_counter() - start
    (out / "results.json").write_text(json.dumps(
        {"machine": start_machine, "args": vars(args), "floor": evaluator.floor,
         "runs": results, "seconds": seconds}, indent=2))
    text = report(args, results, evaluator.floor, seconds, start_machine)
    (out / "results.md").write_text(text + "\n")
    print(text)
    print(plot(results, evaluator.floor, out / "ablation.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
