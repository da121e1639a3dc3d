"""``Recorder``: stream frames and their metadata to HDF5, safe against a killed process.

File layout (one group per stream)::

    /                               attrs: format = "hyplex-recording", version, created
    /streams/<name>/frames          (N, H, W) uint8/uint16, chunks (1, H, W), resizable in N
    /streams/<name>/metadata        (N,) structured table, ``frame.metadata_dtype(extra)``
    /streams/<name>/committed       (1,) int64: frames fully written and flushed
                                    attrs: pixel_format, bit_depth, frame_shape, user attrs

Crash safety: the file is written in SWMR mode (HDF5 single-writer/multiple-reader,
``libver="latest"``), whose metadata writes are ordered so that the file is readable at any
instant. Each frame is written as one chunk (``write_direct_chunk``: no chunk cache, no copy),
its metadata row appended, both flushed, and only then is ``committed`` raised and flushed.
A process killed with SIGKILL thus leaves a file where the first ``committed`` frames and
rows are intact; readers (``recording.Recording``) trust ``committed``, not the dataset
length. The data reach the OS page cache at every flush: a killed process loses nothing
flushed, a power cut may (no fsync). ``flush_every`` > 1 trades that granularity for speed.
Readers of such a file must open it with ``swmr=True`` (``Recording`` does).

One writer per file: SWMR drops HDF5's own file lock, so the recorder holds an exclusive
``flock`` on ``<file>.lock`` from before it creates the file until it closes it
(:class:`~hyplex.devices.writer_lock.WriterLock`); a second recorder on the same file fails at
once with ``RecordingInUse`` naming the first (pid, host, command). The kernel drops the lock
when its process dies, so a recorder killed with SIGKILL blocks no one. An existing file is
refused (``RecordingExists``) unless ``overwrite=True``, which unlinks it and records into a
new file: a reader that still has the old one open keeps reading the old frames.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import h5py
import numpy as np

from hyplex.devices.errors import CameraError, RecordingError, RecordingExists, StreamEnded
from hyplex.devices.frame import Frame, PixelFormat, metadata_dtype
from hyplex.devices.recording import Recording, export_frames
from hyplex.devices.ring import OverflowPolicy
from hyplex.devices.writer_lock import WriterLock, lock_holder

FORMAT_NAME = "hyplex-recording"
FORMAT_VERSION = 1
METADATA_CHUNK_ROWS = 256

__all__ = [
    "Recorder",
    "StreamSpec",
    "RecordingSummary",
    "record",
    "check_target",
    "Recording",
    "export_frames",
]


@dataclass(frozen=True)
class StreamSpec:
    """One stream of a recording: frame shape (H, W), pixel format, extra float columns of
    the metadata table (``frame.extra`` keys) and attributes (str, numbers)."""

    frame_shape: tuple[int, int]
    pixel_format: PixelFormat = PixelFormat.MONO16
    extra_fields: tuple[str, ...] = ()
    attrs: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def for_camera(cls, camera, extra_fields=(), attrs=None) -> StreamSpec:
        """The spec of ``camera``'s current ROI and pixel format, its model in the attrs."""
        info = {"backend": camera.backend, "model": camera.capabilities().model}
        return cls(
            camera.roi.shape, camera.pixel_format, tuple(extra_fields), {**info, **(attrs or {})}
        )


class Recorder:
    """Write frames of one or more streams to an HDF5 file (see the module doc).

    Parameters
    ----------
    path : str or Path
        File to create. Its folder must exist.
    streams : StreamSpec or mapping of str to StreamSpec
        A single spec is the stream ``"camera"``.
    flush_every : int
        Flush and raise ``committed`` every this many frames (>= 1).
    overwrite : bool
        Replace an existing file (default: refuse it).

    Raises
    ------
    RecordingExists
        ``path`` exists and ``overwrite`` is False.
    RecordingInUse
        Another recorder (any process) is writing ``path``.
    RecordingError
        ``path`` is a folder, or its folder is missing.
    """

    def __init__(self, path, streams, flush_every: int = 1, overwrite: bool = False):
        if isinstance(streams, StreamSpec):
            streams = {"camera": streams}
        if not streams:
            raise ValueError("give at least one stream")
        if int(flush_every) != flush_every or flush_every < 1:
            raise ValueError(f"flush_every must be an integer >= 1, got {flush_every!r}")
        self.path, self.flush_every = os.fspath(path), int(flush_every)
        self.specs = dict(streams)
        self.bytes_written, self.write_seconds = 0, 0.0
        self._file = None
        check_target(self.path, overwrite)
        self._lock = WriterLock(self.path, "recording")
        try:
            check_target(self.path, overwrite)  # again, now that no other recorder can race
            if os.path.lexists(self.path):
                os.unlink(self.path)  # readers of the old file keep its frames
            self._file = h5py.File(self.path, "x", libver="latest")
            self._file.attrs.update(
                format=FORMAT_NAME,
                version=FORMAT_VERSION,
                created=datetime.datetime.now(datetime.UTC).isoformat(),
            )
            self._streams = {name: self._create(name, spec) for name, spec in self.specs.items()}
            self._file.swmr_mode = True  # every dataset exists: from here on, crash-consistent
        except BaseException:
            if self._file is not None:
                self._file.close()
                self._file = None
            self._lock.release()
            raise

    def _create(self, name: str, spec: StreamSpec) -> dict:
        height, width = (int(v) for v in spec.frame_shape)
        group = self._file.create_group(f"streams/{name}")
        dtype = spec.pixel_format.dtype
        frames = group.create_dataset(
            "frames",
            (0, height, width),
            dtype,
            maxshape=(None, height, width),
            chunks=(1, height, width),
        )
        table = metadata_dtype(spec.extra_fields)
        metadata = group.create_dataset(
            "metadata", (0,), table, maxshape=(None,), chunks=(METADATA_CHUNK_ROWS,)
        )
        committed = group.create_dataset("committed", data=np.zeros(1, np.int64))
        group.attrs.update(
            pixel_format=spec.pixel_format.value,
            bit_depth=spec.pixel_format.bits,
            frame_shape=(height, width),
            **{key: value for key, value in spec.attrs.items() if value is not None},
        )
        return {
            "frames": frames,
            "metadata": metadata,
            "committed": committed,
            "table": table,
            "count": 0,
            "dtype": dtype,
            "shape": (height, width),
        }

    def committed(self, stream: str | None = None) -> int:
        """Frames of ``stream`` written so far (flushed or about to be)."""
        return self._stream(stream)["count"]

    def _stream(self, stream: str | None) -> dict:
        if stream is None:
            if len(self._streams) != 1:
                raise ValueError(f"name the stream: one of {sorted(self._streams)}")
            return next(iter(self._streams.values()))
        try:
            return self._streams[stream]
        except KeyError:
            raise ValueError(f"no stream {stream!r}; have {sorted(self._streams)}") from None

    def write(self, frame: Frame, stream: str | None = None) -> int:
        """Append ``frame`` (and its metadata row); returns its index in the stream."""
        if self._file is None:
            raise ValueError("the recorder is closed")
        state = self._stream(stream)
        data = frame.data
        if data.shape != state["shape"] or data.dtype != state["dtype"]:
            raise ValueError(
                f"frame {data.shape} {data.dtype} does not match the stream's "
                f"{state['shape']} {state['dtype']}"
            )
        start = time.perf_counter()
        index = state["count"]
        frames, metadata = state["frames"], state["metadata"]
        frames.resize(index + 1, axis=0)
        if data.flags.c_contiguous:
            frames.id.write_direct_chunk((index, 0, 0), data)
        else:
            frames[index] = data
        metadata.resize(index + 1, axis=0)
        metadata[index] = frame.metadata_row(state["table"])
        state["count"] = index + 1
        if state["count"] % self.flush_every == 0:
            self._flush(state)
        self.bytes_written += data.nbytes
        self.write_seconds += time.perf_counter() - start
        return index

    def _flush(self, state: dict) -> None:
        state["frames"].flush()
        state["metadata"].flush()
        state["committed"][0] = state["count"]  # only after the frames and rows are out
        state["committed"].flush()

    def flush(self) -> None:
        for state in self._streams.values():
            self._flush(state)

    def close(self) -> None:
        """Flush, close the file and release the writer lock (idempotent)."""
        if self._file is not None:
            try:
                self.flush()
            finally:
                try:
                    self._file.close()
                finally:
                    self._file = None
                    self._lock.release()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def throughput_MBps(self) -> float:
        """Bytes of frames written per second spent in :meth:`write`, MB/s."""
        return self.bytes_written / max(self.write_seconds, 1e-12) / 1e6


def check_target(path, overwrite: bool = False) -> None:
    """Raise what :class:`Recorder` would raise for ``path`` before it takes the lock:
    ``RecordingExists`` (exists, no ``overwrite``), ``RecordingError`` (a folder, a missing
    folder). A cheap early check for command lines; the recorder checks again under its lock.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise RecordingError(f"{path} is a folder; give a file to record into, e.g. {path}/rec.h5")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise RecordingError(f"cannot record to {path}: folder {folder} does not exist")
    if os.path.lexists(path) and not overwrite:
        holder = lock_holder(path)
        raise RecordingExists(
            f"{path} exists ({os.path.getsize(path) if os.path.isfile(path) else 0} bytes"
            + (
                f"; its lock file names a writer, {holder}, which may still be recording"
                if holder
                else ""
            )
            + "); refusing to overwrite it: give overwrite=True (hyplex stream --overwrite) "
            "or another file"
        )


@dataclass(frozen=True)
class RecordingSummary:
    """What :func:`record` did: frames written, seconds, the camera's stats, throughput."""

    path: str
    frames: int
    seconds: float
    stats: object
    recorder_MBps: float
    error: str | None = None


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
) -> RecordingSummary:
    """Stream ``camera`` (open, stopped) into a new recording at ``path``.

    Stops after ``n_frames`` frames or ``seconds`` (host time), whichever first. Frames are
    written straight from the ring slots (no copy). ``progress(frames, elapsed_s, stats)``
    is called after every frame. If the camera fails (a disconnect), the file is closed with
    every frame so far and the error is raised. ``path`` must not exist unless ``overwrite``
    (see :class:`Recorder`).
    """
    if n_frames is None and seconds is None:
        raise ValueError("give n_frames or seconds (or both)")
    spec = StreamSpec.for_camera(camera, extra_fields)
    written = 0
    with Recorder(path, spec, flush_every, overwrite=overwrite) as recorder:
        camera.start(n=n_frames, policy=policy, buffer_frames=buffer_frames)
        start = time.monotonic()
        try:
            while seconds is None or time.monotonic() - start < seconds:
                try:
                    frame = camera.read(timeout=timeout, copy=False)
                except StreamEnded:
                    break
                with frame:
                    recorder.write(frame)
                written += 1
                if progress is not None:
                    progress(written, time.monotonic() - start, camera.stats)
        except CameraError:
            camera.stop()
            raise
        finally:
            elapsed = time.monotonic() - start
        camera.stop()
        return RecordingSummary(
            os.fspath(path), written, elapsed, camera.stats, recorder.throughput_MBps
        )
