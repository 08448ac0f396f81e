"""Bouncing balls: colored balls moving at constant velocity, bouncing off the walls.

The class of a clip is the multiset of its ball colors, e.g. "two red balls" or (with
``mixed_colors``) "a red ball and a blue ball"; classes are drawn uniformly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch

from vidiff.data.render import bounce, color_table, coverage, join_phrases, number_word, pixel_grid
from vidiff.data.synthetic import SYNTHETIC, SyntheticVideoDataset, check_range, uniform

__all__ = ["BouncingBallsConfig", "BouncingBalls"]


@dataclass
class BouncingBallsConfig:
    """Options of `BouncingBalls`. Lengths are fractions of ``size``, so clips look alike at
    any resolution."""

    frames: int = 16  # frames per clip
    size: int = 32  # frame height and width in pixels
    num_videos: int = 10_000  # dataset length; item i depends only on (seed, i)
    seed: int = 0  # dataset seed (>= 0)
    min_balls: int = 1  # fewest balls in a clip
    # most balls in a clip (the rows of "positions"); 2 (and radii from 0.14): the default run
    # learns coherent clips of them in minutes on a CPU (earlier: 3 balls of radius 0.09-0.14)
    max_balls: int = 2
    colors: tuple[str, ...] = ("red", "green", "blue", "yellow")  # names from render.COLORS
    mixed_colors: bool = False  # False: one color per clip (count x color classes)
    radius_range: tuple[float, float] = (0.14, 0.2)  # ball radius / size
    speed_range: tuple[float, float] = (0.03, 0.07)  # distance per frame / size
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)  # RGB in [0, 1]
    shading: float = 0.35  # darkening at a ball's rim (0: flat disc); keeps the centroid

    def __post_init__(self):
        if self.frames < 1 or self.size < 8:
            raise ValueError(f"need frames >= 1 and size >= 8, got {self.frames}, {self.size}")
        if self.num_videos < 0 or self.seed < 0:
            raise ValueError("num_videos and seed must be >= 0")
        if not 1 <= self.min_balls <= self.max_balls:
            raise ValueError(
                f"need 1 <= min_balls <= max_balls, got {self.min_balls}, {self.max_balls}"
            )
        if not self.colors or len(set(self.colors)) != len(self.colors):
            raise ValueError(f"colors must be distinct and not empty, got {self.colors}")
        color_table(self.colors)  # known names
        check_range("radius_range", self.radius_range)
        check_range("speed_range", self.speed_range)
        if self.radius_range[0] * self.size < 1 or self.radius_range[1] >= 0.4:
            raise ValueError(
                f"radius_range {self.radius_range} gives balls under 1 pixel or "
                f"too big to move in a {self.size} pixel frame"
            )
        if not 0 <= self.shading < 1:
            raise ValueError(f"shading must be in [0, 1), got {self.shading}")


def _class_name(counts: tuple[int, ...], colors: tuple[str, ...]) -> str:
    """The class name for per-color ball counts, e.g. "two red balls and a blue ball"."""
    parts = [
        f"{number_word(k)} {c} ball{'s' if k > 1 else ''}"
        for k, c in zip(counts, colors, strict=True)
        if k
    ]
    return join_phrases(parts)


@SYNTHETIC.register("bouncing_balls")
class BouncingBalls(SyntheticVideoDataset):
    """Clips of 1-2 (``max_balls``) anti-aliased, softly shaded balls bouncing around a dark
    frame.

    Each ball moves in a straight line at constant speed and bounces elastically off the
    frame's edges (it never leaves the frame); balls pass through each other (later balls are
    drawn on top). The label is the multiset of ball colors: with ``mixed_colors=False`` there
    are ``(max_balls - min_balls + 1) * len(colors)`` classes ordered by count then color, so
    with the defaults label ``4 * (n - 1) + c`` is "n balls of color c" (0 "a red ball", 1 "a
    green ball", ..., 4 "two red balls", ..., 7 "two yellow balls"). With ``mixed_colors``
    every multiset of ``min_balls..max_balls`` colors is a class ("a red ball and a blue ball").
    The caption is the class name.

    Items add to the common keys (see `vidiff.data.synthetic`): ``"radii"`` ``(max_balls,)``
    pixels and ``"colors"`` ``(max_balls,)`` int64 indices into ``config.colors`` (NaN / -1
    past ``num_objects``); ``"positions"`` has ``max_balls`` rows.
    """

    config_class = BouncingBallsConfig

    def __init__(self, config: BouncingBallsConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        cfg = self.config
        k = len(cfg.colors)
        counts: list[tuple[int, ...]] = []  # per class: the number of balls of each color
        for n in range(cfg.min_balls, cfg.max_balls + 1):
            if cfg.mixed_colors:
                for combo in itertools.combinations_with_replacement(range(k), n):
                    counts.append(tuple(combo.count(c) for c in range(k)))
            else:
                counts.extend(tuple(n * (c == j) for j in range(k)) for c in range(k))
        self._counts = counts
        self._names = [_class_name(c, cfg.colors) for c in counts]
        self.palette = color_table(cfg.colors)  # (num_colors, 3) RGB in [0, 1]

    @property
    def class_names(self) -> list[str]:
        """Class names in label order, e.g. "a red ball", "two blue balls"."""
        return list(self._names)

    def sample(self, generator: torch.Generator) -> dict[str, Any]:
        """A random clip from ``generator``; its class is uniform over `class_names`."""
        cfg, g = self.config, generator
        label = int(torch.randint(len(self._counts), (1,), generator=g))
        colors = [c for c, k in enumerate(self._counts[label]) for _ in range(k)]
        n = len(colors)
        colors = [colors[i] for i in torch.randperm(n, generator=g).tolist()]  # drawing order
        radius = uniform(g, *cfg.radius_range, n) * cfg.size  # (n,) pixels
        low, high = radius - 0.5, cfg.size - 0.5 - radius  # (n,) walls for the centers
        start = low[:, None] + (high - low)[:, None] * torch.rand(n, 2, generator=g)  # (n, 2)
        angle = uniform(g, 0.0, 2 * torch.pi, n)
        speed = uniform(g, *cfg.speed_range, n) * cfg.size
        velocity = torch.stack([angle.cos(), angle.sin()], -1) * speed[:, None]  # (n, 2)
        t = torch.arange(cfg.frames, dtype=torch.float32).view(1, -1, 1)  # (1, F, 1)
        # (n, F, 2) centers (x, y) in pixels
        pos = bounce(start[:, None], velocity[:, None], t, low.view(-1, 1, 1), high.view(-1, 1, 1))
        video = self._render(pos, radius, colors)

        m = cfg.max_balls
        positions = torch.full((m, cfg.frames, 2), float("nan"))
        positions[:n] = pos
        radii = torch.full((m,), float("nan"))
        radii[:n] = radius
        color_ids = torch.full((m,), -1, dtype=torch.int64)
        color_ids[:n] = torch.tensor(colors)
        return {
            "video": video,
            "label": torch.tensor(label),
            "caption": self._names[label],
            "positions": positions,
            "num_objects": torch.tensor(n),
            "radii": radii,
            "colors": color_ids,
        }

    def _render(self, pos: torch.Tensor, radius: torch.Tensor, colors: list[int]) -> torch.Tensor:
        """Draw balls at ``pos`` ``(n, F, 2)``; returns ``(3, F, H, W)`` in [-1, 1]."""
        cfg = self.config
        x, y = pixel_grid(cfg.size, cfg.size)
        frame = torch.tensor(cfg.background, dtype=torch.float32).view(3, 1, 1, 1)
        frame = frame.expand(3, cfg.frames, cfg.size, cfg.size)
        for i, c in enumerate(colors):
            cx = pos[i, :, 0].view(-1, 1, 1)  # (F, 1, 1)
            cy = pos[i, :, 1].view(-1, 1, 1)
            dist = torch.sqrt((x - cx) ** 2 + (y - cy) ** 2)  # (F, H, W)
            alpha = coverage(dist - radius[i])
            shade = 1.0 - cfg.shading * (dist / radius[i]).clamp(max=1.0) ** 2
            rgb = self.palette[c].view(3, 1, 1, 1) * shade  # (3, F, H, W)
            frame = frame + alpha * (rgb - frame)
        return frame * 2.0 - 1.0
