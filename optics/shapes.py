"""The parametric unit-cell families: disk, square, ellipse, rectangle, cross, L and H, and the
supersampled grid functions :func:`disk`, :func:`rectangle`, :func:`cross`.

Each is a frozen dataclass of lengths in nm and a :class:`~hyplex.optics.geometry.ParametricShape`
(bounds honouring a minimum feature and gap, batched differentiable rendering, Meep
primitives, ``plot()``); the rendering conventions and the exact box and ellipse coverage
are documented in :mod:`hyplex.optics.geometry`, which re-exports everything here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .cell import area_fraction, box_fill, cell_period, ellipse_fill, subpixel_coordinates
from .shape_base import ParametricShape, Shape


@dataclass(frozen=True)
class Disk(ParametricShape):
    """Circular pillar of radius ``radius_nm``. Bounds: ``[m/2, (P - m)/2]``."""

    radius_nm: float
    parameter_names: ClassVar[tuple[str, ...]] = ("radius_nm",)

    def render(self, period_nm, grid=(128, 128), supersample: int = 8) -> torch.Tensor:
        return disk(self.radius_nm, period_nm, grid, supersample)

    def check_fits(self, period_nm) -> None:
        Shape.check_fits(self, period_nm)

    def primitives(self) -> list[dict]:
        return [{"kind": "cylinder", "center": (0.0, 0.0), "radius": float(self.radius_nm)}]

    def is_c4(self, period_nm) -> bool:
        px, py = cell_period(period_nm)
        return px == py

    @classmethod
    def _bounds(cls, period, minimum):
        return [minimum / 2], [(period - minimum) / 2]

    @classmethod
    def _fill(cls, p, x, y, hx, hy):
        return ellipse_fill(x, y, hx, hy, p[0], p[0])

    @classmethod
    def _extent(cls, p):
        return 2 * p[0], 2 * p[0]


@dataclass(frozen=True)
class Square(ParametricShape):
    """Square pillar of side ``side_nm``. Bounds: ``[m, P - m]``."""

    side_nm: float
    parameter_names: ClassVar[tuple[str, ...]] = ("side_nm",)

    def primitives(self) -> list[dict]:
        side = float(self.side_nm)
        return [{"kind": "block", "center": (0.0, 0.0), "size": (side, side)}]

    def is_c4(self, period_nm) -> bool:
        px, py = cell_period(period_nm)
        return px == py

    @classmethod
    def _bounds(cls, period, minimum):
        return [minimum], [period - minimum]

    @classmethod
    def _fill(cls, p, x, y, hx, hy):
        half = p[0] / 2
        return box_fill(x, y, hx, hy, -half, half, -half, half)

    @classmethod
    def _extent(cls, p):
        return p[0], p[0]


@dataclass(frozen=True)
class Ellipse(ParametricShape):
    """Elliptical pillar, semi-axes ``semi_axis_x_nm`` along x and ``semi_axis_y_nm`` along y.

    Bounds: each semi-axis in ``[m/2, (P - m)/2]``. The box bounds the axes, not the radius
    of curvature ``b^2 / a`` at the tips of a slender ellipse, which can fall below ``m``.
    Meep's reference here has only cylinders and blocks, so :meth:`primitives` works for a
    circle only.
    """

    semi_axis_x_nm: float
    semi_axis_y_nm: float
    parameter_names: ClassVar[tuple[str, ...]] = ("semi_axis_x_nm", "semi_axis_y_nm")

    def primitives(self) -> list[dict]:
        if self.semi_axis_x_nm == self.semi_axis_y_nm:
            radius = float(self.semi_axis_x_nm)
            return [{"kind": "cylinder", "center": (0.0, 0.0), "radius": radius}]
        raise ValueError(
            f"{self} has no exact FDTD form: the Meep reference builds cylinders and blocks "
            "only; pass a binary grid instead, e.g. pattern=shape.render(period_nm).round()"
        )

    def is_c4(self, period_nm) -> bool:
        px, py = cell_period(period_nm)
        return px == py and self.semi_axis_x_nm == self.semi_axis_y_nm

    @classmethod
    def _bounds(cls, period, minimum):
        return [minimum / 2] * 2, [(period - minimum) / 2] * 2

    @classmethod
    def _fill(cls, p, x, y, hx, hy):
        return ellipse_fill(x, y, hx, hy, p[0], p[1])

    @classmethod
    def _extent(cls, p):
        return 2 * p[0], 2 * p[1]


@dataclass(frozen=True)
class Rectangle(ParametricShape):
    """Rectangle ``width_nm`` along x by ``height_nm`` along y. Bounds: each ``[m, P - m]``."""

    width_nm: float
    height_nm: float
    parameter_names: ClassVar[tuple[str, ...]] = ("width_nm", "height_nm")

    def render(self, period_nm, grid=(128, 128), supersample: int = 8) -> torch.Tensor:
        return rectangle(self.width_nm, self.height_nm, period_nm, grid, supersample)

    def check_fits(self, period_nm) -> None:
        Shape.check_fits(self, period_nm)

    def primitives(self) -> list[dict]:
        size = (float(self.width_nm), float(self.height_nm))
        return [{"kind": "block", "center": (0.0, 0.0), "size": size}]

    def is_c4(self, period_nm) -> bool:
        px, py = cell_period(period_nm)
        return px == py and self.width_nm == self.height_nm

    @classmethod
    def _bounds(cls, period, minimum):
        return [minimum] * 2, [period - minimum] * 2

    @classmethod
    def _fill(cls, p, x, y, hx, hy):
        return box_fill(x, y, hx, hy, -p[0] / 2, p[0] / 2, -p[1] / 2, p[1] / 2)

    @classmethod
    def _extent(cls, p):
        return p[0], p[1]


@dataclass(frozen=True)
class Cross(ParametricShape):
    """Plus-shaped cross: two bars of ``arm_length_nm`` x ``arm_width_nm``.

    Bounds: each in ``[m, P - m]``. A width above the length draws the same cross as the
    swapped pair (so every point of the box is a valid cross).
    """

    arm_length_nm: float
    arm_width_nm: float
    parameter_names: ClassVar[tuple[str, ...]] = ("arm_length_nm", "arm_width_nm")

    def render(self, period_nm, grid=(128, 128), supersample: int = 8) -> torch.Tensor:
        return cross(self.arm_length_nm, self.arm_width_nm, period_nm, grid, supersample)

    def check_fits(self, period_nm) -> None:
        Shape.check_fits(self, period_nm)

    def primitives(self) -> list[dict]:
        length, width = float(self.arm_length_nm), float(self.arm_width_nm)
        return [
            {"kind": "block", "center": (0.0, 0.0), "size": (length, width)},
            {"kind": "block", "center": (0.0, 0.0), "size": (width, length)},
        ]

    def is_c4(self, period_nm) -> bool:
        px, py = cell_period(period_nm)
        return px == py

    @classmethod
    def _bounds(cls, period, minimum):
        return [minimum] * 2, [period - minimum] * 2

    @classmethod
    def _fill(cls, p, x, y, hx, hy):
        length, width = p[0] / 2, p[1] / 2
        core = torch.minimum(length, width)
        bar_x = box_fill(x, y, hx, hy, -length, length, -width, width)
        bar_y = box_fill(x, y, hx, hy, -width, width, -length, length)
        return bar_x + bar_y - box_fill(x, y, hx, hy, -core, core, -core, core)

    @classmethod
    def _extent(cls, p):
        return max(p), max(p)


@dataclass(frozen=True)
class LShape(ParametricShape):
    """L-shaped pillar: a bar along x and a bar along y sharing the lower-left corner::

        +--+                  extent_x_nm: length of the bar along x
        |  |                  extent_y_nm: length of the bar along y
        |  +-----+            arm_width_nm: width of both bars
        +--------+

    The bounding box ``max(extent_x, arm_width) x max(extent_y, arm_width)`` is centred.
    Bounds: each in ``[m, P - m]``; an arm width above an extent makes a rectangle with a
    notch or a plain rectangle, still a valid shape. Not mirror symmetric, not C4.
    """

    extent_x_nm: float
    extent_y_nm: float
    arm_width_nm: float
    parameter_names: ClassVar[tuple[str, ...]] = ("extent_x_nm", "extent_y_nm", "arm_width_nm")
    mirror_x = False
    mirror_y = False

    def _boxes(self):
        lx, ly, w = self.extent_x_nm, self.extent_y_nm, self.arm_width_nm
        x0, y0 = -max(lx, w) / 2, -max(ly, w) / 2
        return [(x0, x0 + lx, y0, y0 + w), (x0, x0 + w, y0, y0 + ly)]

    def primitives(self) -> list[dict]:
        return [_block(*box) for box in self._boxes()]

    def is_c4(self, period_nm) -> bool:
        return False

    @classmethod
    def _bounds(cls, period, minimum):
        return [minimum] * 3, [period - minimum] * 3

    @classmethod
    def _fill(cls, p, x, y, hx, hy):
        lx, ly, w = p
        x0, y0 = -torch.maximum(lx, w) / 2, -torch.maximum(ly, w) / 2
        bar_x = box_fill(x, y, hx, hy, x0, x0 + lx, y0, y0 + w)
        bar_y = box_fill(x, y, hx, hy, x0, x0 + w, y0, y0 + ly)
        corner = box_fill(
            x, y, hx, hy, x0, x0 + torch.minimum(lx, w), y0, y0 + torch.minimum(ly, w)
        )
        return bar_x + bar_y - corner

    @classmethod
    def _extent(cls, p):
        return max(p[0], p[2]), max(p[1], p[2])


@dataclass(frozen=True)
class HShape(ParametricShape):
    """H-shaped pillar: two legs along y joined by a crossbar along x, centred::

        +--+    +--+          leg_width_nm: width (x) of each leg
        |  +----+  |          slot_width_nm: gap (x) between the legs
        |  +----+  |          height_nm: length (y) of the legs
        +--+    +--+          bar_width_nm: width (y) of the crossbar

    Total width ``2 leg + slot``. Bounds: legs and slot in ``[m, (P - m)/3]``, height and bar
    in ``[m, P - m]`` (a bar wider than the legs' height makes a plain rectangle). Feasible
    for ``m <= P/4``. Mirror symmetric in x and y, not C4.
    """

    leg_width_nm: float
    slot_width_nm: float
    height_nm: float
    bar_width_nm: float
    parameter_names: ClassVar[tuple[str, ...]] = (
        "leg_width_nm",
        "slot_width_nm",
        "height_nm",
        "bar_width_nm",
    )

    def primitives(self) -> list[dict]:
        t, g, h, b = (float(v) for v in self.to_vector())
        half = t + g / 2
        return [
            _block(-half, -half + t, -h / 2, h / 2),
            _block(half - t, half, -h / 2, h / 2),
            _block(-half, half, -b / 2, b / 2),
        ]

    def is_c4(self, period_nm) -> bool:
        return False

    @classmethod
    def _bounds(cls, period, minimum):
        third = (period - minimum) / 3
        return [minimum] * 4, [third, third, period - minimum, period - minimum]

    @classmethod
    def _max_feature(cls, period):
        return period / 4

    @classmethod
    def _fill(cls, p, x, y, hx, hy):
        t, g, h, b = p
        half = t + g / 2
        bar_half, joint_half = b / 2, torch.minimum(h, b) / 2
        fill = box_fill(x, y, hx, hy, -half, half, -bar_half, bar_half)
        for lo, hi in ((-half, -half + t), (half - t, half)):
            fill = fill + box_fill(x, y, hx, hy, lo, hi, -h / 2, h / 2)
            fill = fill - box_fill(x, y, hx, hy, lo, hi, -joint_half, joint_half)
        return fill

    @classmethod
    def _extent(cls, p):
        return 2 * p[0] + p[1], max(p[2], p[3])


# --------------------------------------------------------------------------- grid functions


def disk(radius_nm: float, period_nm, grid=(64, 64), supersample: int = 8) -> torch.Tensor:
    """Circular pillar of radius ``radius_nm``: fill fractions ``(Nx, Ny)`` float64."""
    px, py = cell_period(period_nm)
    if not 0 < radius_nm <= min(px, py) / 2:
        raise ValueError(f"radius_nm must lie in (0, {min(px, py) / 2}] nm, got {radius_nm}")
    x, y = subpixel_coordinates(grid, (px, py), supersample)
    return area_fraction(x**2 + y**2 <= radius_nm**2, supersample)


def rectangle(
    width_nm: float, height_nm: float, period_nm, grid=(64, 64), supersample: int = 8
) -> torch.Tensor:
    """Rectangle ``width_nm`` along x by ``height_nm`` along y: fill fractions ``(Nx, Ny)``."""
    px, py = cell_period(period_nm)
    if not (0 < width_nm <= px and 0 < height_nm <= py):
        raise ValueError(f"rectangle {width_nm}x{height_nm} nm must fit the cell {px}x{py} nm")
    x, y = subpixel_coordinates(grid, (px, py), supersample)
    return area_fraction((x.abs() <= width_nm / 2) & (y.abs() <= height_nm / 2), supersample)


def cross(
    arm_length_nm: float, arm_width_nm: float, period_nm, grid=(64, 64), supersample: int = 8
) -> torch.Tensor:
    """Plus-shaped cross (two bars of ``arm_length_nm`` x ``arm_width_nm``): ``(Nx, Ny)``.

    ``arm_width_nm > arm_length_nm`` is allowed and draws the same cross as the swapped pair.
    """
    px, py = cell_period(period_nm)
    if not (0 < arm_width_nm <= min(px, py) and 0 < arm_length_nm <= min(px, py)):
        raise ValueError(
            f"need 0 < arm_length_nm, arm_width_nm <= {min(px, py)} nm to fit the cell, "
            f"got {arm_length_nm}, {arm_width_nm}"
        )
    x, y = subpixel_coordinates(grid, (px, py), supersample)
    bar_x = (x.abs() <= arm_length_nm / 2) & (y.abs() <= arm_width_nm / 2)
    bar_y = (y.abs() <= arm_length_nm / 2) & (x.abs() <= arm_width_nm / 2)
    return area_fraction(bar_x | bar_y, supersample)


def _block(x0, x1, y0, y1) -> dict:
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    return {"kind": "block", "center": centre, "size": (x1 - x0, y1 - y0)}


#: Parametric shape families by name.
SHAPES: dict[str, type[ParametricShape]] = {
    "disk": Disk,
    "square": Square,
    "ellipse": Ellipse,
    "rectangle": Rectangle,
    "cross": Cross,
    "L": LShape,
    "H": HShape,
}


def get_shape(name: str) -> type[ParametricShape]:
    """The shape family registered as ``name`` in :data:`SHAPES`."""
    try:
        return SHAPES[name]
    except KeyError:
        raise ValueError(f"unknown shape family {name!r}; choose one of {sorted(SHAPES)}") from None
