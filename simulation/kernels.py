"""Numba kernels of the camera twin: mosaic projection, sensor noise, metapixel binning.

All kernels run over sensor rows with ``prange`` (rows are contiguous in memory) and read each
input once. ``fastmath`` is limited to ``{"reassoc", "contract"}`` and only in the spectral dot
products: reassociation lets LLVM vectorise the sum over bands and contraction fuses
multiply-adds. Both change only the rounding order of a sum of L products, whose error bound,
L * eps * sum |c_i w_i|, is the same for every order; no flag that assumes away NaN, infinity or
signed zeros is used. The plain numpy formulations live in ``kernels_numpy.py``.

Layout geometry is passed as the float64 vector of ``MosaicLayout.parameters()``
(see ``layout.py``); :func:`layout_coordinates` and :func:`assign` are the single definition of
which sub-filter a pixel centre falls in, shared by the map builder and the on-the-fly binning.

Random numbers are counter-based: draw k of pixel i in frame j is a SplitMix64 hash
(G. Steele, D. Lea, C. Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014)
of (seed, j, i, k), so a frame is reproducible whatever the number of threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_DOT_MATH = {"reassoc", "contract"}
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TO_UNIT = 2.0**-53

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
def build_filter_maps(height, width, p):
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
def project_mosaic(cube, weights, codes, neighbours, mix, scene_rows, scene_cols):
    """Expected signal per sensor pixel: dot of the scene spectrum with its filter's weights.

    ``out[r, c] = (1 - a) <cube[i, j], weights[f]> + a <cube[i, j], weights[g]>`` with
    i = scene_rows[r], j = scene_cols[c] (nearest-neighbour upsampling of the scene), f the
    pixel's code, g and a its crosstalk neighbour and weight (skipped when ``mix`` is empty).
    cube (Hs, Ws, L), weights (F + 1, L) of the same float dtype; codes (H, W) int8.
    """
    height, width = codes.shape
    bands = cube.shape[2]
    crosstalk = mix.shape[0] > 0
    out = np.empty((height, width), cube.dtype)
    for row in prange(height):
        i = scene_rows[row]
        for col in range(width):
            j = scene_cols[col]
            f = codes[row, col]
            acc = cube.dtype.type(0.0)
            for band in range(bands):
                acc += cube[i, j, band] * weights[f, band]
            if crosstalk and mix[row, col] > 0.0:
                g = neighbours[row, col]
                other = cube.dtype.type(0.0)
                for band in range(bands):
                    other += cube[i, j, band] * weights[g, band]
                a = mix[row, col]
                acc = (1.0 - a) * acc + a * other
            out[row, col] = acc
    return out


@njit(parallel=True, cache=True, fastmath=_DOT_MATH)
def project_all_filters(cube, weights):
    """All filter signals per scene pixel, (Hs, Ws, F + 1): for an upsampled scene this costs
    F + 1 dot products per scene pixel instead of one per sensor pixel."""
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
def gather_mosaic(signals, codes, neighbours, mix, scene_rows, scene_cols):
    """Sensor signal from :func:`project_all_filters` output, same result as project_mosaic."""
    height, width = codes.shape
    crosstalk = mix.shape[0] > 0
    out = np.empty((height, width), signals.dtype)
    for row in prange(height):
        i = scene_rows[row]
        for col in range(width):
            j = scene_cols[col]
            value = signals[i, j, codes[row, col]]
            if crosstalk and mix[row, col] > 0.0:
                a = mix[row, col]
                value = (1.0 - a) * value + a * signals[i, j, neighbours[row, col]]
            out[row, col] = value
    return out


# ----------------------------------------------------------------------- binning


@njit(parallel=True, cache=True)
def build_slot_map(height, width, p, margin):
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


@njit(parallel=True, cache=True)
def bin_by_slot(raw, slots, n_slots, chunks):
    """Mean (float32) and count (int32) of the raw values in each slot, shape (n_slots,).

    A scatter-add. Along a row the slot stays the same for ~pitch pixels, so a run's sum is
    kept in a register and stored once (no store-to-load chains through memory). Rows are
    split into ``chunks`` (one per thread), each with private float64 sums (no write races; a
    chunk touches a band of metapixel rows, so its sums stay in cache), merged at the end.
    Slots without pixels are NaN.
    """
    height, width = raw.shape
    chunks = max(1, min(chunks, height))
    sums = np.zeros((chunks, n_slots), np.float64)
    counts = np.zeros((chunks, n_slots), np.int32)
    for chunk in prange(chunks):
        for row in range(chunk * height // chunks, (chunk + 1) * height // chunks):
            current, run_sum, run_count = -1, 0.0, 0
            for col in range(width):
                slot = slots[row, col]
                if slot != current:
                    if current >= 0:
                        sums[chunk, current] += run_sum
                        counts[chunk, current] += run_count
                    current, run_sum, run_count = slot, 0.0, 0
                run_sum += raw[row, col]
                run_count += 1
            if current >= 0:
                sums[chunk, current] += run_sum
                counts[chunk, current] += run_count
    means = np.empty(n_slots, np.float32)
    total = np.zeros(n_slots, np.int32)
    for slot in prange(n_slots):
        value = 0.0
        for chunk in range(chunks):
            value += sums[chunk, slot]
            total[slot] += counts[chunk, slot]
        means[slot] = value / total[slot] if total[slot] > 0 else np.nan
    return means, total


# ----------------------------------------------------------------------- random numbers


@njit(cache=True, inline="always")
def _mix64(z):
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@njit(cache=True, inline="always")
def _uniform(base, counter):
    """Uniform in (0, 1): SplitMix64 output number ``counter`` of the stream at ``base``."""
    z = _mix64(base + np.uint64(counter) * _GOLDEN)
    # via int64: z >> 11 < 2^53 fits, and signed conversion is one instruction (unsigned
    # 64-bit to double is a slow branchy sequence on x86-64)
    return (np.int64(z >> _S11) + 0.5) * _TO_UNIT


def ziggurat_tables(layers: int = 128) -> np.ndarray:
    """Layer edges x_i and f(x_i) = exp(-x_i^2 / 2), shape (2, layers + 1), of the normal
    ziggurat (G. Marsaglia, W. W. Tsang, J. Stat. Softw. 5(8), 2000): x_0 = v / f(r) (base
    strip), x_1 = r, x_{i+1} = sqrt(-2 ln(v / x_i + f(x_i))), x_layers = 0, for 128 layers
    r = 3.442619855899 and the common area v = 9.91256303526217e-3."""
    if layers != 128:
        raise ValueError("only the 128-layer constants are tabulated")
    r, area = 3.442619855899, 9.91256303526217e-3
    x = np.zeros(layers + 1)
    x[0], x[1] = area / math.exp(-0.5 * r * r), r
    for i in range(1, layers - 1):
        x[i + 1] = math.sqrt(-2.0 * math.log(area / x[i] + math.exp(-0.5 * x[i] ** 2)))
    return np.stack([x, np.exp(-0.5 * x**2)])


ZIGGURAT = ziggurat_tables()
_ZIGGURAT_R = 3.442619855899


@njit(cache=True)
def _normal(base, counter, table):
    """Standard normal by the ziggurat method and the next free counter: one 64-bit draw
    gives the layer (7 bits), the sign (1 bit) and a 53-bit uniform; ~99 % of draws return
    after one multiply and compare."""
    while True:
        z = _mix64(base + np.uint64(counter) * _GOLDEN)
        counter += 1
        layer = int(z & np.uint64(127))
        sign = 1.0 if (z >> np.uint64(7)) & np.uint64(1) else -1.0
        x = (np.int64(z >> _S11) + 0.5) * _TO_UNIT * table[0, layer]
        if x < table[0, layer + 1]:
            return sign * x, counter
        if layer == 0:  # tail beyond r (Marsaglia 1964)
            while True:
                a = -math.log(_uniform(base, counter)) / _ZIGGURAT_R
                b = -math.log(_uniform(base, counter + 1))
                counter += 2
                if 2.0 * b > a * a:
                    return sign * (_ZIGGURAT_R + a), counter
        height = table[1, layer] + _uniform(base, counter) * (table[1, layer + 1] - table[1, layer])
        counter += 1
        if height < math.exp(-0.5 * x * x):
            return sign * x, counter


@njit(cache=True)
def _poisson(lam, base, counter):
    """Poisson(lam) and the next free counter: multiplication method for lam < 10, else the
    transformed rejection PTRS of W. Hoermann, Insurance Math. Econom. 12, 39 (1993), as in
    numpy's ``random_poisson_ptrs``."""
    if lam <= 0.0:
        return 0.0, counter
    if lam < 10.0:
        limit, product, k = math.exp(-lam), 1.0, -1
        while True:
            product *= _uniform(base, counter)
            counter += 1
            k += 1
            if product <= limit:
                return float(k), counter
    slam, loglam = math.sqrt(lam), math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2.0)
    while True:
        u = _uniform(base, counter) - 0.5
        v = _uniform(base, counter + 1)
        counter += 2
        us = 0.5 - abs(u)
        k = math.floor((2.0 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= vr:
            return k, counter
        if k < 0.0 or (us < 0.013 and v > us):
            continue
        accept = -lam + k * loglam - math.lgamma(k + 1.0)
        if math.log(v) + math.log(inv_alpha) - math.log(a / (us * us) + b) <= accept:
            return k, counter


@njit(cache=True)
def frame_key(seed, frame_index):
    """64-bit key of one frame's random numbers."""
    return _mix64(_mix64(np.uint64(seed)) ^ (np.uint64(frame_index) * _GOLDEN))


# ----------------------------------------------------------------------- sensor


@njit(parallel=True, cache=True)
def sensor_frame(electrons, prnu, dsnu_e, settings, key, noise, table):
    """EMVA 1288 linear camera: raw digital values (uint16) from expected photoelectrons.

    Per pixel: photo = electrons * prnu; n = Poisson(photo + dark) + sigma_d N(0, 1) (the
    mean without ``noise``); y = round(K (min(n, full well) + dsnu) + black), clipped to
    [0, max_dn]. Poisson draws are exact below ``exact_below`` electrons; above, shot and read
    noise are drawn together as N(mu, mu + sigma_d^2). ``settings`` = (dark electrons mu_I t,
    read noise sigma_d (e-), full well (e-), K (DN/e-), black level (DN), max_dn, exact_below
    (e-)); prnu and dsnu_e are (H, W) maps or (0, 0) to skip them; ``table`` is
    :data:`ZIGGURAT`.
    """
    height, width = electrons.shape
    dark, read_noise, full_well, gain, black, max_dn, exact_below = settings
    has_prnu, has_dsnu = prnu.shape[0] > 0, dsnu_e.shape[0] > 0
    out = np.empty((height, width), np.uint16)
    for row in prange(height):
        for col in range(width):
            photo = electrons[row, col] * (prnu[row, col] if has_prnu else 1.0)
            lam = max(photo, 0.0) + dark
            count = lam
            if noise:
                base = _mix64(key ^ (np.uint64(row * width + col) * _MIX1))
                counter = 0
                if lam < exact_below:
                    count, counter = _poisson(lam, base, counter)
                    if read_noise > 0.0:
                        count += read_noise * _normal(base, counter, table)[0]
                else:  # shot and read noise as one normal of the summed variance
                    z = _normal(base, counter, table)[0]
                    count = lam + math.sqrt(lam + read_noise * read_noise) * z
            signal = min(count, full_well) + (dsnu_e[row, col] if has_dsnu else 0.0)
            value = np.floor(gain * signal + black + 0.5)
            out[row, col] = np.uint16(np.int32(min(max(value, 0.0), max_dn)))
    return out
