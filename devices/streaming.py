"""``StreamingCamera``: the acquisition machinery shared by every camera backend.

A backend implements five hooks and its settings; this class does the rest of the
:class:`~hyplex.devices.camera.Camera` protocol the same way for all of them::

    _open_device() / _close_device()      connect, disconnect
    _start_device() / _stop_device()      arm and disarm the device's acquisition
    _grab_into(out, timeout_s) -> Grab     wait for the next device frame and write its pixels
                                          into ``out`` (a ring slot, (H, W) of the ROI and the
                                          pixel format's dtype); raise CameraTimeout when none
                                          came within ``timeout_s``, CameraDisconnected when
                                          the device is gone, StreamEnded when a finite
                                          source (a file) has no more frames

``start`` runs ``_grab_into`` on an acquisition thread that writes straight into the slots
of a :class:`~hyplex.devices.ring.FrameRing` and commits them; frame-id gaps and incomplete
buffers are counted as device drops, ring overwrites as host drops. An exception in the
thread (a disconnect) ends the stream: the caller first reads every frame committed before
it, then gets the error.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from hyplex.devices.camera import CameraStats
from hyplex.devices.clock import Clock, MonotonicClock
from hyplex.devices.errors import (
    CameraBusy,
    CameraDisconnected,
    CameraError,
    CameraTimeout,
    StreamEnded,
)
from hyplex.devices.frame import ROI, Frame, FrameStatus, PixelFormat
from hyplex.devices.ring import FrameRing, OverflowPolicy, RingClosed


@dataclass(frozen=True)
class Grab:
    """What a backend reports about one frame it wrote into a slot."""

    frame_id: int
    device_timestamp_ns: int | None = None
    status: FrameStatus = FrameStatus.COMPLETE
    exposure_us: float = math.nan
    gain_db: float = math.nan
    extra: Mapping[str, float] = field(default_factory=dict)


def check_range(name: str, value: float, bounds, unit: str = "") -> float:
    """``float(value)``, or ValueError naming the setting and its inclusive range."""
    value = float(value)
    low, high = bounds
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}]{unit}, got {value:g}")
    return value


class StreamingCamera(ABC):
    """Base class of the camera backends (see the module doc).

    Parameters
    ----------
    clock : Clock, optional
        Host timestamps come from it (default: the monotonic clock).
    poll_s : float
        Longest wait of one ``_grab_into`` call, s: how fast ``stop()`` takes effect.
    """

    backend = "abstract"

    def __init__(self, clock: Clock | None = None, poll_s: float = 0.1):
        self.clock = clock or MonotonicClock()
        self.poll_s = float(poll_s)
        self._device_lock = threading.RLock()
        self._is_open = False
        self._device_running = False
        self._ring: FrameRing | None = None
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._error: BaseException | None = None
        self._snaps = 0
        self._reset_counters()

    # hooks --------------------------------------------------------------------------------

    @abstractmethod
    def _open_device(self) -> None: ...

    @abstractmethod
    def _close_device(self) -> None: ...

    def _start_device(self) -> None:  # noqa: B027 (optional hook)
        """Arm acquisition (default: nothing to do)."""

    def _stop_device(self) -> None:  # noqa: B027 (optional hook)
        """Disarm acquisition (default: nothing to do)."""

    @abstractmethod
    def _grab_into(self, out: np.ndarray, timeout_s: float) -> Grab: ...

    # settings every backend provides (properties in the subclasses) -------------------------

    pixel_format: PixelFormat
    roi: ROI

    @property
    def bit_depth(self) -> int:
        """Significant bits per pixel of the current pixel format."""
        return self.pixel_format.bits

    @property
    def frame_shape(self) -> tuple[int, int]:
        """(height, width) of the frames the current ROI gives."""
        return self.roi.shape

    # life cycle ---------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._is_open

    @property
    def is_streaming(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def open(self) -> None:
        """Connect to the device (no-op when already open)."""
        if not self._is_open:
            self._open_device()
            self._is_open = True

    def close(self) -> None:
        """Stop streaming and disconnect (no-op when closed)."""
        if self._is_open:
            try:
                self.stop()
            finally:
                self._is_open = False
                self._close_device()

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _require_open(self) -> None:
        if not self._is_open:
            raise CameraError(f"the {self.backend} camera is not open: call open() first")

    def _require_stopped(self, what: str) -> None:
        if self.is_streaming:
            raise CameraBusy(f"cannot change {what} while streaming: call stop() first")

    # single frames ------------------------------------------------------------------------

    def snap(self, timeout: float = 5.0) -> Frame:
        """Acquire one frame (the camera must be open and not streaming)."""
        self._require_open()
        self._require_stopped("to single-frame mode")
        out = np.empty(self.frame_shape, self.pixel_format.dtype)
        deadline = time.monotonic() + timeout
        with self._device_lock:
            self._start_device()
            try:
                while True:
                    remaining = deadline - time.monotonic()
                    try:
                        grab = self._grab_into(out, max(min(self.poll_s, remaining), 0.0))
                        break
                    except CameraTimeout:
                        if time.monotonic() >= deadline:
                            raise CameraTimeout(f"snap: no frame within {timeout} s") from None
            finally:
                self._stop_device()
        frame = self._frame(out, grab, self._snaps, self.clock.now_ns(), self.pixel_format)
        self._snaps += 1
        return frame

    # streaming ----------------------------------------------------------------------------

    def start(
        self,
        n: int | None = None,
        policy: OverflowPolicy | str = OverflowPolicy.BLOCK,
        buffer_frames: int = 4,
        keep_incomplete: bool = False,
    ) -> None:
        """Stream into a ring of ``buffer_frames`` slots until ``n`` frames (None: until
        :meth:`stop`); ``keep_incomplete`` delivers incomplete buffers instead of dropping."""
        self._require_open()
        self._require_stopped("the stream (already streaming)")
        if n is not None and (int(n) != n or n < 1):
            raise ValueError(f"n must be a positive integer or None, got {n!r}")
        ring = FrameRing(buffer_frames, self.frame_shape, self.pixel_format.dtype, policy)
        self._reset_counters()
        self._error = None
        self._stop_event.clear()
        self._ring = ring
        with self._device_lock:
            self._start_device()
            self._device_running = True
        self._thread = threading.Thread(
            target=self._acquire, args=(ring, n, keep_incomplete), name="hyplex-acquisition"
        )
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        """End the stream. Frames already committed can still be read, then StreamEnded."""
        self._stop_event.set()
        if self._ring is not None:
            self._ring.close()
        if self._thread is not None:
            self._thread.join()
        self._stop_running_device()

    def read(self, timeout: float | None = 5.0, copy: bool = True) -> Frame:
        """The next frame of the stream.

        With ``copy=False`` the frame's data is the ring slot itself: call
        ``frame.release()`` when done (the slot is not reused until then).

        Raises
        ------
        CameraTimeout
            No frame within ``timeout`` seconds.
        CameraDisconnected
            The device was lost; every frame committed before was delivered first.
        StreamEnded
            The stream is over (``n`` frames, ``stop()``, or the source ran out).
        """
        ring = self._ring
        if ring is None:
            raise CameraError("not streaming: call start() first")
        try:
            slot = ring.read(timeout)
        except TimeoutError:
            raise CameraTimeout(f"no frame within {timeout} s") from None
        except RingClosed:
            if isinstance(self._error, CameraError):
                raise self._error from None
            if self._error is not None:
                raise CameraDisconnected(f"acquisition failed: {self._error!r}") from self._error
            raise StreamEnded("the stream has ended") from None
        grab, host_ns, pixel_format = slot.info
        if copy:
            data = slot.array.copy()
            ring.release(slot)
            return self._frame(data, grab, slot.seq, host_ns, pixel_format)
        release = partial(ring.release, slot)
        return self._frame(slot.array, grab, slot.seq, host_ns, pixel_format, release)

    def frames(self, timeout: float | None = 5.0, copy: bool = True) -> Iterator[Frame]:
        """Iterate over the stream until it ends; raises what :meth:`read` raises otherwise.

        With ``copy=False`` each frame is released when the next one is requested.
        """
        previous: Frame | None = None
        try:
            while True:
                try:
                    frame = self.read(timeout, copy)
                except StreamEnded:
                    return
                if previous is not None:
                    previous.release()
                previous = frame
                yield frame
        finally:
            if previous is not None:
                previous.release()

    @property
    def stats(self) -> CameraStats:
        """Frame accounting of the current or last stream."""
        ring = self._ring.stats if self._ring is not None else None
        return CameraStats(
            acquired=self._received + self._gaps,
            delivered=ring.delivered if ring else 0,
            dropped_device=self._gaps + self._incomplete_dropped,
            dropped_host=ring.overwritten if ring else 0,
            incomplete=self._incomplete,
            pending=ring.pending if ring else 0,
        )

    # internals ----------------------------------------------------------------------------

    def _reset_counters(self) -> None:
        self._received = self._gaps = self._incomplete = self._incomplete_dropped = 0
        self._last_frame_id: int | None = None

    def _stop_running_device(self) -> None:
        with self._device_lock:
            if self._device_running:
                self._device_running = False
                self._stop_device()

    def _acquire(self, ring: FrameRing, n: int | None, keep_incomplete: bool) -> None:
        committed, pixel_format = 0, self.pixel_format
        try:
            while not self._stop_event.is_set() and (n is None or committed < n):
                try:
                    slot = ring.acquire(timeout=self.poll_s)
                except TimeoutError:
                    continue
                except RingClosed:
                    break
                try:
                    with self._device_lock:
                        grab = self._grab_into(slot.array, self.poll_s)
                except CameraTimeout:
                    ring.abort(slot)
                    continue
                except StreamEnded:  # the source ran out (a file): a clean end
                    ring.abort(slot)
                    break
                except BaseException:
                    ring.abort(slot)
                    raise
                self._count(grab)
                if grab.status is not FrameStatus.COMPLETE and not keep_incomplete:
                    self._incomplete_dropped += 1
                    ring.abort(slot)
                    continue
                ring.commit(slot, (grab, self.clock.now_ns(), pixel_format))
                committed += 1
        except Exception as error:  # surfaced to the reader once the ring is drained
            self._error = error
        finally:
            ring.close()
            try:
                self._stop_running_device()
            except Exception as error:  # a lost device may fail to stop as well
                self._error = self._error or error

    def _count(self, grab: Grab) -> None:
        self._received += 1
        if grab.status is not FrameStatus.COMPLETE:
            self._incomplete += 1
        last = self._last_frame_id
        if last is not None and grab.frame_id > last + 1:
            self._gaps += grab.frame_id - last - 1
        self._last_frame_id = grab.frame_id

    def _frame(self, data, grab: Grab, seq, host_ns, pixel_format, release=None) -> Frame:
        return Frame(
            data=data,
            frame_id=grab.frame_id,
            seq=seq,
            host_timestamp_ns=host_ns,
            exposure_us=grab.exposure_us,
            gain_db=grab.gain_db,
            pixel_format=pixel_format,
            device_timestamp_ns=grab.device_timestamp_ns,
            status=grab.status,
            extra=dict(grab.extra),
            _release=release,
        )
