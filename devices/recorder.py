"""``Recorder``: stream frames and their metadata to HDF5, safe against a killed process,
losslessly compressed and off the caller's thread if asked.

The file format and its crash safety are :mod:`~hyplex.devices.recording_layout`'s, the
reader :class:`~hyplex.devices.recording.Recording`; ``StreamSpec``, the target and disk
checks and ``record`` are re-exported here from the modules they live in.

Where the work runs: with ``queue_frames=0`` (the default) :meth:`Recorder.write` encodes and
writes in the caller's thread. With ``queue_frames=K`` it only copies the frame into one of K
pooled buffers and returns; an encoder thread packs/compresses and a writer thread writes
(:class:`~hyplex.devices.write_queue.WriteQueue`). A frame that finds no free buffer is
dropped, counted (:attr:`Recorder.dropped`) and its metadata row recorded in ``dropped``.
``throttle_MBps`` holds the writer to a byte rate with a token bucket
(:class:`~hyplex.devices.throttle.TokenBucket`) around the chunk writes: a slow disk,
emulated on any machine.

A failed write (a full disk) stops the recording cleanly with a readable file of the
committed frames; the next :meth:`Recorder.write` raises :class:`RecordingDiskFull` (or
``RecordingError``): see :mod:`~hyplex.devices.recording_target`.

One writer per file: SWMR drops HDF5's own file lock, so the recorder holds an exclusive
``flock`` on ``<file>.lock`` from before it creates the file until it closes it
(:class:`~hyplex.devices.writer_lock.WriterLock`); a second recorder on the same file fails at
once with ``RecordingInUse`` naming the first (pid, host, command). The kernel drops the lock
when its process dies, so a recorder killed with SIGKILL blocks no one. An existing file is
refused (``RecordingExists``) unless ``overwrite=True``, which unlinks it and records into a
new file: a reader that still has the old one open keeps reading the old frames.
"""

from __future__ import annotations

import os
import time

import h5py
import numpy as np

from hyplex.devices.compression import Compression, Packing, PluginBlosc2, encode_frame
from hyplex.devices.frame import Frame
from hyplex.devices.record_camera import RecordingSummary, record
from hyplex.devices.recorder_stats import RecorderStats
from hyplex.devices.recording import Recording, export_frames
from hyplex.devices.recording_layout import (
    StreamSpec,
    create_stream,
    stream_encoding,
    write_file_attrs,
)
from hyplex.devices.recording_target import (
    DiskSpaceWarning,
    RecordingDiskFull,
    check_disk_space,
    check_target,
    stopped_error,
)
from hyplex.devices.throttle import TokenBucket
from hyplex.devices.write_queue import Job, WriteQueue
from hyplex.devices.writer_lock import WriterLock

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


class Recorder(RecorderStats):
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
    threads, encoders : int, optional
        Blosc2 threads per frame, and encoder threads compressing frames side by side
        (defaults: one encoder per core this process may use, up to 2, sharing the cores).
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
        encoders: int | None = None,
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
        cores = default_threads()
        self.encoders = min(cores, 2) if encoders is None else int(encoders)
        threads = max(cores // self.encoders, 1) if threads is None else threads
        self._encodings = {
            name: stream_encoding(spec, self.compression, self.packing, clevel, threads)
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
            write_file_attrs(self._file)
            self._streams = {
                name: create_stream(self._file, name, spec, self._encodings[name])
                for name, spec in self.specs.items()
            }
            self._file.swmr_mode = True  # every dataset exists: from here on, crash-consistent
            if queue_frames:
                shapes = {
                    name: (state["shape"], state["dtype"]) for name, state in self._streams.items()
                }
                self._queue = WriteQueue(
                    shapes, queue_frames, self._encode, self._store, self._store_drop,
                    encoders=1 if self.compression is Compression.NONE else self.encoders,
                )  # fmt: skip
        except BaseException:
            if self._file is not None:
                self._file.close()
                self._file = None
            self._lock.release()
            raise

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
        raise stopped_error(self.path, error, committed) from error

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
