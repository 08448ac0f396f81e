"""Vectorized, anti-aliased 2D rendering for the synthetic datasets.

Coordinates are in pixels with pixel centers on integers: ``x`` is the column, ``y`` the row,
and the frame spans ``[-0.5, size - 0.5]`` on both axes, so an object's intensity centroid
equals its position. Shapes are drawn from signed distance functions (negative inside); the
edge is a one-pixel ramp, a close approximation of the pixel area covered.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "COLORS",
    "color_table",
    "pixel_grid",
    "coverage",
    "bounce",
    "sdf_circle",
    "sdf_box",
    "sdf_star_polygon",
    "sdf_cross",
    "number_word",
    "join_phrases",
]

#: Named colors (RGB in [0, 1]), saturated and far apart so small renderings stay readable.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.95, 0.15, 0.12),
    "green": (0.15, 0.85, 0.2),
    "blue": (0.2, 0.4, 1.0),
    "yellow": (0.98, 0.88, 0.1),
    "cyan": (0.1, 0.9, 0.95),
    "magenta": (0.92, 0.2, 0.9),
    "orange": (1.0, 0.55, 0.05),
    "white": (0.95, 0.95, 0.95),
}

_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def color_table(names: tuple[str, ...] | list[str]) -> torch.Tensor:
    """RGB rows ``(len(names), 3)`` in [0, 1] for color names from `COLORS`."""
    unknown = [n for n in names if n not in COLORS]
    if unknown:
        raise ValueError(f"unknown colors {unknown}; known colors: {', '.join(COLORS)}")
    return torch.tensor([COLORS[n] for n in names], dtype=torch.float32)


def pixel_grid(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-center coordinates ``x`` ``(1, W)`` and ``y`` ``(H, 1)``, broadcastable to (H, W)."""
    x = torch.arange(width, dtype=torch.float32).view(1, width)
    y = torch.arange(height, dtype=torch.float32).view(height, 1)
    return x, y


def coverage(sdf_pixels: torch.Tensor) -> torch.Tensor:
    """Anti-aliased coverage in [0, 1] from a signed distance in pixels (negative inside)."""
    return (0.5 - sdf_pixels).clamp(0.0, 1.0)


def bounce(
    start: torch.Tensor,
    velocity: torch.Tensor,
    t: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
) -> torch.Tensor:
    """Positions at times ``t`` of points moving at constant velocity between walls.

    Elastic bounces off ``low`` and ``high`` in closed form (a triangle wave), so no stepping is
    needed: the unfolded position ``start + velocity * t`` is reflected back into the interval.
    All arguments broadcast; ``start`` must lie in ``[low, high]``.
    """
    span = (high - low).clamp_min(1e-6)
    u = torch.remainder(start - low + velocity * t, 2 * span)
    return low + span - (u - span).abs()


def sdf_circle(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Signed distance to the unit circle."""
    return torch.sqrt(x * x + y * y) - 1.0


def sdf_box(x: torch.Tensor, y: torch.Tensor, half_w: float, half_h: float) -> torch.Tensor:
    """Signed distance to the axis-aligned box ``|x| <= half_w, |y| <= half_h`` (exact)."""
    dx, dy = x.abs() - half_w, y.abs() - half_h
    outside = torch.sqrt(dx.clamp_min(0) ** 2 + dy.clamp_min(0) ** 2)
    return outside + torch.maximum(dx, dy).clamp_max(0)


def sdf_star_polygon(
    x: torch.Tensor, y: torch.Tensor, n: int, outer: float, inner: float
) -> torch.Tensor:
    """Signed distance (exact inside, a lower bound outside) to an ``n``-pointed star.

    Vertices alternate between radius ``outer`` (at angles ``2 pi k / n``, the first pointing
    up) and ``inner`` (halfway between). ``inner = outer * cos(pi / n)`` gives the regular
    n-gon. By symmetry the point is folded into the wedge between an outer vertex and the next
    inner vertex, where the boundary is one straight edge.
    """
    sector = 2 * math.pi / n
    angle = torch.atan2(x, -y)  # 0 points up (-y), so the first vertex is at the top
    angle = (torch.remainder(angle + sector / 2, sector) - sector / 2).abs()  # in [0, pi / n]
    r = torch.sqrt(x * x + y * y)
    px, py = r * torch.cos(angle), r * torch.sin(angle)
    # edge from A = (outer, 0) to B = inner * (cos(pi/n), sin(pi/n)); outward normal (nx, ny)
    bx, by = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
    ex, ey = bx - outer, by
    length = math.hypot(ex, ey)
    nx, ny = ey / length, -ex / length
    return (px - outer) * nx + py * ny


def sdf_cross(x: torch.Tensor, y: torch.Tensor, arm: float, half_width: float) -> torch.Tensor:
    """Signed distance to a plus sign: the union of two boxes (exact outside)."""
    return torch.minimum(sdf_box(x, y, arm, half_width), sdf_box(x, y, half_width, arm))


def number_word(n: int, article: bool = True) -> str:
    """English for a count: "a" (or "one" without ``article``), "two", ..., digits past ten."""
    if n == 1 and article:
        return "a"
    return _NUMBERS[n] if 0 <= n < len(_NUMBERS) else str(n)


def join_phrases(parts: list[str]) -> str:
    """Join phrases as English lists: "x", "x and y", "x, y and z"."""
    if len(parts) <= 2:
        return " and ".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]
