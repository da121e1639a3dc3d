"""``Recorder``: stream frames and their metadata to HDF5, safe against a killed process,
losslessly compressed and off the caller's thread if asked.

File layout (one group per stream)::

    /                               attrs: format = "hyplex-recording", version, created
    /streams/<name>/frames          (N, H, W) uint8/uint16, chunks (1, H, W), resizable in N;
                                    packed Mono12p: (N, H, 3 W / 2) uint8; compressed: HDF5
                                    filter 32026 (Blosc2, bit-shuffle + LZ4 or Zstandard)
    /streams/<name>/metadata        (N,) structured table, ``frame.metadata_dtype(extra)``
    /streams/<name>/committed       (1,) int64: frames fully written and flushed
    /streams/<name>/dropped         (D,) the metadata rows of frames the recorder had to drop
                                    (its queue was full); absent in version-1 files
                                    attrs: pixel_format, bit_depth, frame_shape, compression,
                                    packing, user attrs

Crash safety: the file is written in SWMR mode (HDF5 single-writer/multiple-reader,
``libver="latest"``), whose metadata writes are ordered so that the file is readable at any
instant. Each frame is written as one chunk (``write_direct_chunk``: no chunk cache, no copy;
a compressed frame is already a Blosc2 chunk, see :mod:`hyplex.devices.compression`), its
metadata row appended, both flushed, and only then is ``committed`` raised and flushed.
A process killed with SIGKILL thus leaves a file where the first ``committed`` frames and
rows are intact; readers (``recording.Recording``) trust ``committed``, not the dataset
length. The data reach the OS page cache at every flush: a killed process loses nothing
flushed, a power cut may (no fsync). ``flush_every`` > 1 trades that granularity for speed.
Readers of such a file must open it with ``swmr=True`` (``Recording`` does); plain h5py reads
a compressed file after ``import hdf5plugin``.

Where the work runs: with ``queue_frames=0`` (the default) :meth:`Recorder.write` encodes and
writes in the caller's thread. With ``queue_frames=K`` it only copies the frame into one of K
pooled buffers and returns; an encoder thread packs/compresses and a writer thread writes
(:class:`~hyplex.devices.write_queue.WriteQueue`). A frame that finds no free buffer is
dropped, counted (:attr:`Recorder.dropped`) and its metadata row recorded in ``dropped``.
``throttle_MBps`` holds the writer to a byte rate with a token bucket
(:class:`~hyplex.devices.throttle.TokenBucket`) around the chunk writes: a slow disk,
emulated on any machine.

A failed write (a full disk: ``OSError`` ENOSPC) stops the recording cleanly: nothing more is
written or flushed, ``committed`` keeps the last frames that were wholly written, the file
stays readable, and the next :meth:`Recorder.write` raises :class:`RecordingDiskFull` (or
``RecordingError``). :func:`check_disk_space` warns before a recording whose uncompressed
size exceeds the free space.

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
import errno
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import h5py
import numpy as np

from hyplex.devices.compression import (
    Compression,
    FrameEncoding,
    Packing,
    PluginBlosc2,
    encode_frame,
)
from hyplex.devices.errors import CameraError, RecordingError, RecordingExists, StreamEnded
from hyplex.devices.frame import Frame, PixelFormat, metadata_dtype
from hyplex.devices.recording import Recording, export_frames
from hyplex.devices.ring import OverflowPolicy
from hyplex.devices.throttle import TokenBucket
from hyplex.devices.write_queue import Job, WriteQueue
from hyplex.devices.writer_lock import WriterLock, lock_holder

FORMAT_NAME = "hyplex-recording"
FORMAT_VERSION = 2  # 2: compression, packing, the dropped table
METADATA_CHUNK_ROWS = 256

__all__ = [
    "Recorder",
    "StreamSpec",
    "RecordingSummary",
    "RecordingDiskFull",
    "DiskSpaceWarning",
    "record",
    "check_target",
    "check_disk_space",
    "Recording",
    "export_frames",
]


class RecordingDiskFull(RecordingError):
    """The disk filled during a recording: it stopped, the file holds every committed frame."""


class DiskSpaceWarning(UserWarning):
    """The free space may not hold the recording asked for."""


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
    compression : {"none", "lz4", "zstd"}
        Lossless codec of the frames (Blosc2 with bit-shuffle; needs ``blosc2`` and
        ``hdf5plugin``).
    clevel : int
        Compression level 1-9 (1: fastest; the default).
    packing : {None, "none", "mono12p"}
        ``"mono12p"`` stores 12-bit frames as 3 bytes per 2 pixels (streams of at most 12 bits).
    threads : int, optional
        Blosc2 threads per frame (default: the cores this process may use).
    queue_frames : int
        0: encode and write in the caller's thread. K >= 1: encoder and writer threads with
        K pooled frame buffers per stream; a frame that finds none free is dropped (counted).
    block_when_full : bool
        With ``queue_frames``, wait for a free buffer instead of dropping (back-pressure to
        the caller, e.g. a camera ring in BLOCK policy).
    throttle_MBps : float, optional
        Hold the writes to this many MB/s (1 MB = 1e6 bytes) with a token bucket.
    expected_frames : int, optional
        Frames the caller means to record: warns (:class:`DiskSpaceWarning`) when their
        uncompressed size exceeds the free space.
    clock : Clock, optional
        Time of the throttle (default: monotonic).

    Raises
    ------
    RecordingExists
        ``path`` exists and ``overwrite`` is False.
    RecordingInUse
        Another recorder (any process) is writing ``path``.
    RecordingError
        ``path`` is a folder, or its folder is missing.
    MissingExtraError
        The codec's package (``blosc2``, ``hdf5plugin``) is not installed; it is named.
    ValueError
        A bad option (named).
    """

    def __init__(
        self,
        path,
        streams,
        flush_every: int = 1,
        overwrite: bool = False,
        *,
        compression: Compression | str = "none",
        clevel: int = 1,
        packing: Packing | str | None = None,
        threads: int | None = None,
        queue_frames: int = 0,
        block_when_full: bool = False,
        throttle_MBps: float | None = None,
        expected_frames: int | None = None,
        clock=None,
    ):
        from hyplex.devices.compression import default_threads, require_codec

        if isinstance(streams, StreamSpec):
            streams = {"camera": streams}
        if not streams:
            raise ValueError("give at least one stream")
        if int(flush_every) != flush_every or flush_every < 1:
            raise ValueError(f"flush_every must be an integer >= 1, got {flush_every!r}")
        if int(queue_frames) != queue_frames or queue_frames < 0:
            raise ValueError(f"queue_frames must be an integer >= 0, got {queue_frames!r}")
        self.path, self.flush_every = os.fspath(path), int(flush_every)
        self.specs = dict(streams)
        self.compression = require_codec(compression)
        self.packing = Packing.parse(packing)
        threads = default_threads() if threads is None else threads
        self._encodings = {
            name: _encoding(spec, self.compression, self.packing, clevel, threads)
            for name, spec in self.specs.items()
        }
        # compress without the GIL where hdf5plugin's C-Blosc2 allows (compression.py)
        self._plugin = None if self.compression is Compression.NONE else PluginBlosc2.load()
        self.throttle = (
            None if throttle_MBps is None else TokenBucket(float(throttle_MBps) * 1e6, clock=clock)
        )
        self.block_when_full = bool(block_when_full)
        self.bytes_written, self.raw_bytes_written = 0, 0
        self.write_seconds = 0.0
        self._sync_encode_seconds = 0.0
        self._failure: BaseException | None = None
        self._queue: WriteQueue | None = None
        self._file = None
        check_target(self.path, overwrite)
        if expected_frames is not None:
            per_frame = sum(e.stored_nbytes for e in self._encodings.values())
            check_disk_space(self.path, int(expected_frames) * per_frame, self.compression)
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
            if queue_frames:
                shapes = {
                    name: (state["shape"], state["dtype"]) for name, state in self._streams.items()
                }
                self._queue = WriteQueue(
                    shapes, queue_frames, self._encode, self._store, self._store_drop
                )
        except BaseException:
            if self._file is not None:
                self._file.close()
                self._file = None
            self._lock.release()
            raise

    def _create(self, name: str, spec: StreamSpec) -> dict:
        height, width = (int(v) for v in spec.frame_shape)
        encoding = self._encodings[name]
        group = self._file.create_group(f"streams/{name}")
        stored = encoding.stored_shape
        frames = group.create_dataset(
            "frames",
            (0, *stored),
            encoding.stored_dtype,
            maxshape=(None, *stored),
            chunks=(1, *stored),
            **encoding.hdf5_filter(),
        )
        table = metadata_dtype(spec.extra_fields)
        metadata = group.create_dataset(
            "metadata", (0,), table, maxshape=(None,), chunks=(METADATA_CHUNK_ROWS,)
        )
        dropped = group.create_dataset(
            "dropped", (0,), table, maxshape=(None,), chunks=(METADATA_CHUNK_ROWS,)
        )
        committed = group.create_dataset("committed", data=np.zeros(1, np.int64))
        group.attrs.update(
            pixel_format=spec.pixel_format.value,
            bit_depth=spec.pixel_format.bits,
            frame_shape=(height, width),
            compression=encoding.compression.value,
            packing=encoding.packing.value,
            **{key: value for key, value in spec.attrs.items() if value is not None},
        )
        return {
            "name": name,
            "frames": frames,
            "metadata": metadata,
            "dropped": dropped,
            "committed": committed,
            "table": table,
            "count": 0,  # frames accepted (indices given out)
            "written": 0,  # frames whose chunk and row are written
            "flushed": 0,  # frames committed in the file
            "n_dropped": 0,
            "dtype": spec.pixel_format.dtype,
            "shape": (height, width),
            "encoding": encoding,
        }

    def committed(self, stream: str | None = None) -> int:
        """Frames of ``stream`` accepted so far (written, or queued to be written)."""
        return self._stream(stream)["count"]

    def flushed(self, stream: str | None = None) -> int:
        """Frames of ``stream`` committed in the file (flushed: they survive a SIGKILL)."""
        return self._stream(stream)["flushed"]

    def _stream(self, stream: str | None) -> dict:
        if stream is None:
            if len(self._streams) != 1:
                raise ValueError(f"name the stream: one of {sorted(self._streams)}")
            return next(iter(self._streams.values()))
        try:
            return self._streams[stream]
        except KeyError:
            raise ValueError(f"no stream {stream!r}; have {sorted(self._streams)}") from None

    @property
    def failure(self) -> BaseException | None:
        """The error that stopped the writes (a full disk), or None."""
        if self._failure is None and self._queue is not None and self._queue.failure:
            self._failure = self._queue.failure
        return self._failure

    def _raise_failure(self) -> None:
        error = self.failure
        if error is None:
            return
        committed = ", ".join(f"{s['name']}: {s['flushed']}" for s in self._streams.values())
        if _is_disk_full(error):
            raise RecordingDiskFull(
                f"the disk holding {self.path} is full: the recording stopped; the file is "
                f"valid and holds the committed frames ({committed})"
            ) from error
        raise RecordingError(
            f"writing {self.path} failed ({error!r}): the recording stopped; the file holds "
            f"the committed frames ({committed})"
        ) from error

    def write(self, frame: Frame, stream: str | None = None, take: bool = False) -> int | None:
        """Append ``frame`` (and its metadata row); returns its index in the stream, or None
        when the write queue was full and the frame was dropped (counted, its row recorded).

        With ``take=True`` the recorder takes the frame over instead of copying it (a ring
        slot read with ``copy=False`` stays in use until it is encoded) and releases it when
        done, in every case, errors included: the caller must not release or reuse it.

        Raises
        ------
        ValueError
            The frame's shape or dtype differs from the stream's, or the recorder is closed.
        RecordingDiskFull, RecordingError
            An earlier write failed (the disk is full); the file holds the committed frames.
        """
        if not take:
            return self._write(frame, stream, False)
        try:
            return self._write(frame, stream, True)
        except BaseException:
            frame.release()
            raise

    def _write(self, frame: Frame, stream: str | None, take: bool) -> int | None:
        if self._file is None:
            raise ValueError("the recorder is closed")
        state = self._stream(stream)
        data = frame.data
        if data.shape != state["shape"] or data.dtype != state["dtype"]:
            raise ValueError(
                f"frame {data.shape} {data.dtype} does not match the stream's "
                f"{state['shape']} {state['dtype']}"
            )
        self._raise_failure()
        row = frame.metadata_row(state["table"])
        if self._queue is None:
            index = state["count"]
            start = time.perf_counter()
            payload = self._encode(state["name"], data)
            self._sync_encode_seconds += time.perf_counter() - start
            try:
                self._store(state["name"], index, payload, row)
            except BaseException as error:
                self._failure = error
                self._raise_failure()
                raise
            state["count"] = index + 1
            if take:
                frame.release()
            return index
        name = state["name"]
        if take:
            taken = self._queue.take_slot(name, block=self.block_when_full)
            buffer = None
        else:
            buffer = self._queue.take_buffer(name, block=self.block_when_full)
            taken = buffer is not None
        if not taken:
            state["n_dropped"] += 1
            self._queue.submit(Job(name, None, None, row))
            if take:
                frame.release()
            return None
        if buffer is not None:
            np.copyto(buffer, data)
        index = state["count"]
        state["count"] = index + 1
        job = Job(name, index, buffer, row, frame=frame if take else None, slot=True)
        self._queue.submit(job)
        return index

    # encoder and writer (the caller's thread, or the WriteQueue's threads) --------------------

    def _encode(self, name: str, data: np.ndarray):
        encoding = self._streams[name]["encoding"]
        if not data.flags.c_contiguous:
            data = np.ascontiguousarray(data)
        return encode_frame(encoding, data, self._plugin)

    def write_chunk(self, frames: h5py.Dataset, index: int, payload) -> None:
        """Store one frame's chunk at ``index`` (the one place frame bytes go to the file;
        tests inject a full disk here)."""
        frames.id.write_direct_chunk((index, 0, 0), payload)

    def _store(self, name: str, index: int, payload, row) -> None:
        state = self._streams[name]
        nbytes = payload.nbytes if isinstance(payload, np.ndarray) else len(payload)
        if self.throttle is not None:
            self.throttle.consume(nbytes)
        start = time.perf_counter()
        frames, metadata = state["frames"], state["metadata"]
        frames.resize(index + 1, axis=0)
        self.write_chunk(frames, index, payload)
        metadata.resize(index + 1, axis=0)
        metadata[index] = row
        state["written"] = index + 1
        if state["written"] % self.flush_every == 0:
            self._flush(state)
        self.bytes_written += nbytes
        self.raw_bytes_written += int(np.prod(state["shape"])) * state["dtype"].itemsize
        self.write_seconds += time.perf_counter() - start

    def _store_drop(self, name: str, row) -> None:
        dropped = self._streams[name]["dropped"]
        count = dropped.shape[0]
        dropped.resize(count + 1, axis=0)
        dropped[count] = row
        dropped.flush()

    def _flush(self, state: dict) -> None:
        state["frames"].flush()
        state["metadata"].flush()
        state["committed"][0] = state["written"]  # only after the frames and rows are out
        state["committed"].flush()
        state["flushed"] = state["written"]

    def flush(self) -> None:
        """Write every queued frame, then flush and raise ``committed`` (not after a failed
        write: the file keeps what was committed before it)."""
        if self._queue is not None:
            self._queue.wait_idle()
        if self.failure is None:
            for state in self._streams.values():
                self._flush(state)

    def close(self) -> None:
        """Write what is queued, flush, close the file and release the writer lock
        (idempotent). After a failed write nothing more is flushed (see the module doc)."""
        if self._file is None:
            return
        try:
            if self._queue is not None:
                self._queue.close()
            if self.failure is None:
                try:
                    for state in self._streams.values():
                        self._flush(state)
                except OSError as error:  # the disk filled at the very end
                    self._failure = error
        finally:
            try:
                self._file.close()
            except OSError:
                if self._failure is None:
                    raise
            finally:
                self._file = None
                self._lock.release()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # figures ----------------------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Frames the recorder dropped (no free buffer in its queue), all streams."""
        return sum(state["n_dropped"] for state in self._streams.values())

    @property
    def lost(self) -> int:
        """Frames accepted but never written because a write failed."""
        return self._queue.lost if self._queue is not None else 0

    @property
    def encode_seconds(self) -> float:
        """Seconds spent packing/compressing (encoder thread, or the caller's)."""
        queued = self._queue.encode_seconds if self._queue is not None else 0.0
        return self._sync_encode_seconds + queued

    @property
    def throttle_seconds(self) -> float:
        """Seconds the writer waited on the throttle."""
        return self.throttle.waited_s if self.throttle is not None else 0.0

    @property
    def compression_ratio(self) -> float:
        """Frame bytes over stored bytes of the frames written so far (1.0 before any)."""
        return self.raw_bytes_written / self.bytes_written if self.bytes_written else 1.0

    @property
    def throughput_MBps(self) -> float:
        """Frame bytes per second of the recorder's busiest stage, MB/s: what it could take.

        Synchronous: encode + throttle + write seconds together; with a write queue, the
        encoder and the writer (write + throttle seconds) run side by side, so the slower one.
        """
        writer = self.write_seconds + self.throttle_seconds
        busy = (
            writer + self.encode_seconds
            if self._queue is None
            else max(writer, self.encode_seconds)
        )
        return self.raw_bytes_written / max(busy, 1e-12) / 1e6

    @property
    def write_MBps(self) -> float:
        """Stored (compressed) bytes per second the writer spent writing and throttled, MB/s:
        the write rate the file's disk (or the throttle) gave."""
        writer = self.write_seconds + self.throttle_seconds
        return self.bytes_written / max(writer, 1e-12) / 1e6

    @property
    def thread_ids(self) -> list[int]:
        """Native ids of the encoder and writer threads (empty when synchronous)."""
        return list(self._queue.thread_ids) if self._queue is not None else []


def _encoding(spec: StreamSpec, compression, packing, clevel, threads) -> FrameEncoding:
    if packing is Packing.MONO12P and spec.pixel_format.bits > 12:
        raise ValueError(
            f"packing='mono12p' holds 12-bit pixels; this stream is {spec.pixel_format.value} "
            f"({spec.pixel_format.bits} bits): record it unpacked or set the camera to Mono12"
        )
    return FrameEncoding(
        spec.frame_shape, spec.pixel_format.dtype, compression, packing, clevel, threads
    )


def _is_disk_full(error: BaseException) -> bool:
    return getattr(error, "errno", None) == errno.ENOSPC or "No space left" in str(error)


def check_disk_space(path, n_bytes: int, compression=Compression.NONE) -> int:
    """Free bytes on the disk that holds ``path``; warns (:class:`DiskSpaceWarning`) when
    fewer than ``n_bytes`` (the recording's uncompressed size: an upper bound when
    compressed, since noise can defeat a lossless codec)."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    free = shutil.disk_usage(folder).free
    if free < n_bytes:
        codec = Compression.parse(compression)
        note = (
            f" (uncompressed; {codec.value} typically stores 1.5-2.7x less, but noise can "
            "defeat it)"
            if codec is not Compression.NONE
            else ""
        )
        warnings.warn(
            f"{folder} has {free / 1e9:.2f} GB free but the recording may need "
            f"{n_bytes / 1e9:.2f} GB{note}; it will stop cleanly, with a valid file, when the "
            "disk fills",
            DiskSpaceWarning,
            stacklevel=3,
        )
    return free


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
    if n_frames is None and seconds is None:
        raise ValueError("give n_frames or seconds (or both)")
    spec = StreamSpec.for_camera(camera, extra_fields)
    expected = _expected_frames(camera, n_frames, seconds)
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


def _expected_frames(camera, n_frames, seconds) -> int | None:
    rate = getattr(camera, "frame_rate_hz", None)
    by_time = None
    if seconds is not None and rate:
        try:
            by_time = int(np.ceil(float(seconds) * float(rate)))
        except (TypeError, ValueError):
            by_time = None
    counts = [c for c in (n_frames, by_time) if c is not None]
    return min(counts) if counts else None
