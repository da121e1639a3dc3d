"""Stages of the streaming decode engine: bounded hand-off queues, frame checks, preprocessing.

::

    raw frame (H, W) --check_frame--> --dark/flat (calibration)--> float32 (H, W)
        --BarcodeExtractor (numba scatter-add, registered layout)--> barcodes (h, w, n_filters)

The inference stage (torch) lives in ``inference.py``; the threads that connect the
stages in ``pipeline.py``. Between two stages sits a :class:`StageQueue`: a bounded FIFO whose
:class:`~hyplex.devices.ring.OverflowPolicy` decides what happens when the consumer is slower
than the producer (BLOCK: the producer waits, back-pressure reaches the source; DROP_OLDEST:
the oldest waiting item is discarded and counted). Its memory is bounded by ``capacity``
items at any time, whatever the speeds.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from hyplex.devices.ring import OverflowPolicy
from hyplex.simulation.barcodes import BarcodeExtractor
from hyplex.simulation.camera import scene_index
from hyplex.simulation.layout import MosaicLayout

RAW_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


class CorruptFrame(ValueError):
    """A frame that cannot be decoded: wrong shape, wrong dtype, or non-finite values."""


class QueueClosed(Exception):
    """The queue was closed and every item was taken."""


@dataclass(frozen=True)
class QueueStats:
    """Counters of a :class:`StageQueue`: ``put == taken + dropped + pending``."""

    put: int
    taken: int
    dropped: int
    pending: int
    max_pending: int
    blocked_s: float


class StageQueue:
    """A bounded FIFO between two pipeline threads (see the module doc).

    Parameters
    ----------
    capacity : int
        Items held at most (>= 1).
    policy : OverflowPolicy or str
        BLOCK or DROP_OLDEST (NEWEST_ONLY acts as DROP_OLDEST with capacity 1).
    name : str
        For messages.
    """

    def __init__(self, capacity: int, policy=OverflowPolicy.BLOCK, name: str = "queue"):
        if int(capacity) != capacity or capacity < 1:
            raise ValueError(f"{name}: capacity must be an integer >= 1, got {capacity!r}")
        self.policy = OverflowPolicy.parse(policy)
        self.capacity = 1 if self.policy is OverflowPolicy.NEWEST_ONLY else int(capacity)
        self.name = name
        self._items: deque = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._put = self._taken = self._dropped = self._max_pending = 0
        self._blocked_s = 0.0
        self.dropped_items: deque = deque(maxlen=64)  # the last dropped items, for accounting

    @property
    def stats(self) -> QueueStats:
        with self._cond:
            return QueueStats(
                self._put,
                self._taken,
                self._dropped,
                len(self._items),
                self._max_pending,
                self._blocked_s,
            )

    def put(self, item: Any, stop: threading.Event | None = None) -> None:
        """Append ``item``; under BLOCK wait for room (until ``stop`` is set: then return
        without adding, counted as dropped)."""
        with self._cond:
            if self._closed:
                raise QueueClosed(f"{self.name} is closed")
            if len(self._items) >= self.capacity:
                if self.policy is OverflowPolicy.BLOCK:
                    start = time.perf_counter()
                    while len(self._items) >= self.capacity and not self._closed:
                        if stop is not None and stop.is_set():
                            self._dropped += 1
                            self._put += 1
                            return
                        self._cond.wait(0.05)
                    self._blocked_s += time.perf_counter() - start
                    if self._closed:
                        raise QueueClosed(f"{self.name} is closed")
                else:
                    while len(self._items) >= self.capacity:
                        self.dropped_items.append(self._items.popleft())
                        self._dropped += 1
            self._items.append(item)
            self._put += 1
            self._max_pending = max(self._max_pending, len(self._items))
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Any:
        """The oldest item; TimeoutError after ``timeout`` s, QueueClosed once closed and empty."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    raise QueueClosed(f"{self.name} is closed and empty")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"nothing in {self.name} within {timeout} s")
                self._cond.wait(remaining)
            item = self._items.popleft()
            self._taken += 1
            self._cond.notify_all()
            return item

    def get_many(self, limit: int, timeout: float | None = None) -> list:
        """One item (waiting as :meth:`get`) plus up to ``limit - 1`` more already waiting."""
        items = [self.get(timeout)]
        with self._cond:
            while self._items and len(items) < limit:
                items.append(self._items.popleft())
                self._taken += 1
            self._cond.notify_all()
        return items

    def close(self) -> None:
        """No more puts; consumers drain what is left, then get QueueClosed."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def check_frame(data, sensor_shape, index: int | None = None) -> np.ndarray:
    """``data`` as an array if it is a decodable raw frame, else :class:`CorruptFrame`.

    Parameters
    ----------
    data : array_like or Frame
        Raw pixels (H, W): uint8, uint16 or float32 (float frames must be finite).
    sensor_shape : (int, int)
        Expected (rows, cols), those of the calibration / layout.
    index : int, optional
        Frame number, for the message.
    """
    frame = np.asarray(getattr(data, "data", data))
    where = "" if index is None else f"frame {index}: "
    if frame.shape != tuple(sensor_shape):
        raise CorruptFrame(
            f"{where}shape {frame.shape}, expected {tuple(sensor_shape)} (rows, cols) of the "
            "sensor the layout was registered on"
        )
    if frame.dtype not in RAW_DTYPES:
        raise CorruptFrame(
            f"{where}dtype {frame.dtype}, expected one of {[str(d) for d in RAW_DTYPES]}"
        )
    if frame.dtype.kind == "f" and not np.isfinite(frame).all():
        bad = int(np.size(frame) - np.isfinite(frame).sum())
        raise CorruptFrame(f"{where}{bad} non-finite (NaN/inf) pixels in a float frame")
    return frame


@dataclass(frozen=True)
class DarkFlat:
    """Dark and flat correction applied before binning: ``(raw - dark_dn) / flat_gain``.

    Attributes
    ----------
    dark_dn : numpy.ndarray, float32 (H, W) or None
        Dark frame, DN, at the stream's exposure and gain.
    flat_gain : numpy.ndarray, float32 (H, W) or None
        Per-pixel gain normalised within each filter channel (``calibration.darkflat``).
    defects : numpy.ndarray, bool (H, W) or None
        Pixels left out of the barcodes.
    """

    dark_dn: np.ndarray | None = None
    flat_gain: np.ndarray | None = None
    defects: np.ndarray | None = None

    @classmethod
    def from_calibration(cls, calibration, exposure_us: float | None = None) -> DarkFlat:
        """Dark (master dark nearest ``exposure_us``, else the dark-current model's offset),
        flat and defects from a loaded :class:`~hyplex.calibration.store.Calibration`."""
        sections = calibration.sections
        dark = flat = defects = None
        if "dark" in sections:
            section = sections["dark"]
            masters = np.asarray(section.get("master_darks_dn", np.empty((0, 0, 0))))
            exposures = np.asarray(section.get("exposures_us", np.empty(0)), float)
            if masters.size and exposure_us is not None:
                dark = masters[int(np.argmin(np.abs(exposures - exposure_us)))]
            elif "dark_offset_dn" in section:
                dark = np.asarray(section["dark_offset_dn"])
                if exposure_us is not None and "dark_slope_dn_per_s" in section:
                    dark = dark + np.asarray(section["dark_slope_dn_per_s"]) * exposure_us * 1e-6
            elif masters.size:
                dark = masters[0]
        if "flat" in sections:
            flat = np.asarray(sections["flat"]["gain"])
        if "defects" in sections:
            defects = np.asarray(sections["defects"]["hot"]) | np.asarray(
                sections["defects"]["dead"]
            )
        return cls(
            None if dark is None else np.asarray(dark, np.float32),
            None if flat is None else np.asarray(flat, np.float32),
            defects,
        )


class Preprocessor:
    """Raw frame -> dark/flat -> barcodes (h, w, n_filters) float32, numba on CPU threads.

    Parameters
    ----------
    layout : MosaicLayout
        The registered mosaic (from the calibration file or ``MosaicLayout.fit``).
    sensor_shape : (int, int)
        Raw frame (rows, cols).
    darkflat : DarkFlat, optional
    margin : float
        Pixels nearer than ``margin`` x pitch to a sub-filter edge are left out.
    """

    def __init__(
        self,
        layout: MosaicLayout,
        sensor_shape,
        darkflat: DarkFlat | None = None,
        margin: float = 0.15,
    ):
        self.sensor_shape = tuple(int(v) for v in sensor_shape)
        self.darkflat = darkflat or DarkFlat()
        self.extractor = BarcodeExtractor(layout, self.sensor_shape, margin)
        for name in ("dark_dn", "flat_gain", "defects"):
            value = getattr(self.darkflat, name)
            if value is not None and value.shape != self.sensor_shape:
                raise ValueError(
                    f"calibration {name} has shape {value.shape}, expected the sensor's "
                    f"{self.sensor_shape}"
                )
        if self.darkflat.defects is not None:
            slots = self.extractor.slots
            self.extractor.slots = np.where(self.darkflat.defects, -1, slots).astype(slots.dtype)
        gain = self.darkflat.flat_gain
        self._inverse_gain = None if gain is None else np.where(gain > 0, 1.0 / gain, 1.0)
        self._inverse_gain = (
            None if self._inverse_gain is None else self._inverse_gain.astype(np.float32)
        )

    @property
    def layout(self) -> MosaicLayout:
        return self.extractor.layout

    @property
    def barcode_shape(self) -> tuple[int, int, int]:
        """(h, w, n_filters)."""
        return (*self.layout.metapixels, self.layout.n_filters)

    def __call__(self, raw, index: int | None = None) -> np.ndarray:
        """Barcodes (h, w, n_filters) float32, DN (NaN where a sub-filter has no pixel);
        :class:`CorruptFrame` for an undecodable frame."""
        frame = check_frame(raw, self.sensor_shape, index)
        if self.darkflat.dark_dn is not None or self._inverse_gain is not None:
            corrected = frame.astype(np.float32)
            if self.darkflat.dark_dn is not None:
                corrected -= self.darkflat.dark_dn
            if self._inverse_gain is not None:
                corrected *= self._inverse_gain
            frame = corrected
        return self.extractor(frame)


def naive_barcodes(raw, slots: np.ndarray, n_slots: int, shape, dark_dn=None, flat_gain=None):
    """The numpy reference of :class:`Preprocessor` (the Hyplex code's float64 path):
    ``(raw - dark) / gain`` then a ``bincount`` mean per slot. Barcodes ``shape`` float32."""
    frame = np.asarray(raw, np.float64)
    if dark_dn is not None:
        frame = frame - dark_dn
    if flat_gain is not None:
        frame = frame / np.where(flat_gain > 0, flat_gain, 1.0)
    keep = slots >= 0
    index = slots[keep]
    sums = np.bincount(index, weights=frame[keep], minlength=n_slots)
    counts = np.bincount(index, minlength=n_slots)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return means.reshape(shape).astype(np.float32)


def metapixel_centres_px(extractor: BarcodeExtractor) -> np.ndarray:
    """Sensor (row, col) of the centre of each metapixel, float64 (h, w, 2): the mean position
    of the pixels binned into it (rotation and gaps included)."""
    slots = extractor.slots
    n_filters = extractor.layout.n_filters
    rows, cols = np.indices(slots.shape)
    keep = slots >= 0
    metapixel = slots[keep] // n_filters
    n = extractor.n_slots // n_filters
    counts = np.maximum(np.bincount(metapixel, minlength=n), 1)
    centre_r = np.bincount(metapixel, weights=rows[keep] + 0.5, minlength=n) / counts
    centre_c = np.bincount(metapixel, weights=cols[keep] + 0.5, minlength=n) / counts
    return np.stack([centre_r, centre_c], -1).reshape(*extractor.layout.metapixels, 2)


def labels_at_metapixels(class_map, extractor: BarcodeExtractor) -> np.ndarray:
    """Ground-truth class of each metapixel, int64 (h, w): the scene's class at the metapixel
    centre, the scene (Hs, Ws) spanning the sensor as in the twin (``scene_index``).

    Parameters
    ----------
    class_map : numpy.ndarray, int (Hs, Ws) or (T, Hs, Ws)
    """
    labels = np.asarray(class_map)
    height, width = extractor.sensor_shape
    centres = metapixel_centres_px(extractor)
    row_index = scene_index(height, labels.shape[-2])
    col_index = scene_index(width, labels.shape[-1])
    rows = row_index[np.clip(centres[..., 0].astype(int), 0, height - 1)]
    cols = col_index[np.clip(centres[..., 1].astype(int), 0, width - 1)]
    return labels[..., rows, cols].astype(np.int64)
