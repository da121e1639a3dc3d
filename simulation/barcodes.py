"""Metapixel barcodes: a raw mosaic frame becomes (h, w, n_filters) per-filter means."""

from __future__ import annotations

import numpy as np

from hyplex.simulation import kernels
from hyplex.simulation.layout import MosaicLayout


class BarcodeExtractor:
    """Averages the pixels of each sub-filter of each metapixel.

    The per-pixel slot map is built once (``MosaicLayout.slot_map``) and run-length encoded
    (``kernels.slot_runs``), as a calibrated registration would be; binning is then one pass
    over the frame's used pixels (``kernels.bin_runs``). Assigning ``slots`` (e.g. to drop
    defect pixels: -1) re-encodes the runs.

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
        self.n_slots = layout.metapixels[0] * layout.metapixels[1] * layout.n_filters
        self.slots = layout.slot_map(self.sensor_shape, self.margin)

    @property
    def slots(self) -> np.ndarray:
        """Slot of every pixel, int32 (H, W), -1 where skipped; assigning one re-encodes the
        runs the binning reads (ValueError on another shape or slots out of range)."""
        return self._slots

    @slots.setter
    def slots(self, value) -> None:
        value = np.asarray(value)
        if value.shape != self.sensor_shape:
            raise ValueError(f"slots must have shape {self.sensor_shape}, got {value.shape}")
        self.runs = kernels.slot_runs(value, self.n_slots)
        self._slots = value

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
        means, counts = kernels.bin_runs(np.ascontiguousarray(frame), self.runs)
        shape = (*self.layout.metapixels, self.layout.n_filters)
        if return_counts:
            return means.reshape(shape), counts.reshape(shape)
        return means.reshape(shape)
