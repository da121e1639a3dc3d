"""``WriteQueue``: the recorder's bounded hand-off from the caller to an encoder thread and a
writer thread, so that compression and disk writes never run on the caller's thread.

::

    caller (reads the camera)        encoder thread                writer thread
    ---------------------------      --------------------------    -------------------------
    take a free buffer (pool of      pack / compress the buffer    throttle, write the chunk
    queue_frames per stream) --copy  (Blosc2 threads) --> bounded  and its metadata row, flush,
    --> jobs (FIFO)                  queue of queue_frames chunks  raise `committed`; return
    none free: the frame is a DROP,                                the raw buffer when it was
    counted and its row kept                                       written as is

The caller's cost per frame is one copy into a pooled buffer (no allocation), or nothing when
it hands the frame itself over (``Job.frame``: a ring slot read with ``copy=False``, released
by the queue once encoded, or once written when stored as is). ``queue_frames`` slots per
stream bound the frames in flight and the chunk queue bounds the encoded ones, so memory stays
at ``queue_frames`` frames per stream plus ``queue_frames`` chunks whatever the disk does. When
the writer falls behind (a slow disk), the chunk queue fills, the encoder waits, the pool
empties and the next frame is dropped: never a silent stall of the acquisition, and every
drop is counted and recorded (its metadata row goes to the stream's ``dropped`` table, in
order with the frames).

Jobs keep their order through both threads (one encoder, one writer), so frame indices in
the file are the order of :meth:`WriteQueue.submit`. An exception in the writer (a full disk)
stops all writing: later jobs are discarded (counted in ``lost``) and the error is kept for
the caller (:attr:`WriteQueue.failure`); an exception in the encoder is handled the same way.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["WriteQueue", "Job"]

_STOP = object()


@dataclass
class Job:
    """One frame (or one drop) on its way to the file."""

    stream: str
    index: int | None  # frame index in the stream; None for a drop
    buffer: np.ndarray | None  # pooled copy of the frame; None for a drop or a handed frame
    row: np.ndarray  # metadata row
    payload: object = None  # what the encoder made of the pixels
    frame: object = None  # a Frame handed over (its data are the pixels; released here)
    slot: bool = False  # holds one of the stream's queue slots

    @property
    def pixels(self):
        return self.frame.data if self.frame is not None else self.buffer


class WriteQueue:
    """The encoder and writer threads of a recorder (see the module doc).

    Parameters
    ----------
    shapes : mapping of str to (shape, dtype)
        Frame shape (H, W) and dtype of each stream, for its buffer pool.
    queue_frames : int
        Raw buffers per stream and encoded chunks in flight (>= 1).
    encode : callable(stream, buffer) -> payload
        Runs on the encoder thread; may return ``buffer`` itself (stored as is).
    store : callable(stream, index, payload, row)
        Runs on the writer thread: write one frame's chunk and row.
    store_drop : callable(stream, row)
        Runs on the writer thread: record one dropped frame's row.
    """

    def __init__(
        self,
        shapes,
        queue_frames: int,
        encode: Callable,
        store: Callable,
        store_drop: Callable,
    ):
        if int(queue_frames) != queue_frames or queue_frames < 1:
            raise ValueError(f"queue_frames must be an integer >= 1, got {queue_frames!r}")
        self.queue_frames = int(queue_frames)
        self._encode, self._store, self._store_drop = encode, store, store_drop
        self._shapes = dict(shapes)
        self._slots = {name: threading.Semaphore(self.queue_frames) for name in shapes}
        self._free: dict[str, list] = {name: [] for name in shapes}  # buffers made so far
        self._jobs: queue.Queue = queue.Queue()  # bounded by the pools
        self._chunks: queue.Queue = queue.Queue(maxsize=self.queue_frames)
        self.failure: BaseException | None = None
        self.dropped = 0
        self.lost = 0  # accepted but never written (after a failure)
        self.encode_seconds = 0.0
        self.thread_ids: list[int] = []
        self._closed = False
        self._unfinished = 0  # jobs submitted and not yet through the writer
        self._idle = threading.Condition()
        self._encoder = threading.Thread(target=self._run_encoder, name="hyplex-encoder")
        self._writer = threading.Thread(target=self._run_writer, name="hyplex-writer")
        for thread in (self._encoder, self._writer):
            thread.daemon = True
            thread.start()

    # caller side ----------------------------------------------------------------------------

    def take_slot(self, stream: str, block: bool = False, timeout: float | None = None) -> bool:
        """Take one of ``stream``'s ``queue_frames`` slots; False when none is free (a drop)
        and not ``block``."""
        return self._slots[stream].acquire(blocking=block, timeout=timeout if block else None)

    def take_buffer(self, stream: str, block: bool = False, timeout: float | None = None):
        """A slot and a free buffer of ``stream`` (made on first use, reused after), or None
        when no slot is free (a drop) and not ``block``."""
        if not self.take_slot(stream, block, timeout):
            return None
        free = self._free[stream]
        try:
            return free.pop()
        except IndexError:
            shape, dtype = self._shapes[stream]
            return np.empty(shape, dtype)

    def submit(self, job: Job) -> None:
        """Queue a frame (``job.buffer`` from :meth:`take_buffer`, filled) or a drop."""
        if self._closed:
            raise ValueError("the write queue is closed")
        if job.index is None:
            self.dropped += 1
        with self._idle:
            self._unfinished += 1
        self._jobs.put(job)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every job submitted so far went through the writer (written, recorded
        or discarded after a failure); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._unfinished == 0, timeout)

    def close(self) -> None:
        """Write everything queued, then stop both threads (idempotent)."""
        if not self._closed:
            self._closed = True
            self._jobs.put(_STOP)
        self._encoder.join()
        self._writer.join()

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet through the writer."""
        return self._unfinished

    # threads ----------------------------------------------------------------------------------

    def _give_back(self, job: Job) -> None:
        if job.buffer is not None:
            self._free[job.stream].append(job.buffer)
            job.buffer = None
        if job.frame is not None:
            job.frame.release()
            job.frame = None
        if job.slot:
            job.slot = False
            self._slots[job.stream].release()

    def _run_encoder(self) -> None:
        self.thread_ids.append(threading.get_native_id())
        while True:
            job = self._jobs.get()
            if job is _STOP:
                self._chunks.put(_STOP)
                return
            pixels = job.pixels
            if pixels is not None and self.failure is None:
                try:
                    start = time.perf_counter()
                    job.payload = self._encode(job.stream, pixels)
                    self.encode_seconds += time.perf_counter() - start
                except BaseException as error:  # noqa: BLE001 (kept for the caller)
                    self.failure = self.failure or error
            if job.payload is not pixels:
                self._give_back(job)  # the chunk is a new object: the pixels are free
            self._chunks.put(job)

    def _run_writer(self) -> None:
        self.thread_ids.append(threading.get_native_id())
        while True:
            job = self._chunks.get()
            if job is _STOP:
                return
            try:
                if self.failure is not None:
                    if job.index is not None:
                        self.lost += 1
                    continue
                if job.index is None:
                    self._store_drop(job.stream, job.row)
                else:
                    self._store(job.stream, job.index, job.payload, job.row)
            except BaseException as error:  # noqa: BLE001 (kept for the caller)
                self.failure = error
                self.lost += job.index is not None
            finally:
                job.payload = None
                self._give_back(job)
                with self._idle:
                    self._unfinished -= 1
                    self._idle.notify_all()
