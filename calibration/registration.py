"""Mosaic registration: the ``MosaicLayout`` of the filters on the sensor, from a flat frame.

A flat (white reference) frame shows the filter mosaic as a pattern of constant cells: each
sub-filter covers ``pitch`` x ``pitch`` pixels at ``rotation``, metapixels of 3 x 3 cells
repeat with period 3 pitch inside blocks, and blocks are separated by unpatterned gaps::

    flat --|horizontal/vertical differences|--> edge maps E_x, E_y (lines on the lattice)
         --FFT of the flat, peak of period ~3 pitch--> coarse lattice vector (x 3)
         --max |sum E exp(-2 pi i k.x)| over k--> pitch, rotation   (sub-bin, Nelder-Mead)
         --phase of that sum--> lattice offset modulo one pitch
         --mean of each lattice cell; rows/columns of constant cells = gaps, margins-->
           mosaic extent, metapixels, block size, gap width --> offset of the corner

Why edges: a pattern constant on the cells of a lattice of period p has no Fourier component
at exactly 1/p (sinc(1) = 0), and the block gaps break the period of the 3 x 3 pattern; but
the cell *boundaries* of every filter, gap and block lie on one lattice of period p, so the
edge maps carry a strict 1/p component. Maximising |S(k)| is the least-squares fit of one
plane wave (free amplitude and phase) to the edge map; its phase locates the lines to a small
fraction of a pixel, as every edge of the frame votes. A pixel belongs to the cell containing
its centre (``MosaicLayout``), so the step between pixel columns c and c + 1 lies, on average,
at x = c + 1.

Limits: |rotation| below ~15 degrees (the axis of the lattice is taken nearest the sensor
axis), pitch in ``pitch_range_px``, one gap width for both directions, and a flat in which
neighbouring sub-filters differ and the unpatterned substrate differs from every column or
row of filters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from hyplex.simulation.barcodes import BarcodeExtractor
from hyplex.simulation.layout import MosaicLayout

ANGLE_WINDOW_DEG = 20.0  # half-angle around a sensor axis searched for the lattice peak
CELL_MARGIN = 0.2  # fraction of the pitch left out at each side of a cell for its mean


@dataclass(frozen=True)
class Registration:
    """Result of :func:`register_mosaic`.

    Attributes
    ----------
    layout : MosaicLayout
        Recovered geometry (crosstalk length copied from the argument).
    pitch_u_px, pitch_v_px : float
        Pitch measured along each lattice axis (the layout holds their mean), px.
    rotation_u_deg, rotation_v_deg : float
        Rotation measured from each axis (the layout holds their mean), degrees.
    phase_u, phase_v : float
        Lattice offsets modulo one pitch, fractions of the pitch.
    cell_levels : numpy.ndarray (rows, cols)
        Mean flat value of each lattice cell (NaN: not fully on the sensor).
    """

    layout: MosaicLayout
    pitch_u_px: float
    pitch_v_px: float
    rotation_u_deg: float
    rotation_v_deg: float
    phase_u: float
    phase_v: float
    cell_levels: np.ndarray


def _edge_maps(image):
    """|differences| along x and y with the (y, x) positions of each value."""
    rows, cols = image.shape
    ex = np.abs(np.diff(image, axis=1))
    ey = np.abs(np.diff(image, axis=0))
    yx, xx = np.meshgrid(np.arange(rows) + 0.5, np.arange(1, cols), indexing="ij")
    yy, xy = np.meshgrid(np.arange(1, rows), np.arange(cols) + 0.5, indexing="ij")
    return (ex - ex.mean(), yx, xx), (ey - ey.mean(), yy, xy)


def _plane_wave(edges, k) -> complex:
    """S(k) = sum E exp(-2 pi i (k_x x + k_y y))."""
    values, y, x = edges
    return complex(np.sum(values * np.exp(-2j * np.pi * (k[1] * x + k[0] * y))))


class _PowerSpectrum:
    """|FFT|^2 of a Hann-windowed, zero-padded image, with peak searches in sectors."""

    def __init__(self, values, pad: int):
        rows, cols = values.shape
        window = np.outer(np.hanning(rows), np.hanning(cols))
        shape = (pad * rows, pad * cols)
        self.power = np.abs(np.fft.fft2((values - values.mean()) * window, shape)) ** 2
        self.ky = np.fft.fftfreq(shape[0])[:, None]
        self.kx = np.fft.fftfreq(shape[1])[None, :]
        self.radius = np.hypot(self.kx, self.ky)

    def sector(self, axis: int, radius_range) -> np.ndarray:
        """Mask of |k| in ``radius_range`` (cycles/px) within ``ANGLE_WINDOW_DEG`` of sensor
        axis ``axis`` (1: x, 0: y), on its positive side."""
        along, across = (self.kx, self.ky) if axis == 1 else (self.ky, self.kx)
        angle = np.degrees(np.arctan2(np.abs(across), along))
        mask = (along > 0) & (angle < ANGLE_WINDOW_DEG)
        return mask & (self.radius >= radius_range[0]) & (self.radius <= radius_range[1])

    def k_at(self, index) -> np.ndarray:
        return np.array([self.ky[index[0], 0], self.kx[0, index[1]]])

    def peak(self, axis: int, radius_range) -> tuple[np.ndarray, float]:
        """(k_y, k_x) and power of the largest value in the sector."""
        mask = self.sector(axis, radius_range)
        if not mask.any():
            raise ValueError(f"no frequency in the search range {radius_range} cycles/px")
        index = np.unravel_index(np.argmax(np.where(mask, self.power, -1.0)), mask.shape)
        return self.k_at(index), float(self.power[index])

    def local_peaks(self, axis: int, radius_range, count: int) -> list[np.ndarray]:
        """The ``count`` strongest local maxima in the sector, strongest first."""
        from scipy.ndimage import maximum_filter

        mask = self.sector(axis, radius_range)
        is_peak = mask & (self.power == maximum_filter(self.power, size=5))
        indices = np.argwhere(is_peak)
        order = np.argsort(self.power[is_peak])[::-1][:count]
        return [self.k_at(indices[i]) for i in order]


def _refine(edges, start) -> np.ndarray:
    """The k maximising |S(k)| from ``start`` (Nelder-Mead on the direct sum)."""
    step = 0.1 / max(edges[0].shape)
    result = minimize(
        lambda k: -abs(_plane_wave(edges, k)),
        start,
        method="Nelder-Mead",
        options={
            "initial_simplex": [start, start + [step, 0], start + [0, step]],
            "xatol": 1e-6 / max(edges[0].shape),
            "fatol": 1e-7 * abs(_plane_wave(edges, start)),
        },
    )
    return np.asarray(result.x)


def _lattice_vector(flat_spectrum, edges, axis, cells, pitch_range_px) -> np.ndarray:
    """Sub-filter lattice vector (k_y, k_x) along sensor ``axis``.

    Candidates: the strongest peaks of the flat (metapixel period ~ ``cells`` pitches, or
    harmonics of the blocks) times ``cells``; the edge map's strongest peak within 12 % of a
    candidate wins; halved while the half frequency carries a quarter of its power (the winner
    was a harmonic), then refined on the direct sum."""
    low, high = pitch_range_px
    edge_spectrum = _PowerSpectrum(edges[0], 4)
    best, best_power = None, -1.0
    for candidate in flat_spectrum.local_peaks(axis, (1 / (cells * high), 1 / (cells * low)), 6):
        radius = float(np.hypot(*candidate)) * cells
        if not 1 / high <= radius <= 1 / low:
            continue
        k, power = edge_spectrum.peak(axis, (0.88 * radius, 1.12 * radius))
        if power > best_power:
            best, best_power = k, power
    if best is None:
        raise ValueError(f"registration failed: no lattice with a pitch in {pitch_range_px} px")
    while 1.0 / (np.hypot(*best) / 2) <= high:
        radius = float(np.hypot(*best)) / 2
        half, power = edge_spectrum.peak(axis, (0.97 * radius, 1.03 * radius))
        if power < 0.25 * best_power:
            break
        best, best_power = half, power
    return _refine(edges, best)


def _runs(flags: np.ndarray) -> list[tuple[bool, int]]:
    """Run-length encoding [(flag, length), ...] of a boolean vector."""
    runs, start = [], 0
    for index in range(1, flags.size + 1):
        if index == flags.size or flags[index] != flags[start]:
            runs.append((bool(flags[start]), index - start))
            start = index
    return runs


def _blocks(patterned: np.ndarray, cells: int, axis_name: str):
    """(first index, metapixels, metapixels per block, gap or None) along one lattice axis."""
    where = np.flatnonzero(patterned)
    if where.size == 0:
        raise ValueError(f"registration failed: no patterned {axis_name} found in the flat")
    inner = patterned[where[0] : where[-1] + 1]
    runs = _runs(inner)
    filled = [length for flag, length in runs if flag]
    gaps = {length for flag, length in runs if not flag}
    if len(gaps) > 1 or any(length % cells for length in filled) or len(set(filled[:-1])) > 1:
        raise ValueError(
            f"registration failed: the patterned {axis_name} runs {filled} (gaps {sorted(gaps)})"
            f" are not blocks of whole metapixels of {cells} sub-filters"
        )
    total = sum(filled) // cells
    per_block = filled[0] // cells if len(filled) > 1 else total
    return int(where[0]), total, per_block, (gaps.pop() if gaps else None)


def _cell_means(image, rotation_rad, pitch, phases):
    """Means of the interior pixels of every lattice cell: (levels, standard errors, i0, j0)."""
    rows, cols = image.shape
    y, x = np.meshgrid(np.arange(rows) + 0.5, np.arange(cols) + 0.5, indexing="ij")
    cos, sin = math.cos(rotation_rad), math.sin(rotation_rad)
    u = (x * cos + y * sin) / pitch - phases[0]
    v = (-x * sin + y * cos) / pitch - phases[1]
    j, i = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    fu, fv = u - j, v - i
    inside = (fu > CELL_MARGIN) & (fu < 1 - CELL_MARGIN) & (fv > CELL_MARGIN)
    inside &= fv < 1 - CELL_MARGIN
    i0, j0 = int(i.min()), int(j.min())
    shape = (int(i.max()) - i0 + 1, int(j.max()) - j0 + 1)
    flat_index = ((i - i0) * shape[1] + (j - j0))[inside]
    values = image[inside]
    size = shape[0] * shape[1]
    count = np.bincount(flat_index, minlength=size).astype(np.float64)
    total = np.bincount(flat_index, values, size)
    squares = np.bincount(flat_index, values**2, size)
    full = count >= 0.6 * np.percentile(count[count > 0], 90)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(full, total / count, np.nan)
        variance = np.where(full, squares / count - mean**2, np.nan)
        error = np.sqrt(np.clip(variance, 0, None) / count)
    return mean.reshape(shape), error.reshape(shape), i0, j0


def _patterned(levels: np.ndarray, noise: float, axis: int) -> np.ndarray:
    """Lines of cells (axis 0: columns, 1: rows) whose levels vary: filters, not substrate."""
    lines = levels if axis == 0 else levels.T
    valid = np.isfinite(lines).sum(0) >= 3
    spread = np.zeros(lines.shape[1])
    spread[valid] = np.nanstd(lines[:, valid], 0)
    high = np.percentile(spread[valid], 75) if valid.any() else 0.0
    threshold = math.sqrt(max(noise, 1e-9 * high) * high) if high > 0 else np.inf
    return valid & (spread > max(threshold, 4 * noise))


def register_mosaic(
    flat,
    grid=(3, 3),
    pitch_range_px=(2.5, None),
    crosstalk_length_px: float = 0.0,
) -> Registration:
    """Recover the mosaic geometry from a flat (white-reference) frame.

    Parameters
    ----------
    flat : array_like (H, W) or Frame
        A frame of uniform broadband light (dark-subtracted or not; averaged frames help).
    grid : (int, int)
        Sub-filters per metapixel (rows, cols), known from the design.
    pitch_range_px : (float, float or None)
        Search range of the sub-filter pitch, px; None: min(H, W) / 12.
    crosstalk_length_px : float
        Copied into the layout (not measured here).

    Returns
    -------
    Registration

    Raises
    ------
    ValueError
        When the flat shows no consistent mosaic (see the module doc for the limits).
    """
    image = np.asarray(getattr(flat, "data", flat), dtype=np.float64)
    if image.ndim != 2 or min(image.shape) < 16:
        raise ValueError(f"flat must be a 2-D frame of at least 16 x 16 px, got {image.shape}")
    grid = (int(grid[0]), int(grid[1]))
    low, high = pitch_range_px
    high = min(image.shape) / 12.0 if high is None else float(high)
    if not 1.0 < float(low) < high:
        raise ValueError(f"pitch_range_px must satisfy 1 < min < max, got ({low}, {high})")
    edges_x, edges_y = _edge_maps(image)
    flat_spectrum = _PowerSpectrum(image, 2)
    k_u = _lattice_vector(flat_spectrum, edges_x, 1, grid[1], (low, high))
    k_v = _lattice_vector(flat_spectrum, edges_y, 0, grid[0], (low, high))
    pitch_u, pitch_v = 1.0 / np.hypot(*k_u), 1.0 / np.hypot(*k_v)
    rotation_u = math.atan2(k_u[0], k_u[1])  # k_u = (sin, cos) / p as (k_y, k_x)
    rotation_v = math.atan2(-k_v[1], k_v[0])  # k_v = (cos, -sin) / p
    pitch, rotation = (pitch_u + pitch_v) / 2.0, (rotation_u + rotation_v) / 2.0
    cos, sin = math.cos(rotation), math.sin(rotation)
    k_u = np.array([sin, cos]) / pitch
    k_v = np.array([cos, -sin]) / pitch
    phase_u = (-np.angle(_plane_wave(edges_x, k_u)) / (2 * np.pi)) % 1.0
    phase_v = (-np.angle(_plane_wave(edges_y, k_v)) / (2 * np.pi)) % 1.0

    levels, errors, i0, j0 = _cell_means(image, rotation, pitch, (phase_u, phase_v))
    noise = float(np.nanmedian(errors))
    first_j, count_u, block_u, gap_u = _blocks(_patterned(levels, noise, 0), grid[1], "columns")
    first_i, count_v, block_v, gap_v = _blocks(_patterned(levels, noise, 1), grid[0], "rows")
    if gap_u is not None and gap_v is not None and gap_u != gap_v:
        raise ValueError(f"registration failed: gaps of {gap_u} (columns) and {gap_v} (rows)")
    gap = gap_u if gap_u is not None else (gap_v if gap_v is not None else 0)
    u0 = (j0 + first_j + phase_u) * pitch
    v0 = (i0 + first_i + phase_v) * pitch
    layout = MosaicLayout(
        metapixels=(count_v, count_u),
        grid=grid,
        pitch_px=float(pitch),
        metapixels_per_block=(block_v, block_u),
        gap_subfilters=gap,
        rotation_deg=math.degrees(rotation),
        offset_px=(u0 * sin + v0 * cos, u0 * cos - v0 * sin),
        crosstalk_length_px=crosstalk_length_px,
    )
    return Registration(
        layout=_nudge_inside(layout, image.shape),
        pitch_u_px=float(pitch_u),
        pitch_v_px=float(pitch_v),
        rotation_u_deg=math.degrees(rotation_u),
        rotation_v_deg=math.degrees(rotation_v),
        phase_u=float(phase_u),
        phase_v=float(phase_v),
        cell_levels=levels,
    )


def _nudge_inside(layout: MosaicLayout, shape, tolerance_px: float = 0.5) -> MosaicLayout:
    """Shift a layout whose corners overhang the sensor by < ``tolerance_px`` (estimation
    error of a mosaic that fills the sensor) back inside; larger overhangs raise."""
    corners = layout.corners_px()
    shift = np.zeros(2)
    for axis, size in enumerate(shape):
        below, above = -corners[:, axis].min(), corners[:, axis].max() - size
        if max(below, above) > tolerance_px:
            raise ValueError(
                f"registration failed: the recovered mosaic overhangs the sensor by "
                f"{max(below, above):.2f} px along axis {axis}"
            )
        shift[axis] = max(below, 0.0) - max(above, 0.0)
    if not shift.any():
        return layout
    offset = (
        layout.offset_px[0] + shift[0] * 1.0000001,
        layout.offset_px[1] + shift[1] * 1.0000001,
    )
    return MosaicLayout(**{**layout.__dict__, "offset_px": offset})


def barcode_extractor(layout: MosaicLayout, sensor_shape, margin: float = 0.15, exclude=None):
    """A :class:`~hyplex.simulation.barcodes.BarcodeExtractor` for a registered layout that
    leaves out the pixels of ``exclude`` (bool (H, W), e.g. ``DefectMaps.any``)."""
    extractor = BarcodeExtractor(layout, sensor_shape, margin)
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=bool)
        if exclude.shape != extractor.slots.shape:
            raise ValueError(f"exclude {exclude.shape} must match the sensor {sensor_shape}")
        extractor.slots = np.where(exclude, -1, extractor.slots).astype(extractor.slots.dtype)
    return extractor
