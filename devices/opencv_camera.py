"""``OpenCVCamera``: ``cv2.VideoCapture`` behind the :class:`Camera` protocol.

Sources: a device index (a webcam, a UVC machine-vision camera), a video file, or an image
sequence given as a printf pattern (``frames/frame_%04d.png``, opened with ``CAP_IMAGES``,
which keeps 16-bit PNG and TIFF as uint16). Colour frames are converted to grey.

OpenCV reports little about a frame, so metadata is filled from the host: ``frame_id`` is
the position in the file (or a host counter for devices), ``device_timestamp_ns`` is None,
exposure and gain are read back through ``CAP_PROP_EXPOSURE`` / ``CAP_PROP_GAIN`` where the
capture backend supports them (their units are backend-specific; V4L2 exposure is in
100 us steps) and NaN otherwise. The ROI is cut on the host. For files the frame rate paces
playback on the host clock (``None``: as fast as they decode); ``loop=True`` replays a file
from the start when it ends, otherwise the stream ends there.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from hyplex.devices.camera import CameraCapabilities
from hyplex.devices.clock import Clock
from hyplex.devices.errors import (
    CameraDisconnected,
    CameraError,
    SettingUnavailable,
    StreamEnded,
)
from hyplex.devices.frame import ROI, PixelFormat
from hyplex.devices.streaming import Grab, StreamingCamera, check_range
from hyplex.optics.extras import require

V4L2_EXPOSURE_UNIT_US = 100.0


def _cv2():
    return require("cv2", feature="the OpenCV camera (devices, video files, image folders)")


class OpenCVCamera(StreamingCamera):
    """A VideoCapture source as a camera.

    Parameters
    ----------
    source : int or str or Path
        Device index, video file, or image-sequence pattern containing ``%``.
    frame_rate_hz : float or None
        Host pacing for files and image sequences (None: unpaced); for devices, requested
        through ``CAP_PROP_FPS``.
    loop : bool
        Replay files from the start at their end.
    clock : Clock, optional
    """

    backend = "opencv"

    def __init__(
        self,
        source: int | str | os.PathLike = 0,
        frame_rate_hz: float | None = None,
        loop: bool = False,
        clock: Clock | None = None,
        poll_s: float = 0.1,
    ):
        super().__init__(clock, poll_s)
        if isinstance(source, str) and source.isdigit():
            source = int(source)
        self.source = source if isinstance(source, int) else str(source)
        self.is_device = isinstance(self.source, int)
        if not self.is_device and "%" not in self.source and not Path(self.source).is_file():
            raise ValueError(
                f"OpenCV source {self.source!r} is neither a device index, a file, nor an "
                "image-sequence pattern such as 'frames/frame_%04d.png'"
            )
        self.loop = loop
        self._frame_rate_hz = frame_rate_hz
        self._capture = None
        self._sensor_shape = (0, 0)
        self._pixel_format = PixelFormat.MONO8
        self._roi = ROI(0, 0, 1, 1)
        self._counter = 0
        self._next_due_ns = 0
        self._first: np.ndarray | None = None

    # device hooks -------------------------------------------------------------------------

    def _open_capture(self):
        cv2 = _cv2()

        if self.is_device:
            capture = cv2.VideoCapture(self.source)
        elif "%" in self.source:
            capture = cv2.VideoCapture(self.source, cv2.CAP_IMAGES)
        else:
            capture = cv2.VideoCapture(self.source)
        if not capture.isOpened():
            raise CameraError(f"OpenCV could not open {self.source!r}")
        return capture

    def _open_device(self) -> None:
        self._capture = self._open_capture()
        ok, image = self._capture.read()
        if not ok:
            self._capture.release()
            raise CameraError(f"OpenCV opened {self.source!r} but could not read a frame")
        gray = _to_gray(image)
        self._sensor_shape = gray.shape
        self._pixel_format = PixelFormat.MONO16 if gray.dtype == np.uint16 else PixelFormat.MONO8
        self._roi = ROI.full(gray.shape)
        self._first = gray  # delivered as the first frame, so a file loses nothing
        self._counter = 0
        if self.is_device and self._frame_rate_hz:
            cv2 = _cv2()

            self._capture.set(cv2.CAP_PROP_FPS, float(self._frame_rate_hz))

    def _close_device(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def _start_device(self) -> None:
        self._next_due_ns = self.clock.now_ns()

    def _grab_into(self, out: np.ndarray, timeout_s: float) -> Grab:
        cv2 = _cv2()

        if self._frame_rate_hz and not self.is_device:  # pace files on the host clock
            wait_ns = self._next_due_ns - self.clock.now_ns()
            if wait_ns > 0:
                self.clock.sleep(wait_ns * 1e-9)
            self._next_due_ns = max(self._next_due_ns, self.clock.now_ns()) + round(
                1e9 / self._frame_rate_hz
            )
        if self._first is not None:
            gray, self._first = self._first, None
        else:
            ok, image = self._capture.read()
            if not ok and not self.is_device and self.loop:
                self._capture.release()
                self._capture = self._open_capture()
                ok, image = self._capture.read()
            if not ok:
                if self.is_device:
                    raise CameraDisconnected(f"OpenCV device {self.source} stopped delivering")
                raise StreamEnded(f"{self.source!r} has no more frames")
            gray = _to_gray(image)
        if gray.shape != self._sensor_shape:
            raise CameraError(f"frame size changed from {self._sensor_shape} to {gray.shape}")
        np.copyto(out, gray[self._roi.slices], casting="unsafe")
        frame_id = self._counter
        self._counter += 1
        return Grab(
            frame_id=frame_id,
            exposure_us=self._read_property(cv2.CAP_PROP_EXPOSURE, V4L2_EXPOSURE_UNIT_US),
            gain_db=self._read_property(cv2.CAP_PROP_GAIN, 1.0),
        )

    # settings -----------------------------------------------------------------------------

    def _read_property(self, prop: int, scale: float) -> float:
        if not self.is_device or self._capture is None:
            return math.nan
        value = self._capture.get(prop)
        return math.nan if value == -1 else value * scale

    def _supports(self, prop: int) -> bool:
        return self.is_device and self._capture is not None and self._capture.get(prop) != -1

    def capabilities(self) -> CameraCapabilities:
        cv2 = _cv2()

        notes = []
        exposure = self._supports(cv2.CAP_PROP_EXPOSURE)
        gain = self._supports(cv2.CAP_PROP_GAIN)
        if not exposure:
            notes.append("no exposure control (file, image sequence or backend without it)")
        if not gain:
            notes.append("no gain control")
        notes.append("ROI cut on the host; metadata from the host clock")
        return CameraCapabilities(
            backend="opencv",
            model=f"OpenCV VideoCapture {self.source!r}",
            sensor_shape=tuple(self._sensor_shape),
            pixel_formats=(self._pixel_format,),
            exposure_us=(1.0, 1e7) if exposure else None,
            gain_db=(0.0, 1e3) if gain else None,
            frame_rate_hz=(0.01, 1e4),
            roi=True,
            device_timestamps=False,
            notes=tuple(notes),
        )

    @property
    def exposure_us(self) -> float:
        cv2 = _cv2()

        return self._read_property(cv2.CAP_PROP_EXPOSURE, V4L2_EXPOSURE_UNIT_US)

    @exposure_us.setter
    def exposure_us(self, value: float) -> None:
        cv2 = _cv2()

        if not self._supports(cv2.CAP_PROP_EXPOSURE):
            raise SettingUnavailable(f"OpenCV source {self.source!r} has no exposure control")
        value = check_range("exposure_us", value, (1.0, 1e7), " us")
        with self._device_lock:
            self._capture.set(cv2.CAP_PROP_EXPOSURE, value / V4L2_EXPOSURE_UNIT_US)

    @property
    def gain_db(self) -> float:
        cv2 = _cv2()

        return self._read_property(cv2.CAP_PROP_GAIN, 1.0)

    @gain_db.setter
    def gain_db(self, value: float) -> None:
        cv2 = _cv2()

        if not self._supports(cv2.CAP_PROP_GAIN):
            raise SettingUnavailable(f"OpenCV source {self.source!r} has no gain control")
        with self._device_lock:
            self._capture.set(cv2.CAP_PROP_GAIN, float(value))

    @property
    def frame_rate_hz(self) -> float:
        if self.is_device and self._capture is not None:
            cv2 = _cv2()

            fps = self._capture.get(cv2.CAP_PROP_FPS)
            return math.nan if fps <= 0 else fps
        return math.inf if not self._frame_rate_hz else self._frame_rate_hz

    @frame_rate_hz.setter
    def frame_rate_hz(self, value: float | None) -> None:
        if value is not None:
            value = check_range("frame_rate_hz", value, (0.01, 1e4), " Hz")
        self._frame_rate_hz = value
        if self.is_device and self._capture is not None and value:
            cv2 = _cv2()

            self._capture.set(cv2.CAP_PROP_FPS, value)

    @property
    def pixel_format(self) -> PixelFormat:
        return self._pixel_format

    @pixel_format.setter
    def pixel_format(self, value: PixelFormat | str) -> None:
        self._require_stopped("the pixel format")
        value = PixelFormat.parse(value)
        if value is not self._pixel_format:
            raise SettingUnavailable(
                f"OpenCV source {self.source!r} delivers {self._pixel_format.value} only"
            )

    @property
    def roi(self) -> ROI:
        return self._roi

    @roi.setter
    def roi(self, value: ROI | None) -> None:
        self._require_stopped("the ROI")
        self._roi = (
            ROI.full(self._sensor_shape)
            if value is None
            else value.check_within(self._sensor_shape)
        )


def _to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W) grey from what OpenCV returns (grey, BGR or BGRA, uint8 or uint16)."""
    if image.ndim == 2:
        return image
    cv2 = _cv2()

    code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(image, code)
