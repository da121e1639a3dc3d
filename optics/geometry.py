"""Unit-cell shapes rendered to fill-fraction grids for :class:`hyplex.optics.rcwa.Layer`.

The grid covers one unit cell ``[0, Lx) x [0, Ly)`` with pixel ``(i, j)`` at
``[i Lx/Nx, (i+1) Lx/Nx) x [j Ly/Ny, (j+1) Ly/Ny)`` (axis -2 is x), the convention of
:mod:`hyplex.optics.fourier`. Shapes are centred in the cell. Edge pixels carry the area
fraction covered, which the solver mixes in ``eps`` and ``1/eps`` as the correct sub-pixel
average::

        +-------------- Lx --------------+      y
        |                                |      ^
        |        +-----+                 |      |
        |        |     |   shape,        |      +--> x   (axis -2 of the grid)
        |   +----+     +----+ centred    Ly
        |   +----+     +----+ at (0, 0)  |
        |        |     |                 |
        |        +-----+                 |
        +--------------------------------+

Three layers of API:

- Grid functions (:func:`disk`, :func:`rectangle`, :func:`cross`): one shape, supersampled
  area fractions, not differentiable.
- Shape classes (:class:`Disk`, :class:`Square`, :class:`Ellipse`, :class:`Rectangle`,
  :class:`Cross`, :class:`LShape`, :class:`HShape`; registry :data:`SHAPES`; defined in
  :mod:`hyplex.optics.shapes`). Each is a
  :class:`ParametricShape`: a vector of lengths in nm with a feasible box
  (:meth:`~ParametricShape.bounds`, honouring a minimum feature and gap size) and a batched,
  differentiable renderer (:meth:`~ParametricShape.render_batch`). The FDTD reference
  (:mod:`hyplex.optics.fdtd`) builds the same shapes from Meep primitives
  (:meth:`~Shape.primitives`), so both solvers see one geometry.
- Free-form density grids (:class:`FreeForm`, :func:`conic_filter`, :func:`tanh_projection`,
  defined in :mod:`hyplex.optics.freeform`): the filter-and-projection scheme of topology
  optimisation.

Differentiable rendering. Boxes (and unions of boxes) are rendered exactly: the area of a box
inside a pixel is the product of two interval overlaps, piecewise linear in the box edges, and
unions follow from inclusion-exclusion. Ellipses use the first-order signed distance
``d = F / |grad F|`` of ``F = r - 1`` (``r`` the normalised radius) and the exact area of a
pixel cut by the tangent line at that distance (:func:`_half_plane_cover`); the curvature
inside one pixel is the only error. Gradients with respect to the lengths live on the edge
pixels. The fill, and so an RCWA spectrum, is piecewise smooth in the lengths, with kinks
where an edge crosses a pixel boundary; finer grids make the kinks smaller.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch

__all__ = [
    "disk",
    "rectangle",
    "cross",
    "Shape",
    "ParametricShape",
    "Disk",
    "Square",
    "Ellipse",
    "Rectangle",
    "Cross",
    "LShape",
    "HShape",
    "SHAPES",
    "get_shape",
    "conic_filter",
    "tanh_projection",
    "freeform_fill",
    "FreeForm",
]


def _coordinates(grid: tuple[int, int], period_nm: tuple[float, float], supersample: int):
    """Sub-pixel sample coordinates (nm, centred) of shape ``(Nx*s, Ny*s)``."""
    nx, ny = grid
    if nx < 1 or ny < 1 or supersample < 1:
        raise ValueError(f"grid must be positive (Nx, Ny) and supersample >= 1, got {grid}")
    xs = (torch.arange(nx * supersample, dtype=torch.float64) + 0.5) / (nx * supersample) - 0.5
    ys = (torch.arange(ny * supersample, dtype=torch.float64) + 0.5) / (ny * supersample) - 0.5
    return torch.meshgrid(xs * period_nm[0], ys * period_nm[1], indexing="ij")


def _area_fraction(inside: torch.Tensor, supersample: int) -> torch.Tensor:
    """Mean over ``supersample x supersample`` blocks of the last two axes."""
    nx, ny = inside.shape[-2] // supersample, inside.shape[-1] // supersample
    blocks = inside.to(torch.float64).reshape(*inside.shape[:-2], nx, supersample, ny, supersample)
    return blocks.mean(dim=(-3, -1))


def _period(period_nm) -> tuple[float, float]:
    p = (float(period_nm), float(period_nm)) if isinstance(period_nm, (int, float)) else period_nm
    if len(p) != 2 or not all(math.isfinite(float(v)) and float(v) > 0 for v in p):
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
    """Plus-shaped cross (two bars of ``arm_length_nm`` x ``arm_width_nm``): ``(Nx, Ny)``.

    ``arm_width_nm > arm_length_nm`` is allowed and draws the same cross as the swapped pair.
    """
    px, py = _period(period_nm)
    if not (0 < arm_width_nm <= min(px, py) and 0 < arm_length_nm <= min(px, py)):
        raise ValueError(
            f"need 0 < arm_length_nm, arm_width_nm <= {min(px, py)} nm to fit the cell, "
            f"got {arm_length_nm}, {arm_width_nm}"
        )
    x, y = _coordinates(grid, (px, py), supersample)
    bar_x = (x.abs() <= arm_length_nm / 2) & (y.abs() <= arm_width_nm / 2)
    bar_y = (y.abs() <= arm_length_nm / 2) & (x.abs() <= arm_width_nm / 2)
    return _area_fraction(bar_x | bar_y, supersample)


# --------------------------------------------------------------------------- differentiable fills


def _pixel_centres(period_nm, grid, like: torch.Tensor):
    """Pixel centres ``x (Nx,)``, ``y (Ny,)`` in nm (cell-centred) and pixel sizes ``hx, hy``."""
    px, py = _period(period_nm)
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


def _interval_cover(centres: torch.Tensor, h: float, low: torch.Tensor, high: torch.Tensor):
    """Fraction of each pixel ``[c - h/2, c + h/2]`` inside ``[low, high]``: ``(..., N)``.

    ``low <= high`` have shape ``(...)``; exact and piecewise linear in both ends.
    """
    start = centres - h / 2
    # overlap = min(c + h/2, high) - max(c - h/2, low), clamped at 0, written without ties
    return (_ramp(high.unsqueeze(-1) - start, h) - _ramp(low.unsqueeze(-1) - start, h)) / h


def _half_plane_cover(inside: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
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


def _box_fill(x, y, hx, hy, x0, x1, y0, y1) -> torch.Tensor:
    """Exact area fraction ``(..., Nx, Ny)`` of the box ``[x0, x1] x [y0, y1]`` per pixel."""
    return _interval_cover(x, hx, x0, x1).unsqueeze(-1) * _interval_cover(y, hy, y0, y1).unsqueeze(
        -2
    )


def _ellipse_fill(x, y, hx, hy, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
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
    fill = _half_plane_cover(-distance, u, v)
    return torch.where(centre, torch.ones_like(fill), fill)


# --------------------------------------------------------------------------- shapes


class Shape:
    """A centred unit-cell shape, described exactly (not on a grid).

    Subclasses define :meth:`render` (fill-fraction grid for the RCWA), :meth:`primitives`
    (cylinders and boxes in nm, cell-centred coordinates, for the FDTD) and their symmetry.
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
        incidence, so one polarisation suffices). False when unsure (the safe answer)."""
        raise NotImplementedError

    def check_fits(self, period_nm) -> None:
        """Raise ValueError if the shape does not fit inside one cell of ``period_nm``."""
        self.render(period_nm, grid=(1, 1), supersample=1)


#: the smallest length of a parametric shape, as a fraction of the period
_SMALLEST_LENGTH = 1e-3


class ParametricShape(Shape):
    """A shape described by a few lengths in nm, rendered differentiably and batched.

    Subclasses are frozen dataclasses whose fields are :attr:`parameter_names`, in order.
    They define ``_fill`` (the differentiable fill of a parameter tensor), ``_extent`` (the
    bounding box ``(x, y)`` of a parameter vector, nm) and ``_bounds`` (the feasible box).
    """

    parameter_names: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def bounds(cls, period_nm: float, min_feature_nm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Feasible box ``(low, high)``, each ``(P,)`` in nm, for a square cell.

        Every parameter vector in the box draws a shape that fits the cell of side
        ``period_nm`` with every solid feature and every gap (to the neighbouring cells' copies
        and inside the shape) at least ``min_feature_nm`` wide. Lengths are at least
        ``max(min_feature_nm, period_nm / 1000)``, so every point of the box (its faces
        included) is a non-empty shape that :meth:`check_fits` accepts.

        Raises
        ------
        ValueError
            If ``period_nm`` or ``min_feature_nm`` is invalid, or no shape of this family
            fits the constraints.
        """
        period = float(period_nm)
        minimum = float(min_feature_nm)
        if not (math.isfinite(period) and period > 0):
            raise ValueError(f"period_nm must be a positive number of nm, got {period_nm}")
        if not (math.isfinite(minimum) and minimum >= 0):
            raise ValueError(f"min_feature_nm must be >= 0 nm, got {min_feature_nm}")
        floor = max(minimum, period * _SMALLEST_LENGTH)
        low, high = (np.asarray(v, dtype=np.float64) for v in cls._bounds(period, floor))
        if (low > high).any():
            worst = int(np.argmax(low - high))
            raise ValueError(
                f"min_feature_nm={minimum:g} is infeasible for a {cls.__name__} in a cell of "
                f"period_nm={period:g}: {cls.parameter_names[worst]} would need to lie in "
                f"[{low[worst]:g}, {high[worst]:g}] nm; reduce min_feature_nm below "
                f"{cls._max_feature(period):g} nm or enlarge the period"
            )
        return low, high

    @classmethod
    def _bounds(cls, period: float, minimum: float):
        raise NotImplementedError

    @classmethod
    def _max_feature(cls, period: float) -> float:
        """Largest feasible ``min_feature_nm`` in a cell of side ``period``."""
        return period / 2

    @classmethod
    def from_vector(cls, values) -> ParametricShape:
        """The shape with parameters ``values`` ``(P,)`` in nm (array, list or tensor)."""
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
        vector = np.asarray(values, dtype=np.float64).reshape(-1)
        if vector.size != len(cls.parameter_names):
            raise ValueError(
                f"{cls.__name__} takes {len(cls.parameter_names)} parameters "
                f"{cls.parameter_names}, got {vector.size}"
            )
        return cls(*(float(v) for v in vector))

    def __str__(self) -> str:
        values = ", ".join(f"{name}={getattr(self, name):.4g}" for name in self.parameter_names)
        return f"{type(self).__name__}({values})"

    def to_vector(self) -> np.ndarray:
        """Parameters ``(P,)`` float64 in nm, in the order of :attr:`parameter_names`."""
        return np.array([getattr(self, name) for name in self.parameter_names], dtype=np.float64)

    @classmethod
    def render_batch(cls, params, period_nm, grid=(64, 64)) -> torch.Tensor:
        """Differentiable fill fractions of a batch of shapes.

        Parameters
        ----------
        params : tensor ``(..., P)`` in nm (float64 for gradients; may require grad).
        period_nm : float or ``(Lx, Ly)``, the cell in nm.
        grid : ``(Nx, Ny)`` pixels; axis -2 is x, as for :func:`disk`.

        Returns
        -------
        tensor ``(..., Nx, Ny)`` in [0, 1], differentiable with respect to ``params`` (the
        gradient lives on edge pixels). Parts outside the cell are clipped, not wrapped.
        """
        params = torch.as_tensor(params)
        if not params.is_floating_point():
            params = params.to(torch.float64)
        count = len(cls.parameter_names)
        if params.ndim < 1 or params.shape[-1] != count:
            raise ValueError(
                f"{cls.__name__}.render_batch needs params (..., {count}) for "
                f"{cls.parameter_names}, got shape {tuple(params.shape)}"
            )
        if not torch.isfinite(params).all() or (params < 0).any():
            raise ValueError(f"{cls.__name__} parameters must be finite and >= 0 nm")
        x, y, hx, hy = _pixel_centres(period_nm, grid, params)
        return cls._fill(params.unbind(-1), x, y, hx, hy).clamp(0.0, 1.0)

    @classmethod
    def _fill(cls, p, x, y, hx, hy) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def _extent(cls, p) -> tuple[float, float]:
        raise NotImplementedError

    def check_fits(self, period_nm) -> None:
        """Raise ValueError unless every parameter is > 0 and the shape fits the cell."""
        px, py = _period(period_nm)
        vector = self.to_vector()
        if not (np.isfinite(vector).all() and (vector > 0).all()):
            pairs = dict(zip(self.parameter_names, vector.tolist(), strict=True))
            raise ValueError(f"{type(self).__name__} parameters must be > 0 nm, got {pairs}")
        ex, ey = self._extent(vector)
        if ex > px * (1 + 1e-12) or ey > py * (1 + 1e-12):
            raise ValueError(
                f"{self} spans {ex:g} x {ey:g} nm and does not fit the cell {px:g} x {py:g} nm"
            )

    def render(self, period_nm, grid=(128, 128), supersample: int = 8) -> torch.Tensor:
        """Fill fractions ``(Nx, Ny)`` float64: :meth:`render_batch` averaged over sub-pixels."""
        self.check_fits(period_nm)
        if supersample < 1:
            raise ValueError(f"supersample must be >= 1, got {supersample}")
        fine = (int(grid[0]) * supersample, int(grid[1]) * supersample)
        params = torch.as_tensor(self.to_vector())
        return _area_fraction(self.render_batch(params, period_nm, fine), supersample)

    def plot(self, period_nm, ax=None, grid=(256, 256)):
        """Draw the unit cell (fill fraction, x to the right, y up); returns the Axes."""
        import matplotlib.pyplot as plt

        px, py = _period(period_nm)
        fill = self.render(period_nm, grid=grid, supersample=1).numpy()
        return _plot_fill(fill, px, py, ax if ax is not None else plt.gca(), str(self))


def _plot_fill(fill: np.ndarray, px: float, py: float, ax, title: str):
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


# The concrete families live in their own module; re-exported here as part of the geometry API.
# Free-form density grids live in their own module; re-exported here as part of the geometry API.
from .freeform import FreeForm, conic_filter, freeform_fill, tanh_projection  # noqa: E402
from .shapes import (  # noqa: E402
    SHAPES,
    Cross,
    Disk,
    Ellipse,
    HShape,
    LShape,
    Rectangle,
    Square,
    get_shape,
)
