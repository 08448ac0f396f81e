"""Ball tracking for bouncing-balls clips: are the balls there, and do they move like balls?

`detect_balls` finds the balls of each frame: pixels whose brightest channel exceeds a threshold
against the dark background, grouped into 4-connected components (``scipy.ndimage.label`` when
SciPy is installed, else a pure-torch label propagation), components smaller than ``min_area``
dropped; each detection has an intensity-weighted centroid, an area and a mean color.

`ball_tracking_stats` links detections of consecutive frames (mutual nearest neighbours) and
measures, per clip and overall:

- **count consistency**: whether the number of detections is constant along the clip, the
  fraction of consecutive frames whose (non-zero) count stays the same ("steady"), and the
  mean ``|count_f - mode count|``;
- **smoothness**: the mean ``|p[t+1] - 2 p[t] + p[t-1]|`` (acceleration, in frame widths) along
  linked detections. Balls move at constant speed except at bounces, so real clips have a
  small value; shuffled or jittering frames a large one;
- **color consistency**: the mean RGB change along links;
- **steady pairs** (`steady_pairs`): the share of consecutive frame pairs that keep their
  balls: the same non-zero count, every ball of one frame linked to one of the next, none
  moving more than ``max_shift`` frame widths or changing color by more than ``max_color``,
  something moving (a frozen clip keeps its balls but is not a video of moving balls), and
  nothing bigger than a ball (a frame-filling blob is not one).
  This is the headline coherence number: one figure a person can check by eye.

`ball_tracking_score` compares these with the same statistics of real clips (the ``reference``):
balls pass through each other, so even real clips merge two balls into one blob now and then,
and the reference fixes what "consistent" and "smooth" mean for the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vidiff.metrics.temporal import unit_range

__all__ = [
    "connected_components",
    "detect_balls",
    "ball_tracking_stats",
    "ball_tracking_score",
    "steady_pairs",
    "SteadyPairs",
]


def _components_torch(mask: torch.Tensor) -> torch.Tensor:
    """4-connected component labels of ``mask`` ``(N, H, W)``: each pixel of a component gets
    the smallest flat index + 1 in it, 0 off the mask.

    Parallel union-find (hooking and pointer jumping, after Shiloach and Vishkin): every edge
    between two mask pixels hooks the larger of their roots onto the smaller, then every
    pixel jumps to its root; a few rounds suffice, on CPU or GPU.
    """
    n, h, w = mask.shape
    index = torch.arange(n * h * w, device=mask.device).view(n, h, w)
    # edges between 4-neighbours that are both on the mask
    right = mask[:, :, :-1] & mask[:, :, 1:]
    down = mask[:, :-1, :] & mask[:, 1:, :]
    a = torch.cat([index[:, :, :-1][right], index[:, :-1, :][down]])
    b = torch.cat([index[:, :, 1:][right], index[:, 1:, :][down]])
    parent = index.reshape(-1).clone()
    while a.numel():
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not bool(differ.any()):
            break
        a, b, ra, rb = a[differ], b[differ], ra[differ], rb[differ]  # drop settled edges
        parent.scatter_reduce_(0, torch.maximum(ra, rb), torch.minimum(ra, rb), "amin")
        while True:  # pointer jumping until every pixel points at a root
            jumped = parent[parent]
            if torch.equal(jumped, parent):
                break
            parent = jumped
    labels = parent.view(n, h, w) + 1
    return torch.where(mask, labels, torch.zeros_like(labels))


def connected_components(mask: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Labels ``(N, H, W)`` int64 of the 4-connected components of each 2D ``mask`` ``(N, H, W)``.

    Components are numbered 1, 2, ... across the whole batch (0 = off the mask), in no
    particular order. ``backend``: "scipy" (``scipy.ndimage.label``), "torch" (parallel
    union-find, also on GPU) or "auto" (SciPy if installed, else torch).
    """
    if backend not in ("auto", "scipy", "torch"):
        raise ValueError(f'backend must be "auto", "scipy" or "torch", got {backend!r}')
    mask = mask.bool()
    ndimage = None
    if backend != "torch":
        try:
            from scipy import ndimage  # optional dependency
        except ImportError:
            if backend == "scipy":
                raise
    if ndimage is not None:
        structure = np.zeros((3, 3, 3), dtype=bool)
        structure[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]  # no links between frames
        labels, _ = ndimage.label(mask.cpu().numpy(), structure=structure)
        return torch.from_numpy(labels.astype(np.int64)).to(mask.device)
    labels = _components_torch(mask)
    _, compact = torch.unique(labels, return_inverse=True)  # 0 stays 0: it is the smallest
    return compact if bool((labels == 0).any()) else compact + 1


def detect_balls(
    videos: torch.Tensor,
    threshold: float = 0.3,
    core: float | None = 0.85,
    min_area: float | None = None,
) -> dict[str, torch.Tensor]:
    """Balls in each frame of ``videos`` ``(B, 3, F, H, W)`` in [-1, 1].

    A pixel is bright where its brightest channel exceeds ``threshold`` on the [0, 1] scale
    (the bouncing-balls background is black); bright pixels form 4-connected *blobs*. Balls
    are shaded, brightest at the center, and they pass through each other, so a blob may hold
    several balls: with ``core`` the detections are the *cores* of the blobs, the connected
    pixels brighter than ``core`` times their blob's peak (0.85: the inner 2/3 of a ball's
    radius, so overlapping balls stay apart unless one nearly covers the other). With
    ``core=None`` the blobs themselves are the detections. Detections smaller than
    ``min_area`` pixels are dropped (default ``max(2, 0.003 H W)``, 3 pixels at 32 x 32).

    Returns a dict of ``K`` detections sorted by (clip, frame): ``"clip"``, ``"frame"`` int64
    ``(K,)``, ``"xy"`` float64 ``(K, 2)`` intensity centroids in pixels (x = column,
    pixel centers on integers, as the datasets' ``"positions"``), ``"area"`` ``(K,)``,
    ``"color"`` ``(K, 3)`` mean RGB in [0, 1], and ``"counts"`` int64 ``(B, F)``.
    """
    u = unit_range(videos, min_frames=1)
    b, c, f, h, w = u.shape
    if min_area is None:
        min_area = max(2.0, 0.003 * h * w)
    value = u.amax(1).reshape(b * f, h, w)  # (B*F, H, W): brightest channel
    mask = value > threshold
    if core is not None:
        blobs = connected_components(mask).view(-1)
        peak = torch.zeros(int(blobs.max()) + 1, device=u.device)
        peak = peak.scatter_reduce(0, blobs, value.reshape(-1), "amax")  # per blob
        mask = mask & (value >= core * peak[blobs].view(b * f, h, w))
    labels = connected_components(mask).view(-1)  # (B*F*H*W,)
    on = labels > 0
    ids = labels[on] - 1
    k = int(ids.max()) + 1 if ids.numel() else 0
    pixel = torch.arange(b * f * h * w, device=u.device)[on]
    weight = value.reshape(-1)[on].double()
    ys, xs = (pixel % (h * w)) // w, pixel % w
    area = torch.zeros(k, dtype=torch.float64, device=u.device).index_add_(
        0, ids, torch.ones_like(weight)
    )
    mass = torch.zeros(k, dtype=torch.float64, device=u.device).index_add_(0, ids, weight)
    sx = torch.zeros_like(mass).index_add_(0, ids, weight * xs.double())
    sy = torch.zeros_like(mass).index_add_(0, ids, weight * ys.double())
    rgb = u.permute(0, 2, 3, 4, 1).reshape(-1, 3)[on].double()  # (pixels, 3)
    color = torch.zeros(k, 3, dtype=torch.float64, device=u.device).index_add_(0, ids, rgb)
    frame_of = torch.zeros(k, dtype=torch.int64, device=u.device)
    frame_of[ids] = pixel // (h * w)  # the clip-frame index of each component
    keep = area >= min_area
    frame_of, area, mass = frame_of[keep], area[keep], mass[keep]
    xy = torch.stack([sx[keep] / mass, sy[keep] / mass], -1)  # (K, 2)
    color = color[keep] / area[:, None]
    order = torch.argsort(frame_of, stable=True)  # by clip, then frame
    frame_of, area, xy, color = frame_of[order], area[order], xy[order], color[order]
    counts = torch.bincount(frame_of, minlength=b * f).view(b, f)
    return {
        "clip": frame_of // f,
        "frame": frame_of % f,
        "xy": xy,
        "area": area,
        "color": color,
        "counts": counts,
    }


def _link(xy: torch.Tensor, counts: torch.Tensor, chunk: int = 32) -> tuple[torch.Tensor, ...]:
    """Mutual-nearest-neighbour links between detections of consecutive frames.

    ``xy`` ``(K, 2)`` sorted by (clip, frame), ``counts`` ``(B, F)``. Returns ``pred`` and
    ``succ`` ``(K,)``: the linked detection in the previous / next frame, -1 for none.
    """
    b, f = counts.shape
    k = xy.shape[0]
    pred = torch.full((k,), -1, dtype=torch.int64)
    succ = torch.full((k,), -1, dtype=torch.int64)
    if k == 0 or f < 2:
        return pred, succ
    flat = counts.reshape(-1).cpu()
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), flat.cumsum(0)])  # (B*F+1,)
    frame_of = torch.repeat_interleave(torch.arange(b * f), flat)  # (K,) clip-frame index
    slot = torch.arange(k) - offsets[frame_of]  # rank within its frame
    m = int(flat.max())
    padded = torch.zeros(b * f, m, 2, dtype=torch.float64)
    valid = torch.zeros(b * f, m, dtype=torch.bool)
    padded[frame_of, slot] = xy.cpu()
    valid[frame_of, slot] = True
    padded, valid = padded.view(b, f, m, 2), valid.view(b, f, m)
    base = offsets[:-1].view(b, f)  # global index of slot 0 of each frame
    arange = torch.arange(m)
    for c0 in range(0, b, chunk):  # a chunk of clips at a time: (c, F-1, M, M) distances
        p, q = padded[c0 : c0 + chunk, :-1], padded[c0 : c0 + chunk, 1:]
        vp, vq = valid[c0 : c0 + chunk, :-1], valid[c0 : c0 + chunk, 1:]
        dist = (p[..., :, None, :] - q[..., None, :, :]).pow(2).sum(-1)  # (c, F-1, M, M)
        dist = dist.masked_fill(~(vp[..., :, None] & vq[..., None, :]), float("inf"))
        to_q = dist.argmin(-1)  # (c, F-1, M): nearest next-frame slot of each slot
        to_p = dist.argmin(-2)  # (c, F-1, M): nearest this-frame slot of each next slot
        mutual = vp & (to_p.gather(-1, to_q) == arange) & vq.gather(-1, to_q)
        cb, ct, cs = mutual.nonzero(as_tuple=True)
        src = base[c0 + cb, ct] + cs
        dst = base[c0 + cb, ct + 1] + to_q[cb, ct, cs]
        succ[src], pred[dst] = dst, src
    return pred, succ

@dataclass(frozen=True)
class SteadyPairs:
    """When a pair of consecutive frames "keeps its balls" (`steady_pairs`).

    Lengths are fractions of the frame width, so the test reads the same at any size. The
    defaults fit the built-in bouncing balls (speeds 0.03-0.07 of the width per frame): real
    clips pass about 9 pairs in 10 (the rest are balls passing through each other).
    """

    max_shift: float = 0.09  # most a linked ball may move between the frames (frame widths)
    min_shift: float = 0.005  # least the linked balls must move on average (not frozen)
    max_color: float = 0.15  # most a linked ball's mean RGB may change ([0, 1] scale, L2)
    # largest detection that is a ball (fraction of the frame; real cores: under 0.06): a
    # frame-filling blob moves and keeps its count, and is no ball
    max_area: float = 0.15


def _steady(det: dict[str, torch.Tensor], succ: torch.Tensor, size: float, area: float,
            rule: SteadyPairs) -> torch.Tensor:
    """``(B, F-1)`` bool: frame pair (t, t+1) of each clip keeps its balls (see `SteadyPairs`)."""
    counts = det["counts"].cpu()
    b, f = counts.shape
    xy, color = det["xy"].cpu(), det["color"].cpu()
    linked = succ >= 0  # links only run from a frame to the next one of the same clip
    src, dst = linked.nonzero().view(-1), succ[linked]
    pair = det["clip"].cpu()[src] * (f - 1) + det["frame"].cpu()[src]  # (L,) pair index
    shift = (xy[dst] - xy[src]).norm(dim=-1) / size  # (L,) frame widths
    good = (shift <= rule.max_shift) & ((color[dst] - color[src]).norm(dim=-1) <= rule.max_color)

    def per_pair(values: torch.Tensor) -> torch.Tensor:  # (L,) -> (B, F-1) sums
        return torch.bincount(pair, weights=values.double(), minlength=b * (f - 1)).view(b, -1)

    now, nxt = counts[:, :-1], counts[:, 1:]
    moved = per_pair(shift) / now.clamp(min=1)  # mean shift of the pair's balls
    frame_index = det["clip"].cpu() * f + det["frame"].cpu()
    blob = det["area"].cpu() > rule.max_area * area
    balls_only = torch.bincount(frame_index[blob], minlength=b * f).view(b, f) == 0
    return ((now == nxt) & (now > 0) & (per_pair(good) == now) & (moved >= rule.min_shift)
            & balls_only[:, :-1] & balls_only[:, 1:])


def steady_pairs(
    videos: torch.Tensor, rule: SteadyPairs = SteadyPairs(), threshold: float = 0.3,
    core: float | None = 0.85, min_area: float | None = None,
) -> torch.Tensor:
    """``(B, F-1)`` bool: whether each consecutive frame pair of ``videos`` ``(B, 3, F, H, W)``
    keeps its balls: the same non-zero count, each ball linked one-to-one to a ball of the
    next frame within ``rule.max_shift`` and ``rule.max_color``, the balls moving by at
    least ``rule.min_shift`` on average, and no detection larger than ``rule.max_area``.
    ``.float().mean()`` is the share of steady pairs; real bouncing-balls clips score about
    0.95, shuffled, frozen or noised clips far less.
    ``threshold``, ``core`` and ``min_area`` go to `detect_balls`.
    """
    det = detect_balls(videos, threshold, core, min_area)
    _, succ = _link(det["xy"].cpu(), det["counts"].cpu())
    h, w = videos.shape[-2:]
    return _steady(det, succ, float(w), float(h * w), rule)


def ball_tracking_stats(
    videos: torch.Tensor,
    threshold: float = 0.3,
    core: float | None = 0.85,
    min_area: float | None = None,
) -> dict[str, Any]:
    """Detection, count-consistency, smoothness and color statistics of bouncing-balls clips.

    Returns floats: ``"count_constant"`` (fraction of clips whose per-frame count never
    changes and is not zero), ``"count_steady"`` (fraction of consecutive frame pairs with the
    same non-zero count: a graded version, one miscounted frame costs two pairs, not the
    clip), ``"count_deviation"`` (mean ``|count_f - mode|``), ``"mean_count"``,
    ``"accel"`` (mean ``|p[t+1] - 2 p[t] + p[t-1]|`` over linked triples, in frame widths;
    NaN without any), ``"speed"`` (mean step along links, frame widths), ``"color_change"``
    (mean RGB distance along links, [0, 1] scale), ``"link_fraction"`` (detections linked
    to the next frame); and ``"per_clip"``: tensors ``(B,)`` of ``"constant"``,
    ``"deviation"``, ``"mode"``, ``"accel"`` (NaN for clips without a triple), and
    ``"counts"`` ``(B, F)``, ``"steady"`` ``(B, F-1)``. ``"steady_pairs"`` is the share of
    frame pairs that keep their balls (`steady_pairs`, with the default `SteadyPairs`).
    ``threshold``, ``core`` and ``min_area`` go to `detect_balls`.
    """
    det = detect_balls(videos, threshold, core, min_area)
    counts = det["counts"].cpu()
    b, f = counts.shape
    size = float(videos.shape[-1])
    mode = counts.mode(1).values  # (B,)
    # constant and non-zero: a clip in which nothing is detected tracks no balls
    constant = (counts == counts[:, :1]).all(1) & (counts[:, 0] > 0)
    deviation = (counts - mode[:, None]).abs().double().mean(1)
    xy, color, clip = det["xy"].cpu(), det["color"].cpu(), det["clip"].cpu()
    pred, succ = _link(xy, counts)
    linked = succ >= 0
    steps = (xy[succ[linked]] - xy[linked]).norm(dim=-1) / size
    color_change = (color[succ[linked]] - color[linked]).norm(dim=-1)
    middle = (pred >= 0) & (succ >= 0)
    accel = (xy[succ[middle]] - 2 * xy[middle] + xy[pred[middle]]).norm(dim=-1) / size
    clip_of = clip[middle]
    n_triples = torch.bincount(clip_of, minlength=b).double()
    per_clip_accel = torch.bincount(clip_of, weights=accel, minlength=b).double() / n_triples
    not_last = det["frame"].cpu() < f - 1
    area = float(videos.shape[-2] * videos.shape[-1])
    steady = _steady(det, succ, size, area, SteadyPairs()) if f > 1 else torch.zeros(b, 0)

    def mean(x: torch.Tensor) -> float:
        return float(x.double().mean()) if x.numel() else float("nan")

    return {
        "count_constant": mean(constant),
        "count_steady": mean((counts[:, 1:] == counts[:, :-1]) & (counts[:, 1:] > 0)),
        "steady_pairs": mean(steady),
        "count_deviation": mean(deviation),
        "mean_count": mean(counts),
        "accel": mean(accel),
        "speed": mean(steps),
        "color_change": mean(color_change),
        "link_fraction": float(linked.sum()) / max(1, int(not_last.sum())),
        "per_clip": {
            "constant": constant,
            "deviation": deviation,
            "mode": mode,
            "accel": per_clip_accel,  # NaN where a clip has no linked triple
            "counts": counts,
            "steady": steady,
        },
    }


def _closeness(value: float, reference: float) -> float:
    """min(r, 1/r) for r = value / reference: 1 when equal, towards 0 as they part; 0 for NaN."""
    if not (np.isfinite(value) and np.isfinite(reference)) or value <= 0 or reference <= 0:
        return 1.0 if value == reference == 0 else 0.0
    r = value / reference
    return min(r, 1.0 / r)


def ball_tracking_score(
    videos: torch.Tensor,
    reference: torch.Tensor | dict[str, Any] | None = None,
    threshold: float = 0.3,
    core: float | None = 0.85,
    min_area: float | None = None,
) -> dict[str, float]:
    """Tracking summary of bouncing-balls clips, compared with real clips when given.

    ``reference``: real clips ``(B, 3, F, H, W)`` (same size and length) or their
    `ball_tracking_stats`. Returns the floats of `ball_tracking_stats` and, with a reference,
    ``"accel_ratio"`` (smoothness against the data's own: 1 is as smooth as real, > 1
    jerkier), ``"steady_pairs_ratio"`` (the share of steady frame pairs against the data's
    own ``"ref_steady_pairs"``), ``"count_constant_ratio"``, ``"mean_count_ratio"``, the
    reference's own ``"ref_accel"``, ``"ref_count_constant"`` and ``"ref_count_steady"``, and
    ``"score"`` in [0, 1] (about 1 for real clips):

        score = min(1, count_steady / ref) * closeness(accel) * closeness(mean_count),

    where ``closeness(x) = min(x / ref, ref / x)`` (0 when there is nothing to track).
    """
    stats = ball_tracking_stats(videos, threshold, core, min_area)
    out = {k: v for k, v in stats.items() if k != "per_clip"}
    if reference is None:
        return out
    if torch.is_tensor(reference):
        reference = ball_tracking_stats(reference, threshold, core, min_area)
    ref_cc, ref_accel = reference["count_constant"], reference["accel"]
    out["ref_accel"], out["ref_count_constant"] = ref_accel, ref_cc
    out["accel_ratio"] = stats["accel"] / ref_accel if ref_accel > 0 else float("nan")
    out["count_constant_ratio"] = stats["count_constant"] / ref_cc if ref_cc > 0 else float("nan")
    ref_count = reference["mean_count"]
    out["mean_count_ratio"] = stats["mean_count"] / ref_count if ref_count > 0 else float("nan")
    ref_steady = reference["count_steady"]
    out["ref_count_steady"] = ref_steady
    ref_pairs = reference.get("steady_pairs", float("nan"))  # absent from older saved refs
    out["ref_steady_pairs"] = ref_pairs
    out["steady_pairs_ratio"] = (
        stats["steady_pairs"] / ref_pairs if ref_pairs > 0 else float("nan")
    )
    # graded: the share of frame pairs whose count holds (count_constant drops a whole clip
    # for one miscounted frame, which leaves no resolution between "almost" and "noise")
    consistency = min(1.0, stats["count_steady"] / ref_steady) if ref_steady > 0 else 1.0
    out["score"] = (
        consistency
        * _closeness(stats["accel"], ref_accel)
        * _closeness(stats["mean_count"], ref_count)
    )
    return out
