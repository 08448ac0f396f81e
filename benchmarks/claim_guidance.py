"""Classifier-free guidance (VDM, Ho & Salimans): does the guidance weight trade diversity for
class fidelity as the papers report?

A class-conditional model (the default run's config with ``data.use_labels = true``: classes
are ball count x color, labels dropped with probability ``train.cond_drop_prob`` = 0.1 for the
unconditional model) is sampled at guidance weights w (``eps = (1 + w) eps(x, c) - w eps(x)``,
vidiff's ``guidance_scale = 1 + w``), every weight from the same noise and class-balanced
labels. Scored per weight:

- an **IS-like score** ``exp(E_x KL(p(y|x) || p(y)))`` and the **label accuracy** (the share of
  clips the classifier puts in the class they were sampled for), from a small 3D-conv classifier
  trained here on real clips (its held-out accuracy is reported: the score means nothing if it
  is low);
- the FID-like **FVD-lite** against held-out real clips, steady pairs and the tracking score.

The paper's trade-off: the IS-like score rises with w, the FID-like one first improves and then
worsens.

    .venv/bin/python benchmarks/claim_guidance.py                     # ~30 min of 1 CPU core
    .venv/bin/python benchmarks/claim_guidance.py --device cuda       # larger model and sets
    .venv/bin/python benchmarks/claim_guidance.py --train-steps 5 --num 16 --ref-num 16 \\
        --weights 0,2 --classifier-steps 5 --seeds 1 --out /tmp/claim_guidance   # smoke test
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import _claims as C
import torch
from torch import nn

SCALES = {
    "cpu": {"num": 48, "seeds": 1, "train_steps": 1000, "classifier_steps": 200,
            "out": "runs/claims/guidance"},
    "cuda": {"num": 512, "seeds": 3, "train_steps": 20000, "classifier_steps": 2000,
             "sample_batch": 256, "out": "runs/claims/guidance_gpu",
             "overrides": ["data.size=32", "data.frames=16", "model.preset=small"]},
}
CLASSIFIER_SEEDS = (10, 11)  # real data seeds: classifier training, its held-out accuracy


def add(p) -> None:
    p.add_argument("--train-steps", type=int, help="steps of the class-conditional model")
    p.add_argument("--weights", default="0,1,2,3,5", help="guidance weights w")
    p.add_argument("--classifier-steps", type=int, help="classifier training steps")
    p.add_argument("--sampler", default="ddim", help="sampler of the sweep (guidance doubles "
                   "each step's cost)")
    p.add_argument("--steps", type=int, default=50, help="sampler steps of the sweep")


class ClipClassifier(nn.Module):
    """A small 3D-conv classifier of bouncing-balls clips ``(B, 3, F, H, W)`` -> logits."""

    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        layers, cin = [], 3
        for cout in (width, 2 * width, 2 * width):
            layers += [nn.Conv3d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                       nn.MaxPool3d((1, 2, 2))]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3, 4)))  # (B, C, F, h, w) -> (B, C) -> logits


def train_classifier(args, config, num_classes: int) -> tuple[nn.Module, dict]:
    """The classifier trained on real clips, and its `class_scores` on held-out real clips
    (the accuracy, and the IS-like score of real data: the top of the scale)."""
    d = config.data
    shape = (d.frames, d.size, dict(d.options))
    x, y = C.real_clips(CLASSIFIER_SEEDS[0], 2048, *shape, with_labels=True)
    xv, yv = C.real_clips(CLASSIFIER_SEEDS[1], 512, *shape, with_labels=True)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # the classifier's init only (a benchmark script, not the library)
    net = ClipClassifier(num_classes).to(args.device)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    for _ in range(args.classifier_steps):
        idx = torch.randint(len(x), (32,), generator=g)
        loss = nn.functional.cross_entropy(net(x[idx].to(args.device)), y[idx].to(args.device))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return net, class_scores(classify(net, xv, args), yv)


@torch.no_grad()
def classify(net: nn.Module, videos: torch.Tensor, args) -> torch.Tensor:
    return torch.cat([net(videos[i : i + 128].to(args.device)).softmax(1).cpu()
                      for i in range(0, len(videos), 128)])


def class_scores(probs: torch.Tensor, labels: torch.Tensor) -> dict:
    """IS-like score exp(E KL(p(y|x) || p(y))) and the accuracy against ``labels``."""
    marginal = probs.mean(0, keepdim=True)
    kl = (probs * (probs.clamp_min(1e-12).log() - marginal.clamp_min(1e-12).log())).sum(1)
    return {"is_like": float(kl.mean().exp()),
            "accuracy": float((probs.argmax(1) == labels).float().mean())}


def report(args, rows: dict, floor: dict, facts: dict, real: dict, machine: str) -> str:
    extra = {"IS-like ↑": {}, "label accuracy ↑": {}}
    for name, agg in rows.items():
        extra["IS-like ↑"][name] = C.fmt(agg["is_like"], 2)
        extra["label accuracy ↑"][name] = C.fmt(agg["accuracy"])
    best = min(rows, key=lambda n: rows[n]["fvd_lite"]["mean"])
    is_means = [agg["is_like"]["mean"] for agg in rows.values()]
    rising = all(a <= b * 1.02 for a, b in zip(is_means, is_means[1:], strict=False))
    first = next(iter(rows))
    u_shape = best not in (first, list(rows)[-1])
    return "\n".join([
        f"Machine: {machine}.",
        f"Model: {facts['out']} ({facts['steps']} steps, class-conditional); {args.seeds} "
        f"sample set(s) of {args.num} class-balanced clips per weight ({args.sampler} "
        f"{args.steps}; mean ± sd over sets); "
        f"classifier on held-out real clips: accuracy {real['accuracy']:.3f}, IS-like "
        f"{real['is_like']:.2f} (real data's; the class count "
        "is the maximum).", "",
        C.table(list(rows.items()), floor, extra), "",
        f"- IS-like score {'rises' if rising else 'does not rise steadily'} with w "
        f"({' -> '.join(f'{v:.2f}' for v in is_means)}).",
        f"- FVD-lite is best at {best}: " + (
            "it first improves, then worsens (the paper's trade-off)" if u_shape else
            f"{'no guidance is best' if best == first else 'the largest weight is best'} "
            "here, no U shape")])


def main(argv=None) -> int:
    args = C.parse(__doc__, SCALES, add, argv)
    out = Path(args.out)
    machine = C.start(args, "guidance")
    run = out / "model"
    facts = C.train_run(args, run, [f"train.steps={args.train_steps}", "data.use_labels=true"],
                        tag="guidance")
    from vidiff.modelio.pipeline import read_spec

    config = C.saved_config(run)
    k = len(read_spec(run).conditioning.class_names)
    scorer = C.Scorer(args, config)
    t0 = time.perf_counter()
    net, real = train_classifier(args, config, k)
    C.log("guidance", f"classifier on real clips: {real} "
          f"({time.perf_counter() - t0:.0f} s)")
    labels = torch.arange(args.num) % k
    rows = {}
    for w in [float(v) for v in args.weights.split(",")]:
        scores = []
        for s in range(args.seeds):
            videos = C.sample_run(args, run, args.num, sampler=args.sampler, steps=args.steps,
                                  seed=1000 * s, labels=labels.tolist(), guidance=1.0 + w)
            scores.append({**scorer.score(videos), **class_scores(classify(net, videos, args),
                                                                   labels)})
        agg = C.aggregate(scores)
        agg.update({key: C.mean_sd([s[key] for s in scores]) for key in ("is_like", "accuracy")})
        rows[f"w={w:g}"] = agg
        C.log("guidance", f"w={w:g}: {C.summary(agg)}")
    text = report(args, rows, scorer.floor, facts, real, machine)
    C.write(out, {"machine": machine, "args": vars(args), "facts": facts, "floor": scorer.floor,
                  "classifier_real": real, "rows": rows}, text)
    ws = [float(n[2:]) for n in rows]
    series = {"samples": (ws, list(rows.values()))}
    panels = [{"key": "is_like", "xlabel": "guidance weight w", "series": series,
               "title": "IS-like score (higher: more class-distinct)"},
              {"key": "accuracy", "xlabel": "guidance weight w", "series": series,
               "title": "label accuracy of the classifier"},
              {"key": "fvd_lite", "xlabel": "guidance weight w", "series": series,
               "floor": scorer.floor}, {"key": "steady", "xlabel": "guidance weight w",
                                        "series": series, "floor": scorer.floor}]
    print(C.plot(out / "guidance.png", panels, "classifier-free guidance sweep"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
