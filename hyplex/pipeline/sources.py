"""Frame sources of the streaming engine: a camera, an HDF5 recording, a video file, images.

Every source is an iterable of :class:`SourceItem` (frame index, pixels or the error that made
the frame unreadable, device metadata) with a ``close()``; a custom one sets
``is_frame_source = True``, any other iterable of (H, W) arrays is wrapped in
:class:`ArraySource`. A frame that cannot be read is
yielded with ``error`` set, so the engine reports it and goes on with the next one; a source
that cannot be opened at all (not a recording, an unreadable video) raises
:class:`SourceError` at construction, with what was wrong and what was expected.

=====================  ==================================================================
``"sim"``              the camera twin (:class:`~hyplex.devices.sim_camera.SimulatedCamera`)
``*.h5`` / ``*.hdf5``  a ``hyplex-recording`` (``hyplex stream --record``)
a folder or a glob     images (PNG/TIFF, 8 or 16 bit, read unchanged), sorted by name
other paths            a video file (OpenCV; converted to 8-bit grey)
=====================  ==================================================================
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hyplex.optics.extras import require

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".pgm", ".bmp", ".jpg", ".jpeg")


class SourceError(ValueError):
    """A source that cannot be opened: a missing file, a bad header, an unknown format."""


@dataclass
class SourceItem:
    """One frame from a source.

    Attributes
    ----------
    index : int
        Position in the source (0, 1, ...).
    data : numpy.ndarray (H, W) or None
        Pixels; None when ``error`` is set.
    frame_id : int
        The device's frame counter (the index for files).
    timestamp_ns : int
        Host monotonic time when the frame was read, ns.
    error : str or None
        Why the frame could not be read.
    """

    index: int
    data: np.ndarray | None
    frame_id: int
    timestamp_ns: int
    error: str | None = None


class ArraySource:
    """Frames from memory: an array (N, H, W) or any iterable of (H, W) arrays."""

    def __init__(self, frames: Iterable, name: str = "arrays"):
        self.frames, self.name = frames, name

    def __iter__(self) -> Iterator[SourceItem]:
        for index, frame in enumerate(self.frames):
            yield SourceItem(index, np.asarray(frame), index, time.monotonic_ns())

    def close(self) -> None:
        close = getattr(self.frames, "close", None)  # a generator
        if callable(close):
            close()


class CameraSource:
    """Frames streamed from any :class:`~hyplex.devices.camera.Camera`.

    Parameters
    ----------
    camera : Camera
        Opened here if it is not open; closed by :meth:`close` only if opened here.
    n_frames : int or None
        Stop after this many frames (None: until :meth:`close` or the stream ends).
    policy, buffer_frames : str, int
        The camera ring's overflow policy and slots (frames the device side may queue).
    first_timeout_s : float
        Wait for the first frame (rendering and numba compilation can take a while).
    """

    def __init__(
        self,
        camera,
        n_frames: int | None = None,
        policy: str = "block",
        buffer_frames: int = 4,
        first_timeout_s: float = 120.0,
    ):
        self.camera, self.n_frames = camera, n_frames
        self.policy, self.buffer_frames = policy, buffer_frames
        self.first_timeout_s = first_timeout_s
        self.name = f"camera {type(camera).__name__}"
        self._opened_here = False

    def __iter__(self) -> Iterator[SourceItem]:
        from hyplex.devices.errors import CameraError, CameraTimeout, StreamEnded

        if not self.camera.is_open:
            self.camera.open()
            self._opened_here = True
        self.camera.start(n=self.n_frames, policy=self.policy, buffer_frames=self.buffer_frames)
        index = 0
        try:
            while True:
                try:
                    frame = self.camera.read(
                        timeout=self.first_timeout_s if index == 0 else 5.0, copy=False
                    )
                except StreamEnded:
                    return
                except CameraTimeout as error:
                    yield SourceItem(index, None, -1, time.monotonic_ns(), f"camera: {error}")
                    index += 1
                    continue
                except CameraError as error:
                    raise SourceError(f"camera stream failed: {error}") from error
                with frame:  # the consumer copies into its own ring before the next read
                    yield SourceItem(index, frame.data, frame.frame_id, time.monotonic_ns())
                index += 1
        finally:
            self.camera.stop()

    @property
    def dropped(self) -> int:
        """Frames lost on the camera side (device gaps and its host ring)."""
        return int(self.camera.stats.dropped)

    def close(self) -> None:
        if self.camera.is_streaming:
            self.camera.stop()
        if self._opened_here:
            self.camera.close()


class RecordingSource:
    """Frames of a ``hyplex-recording`` HDF5 file (:class:`~hyplex.devices.recording.Recording`).

    The committed frames at opening are read (a recording still being written is read up to
    there). A truncated file fails here, in milliseconds, never hangs and never yields zeros
    (:class:`~hyplex.devices.recording.Recording` checks it; HDF5 reads retry a bounded number
    of times); a frame that still cannot be read is yielded with ``error`` set.

    Raises
    ------
    SourceError
        Missing file, not HDF5, truncated, not a hyplex recording, or no such stream.
    """

    def __init__(self, path, stream: str | None = None):
        from hyplex.devices.errors import RecordingError
        from hyplex.devices.recording import Recording

        self.path, self.name = Path(path), str(path)
        if not self.path.is_file():
            raise SourceError(f"{path}: no such recording file")
        try:
            self.recording = Recording(self.path, stream)
        except (RecordingError, ValueError) as error:
            raise SourceError(str(error)) from None
        except (KeyError, OSError) as error:
            raise SourceError(f"{path}: bad recording header ({error})") from None
        self.sensor_shape = tuple(int(v) for v in self.recording.attrs["frame_shape"])
        self.n_frames = len(self.recording)

    def __len__(self) -> int:
        return self.n_frames

    def __iter__(self) -> Iterator[SourceItem]:
        for index in range(self.n_frames):
            try:
                frame = self.recording.frame(index)
            except (OSError, RuntimeError, ValueError, KeyError) as error:
                yield SourceItem(index, None, index, time.monotonic_ns(), f"unreadable: {error}")
                continue
            yield SourceItem(index, frame.data, frame.frame_id, time.monotonic_ns())

    def close(self) -> None:
        self.recording.close()


class VideoFileSource:
    """Frames of a video file read with OpenCV, as 8-bit grey (H, W) uint8."""

    def __init__(self, path):
        cv2 = require("cv2", feature="video and image-folder sources")

        self.path, self.name = Path(path), str(path)
        if not self.path.is_file():
            raise SourceError(f"{path}: no such video file")
        self.capture = cv2.VideoCapture(str(path))
        if not self.capture.isOpened():
            raise SourceError(f"{path}: OpenCV cannot open it as a video")
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.n_frames = count if count > 0 else None
        self.sensor_shape = (
            int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        )

    def __len__(self) -> int:
        return self.n_frames or 0

    def __iter__(self) -> Iterator[SourceItem]:
        cv2 = require("cv2", feature="video and image-folder sources")

        index = 0
        while True:
            ok, image = self.capture.read()
            if not ok:
                return
            if image.ndim == 3:
                image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            yield SourceItem(index, image, index, time.monotonic_ns())
            index += 1

    def close(self) -> None:
        self.capture.release()


class ImageSequenceSource:
    """Images of a folder or a glob pattern, sorted by name, read unchanged (8/16 bit)."""

    def __init__(self, pattern):
        text = os.fspath(pattern)
        if os.path.isdir(text):
            paths = [p for p in sorted(Path(text).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        else:
            paths = [Path(p) for p in sorted(glob.glob(text))]
        if not paths:
            raise SourceError(f"{text}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
        self.paths, self.name = paths, text
        cv2 = require("cv2", feature="video and image-folder sources")

        first = cv2.imread(str(paths[0]), cv2.IMREAD_UNCHANGED)
        if first is None:
            raise SourceError(f"{paths[0]}: not a readable image")
        self.sensor_shape = tuple(first.shape[:2])

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[SourceItem]:
        cv2 = require("cv2", feature="video and image-folder sources")

        for index, path in enumerate(self.paths):
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None:
                yield SourceItem(index, None, index, time.monotonic_ns(), f"{path}: unreadable")
                continue
            if image.ndim == 3:
                image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            yield SourceItem(index, image, index, time.monotonic_ns())

    def close(self) -> None:
        pass


SOURCE_TYPES = (ArraySource, CameraSource, RecordingSource, VideoFileSource, ImageSequenceSource)


def open_source(spec, **camera_options):
    """A source from a spec (see the module doc); ``camera_options`` go to the simulated
    camera for ``"sim"``. Raises :class:`SourceError` for what cannot be opened."""
    if not isinstance(spec, str | os.PathLike):
        if hasattr(spec, "start") and hasattr(spec, "read"):
            return CameraSource(spec)  # a Camera
        if isinstance(spec, SOURCE_TYPES) or getattr(spec, "is_frame_source", False):
            return spec  # already a source (yields SourceItem)
        if hasattr(spec, "__iter__"):
            return ArraySource(spec)
        raise SourceError(
            f"cannot read frames from a {type(spec).__name__}: expected a path, 'sim', a "
            "Camera, a source or an iterable of (H, W) arrays"
        )
    text = os.fspath(spec)
    if text == "sim":
        from hyplex.devices.sim_camera import SimulatedCamera

        n_frames = camera_options.pop("n_frames", None)
        return CameraSource(SimulatedCamera(**camera_options), n_frames=n_frames)
    if text.lower().endswith((".h5", ".hdf5")):
        return RecordingSource(text)
    if os.path.isdir(text) or any(c in text for c in "*?["):
        return ImageSequenceSource(text)
    if Path(text).suffix.lower() in IMAGE_SUFFIXES:
        return ImageSequenceSource(text)
    return VideoFileSource(text)
