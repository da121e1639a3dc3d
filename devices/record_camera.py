"""``record()``: stream one camera into a new recording, with a summary of what it did.

A convenience over :class:`~hyplex.devices.recorder.Recorder` (which this module imports
inside :func:`record`: ``recorder`` re-exports ``record`` and ``RecordingSummary``, so a
module-level import would be a circle).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hyplex.devices.errors import CameraError, RecordingError, StreamEnded
from hyplex.devices.recording_layout import StreamSpec
from hyplex.devices.ring import OverflowPolicy

__all__ = ["RecordingSummary", "record", "expected_frames"]


@dataclass(frozen=True)
class RecordingSummary:
    """What :func:`record` did: frames written, seconds, the camera's stats, throughput,
    frames the recorder dropped and the error that stopped it (a full disk), if any."""

    path: str
    frames: int
    seconds: float
    stats: object
    recorder_MBps: float
    error: str | None = None
    recorder_dropped: int = 0
    compression_ratio: float = 1.0


def record(
    camera,
    path,
    n_frames: int | None = None,
    seconds: float | None = None,
    policy: OverflowPolicy | str = OverflowPolicy.BLOCK,
    buffer_frames: int = 4,
    extra_fields=(),
    flush_every: int = 1,
    progress: Callable[[int, float, object], None] | None = None,
    timeout: float = 5.0,
    overwrite: bool = False,
    **recorder_options,
) -> RecordingSummary:
    """Stream ``camera`` (open, stopped) into a new recording at ``path``.

    Stops after ``n_frames`` frames or ``seconds`` (host time), whichever first. Frames are
    written straight from the ring slots (no copy) unless ``queue_frames`` is given (then
    copied into the recorder's queue). ``progress(frames, elapsed_s, stats)`` is called after
    every frame. If the camera fails (a disconnect), the file is closed with every frame so
    far and the error is raised. If the disk fills, the recording stops cleanly: the summary's
    ``error`` says so and the file holds every committed frame. ``path`` must not exist unless
    ``overwrite`` (see :class:`Recorder`). ``recorder_options`` go to :class:`Recorder`
    (``compression``, ``packing``, ``queue_frames``, ``throttle_MBps``, ...); the expected
    frame count (for the disk-space warning) is worked out from ``n_frames``/``seconds``.
    """
    from hyplex.devices.recorder import Recorder

    if n_frames is None and seconds is None:
        raise ValueError("give n_frames or seconds (or both)")
    spec = StreamSpec.for_camera(camera, extra_fields)
    expected = expected_frames(camera, n_frames, seconds)
    recorder_options.setdefault("expected_frames", expected)
    written, error = 0, None
    with Recorder(path, spec, flush_every, overwrite=overwrite, **recorder_options) as recorder:
        camera.start(n=n_frames, policy=policy, buffer_frames=buffer_frames)
        start = time.monotonic()
        try:
            while seconds is None or time.monotonic() - start < seconds:
                try:
                    frame = camera.read(timeout=timeout, copy=False)
                except StreamEnded:
                    break
                # queued: the recorder takes the ring slot over (no copy) and releases it
                index = recorder.write(frame, take=True)
                written += index is not None
                if progress is not None:
                    progress(written, time.monotonic() - start, camera.stats)
        except RecordingError as failure:  # a full disk: stop cleanly, keep the file
            error = str(failure)
        except CameraError:
            camera.stop()
            raise
        finally:
            elapsed = time.monotonic() - start
        camera.stop()
    if error is None and recorder.failure is not None:  # failed while draining the queue
        error = f"writing {path} failed: {recorder.failure!r}"
    if recorder.failure is not None:
        written = recorder.flushed()
    return RecordingSummary(
        os.fspath(path),
        written,
        elapsed,
        camera.stats,
        recorder.throughput_MBps,
        error,
        recorder.dropped,
        recorder.compression_ratio,
    )


def expected_frames(camera, n_frames: int | None, seconds: float | None) -> int | None:
    """Frames a recording of ``n_frames`` frames and/or ``seconds`` s will hold at most, by
    ``camera.frame_rate_hz`` (Hz) where it has one: the smaller of the two counts, or None
    when neither is known."""
    rate = getattr(camera, "frame_rate_hz", None)
    by_time = None
    if seconds is not None and rate:
        try:
            by_time = int(np.ceil(float(seconds) * float(rate)))
        except (TypeError, ValueError):
            by_time = None
    counts = [c for c in (n_frames, by_time) if c is not None]
    return min(counts) if counts else None
