"""Mono12p: two 12-bit pixels in three bytes, in the GenICam PFNC bit order.

Reference: EMVA, *GenICam Pixel Format Naming Convention (PFNC)*, version 2.1 (2017),
section 4 ("packed" formats, the ``p`` suffix) and its pixel-format table (``Mono12p``, value
``0x010C0047``). A PFNC packed format lays pixels end to end in a little-endian bit stream:
the least significant bit of pixel 0 is bit 0 of byte 0, and the following bits fill each byte
from its least significant bit up::

    byte 0            byte 1                        byte 2
    7 ............ 0  7 ........ 4  3 ......... 0   7 ............ 0
    p0[7:0]           p1[3:0]       p0[11:8]        p1[11:4]

    p0 = b0 | (b1 & 0x0F) << 8          p1 = (b1 >> 4) | b2 << 4

This is *not* the older GigE Vision ``Mono12Packed`` (byte 0 holds ``p0[11:4]``, byte 1 the
two low nibbles, byte 2 ``p1[11:4]``); harvesters' PFNC conversion of ``Mono12p`` reads
``ff 0f 00`` as pixels ``(0xFFF, 0)`` and ``00 f0 ff`` as ``(0, 0xFFF)``, as here.

Pixels run in raster order across rows, so a frame of ``H x W`` pixels packs into
``H * W * 3 / 2`` bytes; the recorder stores it as ``(H, W * 3 / 2)`` uint8 and needs ``W``
even, so that every row starts on a byte boundary. The kernels are numba-compiled, serial and
``nogil`` (the recorder runs them on its own worker thread, beside the acquisition thread).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["MONO12P_BITS", "pack_mono12p", "unpack_mono12p", "packed_shape"]

MONO12P_BITS = 12
_MAX_12 = (1 << MONO12P_BITS) - 1


@njit(cache=True, nogil=True)
def _pack(pixels, out):  # pragma: no cover - compiled
    # reference form, per pair: out[3k] = p0 & 0xFF; out[3k+1] = (p0 >> 8) | (p1 & 0xF) << 4;
    # out[3k+2] = p1 >> 4
    for k in range(pixels.size // 2):
        p0 = pixels[2 * k]
        p1 = pixels[2 * k + 1]
        out[3 * k] = p0 & 0xFF
        out[3 * k + 1] = ((p0 >> 8) & 0x0F) | ((p1 & 0x0F) << 4)
        out[3 * k + 2] = (p1 >> 4) & 0xFF


@njit(cache=True, nogil=True)
def _unpack(packed, out):  # pragma: no cover - compiled
    for k in range(out.size // 2):
        b0 = np.uint16(packed[3 * k])
        b1 = np.uint16(packed[3 * k + 1])
        b2 = np.uint16(packed[3 * k + 2])
        out[2 * k] = b0 | ((b1 & 0x0F) << 8)
        out[2 * k + 1] = (b1 >> 4) | (b2 << 4)


@njit(cache=True, nogil=True)
def _max(pixels):  # pragma: no cover - compiled
    top = 0
    for value in pixels:
        if value > top:
            top = value
    return top


def packed_shape(frame_shape) -> tuple[int, int]:
    """(rows, bytes per row) of a Mono12p frame of ``frame_shape`` = (H, W) pixels; W even."""
    height, width = (int(v) for v in frame_shape)
    if width % 2 or width <= 0 or height <= 0:
        raise ValueError(
            f"Mono12p packing needs a positive, even frame width (two pixels per 3 bytes), "
            f"got frame shape {(height, width)}"
        )
    return height, width * 3 // 2


def pack_mono12p(frame: np.ndarray, out: np.ndarray | None = None, check: bool = True):
    """Pack a 12-bit frame into Mono12p bytes (module doc).

    Parameters
    ----------
    frame : numpy.ndarray, (H, W) uint16
        Pixel values in DN, 0..4095 (LSB-aligned, as ``PixelFormat.MONO12`` frames are); W even.
    out : numpy.ndarray, (H, 3 W / 2) uint8, optional
        Where to write (C-contiguous); a new array by default.
    check : bool
        Refuse values above 4095 (they would lose their high bits); costs one read of the frame.

    Returns
    -------
    numpy.ndarray, (H, 3 W / 2) uint8

    Raises
    ------
    ValueError
        Not 2-D uint16, odd width, ``out`` of the wrong shape or dtype, or a value > 4095.
    """
    frame = np.asarray(frame)
    if frame.ndim != 2 or frame.dtype != np.uint16:
        raise ValueError(f"expected a 2-D uint16 frame, got {frame.ndim}-D {frame.dtype}")
    shape = packed_shape(frame.shape)
    if out is None:
        out = np.empty(shape, np.uint8)
    elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous uint8 {shape}, got {out.dtype} {out.shape}")
    flat = np.ascontiguousarray(frame).reshape(-1)
    if check and flat.size:
        top = int(_max(flat))
        if top > _MAX_12:
            raise ValueError(
                f"a Mono12p frame holds values 0..{_MAX_12}, but this one reaches {top}: "
                "record it unpacked (it is not a 12-bit frame)"
            )
    _pack(flat, out.reshape(-1))
    return out


def unpack_mono12p(packed: np.ndarray, frame_shape, out: np.ndarray | None = None):
    """Unpack Mono12p bytes into a (H, W) uint16 frame, the exact inverse of
    :func:`pack_mono12p`.

    Parameters
    ----------
    packed : numpy.ndarray, (H, 3 W / 2) uint8 (or any uint8 array of H * W * 3 / 2 bytes)
    frame_shape : (int, int)
        (H, W) pixels; W even.
    out : numpy.ndarray, (H, W) uint16, optional

    Returns
    -------
    numpy.ndarray, (H, W) uint16, values 0..4095
    """
    height, width = (int(v) for v in frame_shape)
    rows, row_bytes = packed_shape((height, width))
    packed = np.ascontiguousarray(packed, np.uint8).reshape(-1)
    if packed.size != rows * row_bytes:
        raise ValueError(
            f"a Mono12p frame of {height}x{width} pixels takes {rows * row_bytes} bytes, "
            f"got {packed.size}"
        )
    if out is None:
        out = np.empty((height, width), np.uint16)
    elif out.shape != (height, width) or out.dtype != np.uint16 or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous uint16 {(height, width)}, got {out.shape}")
    _unpack(packed, out.reshape(-1))
    return out
