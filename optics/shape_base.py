"""The shape protocol: :class:`Shape` (exact description, rendering, FDTD primitives,
symmetry) and :class:`ParametricShape` (a few lengths in nm, a feasible box, batched
differentiable rendering). The concrete families are in :mod:`hyplex.optics.shapes`; the
rendering method is documented in :mod:`hyplex.optics.geometry`.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch

from .cell import area_fraction, cell_period, pixel_centres, plot_fill

__all__ = ["Shape", "ParametricShape", "SMALLEST_LENGTH"]


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
SMALLEST_LENGTH = 1e-3


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
        floor = max(minimum, period * SMALLEST_LENGTH)
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
        x, y, hx, hy = pixel_centres(period_nm, grid, params)
        return cls._fill(params.unbind(-1), x, y, hx, hy).clamp(0.0, 1.0)

    @classmethod
    def _fill(cls, p, x, y, hx, hy) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def _extent(cls, p) -> tuple[float, float]:
        raise NotImplementedError

    def check_fits(self, period_nm) -> None:
        """Raise ValueError unless every parameter is > 0 and the shape fits the cell."""
        px, py = cell_period(period_nm)
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
        return area_fraction(self.render_batch(params, period_nm, fine), supersample)

    def plot(self, period_nm, ax=None, grid=(256, 256)):
        """Draw the unit cell (fill fraction, x to the right, y up); returns the Axes."""
        import matplotlib.pyplot as plt

        px, py = cell_period(period_nm)
        fill = self.render(period_nm, grid=grid, supersample=1).numpy()
        return plot_fill(fill, px, py, ax if ax is not None else plt.gca(), str(self))
