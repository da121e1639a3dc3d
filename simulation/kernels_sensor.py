"""Numba kernel of the sensor: the EMVA 1288 frame with counter-based shot and read noise.

Random numbers come from Philox-4x32-10 (``counter_rng.py``; Salmon et al., SC 2011) keyed by
the seed, with the counter (pixel, block, frame): a frame is bitwise the same at any thread
count. Per pixel, one Philox block (four 32-bit words) serves the common case:

- word 0: the shot-noise normal deviate (256-layer ziggurat) or, below 10 e-, the inversion
  uniform;
- word 1: the squeeze uniform of Ahrens and Dieter's algorithm PD;
- word 2: the read-noise normal deviate;
- rejections continue on separate streams (blocks 1.., 2^30.., 2^31..) of the same pixel.

Shot noise, for the mean charge mu = electrons x PRNU + dark electrons:

- mu < 10 e-: exact Poisson by inversion (sequential search from P(0) = exp(-mu), one uniform).
- 10 <= mu < ``exact_below``: exact Poisson by algorithm PD of J. H. Ahrens, U. Dieter,
  "Computer Generation of Poisson Deviates from Modified Normal Distributions", ACM TOMS 8(2),
  163-179 (1982), as in R's ``rpois``: K = floor(mu + sqrt(mu) T) from a normal T is accepted
  at once when K >= floor(mu - 1.1484) (step I, about half the draws) or by the squeeze
  6 mu^2 U >= (mu - K)^3 (step S, nearly all the rest for mu >= 100); the quotient and hat
  steps (Q, E, H) correct the rest exactly. Cost: one normal and, half the time, one uniform,
  no logarithm in the common case.
- mu >= ``exact_below``: the normal law of the same mean and variance, mu + sqrt(mu) T
  (continuous; it drops Poisson's skewness 1 / sqrt(mu), 3.2 % at 1000 e-; the total
  variation distance between Poisson(mu) and N(mu, mu) rounded to integers is 0.0126 at
  100 e-, 0.0040 at 1000 e- and 0.0013 at 10 ke-, falling as 0.126 / sqrt(mu):
  ``python -c "from scipy import stats; import numpy as np; mu = 1000; k = np.arange(600,
  1400); n = stats.norm(mu, mu ** .5); print(0.5 * abs(stats.poisson(mu).pmf(k) - (n.cdf(k +
  .5) - n.cdf(k - .5))).sum())"``). ``math.inf`` keeps every draw exact.

The validating entry point is ``kernels.sensor_frame``; :func:`sensor_frame_unchecked` here
trusts its inputs.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from hyplex.simulation.counter_rng import (
    SECOND_STREAM,
    ZIGGURAT,
    fill_blocks,
    normal_from_word,
    philox4x32,
    stream_word,
    unit_from_word,
    ziggurat_tables,
)

__all__ = [
    "EXACT_SMALL_MEAN_E",
    "ZIGGURAT",
    "frame_key",
    "poisson_pd",
    "sensor_frame_unchecked",
    "ziggurat_tables",
]

#: Below this mean (e-) shot noise is drawn by inversion, from it up by algorithm PD.
EXACT_SMALL_MEAN_E = 10.0
_LOW = 0xFFFFFFFF
#: First stream word of algorithm PD's rare steps (block 2^30); the shot normal's rejections
#: use blocks 1.. (word 4..), the read normal's blocks 2^31.. (see ``counter_rng``).
_PD_STREAM = 4 * 2**30
_NORMAL_STREAM = 4
_READ_STREAM = 4 * SECOND_STREAM

# Ahrens-Dieter PD constants (R's rpois.c): the polynomial a0..a7 of step F and 0!..9!
_A = (-0.5, 0.3333333, -0.2500068, 0.2000118, -0.1661269, 0.1421878, -0.1384794, 0.1250060)
_FACTORIAL = np.array([1.0, 1.0, 2.0, 6.0, 24.0, 120.0, 720.0, 5040.0, 40320.0, 362880.0])
_ONE_OVER_SQRT_2PI = 0.398942280401432677939946059934


def frame_key(seed, frame_index) -> np.ndarray:
    """Philox key and frame counter of one frame: (seed low, seed high, frame low, frame high),
    uint64 (4,) holding 32-bit words. ``seed`` and ``frame_index`` are integers in
    0..2^64-1 (ValueError otherwise)."""
    seed, frame_index = int(seed), int(frame_index)
    for name, value in (("seed", seed), ("frame_index", frame_index)):
        if not 0 <= value < 2**64:
            raise ValueError(f"{name} must be an integer in 0..2^64-1, got {value}")
    words = (seed & _LOW, seed >> 32, frame_index & _LOW, frame_index >> 32)
    return np.array(words, dtype=np.uint64)


@njit(cache=True, inline="always")
def _poisson_inversion(mean, u):
    """Poisson(mean) for mean < 10 by inversion: the least k with P(K <= k) >= u."""
    probability = math.exp(-mean)
    cumulative = probability
    k = 0
    while u > cumulative and probability > 0.0:
        k += 1
        probability *= mean / k
        cumulative += probability
    return float(k)


@njit(cache=True)
def _pd_rare(mean, g, u, k0, k1, pixel, frame_low, frame_high, index):
    """Steps P, Q, E, F, H of algorithm PD (Ahrens and Dieter 1982; R's rpois.c): after the
    normal sample g = mean + sqrt(mean) T and its squeeze uniform ``u`` failed steps I and S.
    Further uniforms come from the pixel's stream at ``index``."""
    s = math.sqrt(mean)
    omega = _ONE_OVER_SQRT_2PI / s
    b1 = 1.0 / (24.0 * mean)
    b2 = 0.3 * b1 * b1
    c3 = b1 * b2 / 7.0
    c2 = b2 - 15.0 * c3
    c1 = b1 - 6.0 * b2 + 45.0 * c3
    c0 = 1.0 - b1 + 3.0 * b2 - 15.0 * c3
    c = 0.1069 / mean  # majorisation by the hat function
    quotient = g >= 0.0  # step Q for the normal sample first, then the hat loop (E, H)
    exponential = 0.0
    k = math.floor(g) if quotient else 0.0
    while True:
        if not quotient:
            # step E: exponential sample and a Laplace-hat point t = 1.8 +- E
            exponential = -math.log(
                unit_from_word(stream_word(k0, k1, pixel, frame_low, frame_high, index))
            )
            u = 2.0 * unit_from_word(stream_word(k0, k1, pixel, frame_low, frame_high, index + 1))
            u -= 1.0
            index += 2
            t = 1.8 + (exponential if u >= 0.0 else -exponential)
            if t <= -0.6744:
                continue
            k = math.floor(mean + s * t)
        # step F: px, py (log and value of the Poisson probability terms), fx, fy (normal)
        difference = mean - k
        if k < 10.0:
            px = -mean
            py = mean**k / _FACTORIAL[int(k)]
        else:
            delta = 1.0 / (12.0 * k)
            delta = delta * (1.0 - 4.8 * delta * delta)
            v = difference / k
            if abs(v) <= 0.25:
                poly = _A[7]
                for i in range(6, -1, -1):
                    poly = poly * v + _A[i]
                px = k * v * v * poly - delta
            else:
                px = k * math.log(1.0 + v) - difference - delta
            py = _ONE_OVER_SQRT_2PI / math.sqrt(k)
        x = (0.5 - difference) / s
        x *= x
        fx = -0.5 * x
        fy = omega * (((c3 * x + c2) * x + c1) * x + c0)
        if quotient:
            if fy - u * fy <= py * math.exp(px - fx):  # step Q
                return k
            quotient = False
        elif c * abs(u) <= py * math.exp(px + exponential) - fy * math.exp(fx + exponential):
            return k  # step H


@njit(cache=True, inline="always")
def _pd_fast(mean, normal, u):
    """Steps N, I and S of algorithm PD: K = floor(mean + sqrt(mean) T) and whether it is
    accepted. Step I (immediate acceptance, K >= floor(mean - 1.1484)) and step S (squeeze,
    6 mean^2 U >= (mean - K)^3) are both computed and or-ed without a branch: which of the two
    accepts is a coin flip that would mispredict half the time."""
    g = mean + math.sqrt(mean) * normal
    k = np.floor(g)  # a float floor: math.floor would convert to an integer and back
    difference = mean - k
    immediate = k >= np.floor(mean - 1.1484)
    squeeze = 6.0 * mean * mean * u >= difference * difference * difference
    return k, g, (g >= 0.0) & (immediate | squeeze)


@njit(cache=True)
def _poisson_pd(mean, normal, u, k0, k1, pixel, frame_low, frame_high):
    """Poisson(mean), mean >= 10, by algorithm PD from one standard normal deviate and one
    uniform (steps N, I, S); the rare rest (< 1 % of draws from mean = 100) in
    :func:`_pd_rare`."""
    k, g, accepted = _pd_fast(mean, normal, u)
    if accepted:
        return k
    return _pd_rare(mean, g, u, k0, k1, pixel, frame_low, frame_high, _PD_STREAM)


@njit(cache=True)
def poisson_pd(mean, key, pixel, table):
    """Poisson(mean) drawn as the sensor kernel draws a pixel's shot noise (inversion below
    10, algorithm PD from 10 up), from Philox block 0 of ``pixel`` under ``key`` (from
    :func:`frame_key`). For tests of the law; ``table`` is :data:`ZIGGURAT`."""
    k0, k1, frame_low, frame_high = key[0], key[1], key[2], key[3]
    p = np.uint64(pixel)
    w0, w1, _, _ = philox4x32(p, np.uint64(0), frame_low, frame_high, k0, k1)
    if mean < EXACT_SMALL_MEAN_E:
        return _poisson_inversion(mean, unit_from_word(w0))
    normal = normal_from_word(w0, table, k0, k1, p, frame_low, frame_high, _NORMAL_STREAM)
    return _poisson_pd(mean, normal, unit_from_word(w1), k0, k1, p, frame_low, frame_high)


@njit(cache=True, inline="always")
def _normal_fast(word, table):
    """The ziggurat's common case (:func:`counter_rng.normal_from_word`: bits 0-7 the layer,
    bit 8 the sign, bits 9-31 the uniform) and whether it applies (False for the 1.5 % of
    words that need its rare branches)."""
    layer = int(word & np.uint64(255))
    x = (np.int64(word >> np.uint64(9)) + 0.5) * 2.0**-23 * table[0, layer]
    sign = np.float64(np.int64((word >> np.uint64(8)) & np.uint64(1)) * 2 - 1)
    return x * sign, x < table[0, layer + 1]


@njit(cache=True, inline="always")
def _digitise(charge, read, dsnu, full_well, gain, black, max_dn):
    """y = round(K (min(n, full well) + read + dsnu) + black) clipped to [0, max_dn], uint16."""
    value = np.floor(gain * (min(charge, full_well) + read + dsnu) + black + 0.5)
    return np.uint16(np.int32(min(max(value, 0.0), max_dn)))


@njit(cache=True)
def _pixel_with_rare_draws(mean, words, col, settings, key, table, pixel):
    """Charge and read noise of one pixel along every branch (ziggurat tail and wedges, PD
    steps Q, E, H): for the few pixels whose common case did not apply. Same words, same
    formulas, so a pixel's value does not depend on which loop computed it."""
    read_noise, exact_below = settings[1], settings[6]
    k0, k1, frame_low, frame_high = key[0], key[1], key[2], key[3]
    w0, w1, w2 = np.uint64(words[0, col]), np.uint64(words[1, col]), np.uint64(words[2, col])
    if mean < EXACT_SMALL_MEAN_E and mean < exact_below:
        charge = _poisson_inversion(mean, unit_from_word(w0))
    else:
        normal = normal_from_word(w0, table, k0, k1, pixel, frame_low, frame_high, _NORMAL_STREAM)
        if mean < exact_below:
            u = unit_from_word(w1)
            charge = _poisson_pd(mean, normal, u, k0, k1, pixel, frame_low, frame_high)
        else:
            charge = mean + math.sqrt(mean) * normal
    read = 0.0
    if read_noise > 0.0:
        read = read_noise * normal_from_word(
            w2, table, k0, k1, pixel, frame_low, frame_high, _READ_STREAM
        )
    return charge, read


@njit(parallel=True, cache=True)
def sensor_frame_unchecked(electrons, prnu, dsnu_e, settings, key, noise, table):
    """EMVA 1288 linear camera: raw digital values (uint16) from expected photoelectrons.

    Per pixel: photo = electrons * prnu; n = Poisson(photo + dark) (the mean without
    ``noise``), the collected charge, saturates at the full well; then read noise and DSNU are
    added: y = round(K (min(n, full well) + sigma_d N(0, 1) + dsnu) + black), clipped to
    [0, max_dn]. Shot noise is exact Poisson below ``exact_below`` electrons and N(mu, mu)
    from it up (module docstring). ``settings`` = (dark electrons mu_I t, read noise sigma_d
    (e-), full well (e-), K (DN/e-), black level (DN), max_dn, exact_below (e-)); prnu and
    dsnu_e are (H, W) maps or (0, 0) to skip them; ``key`` from :func:`frame_key`; ``table`` is
    :data:`ZIGGURAT`; H x W < 2^32. Returns the frame and the number of non-finite
    ``electrons`` per row (those pixels are left at 0).

    Per row: the Philox blocks of all its pixels (a vectorised loop), then one pass that takes
    every draw's common case without a call or a data-dependent branch; the ~3 % of pixels
    that need a rare branch are listed and finished by :func:`_pixel_with_rare_draws` after
    the pass (a call inside the pass cost 40 % more time even when not taken).
    """
    height, width = electrons.shape
    dark, read_noise, full_well, gain, black, max_dn, exact_below = settings
    has_prnu, has_dsnu = prnu.shape[0] > 0, dsnu_e.shape[0] > 0
    k0, k1, frame_low, frame_high = key[0], key[1], key[2], key[3]
    out = np.empty((height, width), np.uint16)
    bad = np.zeros(height, np.int64)
    for row in prange(height):
        words = np.empty((4, width if noise else 0), np.uint32)
        means = np.empty(width if noise else 0, np.float64)
        rare = np.empty(width if noise else 0, np.int64)
        n_rare = 0
        if noise:
            fill_blocks(words, row * width, np.uint64(0), frame_low, frame_high, k0, k1)
        for col in range(width):
            if not math.isfinite(electrons[row, col]):
                bad[row] += 1
                out[row, col] = 0
                continue
            photo = electrons[row, col] * (prnu[row, col] if has_prnu else 1.0)
            mean = max(photo, 0.0) + dark
            charge, read, common = mean, 0.0, True
            if noise:
                w0, w1 = np.uint64(words[0, col]), np.uint64(words[1, col])
                if mean < EXACT_SMALL_MEAN_E and mean < exact_below:
                    charge = _poisson_inversion(mean, unit_from_word(w0))
                else:
                    normal, common = _normal_fast(w0, table)
                    if mean < exact_below:
                        charge, _, accepted = _pd_fast(mean, normal, unit_from_word(w1))
                        common &= accepted
                    else:  # shot noise as the normal law of the same mean and variance
                        charge = mean + math.sqrt(mean) * normal
                if read_noise > 0.0:
                    normal, usual = _normal_fast(np.uint64(words[2, col]), table)
                    read = read_noise * normal
                    common &= usual
                if not common:
                    means[n_rare] = mean
                    rare[n_rare] = col
                    n_rare += 1
                    continue
            dsnu = dsnu_e[row, col] if has_dsnu else 0.0
            out[row, col] = _digitise(charge, read, dsnu, full_well, gain, black, max_dn)
        for i in range(n_rare):
            col = rare[i]
            pixel = np.uint64(row * width + col)
            charge, read = _pixel_with_rare_draws(means[i], words, col, settings, key, table, pixel)
            dsnu = dsnu_e[row, col] if has_dsnu else 0.0
            out[row, col] = _digitise(charge, read, dsnu, full_well, gain, black, max_dn)
    return out, bad
