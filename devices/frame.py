"""``Frame``: one raw camera image with its metadata, and the metadata schema.

The metadata of a frame is a fixed schema, not an ad-hoc dict: :data:`FRAME_METADATA_DTYPE`
is the structured dtype of one row, used by the recorder's metadata table. Each backend fills
what its device provides; missing device values are -1 (timestamps) or NaN (exposure, gain).

=======================  ======  ==========================================================
field                    dtype   meaning
=======================  ======  ==========================================================
``seq``                  int64   host sequence number: 0, 1, 2... per stream, no gaps
``frame_id``             int64   the device's frame counter (gaps = frames lost upstream)
``device_timestamp_ns``  int64   the device's clock, ns; -1 when the device gives none
``host_timestamp_ns``    int64   host monotonic clock when the frame was committed, ns
``exposure_us``          f8      exposure read back from the device, us (NaN: unknown)
``gain_db``              f8      analog gain read back, dB (NaN: unknown)
``pixel_format``         u1      :class:`PixelFormat` code
``status``               u1      :class:`FrameStatus` code
=======================  ======  ==========================================================
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np


class PixelFormat(enum.Enum):
    """Monochrome pixel formats (GenICam PFNC names); >8-bit formats are uint16, LSB-aligned."""

    MONO8 = "Mono8"
    MONO10 = "Mono10"
    MONO12 = "Mono12"
    MONO14 = "Mono14"
    MONO16 = "Mono16"

    @property
    def bits(self) -> int:
        """Significant bits per pixel."""
        return int(self.value[4:])

    @property
    def dtype(self) -> np.dtype:
        """Container dtype: uint8 for Mono8, uint16 otherwise."""
        return np.dtype(np.uint8 if self.bits == 8 else np.uint16)

    @property
    def code(self) -> int:
        """Small integer stored in the metadata table."""
        return list(PixelFormat).index(self)

    @classmethod
    def parse(cls, value: PixelFormat | str) -> PixelFormat:
        """A PixelFormat from itself or its name (``"Mono12"``, case-insensitive)."""
        if isinstance(value, cls):
            return value
        for member in cls:
            if str(value).lower() == member.value.lower():
                return member
        names = [m.value for m in cls]
        raise ValueError(f"unknown pixel format {value!r}; expected one of {names}")

    @classmethod
    def for_bits(cls, bits: int) -> PixelFormat:
        return cls.parse(f"Mono{int(bits)}")


class FrameStatus(enum.IntEnum):
    """Completion of a frame's buffer."""

    COMPLETE = 0
    INCOMPLETE = 1  # the device delivered fewer bytes than the payload (lost packets)


@dataclass(frozen=True)
class ROI:
    """A region of interest on the sensor, pixels: top-left corner and size.

    Attributes
    ----------
    offset_x, offset_y : int
        Column and row of the first pixel (>= 0).
    width, height : int
        Size (>= 1); a frame of this ROI has shape (height, width).
    """

    offset_x: int
    offset_y: int
    width: int
    height: int

    def __post_init__(self):
        for name in ("offset_x", "offset_y", "width", "height"):
            value = getattr(self, name)
            if int(value) != value:
                raise ValueError(f"ROI.{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.offset_x < 0 or self.offset_y < 0:
            raise ValueError(f"ROI offsets must be >= 0, got ({self.offset_x}, {self.offset_y})")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"ROI size must be >= 1, got {self.width} x {self.height}")

    @classmethod
    def full(cls, sensor_shape) -> ROI:
        """The whole sensor of shape (rows, cols)."""
        return cls(0, 0, int(sensor_shape[1]), int(sensor_shape[0]))

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        return (self.height, self.width)

    @property
    def slices(self) -> tuple[slice, slice]:
        """Row and column slices of this ROI in a full-sensor array."""
        return (
            slice(self.offset_y, self.offset_y + self.height),
            slice(self.offset_x, self.offset_x + self.width),
        )

    def check_within(self, sensor_shape) -> ROI:
        """Self, or ValueError if the ROI leaves a sensor of shape (rows, cols)."""
        rows, cols = (int(v) for v in sensor_shape)
        if self.offset_y + self.height > rows or self.offset_x + self.width > cols:
            raise ValueError(f"{self} does not fit the {cols} x {rows} (W x H) sensor")
        return self


FRAME_METADATA_DTYPE = np.dtype(
    [
        ("seq", "<i8"),
        ("frame_id", "<i8"),
        ("device_timestamp_ns", "<i8"),
        ("host_timestamp_ns", "<i8"),
        ("exposure_us", "<f8"),
        ("gain_db", "<f8"),
        ("pixel_format", "u1"),
        ("status", "u1"),
    ]
)


def metadata_dtype(extra_fields=()) -> np.dtype:
    """:data:`FRAME_METADATA_DTYPE` plus one float64 column per name in ``extra_fields``."""
    names = list(extra_fields)
    clash = set(names) & set(FRAME_METADATA_DTYPE.names)
    if clash:
        raise ValueError(f"extra fields {sorted(clash)} clash with the frame metadata schema")
    return np.dtype(FRAME_METADATA_DTYPE.descr + [(name, "<f8") for name in names])


@dataclass
class Frame:
    """One raw image and its metadata.

    Attributes
    ----------
    data : numpy.ndarray, (H, W) uint8 or uint16
        Pixel values (LSB-aligned, ``pixel_format.bits`` significant bits).
    frame_id : int
        The device's frame counter.
    seq : int
        Host sequence number within the stream (0, 1, 2... as delivered).
    host_timestamp_ns : int
        Host monotonic time at commit, ns.
    exposure_us, gain_db : float
        Read back from the device (NaN when it does not say).
    pixel_format : PixelFormat
    device_timestamp_ns : int or None
        The device's timestamp, ns, when it provides one.
    status : FrameStatus
    extra : dict of str to float
        Backend-specific values (e.g. the simulated monochromator's wavelength).

    A frame read with ``copy=False`` is a view of a ring slot: call :meth:`release` (or use
    ``with frame:``) when done, after which ``data`` must not be used.
    """

    data: np.ndarray
    frame_id: int
    seq: int
    host_timestamp_ns: int
    exposure_us: float = math.nan
    gain_db: float = math.nan
    pixel_format: PixelFormat = PixelFormat.MONO16
    device_timestamp_ns: int | None = None
    status: FrameStatus = FrameStatus.COMPLETE
    extra: Mapping[str, float] = field(default_factory=dict)
    _release: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape

    @property
    def bit_depth(self) -> int:
        return self.pixel_format.bits

    def release(self) -> None:
        """Return the ring slot behind ``data`` (no-op for a copied frame)."""
        release, self._release = self._release, None
        if release is not None:
            release()

    def __enter__(self) -> Frame:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def metadata_row(self, dtype: np.dtype = FRAME_METADATA_DTYPE) -> np.ndarray:
        """This frame's metadata as a 0-d structured array of ``dtype`` (see module doc)."""
        row = np.zeros((), dtype)
        row["seq"], row["frame_id"] = self.seq, self.frame_id
        row["device_timestamp_ns"] = (
            -1 if self.device_timestamp_ns is None else self.device_timestamp_ns
        )
        row["host_timestamp_ns"] = self.host_timestamp_ns
        row["exposure_us"], row["gain_db"] = self.exposure_us, self.gain_db
        row["pixel_format"], row["status"] = self.pixel_format.code, int(self.status)
        for name in dtype.names[len(FRAME_METADATA_DTYPE.names) :]:
            row[name] = self.extra.get(name, math.nan)
        return row
