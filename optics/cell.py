"""The unit cell's pixel grid: shared by every shape family and by free-form densities.

A grid ``(Nx, Ny)`` covers one unit cell ``[0, Lx) x [0, Ly)``; pixel ``(i, j)`` is
``[i Lx/Nx, (i+1) Lx/Nx) x [j Ly/Ny, (j+1) Ly/Ny)`` (axis -2 is x), the convention of
:mod:`hyplex.optics.fourier`. Coordinates here are cell-centred, in nm.

- :func:`cell_period`: validate a period (nm) into ``(Lx, Ly)``;
- :func:`subpixel_coordinates`, :func:`area_fraction`: supersampled area fractions;
- :func:`pixel_centres`, :func:`interval_cover`, :func:`half_plane_cover`, :func:`box_fill`,
  :func:`ellipse_fill`: the exact, differentiable coverage of boxes and ellipses (see
  :mod:`hyplex.optics.geometry` for the method);
- :func:`plot_fill`: draw a fill grid over the cell.

:mod:`hyplex.optics.shape_base`, :mod:`hyplex.optics.shapes` and :mod:`hyplex.optics.freeform`
import these; :mod:`hyplex.optics.geometry` re-exports the shape API.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "cell_period",
    "subpixel_coordinates",
    "area_fraction",
    "pixel_centres",
    "interval_cover",
    "half_plane_cover",
    "box_fill",
    "ellipse_fill",
    "plot_fill",
]


def subpixel_coordinates(grid: tuple[int, int], period_nm: tuple[float, float], supersample: int):
    """Sub-pixel sample coordinates (nm, centred) of shape ``(Nx*s, Ny*s)``."""
    nx, ny = grid
    if nx < 1 or ny < 1 or supersample < 1:
        raise ValueError(f"grid must be positive (Nx, Ny) and supersample >= 1, got {grid}")
    xs = (torch.arange(nx * supersample, dtype=torch.float64) + 0.5) / (nx * supersample) - 0.5
    ys = (torch.arange(ny * supersample, dtype=torch.float64) + 0.5) / (ny * supersample) - 0.5
    return torch.meshgrid(xs * period_nm[0], ys * period_nm[1], indexing="ij")


def area_fraction(inside: torch.Tensor, supersample: int) -> torch.Tensor:
    """Mean over ``supersample x supersample`` blocks of the last two axes."""
    nx, ny = inside.shape[-2] // supersample, inside.shape[-1] // supersample
    blocks = inside.to(torch.float64).reshape(*inside.shape[:-2], nx, supersample, ny, supersample)
    return blocks.mean(dim=(-3, -1))


def cell_period(period_nm) -> tuple[float, float]:
    """``(Lx, Ly)`` in nm from a number or a pair; raises ValueError unless both are > 0."""
    p = (float(period_nm), float(period_nm)) if isinstance(period_nm, (int, float)) else period_nm
    if len(p) != 2 or not all(math.isfinite(float(v)) and float(v) > 0 for v in p):
        raise ValueError(f"period_nm must be positive (nm), got {period_nm}")
    return float(p[0]), float(p[1])


def pixel_centres(period_nm, grid, like: torch.Tensor):
    """Pixel centres ``x (Nx,)``, ``y (Ny,)`` in nm (cell-centred) and pixel sizes ``hx, hy``."""
    px, py = cell_period(period_nm)
    if len(grid) != 2 or int(grid[0]) < 1 or int(grid[1]) < 1:
        raise ValueError(f"grid must be positive (Nx, Ny), got {grid}")
    nx, ny = int(grid[0]), int(grid[1])
    options = {"dtype": like.dtype, "device": like.device}
    x = ((torch.arange(nx, **options) + 0.5) / nx - 0.5) * px
    y = ((torch.arange(ny, **options) + 0.5) / ny - 0.5) * py
    return x, y, px / nx, py / ny


def _ramp(value: torch.Tensor, top: float) -> torch.Tensor:
    """``clamp(value, 0, top)`` whose gradient passes on the half-open ``[0, top)`` only, so
    that an edge exactly on a pixel boundary moves the area of exactly one pixel."""
    clamped = value.clamp(0.0, top)
    return torch.where((value >= 0) & (value < top), value, clamped.detach())


def interval_cover(centres: torch.Tensor, h: float, low: torch.Tensor, high: torch.Tensor):
    """Fraction of each pixel ``[c - h/2, c + h/2]`` inside ``[low, high]``: ``(..., N)``.

    ``low <= high`` have shape ``(...)``; exact and piecewise linear in both ends.
    """
    start = centres - h / 2
    # overlap = min(c + h/2, high) - max(c - h/2, low), clamped at 0, written without ties
    return (_ramp(high.unsqueeze(-1) - start, h) - _ramp(low.unsqueeze(-1) - start, h)) / h


def half_plane_cover(inside: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Area fraction of a pixel on the inner side of a straight edge.

    ``inside`` is the distance (nm) from the pixel centre to the edge, positive inside;
    ``u >= v >= 0`` are the widths of the pixel projected on the edge normal by each of its
    sides (``|n_x| h_x`` and ``|n_y| h_y``, sorted). The normal coordinate is uniform over a
    side, so the covered fraction is the CDF of the sum of two uniform variables of widths
    ``u`` and ``v``: a trapezoidal density, piecewise quadratic CDF.
    """
    t = (inside + (u + v) / 2).clamp(min=0.0)
    total = u + v
    uv = torch.where(v > 0, 2 * u * v, torch.ones_like(v))
    rising = t * t / uv
    flat = (t - v / 2) / u
    falling = 1 - (total - t).clamp(min=0.0) ** 2 / uv
    cover = torch.where(t < v, rising, torch.where(t < u, flat, falling))
    return torch.where(t >= total, torch.ones_like(cover), cover)


def box_fill(x, y, hx, hy, x0, x1, y0, y1) -> torch.Tensor:
    """Exact area fraction ``(..., Nx, Ny)`` of the box ``[x0, x1] x [y0, y1]`` per pixel."""
    return interval_cover(x, hx, x0, x1).unsqueeze(-1) * interval_cover(y, hy, y0, y1).unsqueeze(-2)


def ellipse_fill(x, y, hx, hy, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Smoothed fill ``(..., Nx, Ny)`` of the centred ellipse with semi-axes ``a``, ``b`` (nm)."""
    a, b = a[..., None, None], b[..., None, None]
    u, v = x[:, None] / a, y[None, :] / b  # normalised coordinates, (..., Nx, Ny)
    gx, gy = u / a, v / b  # r * grad(r)
    g2 = gx * gx + gy * gy
    centre = g2 <= 1e-30
    g = torch.sqrt(torch.where(centre, torch.ones_like(g2), g2))  # double-where: finite grads
    r = torch.sqrt(torch.where(centre, torch.ones_like(g2), u * u + v * v))
    distance = (r - 1.0) * r / g  # first-order signed distance (r - 1) / |grad r|, nm
    width_x, width_y = gx.abs() * hx / g, gy.abs() * hy / g  # pixel sides along the normal
    u = torch.where(centre, torch.full_like(g2, hx), torch.maximum(width_x, width_y))
    v = torch.minimum(width_x, width_y)
    fill = half_plane_cover(-distance, u, v)
    return torch.where(centre, torch.ones_like(fill), fill)


def plot_fill(fill: np.ndarray, px: float, py: float, ax, title: str):
    """Draw a fill grid ``(Nx, Ny)`` over the cell (x right, y up) and the cell outline."""
    from matplotlib.patches import Rectangle as CellOutline

    extent = (-px / 2, px / 2, -py / 2, py / 2)
    ax.imshow(fill.T, origin="lower", extent=extent, cmap="Greys", vmin=0.0, vmax=1.0)
    outline = CellOutline((-px / 2, -py / 2), px, py, fill=False, edgecolor="tab:blue")
    ax.add_patch(outline)
    ax.set_xlabel("x (nm)")
    ax.set_ylabel("y (nm)")
    ax.set_title(title, fontsize=8)
    ax.set_aspect("equal")
    return ax
