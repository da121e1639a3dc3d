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

Three layers of API, in their own modules and re-exported here (:mod:`hyplex.optics.cell`
holds the pixel-coverage helpers they share, :mod:`hyplex.optics.shape_base` the protocol):

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
pixel cut by the tangent line at that distance (:func:`hyplex.optics.cell.half_plane_cover`);
the curvature inside one pixel is the only error. Gradients with respect to the lengths live
on the edge pixels. The fill, and so an RCWA spectrum, is piecewise smooth in the lengths,
with kinks where an edge crosses a pixel boundary; finer grids make the kinks smaller.
"""

from __future__ import annotations

from .cell import cell_period
from .freeform import FreeForm, conic_filter, freeform_fill, tanh_projection
from .shape_base import SMALLEST_LENGTH, ParametricShape, Shape
from .shapes import (
    SHAPES,
    Cross,
    Disk,
    Ellipse,
    HShape,
    LShape,
    Rectangle,
    Square,
    cross,
    disk,
    get_shape,
    rectangle,
)

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
    "cell_period",
    "SMALLEST_LENGTH",
]
