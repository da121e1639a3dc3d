"""Numba kernels of the camera twin: mosaic projection, sensor noise, metapixel binning.

All kernels run over sensor rows with ``prange`` (rows are contiguous in memory) and read each
input once. ``fastmath`` is limited to ``{"reassoc", "contract"}`` and only in the spectral dot
products: reassociation lets LLVM vectorise the sum over bands and contraction fuses
multiply-adds. Both change only the rounding order of a sum of L products, whose error bound,
L * eps * sum |c_i w_i|, is the same for every order; no flag that assumes away NaN, infinity or
signed zeros is used. The plain numpy formulations live in ``kernels_numpy.py``; metapixel
binning (per-pixel map and run-length map) lives in ``kernels_binning.py`` and the sensor's
random numbers and frame in ``kernels_sensor.py``; both are re-exported here.

The public kernels (:func:`project_mosaic`, :func:`project_all_filters`, :func:`gather_mosaic`,
:func:`bin_by_slot`, :func:`sensor_frame`) are thin Python wrappers that check shapes and
index ranges and raise ValueError, then call the jitted ``_`` functions, which trust their
inputs. Per-pixel indices (filter codes, slots) are range-checked inside the kernels at the
cost of a compare (an out-of-range index is skipped and reported, never read or written).

Layout geometry is passed as the float64 vector of ``MosaicLayout.parameters()``
(see ``layout.py``); :func:`layout_coordinates` and :func:`assign` are the single definition of
which sub-filter a pixel centre falls in, shared by the map builder and the on-the-fly binning.

Random numbers (``counter_rng.py``, used by ``kernels_sensor.py``) are counter-based:
Philox-4x32-10 keyed by the seed with the counter (pixel, block, frame), so a frame is
reproducible bit for bit whatever the number of threads.
"""

from __future__ import annotations

import functools
import math
import sys

import numpy as np
from numba import njit, prange

from hyplex.simulation import kernels_binning
from hyplex.simulation.kernels_binning import SlotRuns, slot_runs
from hyplex.simulation.kernels_sensor import (
    ZIGGURAT,
    frame_key,
    sensor_frame_unchecked,
    ziggurat_tables,
)

__all__ = [
    "ZIGGURAT",
    "SlotRuns",
    "assign",
    "bin_by_slot",
    "bin_runs",
    "build_filter_maps",
    "build_slot_map",
    "frame_key",
    "gather_mosaic",
    "layout_coordinates",
    "project_all_filters",
    "project_mosaic",
    "sensor_frame",
    "slot_runs",
    "ziggurat_tables",
]

_DOT_MATH = {"reassoc", "contract"}


def keeps_torch_threads(function):
    """Run a numba parallel kernel without changing torch's intra-op thread count.

    numba's OpenMP threading layer sets libgomp's thread count when it launches, and torch
    reads the same setting: a kernel run after ``torch.set_num_threads(1)`` (once torch has
    run a parallel region) silently put torch back on every core (measured: a small U-Net step
    40x slower on a loaded 2-core machine). The wrapper restores torch's count when torch is
    loaded.
    """

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        torch = sys.modules.get("torch")
        if torch is None:
            return function(*args, **kwargs)
        threads = torch.get_num_threads()
        try:
            return function(*args, **kwargs)
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)

    return wrapper


# ----------------------------------------------------------------------- layout geometry


@njit(cache=True, inline="always")
def layout_coordinates(row, col, p):
    """(u, v) of the centre of pixel (row, col), in sub-filter pitches along the mosaic's
    column (u) and row (v) axes: (x - x0, y - y0) rotated by -theta, divided by the pitch
    (p[2] = cos(theta) / pitch, p[3] = sin(theta) / pitch)."""
    dx = col + 0.5 - p[1]
    dy = row + 0.5 - p[0]
    return p[2] * dx + p[3] * dy, p[2] * dy - p[3] * dx


@njit(cache=True, inline="always")
def _axis(cell, cells, per_block, gap, count):
    """(metapixel index, sub-filter index) of integer cell ``cell`` along one axis, as floats;
    (-1, 0) in a gap or outside. All operands are small integers held in float64, so every
    operation is exact (and ~5x cheaper than integer division here)."""
    if cell < 0.0:
        return -1.0, 0.0
    period = per_block * cells + gap
    block = np.floor(cell / period)
    rest = cell - block * period
    if rest >= per_block * cells:
        return -1.0, 0.0
    in_block = np.floor(rest / cells)
    meta = block * per_block + in_block
    if meta >= count:
        return -1.0, 0.0
    return meta, rest - in_block * cells


@njit(cache=True, inline="always")
def assign(cell_u, cell_v, p):
    """(metapixel row, metapixel col, code) of the sub-filter cell (floor(u), floor(v)); code =
    ``sub_row * grid_cols + sub_col``, or n_filters (and -1, -1) in a gap or outside."""
    mrow, frow = _axis(cell_v, p[5], p[7], p[9], p[10])
    mcol, fcol = _axis(cell_u, p[6], p[8], p[9], p[11])
    if mrow < 0.0 or mcol < 0.0:
        return -1, -1, int(p[5] * p[6])
    return int(mrow), int(mcol), int(frow * p[6] + fcol)


@njit(parallel=True, cache=True)
def _build_filter_maps(height, width, p):
    """Filter code per pixel (int8, (H, W)) and, when p[12] (crosstalk length, px) > 0, the
    code across the nearest sub-filter edge (int8) and its mixing weight 0.5 exp(-d / l)."""
    codes = np.empty((height, width), np.int8)
    crosstalk = p[12] > 0.0
    extra_rows = height if crosstalk else 0
    extra_cols = width if crosstalk else 0
    neighbours = np.empty((extra_rows, extra_cols), np.int8)
    mix = np.zeros((extra_rows, extra_cols), np.float32)
    for row in prange(height):
        for col in range(width):
            u, v = layout_coordinates(row, col, p)
            cell_u, cell_v = np.floor(u), np.floor(v)
            code = assign(cell_u, cell_v, p)[2]
            codes[row, col] = code
            if crosstalk:
                fu, fv = u - cell_u, v - cell_v
                du, dv = min(fu, 1.0 - fu), min(fv, 1.0 - fv)
                if du <= dv:
                    other = assign(cell_u + (-1.0 if fu < 0.5 else 1.0), cell_v, p)[2]
                    distance = du * p[4]
                else:
                    other = assign(cell_u, cell_v + (-1.0 if fv < 0.5 else 1.0), p)[2]
                    distance = dv * p[4]
                neighbours[row, col] = other
                if other != code:
                    mix[row, col] = 0.5 * math.exp(-distance / p[12])
    return codes, neighbours, mix


# ----------------------------------------------------------------------- projection


@njit(parallel=True, cache=True, fastmath=_DOT_MATH)
def _project_mosaic(cube, weights, codes, neighbours, mix, scene_rows, scene_cols):
    height, width = codes.shape
    bands, count = cube.shape[2], weights.shape[0]
    crosstalk = mix.shape[0] > 0
    out = np.empty((height, width), cube.dtype)
    bad = np.zeros(height, np.int64)
    for row in prange(height):
        i = scene_rows[row]
        for col in range(width):
            j = scene_cols[col]
            f = codes[row, col]
            if f < 0 or f >= count:
                bad[row] += 1
                out[row, col] = 0.0
                continue
            acc = cube.dtype.type(0.0)
            for band in range(bands):
                acc += cube[i, j, band] * weights[f, band]
            if crosstalk and mix[row, col] > 0.0:
                g = neighbours[row, col]
                if g < 0 or g >= count:
                    bad[row] += 1
                    out[row, col] = 0.0
                    continue
                other = cube.dtype.type(0.0)
                for band in range(bands):
                    other += cube[i, j, band] * weights[g, band]
                a = mix[row, col]
                acc = (1.0 - a) * acc + a * other
            out[row, col] = acc
    return out, bad


@njit(parallel=True, cache=True, fastmath=_DOT_MATH)
def _project_all_filters(cube, weights):
    height, width, bands = cube.shape
    count = weights.shape[0]
    out = np.empty((height, width, count), cube.dtype)
    for i in prange(height):
        for j in range(width):
            for f in range(count):
                acc = cube.dtype.type(0.0)
                for band in range(bands):
                    acc += cube[i, j, band] * weights[f, band]
                out[i, j, f] = acc
    return out


@njit(parallel=True, cache=True)
def _gather_mosaic(signals, codes, neighbours, mix, scene_rows, scene_cols):
    height, width = codes.shape
    count = signals.shape[2]
    crosstalk = mix.shape[0] > 0
    out = np.empty((height, width), signals.dtype)
    bad = np.zeros(height, np.int64)
    for row in prange(height):
        i = scene_rows[row]
        for col in range(width):
            j = scene_cols[col]
            f = codes[row, col]
            if f < 0 or f >= count:
                bad[row] += 1
                out[row, col] = 0.0
                continue
            value = signals[i, j, f]
            if crosstalk and mix[row, col] > 0.0:
                g = neighbours[row, col]
                if g < 0 or g >= count:
                    bad[row] += 1
                    out[row, col] = 0.0
                    continue
                a = mix[row, col]
                value = (1.0 - a) * value + a * signals[i, j, g]
            out[row, col] = value
    return out, bad


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_maps(codes, neighbours, mix):
    for name, value in (("codes", codes), ("neighbours", neighbours)):
        _require(
            np.ndim(value) == 2 and np.issubdtype(np.asarray(value).dtype, np.integer),
            f"{name} must be a 2-D integer map, got shape {np.shape(value)}",
        )
    _require(np.ndim(mix) == 2, f"mix must be 2-D ((0, 0) without crosstalk), got {np.shape(mix)}")
    _require(
        np.size(mix) == 0 or np.shape(mix) == np.shape(codes) == np.shape(neighbours),
        "mix and neighbours must be empty (0, 0) or have the shape of codes "
        f"{np.shape(codes)}, got {np.shape(mix)} and {np.shape(neighbours)}",
    )


def _check_index(index, length: int, bound: int, name: str):
    index = np.asarray(index)
    _require(
        index.shape == (length,) and np.issubdtype(index.dtype, np.integer),
        f"{name} must be {length} integers (one per sensor row or column), got {index.shape}",
    )
    _require(
        length == 0 or (index.min() >= 0 and index.max() < bound),
        f"{name} must index the scene: values in 0..{bound - 1}",
    )


def _check_cube(cube, weights):
    _require(np.ndim(cube) == 3, f"cube must be (Hs, Ws, L), got shape {np.shape(cube)}")
    _require(
        np.ndim(weights) == 2 and np.shape(weights)[1] == np.shape(cube)[2],
        f"weights must be (F + 1, L={np.shape(cube)[2]}), got shape {np.shape(weights)}",
    )


def _raise_bad(bad, what: str):
    count = int(bad.sum())
    if count:
        raise ValueError(f"{count} pixels have {what}")


@keeps_torch_threads
def project_mosaic(cube, weights, codes, neighbours, mix, scene_rows, scene_cols):
    """Expected signal per sensor pixel: dot of the scene spectrum with its filter's weights.

    ``out[r, c] = (1 - a) <cube[i, j], weights[f]> + a <cube[i, j], weights[g]>`` with
    i = scene_rows[r], j = scene_cols[c] (nearest-neighbour upsampling of the scene), f the
    pixel's code, g and a its crosstalk neighbour and weight (skipped when ``mix`` is empty).
    cube (Hs, Ws, L), weights (F + 1, L) of the same float dtype; codes (H, W) int8.
    Raises ValueError on mismatched shapes or indices out of range.
    """
    _check_cube(cube, weights)
    _check_maps(codes, neighbours, mix)
    height, width = np.shape(codes)
    _check_index(scene_rows, height, np.shape(cube)[0], "scene_rows")
    _check_index(scene_cols, width, np.shape(cube)[1], "scene_cols")
    out, bad = _project_mosaic(cube, weights, codes, neighbours, mix, scene_rows, scene_cols)
    _raise_bad(bad, f"filter codes or neighbours outside 0..{np.shape(weights)[0] - 1}")
    return out


@keeps_torch_threads
def project_all_filters(cube, weights):
    """All filter signals per scene pixel, (Hs, Ws, F + 1): for an upsampled scene this costs
    F + 1 dot products per scene pixel instead of one per sensor pixel."""
    _check_cube(cube, weights)
    return _project_all_filters(cube, weights)


@keeps_torch_threads
def gather_mosaic(signals, codes, neighbours, mix, scene_rows, scene_cols):
    """Sensor signal from :func:`project_all_filters` output, same result as project_mosaic."""
    _require(np.ndim(signals) == 3, f"signals must be (Hs, Ws, F + 1), got {np.shape(signals)}")
    _check_maps(codes, neighbours, mix)
    height, width = np.shape(codes)
    _check_index(scene_rows, height, np.shape(signals)[0], "scene_rows")
    _check_index(scene_cols, width, np.shape(signals)[1], "scene_cols")
    out, bad = _gather_mosaic(signals, codes, neighbours, mix, scene_rows, scene_cols)
    _raise_bad(bad, f"filter codes or neighbours outside 0..{np.shape(signals)[2] - 1}")
    return out


# ----------------------------------------------------------------------- binning


@njit(parallel=True, cache=True)
def _build_slot_map(height, width, p, margin):
    """Barcode slot per pixel, int32 (H, W): ``(mrow * w + mcol) * n_filters + code``, or -1
    for pixels in gaps, outside the mosaic, or nearer than ``margin`` (fraction of the pitch,
    0 <= margin < 0.5) to their sub-filter's edge."""
    n_filters = int(p[5] * p[6])
    w = int(p[11])
    slots = np.empty((height, width), np.int32)
    low, high = margin, 1.0 - margin
    for row in prange(height):
        for col in range(width):
            u, v = layout_coordinates(row, col, p)
            cell_u, cell_v = np.floor(u), np.floor(v)
            fu, fv = u - cell_u, v - cell_v
            slot = -1
            if fu >= low and fu < high and fv >= low and fv < high:
                mrow, mcol, code = assign(cell_u, cell_v, p)
                if mrow >= 0:
                    slot = (mrow * w + mcol) * n_filters + code
            slots[row, col] = slot
    return slots


bin_by_slot = keeps_torch_threads(kernels_binning.bin_by_slot)
bin_runs = keeps_torch_threads(kernels_binning.bin_runs)


@keeps_torch_threads
def build_filter_maps(height, width, p):
    """Filter code per pixel (int8, (H, W)), crosstalk neighbour code and weight; see
    :func:`_build_filter_maps` (the numba kernel)."""
    return _build_filter_maps(height, width, p)


@keeps_torch_threads
def build_slot_map(height, width, p, margin):
    """Barcode slot per pixel, int32 (H, W); see :func:`_build_slot_map` (the numba kernel)."""
    return _build_slot_map(height, width, p, margin)


# ----------------------------------------------------------------------- sensor


@keeps_torch_threads
def sensor_frame(electrons, prnu, dsnu_e, settings, key, noise, table=ZIGGURAT):
    """EMVA 1288 linear camera: raw digital values (uint16) from expected photoelectrons.

    Per pixel: photo = electrons * prnu; n = Poisson(photo + dark) (the mean without
    ``noise``) is the collected charge and saturates at the full well; read noise and DSNU are
    added after the clip: y = round(K (min(n, full well) + sigma_d N(0, 1) + dsnu) + black),
    clipped to [0, max_dn]. Poisson draws are exact below ``exact_below`` electrons; above,
    shot noise is drawn from N(mu, mu). ``settings`` = (dark electrons mu_I t, read noise
    sigma_d (e-), full well (e-), K (DN/e-), black level (DN), max_dn, exact_below (e-)); prnu
    and dsnu_e are float32 (H, W) maps or (0, 0) to skip them; ``key`` from :func:`frame_key`;
    ``table`` is :data:`ZIGGURAT`. ValueError on mismatched shapes or non-finite electrons.
    """
    _require(np.ndim(electrons) == 2, f"electrons must be (H, W), got {np.shape(electrons)}")
    shape = np.shape(electrons)
    for name, value in (("prnu", prnu), ("dsnu_e", dsnu_e)):
        _require(
            np.ndim(value) == 2 and (np.size(value) == 0 or np.shape(value) == shape),
            f"{name} must be an (H, W) = {shape} map or empty (0, 0), got {np.shape(value)}",
        )
    _require(np.shape(settings) == (7,), f"settings must have 7 values, got {np.shape(settings)}")
    _require(np.shape(table) == ZIGGURAT.shape, f"table must be kernels.ZIGGURAT {ZIGGURAT.shape}")
    key = np.asarray(key)
    _require(
        key.shape == (4,) and key.dtype == np.uint64 and bool(np.all(key <= 0xFFFFFFFF)),
        f"key must be kernels.frame_key(seed, frame_index) (4 words), got {key!r}",
    )
    _require(shape[0] * shape[1] < 2**32, f"frames must have < 2^32 pixels, got {shape}")
    out, bad = sensor_frame_unchecked(electrons, prnu, dsnu_e, settings, key, noise, table)
    _raise_bad(bad, "non-finite expected electrons (NaN or infinity)")
    return out
