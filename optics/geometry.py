"""Unit-cell shapes rendered to fill-fraction grids for :class:`hyplex.optics.rcwa.Layer`.

The grid covers one unit cell ``[0, Lx) x [0, Ly)`` with pixel ``(i, j)`` at
``[i Lx/Nx, (i+1) Lx/Nx) x [j Ly/Ny, (j+1) Ly/Ny)`` (axis -2 is x), the convention of
:mod:`hyplex.optics.fourier`. Shapes are centred in the cell. Edge pixels carry the area
fraction covered, estimated by supersampling, which the solver mixes in ``eps`` and ``1/eps``
as the correct sub-pixel average.

This holds the shapes the demo and tests need; the full design space (ellipses, L/H shapes,
free-form density grids with feature-size filters, differentiable parameters) is a later issue.
"""

from __future__ import annotations

import torch

__all__ = ["disk", "rectangle", "cross"]


def _coordinates(grid: tuple[int, int], period_nm: tuple[float, float], supersample: int):
    """Sub-pixel sample coordinates (nm, centred) of shape ``(Nx*s, Ny*s)``."""
    nx, ny = grid
    if nx < 1 or ny < 1 or supersample < 1:
        raise ValueError(f"grid must be positive (Nx, Ny) and supersample >= 1, got {grid}")
    xs = (torch.arange(nx * supersample, dtype=torch.float64) + 0.5) / (nx * supersample) - 0.5
    ys = (torch.arange(ny * supersample, dtype=torch.float64) + 0.5) / (ny * supersample) - 0.5
    return torch.meshgrid(xs * period_nm[0], ys * period_nm[1], indexing="ij")


def _area_fraction(inside: torch.Tensor, supersample: int) -> torch.Tensor:
    nx, ny = inside.shape[0] // supersample, inside.shape[1] // supersample
    blocks = inside.to(torch.float64).reshape(nx, supersample, ny, supersample)
    return blocks.mean(dim=(1, 3))


def _period(period_nm) -> tuple[float, float]:
    p = (float(period_nm), float(period_nm)) if isinstance(period_nm, (int, float)) else period_nm
    if len(p) != 2 or min(p) <= 0:
        raise ValueError(f"period_nm must be positive (nm), got {period_nm}")
    return float(p[0]), float(p[1])


def disk(radius_nm: float, period_nm, grid=(64, 64), supersample: int = 8) -> torch.Tensor:
    """Circular pillar of radius ``radius_nm``: fill fractions ``(Nx, Ny)`` float64."""
    px, py = _period(period_nm)
    if not 0 < radius_nm <= min(px, py) / 2:
        raise ValueError(f"radius_nm must lie in (0, {min(px, py) / 2}] nm, got {radius_nm}")
    x, y = _coordinates(grid, (px, py), supersample)
    return _area_fraction(x**2 + y**2 <= radius_nm**2, supersample)


def rectangle(
    width_nm: float, height_nm: float, period_nm, grid=(64, 64), supersample: int = 8
) -> torch.Tensor:
    """Rectangle ``width_nm`` along x by ``height_nm`` along y: fill fractions ``(Nx, Ny)``."""
    px, py = _period(period_nm)
    if not (0 < width_nm <= px and 0 < height_nm <= py):
        raise ValueError(f"rectangle {width_nm}x{height_nm} nm must fit the cell {px}x{py} nm")
    x, y = _coordinates(grid, (px, py), supersample)
    return _area_fraction((x.abs() <= width_nm / 2) & (y.abs() <= height_nm / 2), supersample)


def cross(
    arm_length_nm: float, arm_width_nm: float, period_nm, grid=(64, 64), supersample: int = 8
) -> torch.Tensor:
    """Plus-shaped cross (two bars of ``arm_length_nm`` x ``arm_width_nm``): ``(Nx, Ny)``."""
    px, py = _period(period_nm)
    if not (0 < arm_width_nm <= arm_length_nm <= min(px, py)):
        raise ValueError(
            f"need 0 < arm_width_nm <= arm_length_nm <= {min(px, py)} nm, "
            f"got {arm_width_nm}, {arm_length_nm}"
        )
    x, y = _coordinates(grid, (px, py), supersample)
    bar_x = (x.abs() <= arm_length_nm / 2) & (y.abs() <= arm_width_nm / 2)
    bar_y = (y.abs() <= arm_length_nm / 2) & (x.abs() <= arm_width_nm / 2)
    return _area_fraction(bar_x | bar_y, supersample)
