"""Unit-cell shapes rendered to fill-fraction grids for :class:`hyplex.optics.rcwa.Layer`.

The grid covers one unit cell ``[0, Lx) x [0, Ly)`` with pixel ``(i, j)`` at
``[i Lx/Nx, (i+1) Lx/Nx) x [j Ly/Ny, (j+1) Ly/Ny)`` (axis -2 is x), the convention of
:mod:`hyplex.optics.fourier`. Shapes are centred in the cell. Edge pixels carry the area
fraction covered, estimated by supersampling, which the solver mixes in ``eps`` and ``1/eps``
as the correct sub-pixel average.

The functions (:func:`disk`, :func:`rectangle`, :func:`cross`) return grids. The shape classes
(:class:`Disk`, :class:`Rectangle`, :class:`Cross`) describe the same shapes exactly: the RCWA
renders them to a grid, and the FDTD reference (:mod:`hyplex.optics.fdtd`) builds them from
Meep's geometric primitives, so both solvers see one geometry. The full design space
(ellipses, L/H shapes, free-form density grids, differentiable parameters) is a later issue.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["disk", "rectangle", "cross", "Shape", "Disk", "Rectangle", "Cross"]


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


class Shape:
    """A centred unit-cell shape, described exactly (not on a grid).

    Subclasses define :meth:`render` (fill-fraction grid for the RCWA), :meth:`primitives`
    (cylinders and boxes in nm, cell-centred coordinates, for the FDTD) and their symmetry.
    Every shape here is centred, so it is mirror-symmetric in x and in y.
    """

    #: symmetric under x -> -x and y -> -y about the cell centre
    mirror_x = True
    mirror_y = True

    def render(self, period_nm, grid=(128, 128), supersample: int = 8) -> torch.Tensor:
        """Fill fractions ``(Nx, Ny)`` float64 of the shape on a grid over one unit cell."""
        raise NotImplementedError

    def primitives(self) -> list[dict]:
        """Union of primitives: ``{"kind": "cylinder", "center": (x, y), "radius": r}`` or
        ``{"kind": "block", "center": (x, y), "size": (wx, wy)}``, all in nm."""
        raise NotImplementedError

    def is_c4(self, period_nm) -> bool:
        """True if a 90-degree rotation maps the cell onto itself (then TE == TM at normal
        incidence, so one polarisation suffices)."""
        raise NotImplementedError

    def check_fits(self, period_nm) -> None:
        """Raise ValueError if the shape does not fit inside one cell of ``period_nm``."""
        self.render(period_nm, grid=(1, 1), supersample=1)


@dataclass(frozen=True)
class Disk(Shape):
    """Circular pillar of radius ``radius_nm``."""

    radius_nm: float

    def render(self, period_nm, grid=(128, 128), supersample: int = 8) -> torch.Tensor:
        return disk(self.radius_nm, period_nm, grid, supersample)

    def primitives(self) -> list[dict]:
        return [{"kind": "cylinder", "center": (0.0, 0.0), "radius": float(self.radius_nm)}]

    def is_c4(self, period_nm) -> bool:
        px, py = _period(period_nm)
        return px == py


@dataclass(frozen=True)
class Rectangle(Shape):
    """Rectangle ``width_nm`` along x by ``height_nm`` along y (a square pillar if equal)."""

    width_nm: float
    height_nm: float

    def render(self, period_nm, grid=(128, 128), supersample: int = 8) -> torch.Tensor:
        return rectangle(self.width_nm, self.height_nm, period_nm, grid, supersample)

    def primitives(self) -> list[dict]:
        size = (float(self.width_nm), float(self.height_nm))
        return [{"kind": "block", "center": (0.0, 0.0), "size": size}]

    def is_c4(self, period_nm) -> bool:
        px, py = _period(period_nm)
        return px == py and self.width_nm == self.height_nm


@dataclass(frozen=True)
class Cross(Shape):
    """Plus-shaped cross: two bars of ``arm_length_nm`` x ``arm_width_nm``."""

    arm_length_nm: float
    arm_width_nm: float

    def render(self, period_nm, grid=(128, 128), supersample: int = 8) -> torch.Tensor:
        return cross(self.arm_length_nm, self.arm_width_nm, period_nm, grid, supersample)

    def primitives(self) -> list[dict]:
        length, width = float(self.arm_length_nm), float(self.arm_width_nm)
        return [
            {"kind": "block", "center": (0.0, 0.0), "size": (length, width)},
            {"kind": "block", "center": (0.0, 0.0), "size": (width, length)},
        ]

    def is_c4(self, period_nm) -> bool:
        px, py = _period(period_nm)
        return px == py
