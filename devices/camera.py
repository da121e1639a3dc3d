"""The ``Camera`` protocol: what every backend (simulated, OpenCV, GenICam) provides.

A small, typed surface after pymmcore-plus' camera API::

    with SimulatedCamera(scene) as camera:          # open() / close()
        camera.capabilities()                       # what this device supports, with ranges
        camera.exposure_us = 2000.0                 # settings; reading back gives the value
        camera.exposure_us                          #   the device actually applied
        frame = camera.snap(timeout=1.0)            # one frame
        camera.start(n=100, policy="block")         # stream into a FrameRing
        for frame in camera.frames(timeout=1.0):    # ... or camera.read(timeout)
            ...
        camera.stop()
        camera.stats                                # acquired, delivered, dropped (device/host)

Settings a backend lacks raise :class:`~hyplex.devices.errors.SettingUnavailable`; values
outside the range in ``capabilities()`` raise ``ValueError``; ROI and pixel format cannot
change while streaming (:class:`~hyplex.devices.errors.CameraBusy`). The streaming machinery
is shared by every backend (``streaming.StreamingCamera``), so the simulator exercises the
same code path as real hardware.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from hyplex.devices.frame import ROI, Frame, PixelFormat
from hyplex.devices.ring import OverflowPolicy


@dataclass(frozen=True)
class CameraCapabilities:
    """What a camera supports. Ranges are inclusive (min, max); None where unsupported.

    Attributes
    ----------
    backend : str
        "sim", "opencv" or "genicam".
    model : str
        Vendor and model as reported by the device.
    sensor_shape : (int, int)
        Full sensor (rows, cols).
    pixel_formats : tuple of PixelFormat
        Formats that can be selected.
    exposure_us, gain_db, frame_rate_hz : (float, float) or None
        Settable ranges, us, dB and Hz.
    roi : bool
        Whether the ROI can be changed.
    device_timestamps : bool
        Whether frames carry the device's timestamp.
    notes : tuple of str
        What the backend could not provide, in words (e.g. "no ExposureTime node").
    """

    backend: str
    model: str
    sensor_shape: tuple[int, int]
    pixel_formats: tuple[PixelFormat, ...]
    exposure_us: tuple[float, float] | None = None
    gain_db: tuple[float, float] | None = None
    frame_rate_hz: tuple[float, float] | None = None
    roi: bool = False
    device_timestamps: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class CameraStats:
    """Frame accounting of the current (or last) stream.

    Attributes
    ----------
    acquired : int
        Frames the device produced, as far as the host can tell: received buffers plus
        frame-id gaps.
    delivered : int
        Frames handed to the caller by ``read`` / ``frames``.
    dropped_device : int
        Lost before the host ring: frame-id gaps and incomplete buffers.
    dropped_host : int
        Overwritten in the ring before they were read (DROP_OLDEST, NEWEST_ONLY).
    incomplete : int
        Incomplete buffers (included in ``dropped_device`` unless kept).
    pending : int
        Committed to the ring and not read yet.
    """

    acquired: int = 0
    delivered: int = 0
    dropped_device: int = 0
    dropped_host: int = 0
    incomplete: int = 0
    pending: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_device + self.dropped_host


@runtime_checkable
class Camera(Protocol):
    """A monochrome camera (see the module doc for the life cycle)."""

    def open(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Camera: ...

    def __exit__(self, *exc) -> None: ...

    @property
    def is_open(self) -> bool: ...

    @property
    def is_streaming(self) -> bool: ...

    def capabilities(self) -> CameraCapabilities: ...

    exposure_us: float
    gain_db: float
    pixel_format: PixelFormat
    roi: ROI
    frame_rate_hz: float

    @property
    def bit_depth(self) -> int: ...

    def snap(self, timeout: float = 5.0) -> Frame: ...

    def start(
        self,
        n: int | None = None,
        policy: OverflowPolicy | str = OverflowPolicy.BLOCK,
        buffer_frames: int = 4,
    ) -> None: ...

    def stop(self) -> None: ...

    def read(self, timeout: float | None = 5.0, copy: bool = True) -> Frame: ...

    def frames(self, timeout: float | None = 5.0, copy: bool = True) -> Iterator[Frame]: ...

    @property
    def stats(self) -> CameraStats: ...
