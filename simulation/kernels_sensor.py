"""Numba kernels of the sensor: counter-based random numbers and the EMVA 1288 frame.

Random numbers are counter-based: draw k of pixel i in frame j is a SplitMix64 hash
(G. Steele, D. Lea, C. Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014)
of (seed, j, i, k), so a frame is reproducible whatever the number of threads. The validating
entry point is ``kernels.sensor_frame``; :func:`sensor_frame_unchecked` here trusts its inputs.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TO_UNIT = 2.0**-53

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
def sensor_frame_unchecked(electrons, prnu, dsnu_e, settings, key, noise, table):
    """EMVA 1288 linear camera: raw digital values (uint16) from expected photoelectrons.

    Per pixel: photo = electrons * prnu; n = Poisson(photo + dark) (the mean without
    ``noise``), the collected charge, saturates at the full well; then read noise and DSNU are
    added: y = round(K (min(n, full well) + sigma_d N(0, 1) + dsnu) + black), clipped to
    [0, max_dn]. Poisson draws are exact below ``exact_below`` electrons; above, the shot noise
    is drawn as N(mu, mu). ``settings`` = (dark electrons mu_I t, read noise sigma_d (e-), full
    well (e-), K (DN/e-), black level (DN), max_dn, exact_below (e-)); prnu and dsnu_e are
    (H, W) maps or (0, 0) to skip them; ``table`` is :data:`ZIGGURAT`. Returns the frame and
    the number of non-finite ``electrons`` per row (those pixels are left at 0).
    """
    height, width = electrons.shape
    dark, read_noise, full_well, gain, black, max_dn, exact_below = settings
    has_prnu, has_dsnu = prnu.shape[0] > 0, dsnu_e.shape[0] > 0
    out = np.empty((height, width), np.uint16)
    bad = np.zeros(height, np.int64)
    for row in prange(height):
        for col in range(width):
            if not math.isfinite(electrons[row, col]):
                bad[row] += 1
                out[row, col] = 0
                continue
            photo = electrons[row, col] * (prnu[row, col] if has_prnu else 1.0)
            lam = max(photo, 0.0) + dark
            charge = lam
            read = 0.0
            if noise:
                base = _mix64(key ^ (np.uint64(row * width + col) * _MIX1))
                counter = 0
                if lam < exact_below:
                    charge, counter = _poisson(lam, base, counter)
                else:  # shot noise as the normal law of the same mean and variance
                    z, counter = _normal(base, counter, table)
                    charge = lam + math.sqrt(lam) * z
                if read_noise > 0.0:
                    read = read_noise * _normal(base, counter, table)[0]
            signal = min(charge, full_well) + read + (dsnu_e[row, col] if has_dsnu else 0.0)
            value = np.floor(gain * signal + black + 0.5)
            out[row, col] = np.uint16(np.int32(min(max(value, 0.0), max_dn)))
    return out, bad
