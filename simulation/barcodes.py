"""Metapixel barcodes: a raw mosaic frame becomes (h, w, n_filters) per-filter means."""

from __future__ import annotations

import numpy as np

from hyplex.simulation import kernels
from hyplex.simulation.layout import MosaicLayout

#: Row bands the binning kernel splits a frame into. Fixed, not the thread count, so that the
#: float64 partial sums are merged in the same order on any machine: a barcode is then
#: bitwise the same at 1, 2 or 16 threads (numba spreads the bands over its threads). 16
#: bands cost ~10% over 2 on a full 4000 x 3000 frame (the per-band sums are zeroed and merged).
BINNING_CHUNKS = 16


class BarcodeExtractor:
    """Averages the pixels of each sub-filter of each metapixel.

    The per-pixel slot map is built once (``MosaicLayout.slot_map``) and reused for every frame,
    as a calibrated registration would be; binning is then one pass over the frame
    (``kernels.bin_by_slot``).

    Parameters
    ----------
    layout : MosaicLayout
    sensor_shape : (int, int)
        Raw frame shape (rows, cols).
    margin : float
        Pixels nearer than ``margin`` x pitch to a sub-filter edge are left out (0 keeps all).
    """

    def __init__(self, layout: MosaicLayout, sensor_shape, margin: float = 0.15):
        self.layout = layout
        self.sensor_shape = tuple(int(v) for v in sensor_shape)
        self.margin = float(margin)
        self.slots = layout.slot_map(self.sensor_shape, self.margin)
        self.n_slots = layout.metapixels[0] * layout.metapixels[1] * layout.n_filters

    def __call__(self, raw, return_counts: bool = False):
        """Barcodes (h, w, n_filters) float32 of ``raw`` (H, W) (uint16 or float32; other real
        dtypes are converted to float32); NaN where a
        sub-filter has no pixel left after the margin. With ``return_counts``, also the pixel
        counts (h, w, n_filters) int32."""
        frame = np.asarray(raw)
        if frame.shape != self.sensor_shape:
            raise ValueError(f"raw frame must have shape {self.sensor_shape}, got {frame.shape}")
        if not np.issubdtype(frame.dtype, np.number) or np.iscomplexobj(frame):
            raise ValueError(f"raw frame must be real numbers, got dtype {frame.dtype}")
        if frame.dtype not in (np.uint16, np.float32):  # two compiled variants suffice
            frame = frame.astype(np.float32)
        means, counts = kernels.bin_by_slot(
            np.ascontiguousarray(frame), self.slots, self.n_slots, BINNING_CHUNKS
        )
        shape = (*self.layout.metapixels, self.layout.n_filters)
        if return_counts:
            return means.reshape(shape), counts.reshape(shape)
        return means.reshape(shape)
