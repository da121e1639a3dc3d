"""``FrameRing``: preallocated frame slots between an acquisition thread and a consumer.

    producer (acquisition thread)          consumer (recorder, live view)
    acquire() -> slot.array  (write in place)
    commit(slot, info) ------ FIFO of committed slots ------> read() -> slot (view, no copy)
    abort(slot)  (incomplete frame)                            release(slot)

``n_slots`` arrays of one shape and dtype are allocated once (``slots``); frames are written
into them and read from them in place (zero-copy). Every slot is in one state: free, being
written, committed (waiting in the FIFO) or being read. When the producer needs a slot and
none is free, the :class:`OverflowPolicy` decides:

=================  ==========================================================================
``BLOCK``          wait for the consumer to release one: nothing is overwritten (calibration,
                   recording); upstream buffers (the device) take the back-pressure
``DROP_OLDEST``    overwrite the oldest committed, unread frame (live view with history)
``NEWEST_ONLY``    on every commit, older unread frames are dropped: ``read`` always returns
                   the newest frame (live display)
=================  ==========================================================================

Slots held by the reader are never overwritten. Every frame lost to the ring is counted in
``stats.overwritten`` (pymmcore-plus' overflow accounting), so at any time::

    committed == delivered + overwritten + pending
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

_FREE, _WRITING, _READY, _READING = range(4)


class OverflowPolicy(enum.Enum):
    """What the ring does when the producer finds no free slot (see module doc)."""

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    NEWEST_ONLY = "newest_only"

    @classmethod
    def parse(cls, value: OverflowPolicy | str) -> OverflowPolicy:
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ValueError(
                f"unknown overflow policy {value!r}; expected one of {[p.value for p in cls]}"
            ) from None


class RingClosed(Exception):
    """The ring was closed: no more frames will be committed (raised once it is empty)."""


@dataclass
class Slot:
    """A slot lent by the ring. ``array`` is a view of the ring's memory.

    Attributes
    ----------
    index : int
        Slot number, 0 <= index < n_slots.
    array : numpy.ndarray
        The slot's memory, shape and dtype of the ring.
    seq : int
        Commit number (0, 1, ...); -1 while the producer writes.
    info : Any
        What the producer committed with the frame (e.g. its metadata).
    """

    index: int
    array: np.ndarray
    seq: int = -1
    info: Any = None


@dataclass(frozen=True)
class RingStats:
    """Counters of a ring. ``committed == delivered + overwritten + pending``."""

    committed: int
    delivered: int
    overwritten: int
    aborted: int
    pending: int
    max_pending: int


class FrameRing:
    """``n_slots`` preallocated frames of ``shape`` and ``dtype``, thread-safe.

    Parameters
    ----------
    n_slots : int
        Number of slots (>= 2). Memory: ``n_slots * prod(shape) * itemsize`` bytes.
    shape : tuple of int
        Frame shape, e.g. (3000, 4000).
    dtype : numpy dtype
    policy : OverflowPolicy or str
    """

    def __init__(self, n_slots: int, shape, dtype, policy=OverflowPolicy.BLOCK):
        if int(n_slots) != n_slots or n_slots < 2:
            raise ValueError(f"n_slots must be an integer >= 2, got {n_slots!r}")
        self.policy = OverflowPolicy.parse(policy)
        self.slots = np.empty((int(n_slots), *tuple(int(s) for s in shape)), dtype=dtype)
        # Touch every page now, before acquisition starts. numpy asks for transparent huge
        # pages on large arrays (madvise), and a first touch during streaming then pays the
        # kernel's direct compaction: measured 100-350 ms stalls of the acquisition thread in
        # the first 1-2 s of a 4000x3000 stream (device drops), none with the pages touched.
        self.slots.fill(0)
        self._state = [_FREE] * int(n_slots)
        self._ready: deque[Slot] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._committed = self._delivered = self._overwritten = self._aborted = 0
        self._max_pending = 0

    @property
    def n_slots(self) -> int:
        return self.slots.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.slots.shape[1:]

    @property
    def dtype(self) -> np.dtype:
        return self.slots.dtype

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def stats(self) -> RingStats:
        with self._cond:
            return RingStats(
                self._committed,
                self._delivered,
                self._overwritten,
                self._aborted,
                len(self._ready),
                self._max_pending,
            )

    # producer side ------------------------------------------------------------------------

    def acquire(self, timeout: float | None = None) -> Slot:
        """A slot to write the next frame into (see the policy in the module doc).

        Raises
        ------
        TimeoutError
            No slot within ``timeout`` seconds (BLOCK, or every slot held by the reader).
        RingClosed
            The ring was closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise RingClosed("the frame ring is closed")
                if _FREE in self._state:
                    index = self._state.index(_FREE)
                    break
                if self._ready and self.policy is not OverflowPolicy.BLOCK:
                    index = self._ready.popleft().index
                    self._overwritten += 1
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no free slot in the frame ring within {timeout} s")
                self._cond.wait(remaining)
            self._state[index] = _WRITING
            return Slot(index, self.slots[index])

    def commit(self, slot: Slot, info: Any = None) -> int:
        """Publish a written slot with ``info``; returns its commit number (seq)."""
        with self._cond:
            self._check_state(slot, _WRITING, "commit")
            if self.policy is OverflowPolicy.NEWEST_ONLY:
                while self._ready:
                    self._state[self._ready.popleft().index] = _FREE
                    self._overwritten += 1
            slot.seq, slot.info = self._committed, info
            self._committed += 1
            self._state[slot.index] = _READY
            self._ready.append(slot)
            self._max_pending = max(self._max_pending, len(self._ready))
            self._cond.notify_all()
            return slot.seq

    def abort(self, slot: Slot) -> None:
        """Give back a slot without publishing it (an incomplete or failed frame)."""
        with self._cond:
            self._check_state(slot, _WRITING, "abort")
            self._state[slot.index] = _FREE
            self._aborted += 1
            self._cond.notify_all()

    # consumer side ------------------------------------------------------------------------

    def read(self, timeout: float | None = None) -> Slot:
        """The oldest committed slot (the newest under NEWEST_ONLY), held until released.

        Raises
        ------
        TimeoutError
            Nothing committed within ``timeout`` seconds.
        RingClosed
            The ring is closed and every committed frame was read.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._ready:
                if self._closed:
                    raise RingClosed("the frame ring is closed and empty")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no frame in the ring within {timeout} s")
                self._cond.wait(remaining)
            slot = self._ready.popleft()
            self._state[slot.index] = _READING
            self._delivered += 1
            return slot

    def release(self, slot: Slot) -> None:
        """Return a slot obtained from :meth:`read`."""
        with self._cond:
            self._check_state(slot, _READING, "release")
            self._state[slot.index] = _FREE
            self._cond.notify_all()

    def close(self) -> None:
        """No more commits: wake every waiter. Readers drain what is committed first."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _check_state(self, slot: Slot, expected: int, action: str) -> None:
        if not 0 <= slot.index < self.n_slots or self._state[slot.index] != expected:
            names = ("free", "being written", "committed", "being read")
            raise RuntimeError(
                f"cannot {action} slot {slot.index}: it is "
                f"{names[self._state[slot.index]] if 0 <= slot.index < self.n_slots else 'unknown'}"
            )

    def __repr__(self) -> str:
        return (
            f"FrameRing(n_slots={self.n_slots}, shape={self.shape}, dtype={self.dtype}, "
            f"policy={self.policy.value})"
        )
