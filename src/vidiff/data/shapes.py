"""Moving shapes: one textured shape that rotates, pulses or squashes while it drifts and
bounces over a static background. The class is the shape."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from vidiff.data.render import (
    bounce,
    color_table,
    coverage,
    pixel_grid,
    sdf_box,
    sdf_circle,
    sdf_cross,
    sdf_star_polygon,
)
from vidiff.data.synthetic import SYNTHETIC, SyntheticVideoDataset, check_range, uniform

__all__ = ["MovingShapesConfig", "MovingShapes", "SHAPES", "TEXTURES", "MOTIONS", "BACKGROUNDS"]

# Signed distance of each shape in its own frame, where "radius" 1 is the nominal size; the
# extents are chosen so that all shapes cover a similar area.
SHAPES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "circle": sdf_circle,
    "square": lambda x, y: sdf_box(x, y, 0.86, 0.86),
    "triangle": lambda x, y: sdf_star_polygon(x, y, 3, 1.25, 0.625),
    "star": lambda x, y: sdf_star_polygon(x, y, 5, 1.25, 0.62),
    "cross": lambda x, y: sdf_cross(x, y, 1.05, 0.38),
}
# Extent of each shape (distance from its center to its farthest point), for the bounces.
_EXTENT = {
    "circle": 1.0,
    "square": 0.86 * math.sqrt(2),
    "triangle": 1.25,
    "star": 1.25,
    "cross": math.hypot(1.05, 0.38),
}
TEXTURES = ("striped", "checkered")  # patterns painted in the shape's frame
MOTIONS = ("rotating", "pulsing", "squashing")  # the motion a caption names
BACKGROUNDS = ("gradient", "checker", "black")


@dataclass
class MovingShapesConfig:
    """Options of `MovingShapes`. Lengths are fractions of ``size``."""

    frames: int = 16  # frames per clip
    size: int = 32  # frame height and width in pixels
    num_videos: int = 10_000  # dataset length; item i depends only on (seed, i)
    seed: int = 0  # dataset seed (>= 0)
    shapes: tuple[str, ...] = tuple(SHAPES)  # the classes, in label order (names from SHAPES)
    textures: tuple[str, ...] = TEXTURES  # patterns drawn from (names from TEXTURES)
    motions: tuple[str, ...] = MOTIONS  # motions drawn from (names from MOTIONS)
    colors: tuple[str, ...] = ("red", "green", "blue", "yellow", "cyan", "magenta")  # shape
    radius_range: tuple[float, float] = (0.16, 0.24)  # nominal shape radius / size
    speed_range: tuple[float, float] = (0.015, 0.04)  # drift per frame / size
    spin_range: tuple[float, float] = (0.12, 0.3)  # "rotating": radians per frame, either way
    pulse_range: tuple[float, float] = (0.2, 0.35)  # "pulsing": relative change of the scale
    squash_range: tuple[float, float] = (0.25, 0.45)  # "squashing": log aspect-ratio amplitude
    period_range: tuple[float, float] = (6.0, 12.0)  # frames per pulse / squash cycle
    stripes: float = 2.5  # texture periods across the shape's diameter
    background: str = "gradient"  # "gradient" (random 2-color ramp), "checker" or "black"

    def __post_init__(self):
        if self.frames < 1 or self.size < 8:
            raise ValueError(f"need frames >= 1 and size >= 8, got {self.frames}, {self.size}")
        if self.num_videos < 0 or self.seed < 0:
            raise ValueError("num_videos and seed must be >= 0")
        for field, valid in (("shapes", SHAPES), ("textures", TEXTURES), ("motions", MOTIONS)):
            names = getattr(self, field)
            bad = [n for n in names if n not in valid]
            if not names or bad or len(set(names)) != len(names):
                raise ValueError(
                    f"{field} must be distinct names from {', '.join(valid)}; got {names}"
                )
        color_table(self.colors)
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {self.background!r}")
        for name in (
            "radius_range",
            "speed_range",
            "spin_range",
            "pulse_range",
            "squash_range",
            "period_range",
        ):
            check_range(name, getattr(self, name))
        if self.pulse_range[1] >= 1 or self.period_range[0] <= 0 or self.stripes <= 0:
            raise ValueError("need pulse_range < 1, period_range > 0 and stripes > 0")
        grow = max(1 + self.pulse_range[1], math.exp(self.squash_range[1] / 2))
        reach = self.radius_range[1] * grow * max(_EXTENT[s] for s in self.shapes)
        if reach >= 0.48:
            raise ValueError(
                f"radius_range {self.radius_range} is too large: a shape would "
                f"reach {reach:.2f} * size from its center"
            )


@SYNTHETIC.register("moving_shapes")
class MovingShapes(SyntheticVideoDataset):
    """Clips of one textured shape (circle, square, triangle, star, cross) in motion.

    The shape drifts at constant velocity with elastic bounces (it stays inside the frame)
    and, depending on the clip's motion, spins ("rotating"), grows and shrinks ("pulsing") or
    squashes and stretches at constant area ("squashing"). Stripes or checkers are painted in
    the shape's own frame, so they turn and deform with it; the background is static. The label
    is the shape's index in ``config.shapes`` and the caption names motion, color, texture and
    shape: "a rotating red striped square".

    Items add to the common keys (see `vidiff.data.synthetic`): ``"angles"`` ``(F,)`` radians,
    ``"scales"`` ``(F, 2)`` (x, y) scale factors, ``"radii"`` ``(1,)`` nominal radius in
    pixels, and int64 ``"motion"``, ``"texture"``, ``"color"`` indices into the config tuples.
    """

    config_class = MovingShapesConfig

    def __init__(self, config: MovingShapesConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.palette = color_table(self.config.colors)  # (num_colors, 3) RGB in [0, 1]

    @property
    def class_names(self) -> list[str]:
        """The shape names, in label order."""
        return list(self.config.shapes)

    def sample(self, generator: torch.Generator) -> dict[str, Any]:
        """A random clip from ``generator``: shape, motion, texture, color all uniform."""
        cfg, g = self.config, generator
        label, motion, texture, color = (
            int(torch.randint(k, (1,), generator=g))
            for k in (len(cfg.shapes), len(cfg.motions), len(cfg.textures), len(cfg.colors))
        )
        shape, how = cfg.shapes[label], cfg.motions[motion]
        t = torch.arange(cfg.frames, dtype=torch.float32)  # (F,)
        radius = float(uniform(g, *cfg.radius_range)) * cfg.size
        angle = uniform(g, 0.0, 2 * math.pi) + torch.zeros_like(t)  # (F,)
        sx, sy = torch.ones_like(t), torch.ones_like(t)
        phase = 2 * math.pi * t / uniform(g, *cfg.period_range) + uniform(g, 0.0, 2 * math.pi)
        if how == "rotating":
            sign = 1.0 if bool(torch.rand(1, generator=g) < 0.5) else -1.0
            angle = angle + sign * uniform(g, *cfg.spin_range) * t
        elif how == "pulsing":
            sx = sy = 1.0 + uniform(g, *cfg.pulse_range) * torch.sin(phase)
        else:  # squashing: the aspect ratio oscillates, the area stays constant
            log_aspect = uniform(g, *cfg.squash_range) * torch.sin(phase)
            sx, sy = torch.exp(log_aspect / 2), torch.exp(-log_aspect / 2)
        # the largest distance from the center over the clip, for the walls
        reach = radius * _EXTENT[shape] * float(torch.maximum(sx, sy).max())
        low, high = reach - 0.5, cfg.size - 0.5 - reach
        start = low + (high - low) * torch.rand(2, generator=g)  # (2,)
        heading = float(uniform(g, 0.0, 2 * math.pi))
        speed = float(uniform(g, *cfg.speed_range)) * cfg.size
        velocity = torch.tensor([math.cos(heading), math.sin(heading)]) * speed
        pos = bounce(start, velocity, t[:, None], torch.tensor(low), torch.tensor(high))  # (F, 2)

        background = self._background(g)  # (3, 1, H, W)
        fill, alpha = self._shape(shape, cfg.textures[texture], color, pos, angle, sx, sy, radius)
        video = background + alpha * (fill - background)  # (3, F, H, W)
        return {
            "video": video * 2.0 - 1.0,
            "label": torch.tensor(label),
            "caption": f"a {how} {cfg.colors[color]} {cfg.textures[texture]} {shape}",
            "positions": pos[None],  # (1, F, 2)
            "num_objects": torch.tensor(1),
            "angles": angle,
            "scales": torch.stack([sx, sy], -1),
            "radii": torch.tensor([radius]),
            "motion": torch.tensor(motion),
            "texture": torch.tensor(texture),
            "color": torch.tensor(color),
        }

    def _shape(
        self,
        shape: str,
        texture: str,
        color: int,
        pos: torch.Tensor,
        angle: torch.Tensor,
        sx: torch.Tensor,
        sy: torch.Tensor,
        radius: float,
    ):
        """Fill color ``(3, F, H, W)`` and coverage ``(F, H, W)`` of the moving shape."""
        cfg = self.config
        x, y = pixel_grid(cfg.size, cfg.size)
        dx = x - pos[:, 0].view(-1, 1, 1)  # (F, 1, W) - broadcasts to (F, H, W) below
        dy = y - pos[:, 1].view(-1, 1, 1)  # (F, H, 1)
        cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
        px_per_unit = (radius * torch.minimum(sx, sy)).view(-1, 1, 1)  # (F, 1, 1)
        # into the shape's frame: rotate by -angle, then undo the scales; (F, H, W)
        u = (cos * dx + sin * dy) / (radius * sx.view(-1, 1, 1))
        v = (-sin * dx + cos * dy) / (radius * sy.view(-1, 1, 1))
        alpha = coverage(SHAPES[shape](u, v) * px_per_unit)
        freq = math.pi * cfg.stripes  # radians per unit: `stripes` periods over a diameter
        ramp = px_per_unit / freq  # converts sin() near its zeros to pixels, for anti-aliasing
        if texture == "striped":
            pattern = torch.sin(freq * u)
        else:  # checkered, with cells a little larger than the stripes
            freq, ramp = freq * 0.75, ramp / 0.75
            pattern = torch.sin(freq * u) * torch.sin(freq * v)
        mix = (0.5 + pattern * ramp).clamp(0.0, 1.0)  # (F, H, W), 1 = base color
        base = self.palette[color].view(3, 1, 1, 1)
        light = 0.35 * base + 0.65  # a pale tint: both tones stand out from the background
        return light + mix * (base - light), alpha

    def _background(self, g: torch.Generator) -> torch.Tensor:
        """A static background ``(3, 1, H, W)`` in [0, 1], dim enough for shapes to stand out."""
        cfg = self.config
        n = cfg.size
        if cfg.background == "black":
            return torch.zeros(3, 1, n, n)
        x, y = pixel_grid(n, n)
        c0, c1 = (0.03 + 0.25 * torch.rand(2, 3, 1, 1, 1, generator=g)).unbind(0)
        if cfg.background == "checker":
            cell = max(2, round(n / 8))
            odd = ((x // cell + y // cell) % 2).view(1, 1, n, n)
            return c0 + odd * (c1 - c0) * 0.5
        direction = float(uniform(g, 0.0, 2 * math.pi))
        ramp = (math.cos(direction) * (x - n / 2) + math.sin(direction) * (y - n / 2)) / n + 0.5
        return c0 + ramp.clamp(0, 1).view(1, 1, n, n) * (c1 - c0)
