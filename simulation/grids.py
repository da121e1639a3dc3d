"""Wavelength grids, spectral resampling and quadrature for the camera twin.

Every spectral array in ``hyplex.simulation`` travels with a 1-D grid of vacuum wavelengths in
nm (strictly increasing). The two Hyplex grids are

=================  ====================================================================
``HYPLEX_GRID``    204 bands, 397-1003 nm (approximately the Specim IQ band centres of the
                   FVgNET data, CVPR 2022: evenly spaced here)
``PROTOTYPE_GRID`` 34 bands, 400-730 nm, 10 nm (the Hyplex prototype decoder output)
=================  ====================================================================

One convention throughout: a grid value is the band average of the spectral density over the
band's bin, whose edges are the midpoints between neighbouring grid points (the end bins are
symmetric about the end points, so the 34-band grid covers 395-735 nm). :func:`resample`
integrates the piecewise-linear source exactly over each bin, so it conserves band integrals and
does not alias the narrow lines of fluorescent lamps onto a coarse grid. Integrals over a grid
are sums of band averages times bin widths (:func:`quadrature_weights`), so a spectrum resampled
onto a grid keeps its integral over the grid's bins: a flat unit spectrum integrates to 340 nm
on the 34-band grid, and ``sum(quadrature_weights(g) * resample(s, f, g))`` equals the integral
of ``f`` from ``bin_edges(g)[0]`` to ``bin_edges(g)[-1]``.
"""

from __future__ import annotations

import numpy as np

HYPLEX_BANDS, HYPLEX_RANGE_NM = 204, (397.0, 1003.0)
PROTOTYPE_BANDS, PROTOTYPE_RANGE_NM = 34, (400.0, 730.0)
_EXTRAPOLATIONS = ("error", "constant", "zero")
_SAME_GRID_NM = 1e-6  # grids closer than this are the same grid (as in check_same_grid)


def hyplex_grid() -> np.ndarray:
    """The 204-band Hyplex grid: ``linspace(397, 1003, 204)`` nm (2.985 nm steps), approximately
    the band centres of the Specim IQ camera of the FVgNET data."""
    return np.linspace(*HYPLEX_RANGE_NM, HYPLEX_BANDS)


def prototype_grid() -> np.ndarray:
    """The 34-band prototype grid: ``linspace(400, 730, 34)`` nm (10 nm steps)."""
    return np.linspace(*PROTOTYPE_RANGE_NM, PROTOTYPE_BANDS)


def named_grid(name: str) -> np.ndarray:
    """Grid by name: ``"hyplex"`` (204 bands) or ``"prototype"`` (34 bands)."""
    grids = {"hyplex": hyplex_grid, "prototype": prototype_grid}
    if name not in grids:
        raise ValueError(f"grid must be one of {sorted(grids)}, got {name!r}")
    return grids[name]()


def check_wavelengths(wavelengths_nm, name: str = "wavelengths_nm") -> np.ndarray:
    """Validate a grid: 1-D, >= 2 points, finite, positive, strictly increasing; float64 copy."""
    grid = np.array(wavelengths_nm, dtype=np.float64)
    if grid.ndim != 1 or grid.size < 2:
        raise ValueError(f"{name} must be a 1-D array of >= 2 wavelengths, got shape {grid.shape}")
    if not np.all(np.isfinite(grid)) or grid[0] <= 0:
        raise ValueError(f"{name} must be finite and positive (nm)")
    if np.any(np.diff(grid) <= 0):
        raise ValueError(f"{name} must be strictly increasing")
    return grid


def _describe(grid: np.ndarray) -> str:
    if grid.size == 0:
        return "an empty grid"
    return f"{grid.size} points {grid.min():g}-{grid.max():g} nm"


def check_same_grid(a_nm, b_nm, what: str, tolerance_nm: float = 1e-6) -> None:
    """Raise ValueError unless two grids are equal to ``tolerance_nm``; ``what`` names them."""
    a, b = np.asarray(a_nm, dtype=np.float64), np.asarray(b_nm, dtype=np.float64)
    if a.shape != b.shape or not np.allclose(a, b, rtol=0.0, atol=tolerance_nm):
        raise ValueError(
            f"mismatched wavelength grids for {what}: {_describe(a)} vs {_describe(b)}; "
            "resample one onto the other with hyplex.simulation.grids.resample"
        )


def bin_edges(wavelengths_nm) -> np.ndarray:
    """Band edges (L + 1,): midpoints between points; end bins symmetric about the end points."""
    grid = check_wavelengths(wavelengths_nm)
    middle = 0.5 * (grid[1:] + grid[:-1])
    return np.concatenate([[2 * grid[0] - middle[0]], middle, [2 * grid[-1] - middle[-1]]])


def quadrature_weights(wavelengths_nm) -> np.ndarray:
    """Bin widths q (L,), in nm: ``integral f dlambda = sum_i q_i f_i`` over the grid's bins.

    ``q = diff(bin_edges(grid))``, the convention of :func:`resample`: for band averages ``f_i``
    the sum is the exact integral from ``bin_edges[0]`` to ``bin_edges[-1]`` (395-735 nm on the
    34-band grid), and for point samples it is the midpoint rule (exact for linear spectra on
    an evenly spaced grid).
    """
    return np.diff(bin_edges(wavelengths_nm))


def _cumulative(knots: np.ndarray, values: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Integral from knots[0] to ``points`` of the piecewise-linear interpolant (exact).

    ``values`` is (..., K); ``points`` lie in [knots[0], knots[-1]]. Returns (..., P).
    """
    step = np.diff(knots)
    areas = 0.5 * (values[..., 1:] + values[..., :-1]) * step
    at_knots = np.concatenate([np.zeros(values.shape[:-1] + (1,)), np.cumsum(areas, -1)], -1)
    interval = np.clip(np.searchsorted(knots, points, side="right") - 1, 0, knots.size - 2)
    offset = points - knots[interval]
    left, right = values[..., interval], values[..., interval + 1]
    slope = (right - left) / step[interval]
    return at_knots[..., interval] + left * offset + 0.5 * slope * offset**2


def _extend(knots, data, low, high, extrapolation):
    """Extend a table to [low, high]: hold the end values, or step to zero just past the ends."""
    zero = np.zeros(data.shape[:-1] + (1,))
    if low < knots[0]:
        if extrapolation == "constant":
            knots, data = np.concatenate([[low], knots]), np.concatenate([data[..., :1], data], -1)
        else:
            step = np.nextafter(knots[0], -np.inf)
            knots = np.concatenate([[low, step], knots])
            data = np.concatenate([zero, zero, data], -1)
    if high > knots[-1]:
        if extrapolation == "constant":
            knots, data = (
                np.concatenate([knots, [high]]),
                np.concatenate([data, data[..., -1:]], -1),
            )
        else:
            step = np.nextafter(knots[-1], np.inf)
            knots = np.concatenate([knots, [step, high]])
            data = np.concatenate([data, zero, zero], -1)
    return knots, data


def resample(source_nm, values, target_nm, extrapolation: str = "error") -> np.ndarray:
    """Band-average spectra sampled on ``source_nm`` onto the bins of ``target_nm``.

    Parameters
    ----------
    source_nm : array_like, shape (K,)
        Source wavelengths in nm, strictly increasing.
    values : array_like, shape (..., K)
        Spectral values (any unit), linear between source points.
    target_nm : array_like, shape (L,)
        Target grid in nm.
    extrapolation : {"error", "constant", "zero"}
        Where a target bin reaches outside ``[source_nm[0], source_nm[-1]]``: hold the end value
        ("constant"), or use 0 ("zero", for emission lines of lamps that end inside the grid).
        "error" raises when a target *point* lies outside the source; the half bins beyond the
        end points of a source that covers the target points hold the end values (so a 397-1003
        nm cube resamples onto the 397-1003 nm grid).

    Returns
    -------
    numpy.ndarray, shape (..., L), float64
        The mean of the piecewise-linear source over each target bin. Onto the source's own
        grid (to 1e-6 nm) this returns the values unchanged (a copy); the bin average would
        weigh each point and its neighbours by (1, 6, 1) / 8. Onto any other grid it is such a
        smoothing (a band average, as a spectrometer's bands are), not an interpolation.

    Raises
    ------
    ValueError
        On bad grids, a shape mismatch, or target points outside the source with "error".
    """
    if extrapolation not in _EXTRAPOLATIONS:
        raise ValueError(f"extrapolation must be one of {_EXTRAPOLATIONS}, got {extrapolation!r}")
    knots = check_wavelengths(source_nm, "source_nm")
    data = np.asarray(values, dtype=np.float64)
    if data.shape[-1:] != knots.shape:
        raise ValueError(f"values must have shape (..., {knots.size}), got {data.shape}")
    target = check_wavelengths(target_nm, "target_nm")
    if target.shape == knots.shape and np.allclose(target, knots, rtol=0.0, atol=_SAME_GRID_NM):
        return data.copy()
    edges = bin_edges(target)
    low, high = edges[0], edges[-1]
    if low < knots[0] or high > knots[-1]:
        if extrapolation == "error":
            slack = _SAME_GRID_NM
            if target[0] < knots[0] - slack or target[-1] > knots[-1] + slack:
                raise ValueError(
                    f"target grid points span {target[0]:g}-{target[-1]:g} nm, outside the "
                    f"source {knots[0]:g}-{knots[-1]:g} nm; pass extrapolation='constant' or "
                    "'zero'"
                )
            extrapolation = "constant"  # hold the end values for the half end bins
        knots, data = _extend(knots, data, low, high, extrapolation)
    cumulative = _cumulative(knots, data, edges)
    return np.diff(cumulative, axis=-1) / np.diff(edges)


def extrapolated_bands(source_range_nm: tuple[float, float], target_nm) -> np.ndarray:
    """Boolean mask (L,): bands of ``target_nm`` whose bin reaches outside the source range."""
    edges = bin_edges(target_nm)
    low, high = source_range_nm
    return (edges[:-1] < low - 1e-9) | (edges[1:] > high + 1e-9)
