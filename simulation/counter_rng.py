"""Counter-based random numbers for numba kernels: Philox-4x32-10 and the draws built on it.

Philox (J. K. Salmon, M. A. Moraes, R. O. Dror, D. E. Shaw, "Parallel Random Numbers: As Easy
as 1, 2, 3", SC 2011, sec. 4.2 and its eq. for the S-box) maps a 128-bit counter and a 64-bit
key to 128 random bits by 10 rounds of::

    L'_0 = hi(M0 * R_0) ^ L_0 ^ k_0      (R_0, L_0, R_1, L_1) = (c_0, c_1, c_2, c_3)
    R'_0 = lo(M1 * R_1) ...               in Random123's word order:
    out  = (hi(M1 c2) ^ c1 ^ k0,  lo(M1 c2),  hi(M0 c0) ^ c3 ^ k1,  lo(M0 c0))

with M0 = 0xD2511F53, M1 = 0xCD9E8D57, and the key bumped by the Weyl constants
(W0, W1) = (0x9E3779B9, 0xBB67AE85) between rounds. Philox-4x32-10 passes BigCrush (paper,
Table 2). Output equals Random123's known-answer vectors (``tests/kat_vectors``; see
``tests/simulation/test_counter_rng.py``).

How the sensor uses it: the key is the 64-bit seed, the counter is (pixel index, block, frame
index low, frame index high). Every pixel's numbers are a pure function of (seed, frame,
pixel, draw), so a frame is the same bits whatever the number of threads or their schedule.
Block 0 gives each pixel four 32-bit words for its common case (shot noise, the Poisson
squeeze, read noise); rarer draws (ziggurat rejections, Poisson hat steps) take words from
blocks 1.. of a stream (:func:`stream_word`), two streams per pixel kept apart by the top bit
of the block counter.

All values are held in uint64 registers (products of two 32-bit words are exact in 64 bits);
the functions trust their inputs (words < 2^32).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = [
    "PHILOX_M0",
    "PHILOX_M1",
    "PHILOX_W0",
    "PHILOX_W1",
    "ZIGGURAT",
    "ZIGGURAT_CONSTANTS",
    "fill_blocks",
    "normal_from_word",
    "philox4x32",
    "philox4x32_10",
    "stream_word",
    "unit_from_word",
    "ziggurat_tables",
]

PHILOX_M0 = np.uint64(0xD2511F53)
PHILOX_M1 = np.uint64(0xCD9E8D57)
PHILOX_W0 = np.uint64(0x9E3779B9)
PHILOX_W1 = np.uint64(0xBB67AE85)
_LOW = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
# a ziggurat word: bits 0-7 the layer, bit 8 the sign, bits 9-31 a 23-bit uniform (as numpy's
# float32 ziggurat)
_LAYER_MASK, _SIGN_SHIFT, _UNIFORM_SHIFT = np.uint64(255), np.uint64(8), np.uint64(9)
_ONE = np.uint64(1)
_TO_UNIT32 = 2.0**-32
_TO_UNIT23 = 2.0**-23
#: Block offset of a pixel's second stream (read noise); the first (shot noise) starts at 1.
SECOND_STREAM = 2**31


@njit(cache=True, inline="always")
def _round(c0, c1, c2, c3, k0, k1):
    p0 = PHILOX_M0 * c0
    p1 = PHILOX_M1 * c2
    return (p1 >> _S32) ^ c1 ^ k0, p1 & _LOW, (p0 >> _S32) ^ c3 ^ k1, p0 & _LOW


@njit(cache=True, inline="always")
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox-4x32-10 of counter (c0, c1, c2, c3) under key (k0, k1): four 32-bit words.

    Inputs and outputs are uint64 holding 32-bit values.
    """
    c0, c1, c2, c3 = _round(c0, c1, c2, c3, k0, k1)
    for _ in range(9):
        k0 = (k0 + PHILOX_W0) & _LOW
        k1 = (k1 + PHILOX_W1) & _LOW
        c0, c1, c2, c3 = _round(c0, c1, c2, c3, k0, k1)
    return c0, c1, c2, c3


@njit(cache=True, inline="always")
def fill_blocks(words, first_pixel, block, frame_low, frame_high, k0, k1):
    """Philox blocks of pixels ``first_pixel .. first_pixel + n - 1`` into ``words`` (4, n)
    uint32: a plain loop over independent counters, which LLVM vectorises (8 lanes of
    32 x 32 -> 64-bit multiplies with AVX-512): 23 ms of one core's time for the 12 M blocks
    of a 4000 x 3000 frame (1.9 ns a block); inside the per-pixel loop the same rounds added
    ~80 ms to the frame. Reproduce: ``python -c "import time, numpy as np; from
    hyplex.simulation.counter_rng import fill_blocks as f; w = np.empty((4, 12_000_000),
    np.uint32); z = np.uint64(0); f(w, 0, z, z, z, z, z); t = time.process_time(); f(w, 0, z,
    z, z, z, z); print(time.process_time() - t)"``."""
    for j in range(words.shape[1]):
        w0, w1, w2, w3 = philox4x32(
            np.uint64(first_pixel + j), block, frame_low, frame_high, k0, k1
        )
        words[0, j] = np.uint32(w0)
        words[1, j] = np.uint32(w1)
        words[2, j] = np.uint32(w2)
        words[3, j] = np.uint32(w3)


def philox4x32_10(counter, key) -> np.ndarray:
    """Philox-4x32-10 of one counter under one key, as Random123's ``philox4x32(ctr, key)``.

    Parameters
    ----------
    counter : sequence of 4 ints in 0..2^32-1
    key : sequence of 2 ints in 0..2^32-1

    Returns
    -------
    ndarray, (4,), uint32

    Raises ValueError on other lengths or values.
    """
    counter, key = [int(v) for v in counter], [int(v) for v in key]
    if len(counter) != 4 or len(key) != 2 or not all(0 <= v < 2**32 for v in counter + key):
        raise ValueError("counter must be 4 and key 2 integers in 0..2^32-1")
    words = philox4x32(*(np.uint64(v) for v in counter + key))
    return np.array(words, dtype=np.uint64).astype(np.uint32)


@njit(cache=True, inline="always")
def unit_from_word(word):
    """Uniform in (0, 1) from a 32-bit word: (w + 1/2) 2^-32 (never 0 or 1)."""
    return (np.int64(word) + 0.5) * _TO_UNIT32


@njit(cache=True, inline="always")
def stream_word(k0, k1, pixel, frame_low, frame_high, index):
    """Word ``index`` (>= 0) of a pixel's stream: word ``index % 4`` of Philox block
    ``index // 4`` (the block is the counter's second word). Recomputes the block: for the
    rare draws only."""
    words = philox4x32(pixel, np.uint64(index >> 2), frame_low, frame_high, k0, k1)
    lane = index & 3
    return words[0] if lane == 0 else words[1] if lane == 1 else words[2] if lane == 2 else words[3]


#: (r, v) of the normal ziggurat by layer count (Marsaglia and Tsang 2000; 256 as numpy's)
ZIGGURAT_CONSTANTS = {
    128: (3.442619855899, 9.91256303526217e-3),
    256: (3.6541528853610088, 4.92867323399e-3),
}


def ziggurat_tables(layers: int = 256) -> np.ndarray:
    """Layer edges x_i and f(x_i) = exp(-x_i^2 / 2), shape (2, layers + 1), of the normal
    ziggurat (G. Marsaglia, W. W. Tsang, "The Ziggurat Method for Generating Random
    Variables", J. Stat. Softw. 5(8), 2000): x_0 = v / f(r) (base strip), x_1 = r,
    x_{i+1} = sqrt(-2 ln(v / x_i + f(x_i))), x_layers = 0, with r and the common area v of
    :data:`ZIGGURAT_CONSTANTS`. The sensor uses 256 layers: 1.5 % of draws leave the
    rectangles (2.8 % with 128)."""
    if layers not in ZIGGURAT_CONSTANTS:
        raise ValueError(f"layers must be one of {sorted(ZIGGURAT_CONSTANTS)}, got {layers}")
    r, area = ZIGGURAT_CONSTANTS[layers]
    x = np.zeros(layers + 1)
    x[0], x[1] = area / math.exp(-0.5 * r * r), r
    for i in range(1, layers - 1):
        x[i + 1] = math.sqrt(-2.0 * math.log(area / x[i] + math.exp(-0.5 * x[i] ** 2)))
    return np.stack([x, np.exp(-0.5 * x**2)])


ZIGGURAT = ziggurat_tables()
_ZIGGURAT_R = ZIGGURAT_CONSTANTS[256][0]


@njit(cache=True)
def _normal_slow(word, table, k0, k1, pixel, frame_low, frame_high, index):
    """The ziggurat's rare branches (tail, wedge, retry) after ``word`` was not accepted in its
    rectangle; further words come from the pixel's stream at ``index``, ``index + 1``, ..."""
    while True:
        layer = int(word & _LAYER_MASK)
        sign = 1.0 if (word >> _SIGN_SHIFT) & _ONE else -1.0
        x = (np.int64(word >> _UNIFORM_SHIFT) + 0.5) * _TO_UNIT23 * table[0, layer]
        if x < table[0, layer + 1]:
            return sign * x
        if layer == 0:  # tail beyond r (G. Marsaglia, Ann. Math. Stat. 35, 1964)
            while True:
                a = -math.log(
                    unit_from_word(stream_word(k0, k1, pixel, frame_low, frame_high, index))
                )
                b = -math.log(
                    unit_from_word(stream_word(k0, k1, pixel, frame_low, frame_high, index + 1))
                )
                index += 2
                a /= _ZIGGURAT_R
                if 2.0 * b > a * a:
                    return sign * (_ZIGGURAT_R + a)
        u = unit_from_word(stream_word(k0, k1, pixel, frame_low, frame_high, index))
        index += 1
        height = table[1, layer] + u * (table[1, layer + 1] - table[1, layer])
        if height < math.exp(-0.5 * x * x):
            return sign * x
        word = stream_word(k0, k1, pixel, frame_low, frame_high, index)
        index += 1


@njit(cache=True, inline="always")
def normal_from_word(word, table, k0, k1, pixel, frame_low, frame_high, index):
    """Standard normal by the 256-layer ziggurat from one 32-bit word (8 bits layer, 1 bit
    sign, 23 bits uniform); 98.5 % of words return here after one multiply and compare, the
    rest continue on the pixel's stream at ``index``. ``table`` is :data:`ZIGGURAT`."""
    layer = int(word & _LAYER_MASK)
    x = (np.int64(word >> _UNIFORM_SHIFT) + 0.5) * _TO_UNIT23 * table[0, layer]
    if x < table[0, layer + 1]:
        # the sign without a branch (a coin flip would mispredict half the time)
        return x * np.float64(np.int64((word >> _SIGN_SHIFT) & _ONE) * 2 - 1)
    return _normal_slow(word, table, k0, k1, pixel, frame_low, frame_high, index)
