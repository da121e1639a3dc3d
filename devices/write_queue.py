"""``WriteQueue``: the recorder's bounded hand-off from the caller to an encoder thread and a
writer thread, so that compression and disk writes never run on the caller's thread.

::

    caller (reads the camera)        encoder threads (1 or more)   writer thread
    ---------------------------      --------------------------    -------------------------
    take a free buffer (pool of      take a chunk slot (at most    take jobs in submission
    queue_frames per stream) --copy  queue_frames chunks exist),   order, wait until each is
    --> jobs (FIFO)                  pack / compress the buffer    encoded; throttle, write
    none free: the frame is a DROP,  (Blosc2 threads), mark the    the chunk and its row,
    counted and its row kept         job encoded                   flush, raise `committed`

The caller's cost per frame is one copy into a pooled buffer (no allocation), or nothing when
it hands the frame itself over (``Job.frame``: a ring slot read with ``copy=False``, released
by the queue once encoded, or once written when stored as is). ``queue_frames`` slots per
stream bound the frames in flight and ``queue_frames`` chunk slots bound the encoded ones, so
memory stays at ``queue_frames`` frames per stream plus ``queue_frames`` chunks whatever the
disk does. When the writer falls behind (a slow disk), the chunk slots run out, the encoders
wait, the pool empties and the next frame is dropped: never a silent stall of the
acquisition, and every drop is counted and recorded (its metadata row goes to the stream's
``dropped`` table, in order with the frames).

Several encoder threads compress several frames at once (a 24 MB frame costs 20-60 ms of CPU,
more than a 30 fps frame period on one core); the writer still takes the jobs in the order of
:meth:`WriteQueue.submit`, so frame indices in the file are that order. Encoders take their
chunk slot in job order (under one lock), so the oldest job always holds one and the writer,
which waits for it, cannot deadlock. An exception in the writer (a full disk)
stops all writing: later jobs are discarded (counted in ``lost``) and the error is kept for
the caller (:attr:`WriteQueue.failure`); an exception in the encoder is handled the same way.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

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
    encoded: threading.Event = field(default_factory=threading.Event)  # set: writer may take it

    @property
    def pixels(self):
        return self.frame.data if self.frame is not None else self.buffer


class WriteQueue:
    """The encoder threads and the writer thread of a recorder (see the module doc).

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
    encoders : int
        Encoder threads (>= 1); ``encode`` must be safe to call from that many at once.
    """

    def __init__(
        self,
        shapes,
        queue_frames: int,
        encode: Callable,
        store: Callable,
        store_drop: Callable,
        encoders: int = 1,
    ):
        if int(queue_frames) != queue_frames or queue_frames < 1:
            raise ValueError(f"queue_frames must be an integer >= 1, got {queue_frames!r}")
        if int(encoders) != encoders or encoders < 1:
            raise ValueError(f"encoders must be an integer >= 1, got {encoders!r}")
        self.queue_frames = int(queue_frames)
        self._encode, self._store, self._store_drop = encode, store, store_drop
        self._shapes = dict(shapes)
        self._slots = {name: threading.Semaphore(self.queue_frames) for name in shapes}
        self._free: dict[str, list] = {name: [] for name in shapes}  # buffers made so far
        self._jobs: queue.Queue = queue.Queue()  # frames to encode; bounded by the pools
        self._order: queue.Queue = queue.Queue()  # every job, in submission order (writer)
        self._chunk_slots = threading.Semaphore(self.queue_frames)  # encoded, not yet written
        self._take_lock = threading.Lock()  # encoders take jobs and chunk slots in order
        self._submit_lock = threading.Lock()  # the same order in both queues
        self.failure: BaseException | None = None
        self.dropped = 0
        self.lost = 0  # accepted but never written (after a failure)
        self.encode_seconds = 0.0
        self.thread_ids: list[int] = []
        self._closed = False
        self._unfinished = 0  # jobs submitted and not yet through the writer
        self._idle = threading.Condition()
        self._encoders = [
            threading.Thread(target=self._run_encoder, name=f"hyplex-encoder-{k}", daemon=True)
            for k in range(int(encoders))
        ]
        self._writer = threading.Thread(target=self._run_writer, name="hyplex-writer", daemon=True)
        for thread in (*self._encoders, self._writer):
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
        with self._submit_lock:
            if job.index is None:
                job.encoded.set()  # a drop has nothing to encode
            else:
                self._jobs.put(job)
            self._order.put(job)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every job submitted so far went through the writer (written, recorded
        or discarded after a failure); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._unfinished == 0, timeout)

    def close(self) -> None:
        """Write everything queued, then stop the encoder and writer threads (idempotent)."""
        if not self._closed:
            self._closed = True
            with self._submit_lock:
                for _ in self._encoders:
                    self._jobs.put(_STOP)
                self._order.put(_STOP)
        for thread in (*self._encoders, self._writer):
            thread.join()

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
            with self._take_lock:
                job = self._jobs.get()
                if job is _STOP:
                    return
                self._chunk_slots.acquire()  # in job order: see the module doc
            pixels = job.pixels
            if pixels is not None and self.failure is None:
                try:
                    start = time.perf_counter()
                    job.payload = self._encode(job.stream, pixels)
                    with self._idle:
                        self.encode_seconds += time.perf_counter() - start
                except BaseException as error:  # noqa: BLE001 (kept for the caller)
                    self.failure = self.failure or error
            if job.payload is not pixels:
                self._give_back(job)  # the chunk is a new object: the pixels are free
            job.encoded.set()

    def _run_writer(self) -> None:
        self.thread_ids.append(threading.get_native_id())
        while True:
            job = self._order.get()
            if job is _STOP:
                return
            job.encoded.wait()
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
                if job.index is not None:
                    self._chunk_slots.release()
                job.payload = None
                self._give_back(job)
                with self._idle:
                    self._unfinished -= 1
                    self._idle.notify_all()
