"""Equivalent hyperspectral data rate of a snapshot camera.

A camera that delivers a cube of ``bands`` per pixel at ``fps`` is equivalent to a stream of

    rate = pixels x bands x bits_per_sample x fps    bits per second

(Makarenko et al., Nat. Commun. 2024, arXiv:2312.10639: 4000 x 3000 px x 204 bands x 16 bit
x 30 fps = 1.18 Tb/s for the Hyplex video platform).
"""

from __future__ import annotations

import math

PROTOTYPE = {"width": 4000, "height": 3000, "bands": 204, "bits": 16, "fps": 30.0}


def equivalent_data_rate_bps(width: int, height: int, bands: int, bits: int, fps: float) -> float:
    """Equivalent hyperspectral data rate, bits per second (all arguments > 0)."""
    values = {"width": width, "height": height, "bands": bands, "bits": bits, "fps": fps}
    for name, value in values.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be finite and > 0, got {value}")
    return float(width) * float(height) * float(bands) * float(bits) * float(fps)


def prototype_data_rate_bps() -> float:
    """The 1.2 Tb/s platform: 4000 x 3000 px, 204 bands, 16 bit, 30 fps = 1.175e12 b/s."""
    return equivalent_data_rate_bps(**PROTOTYPE)


def format_rate(bits_per_second: float) -> str:
    """Human-readable rate with a decimal SI prefix, e.g. ``"1.18 Tb/s"``."""
    if bits_per_second < 0 or not math.isfinite(bits_per_second):
        raise ValueError(f"rate must be finite and >= 0, got {bits_per_second}")
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if bits_per_second >= scale:
            return f"{bits_per_second / scale:.3g} {prefix}b/s"
    return f"{bits_per_second:.3g} b/s"
