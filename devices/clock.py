"""Clocks: the host's monotonic clock, and a virtual clock so tests never sleep.

Simulated devices (camera, serial instruments) take their time from a :class:`Clock`. With
:class:`MonotonicClock` they run in real time (benchmarks, manual runs). With
:class:`VirtualClock`, ``sleep`` advances the time at once: a 30 fps stream of 100 frames
or a 2 s monochromator move takes no wall time, and the timestamps are exact.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """A source of time, in integer nanoseconds."""

    def now_ns(self) -> int:
        """Current time, ns (monotonic, arbitrary origin)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (>= 0) on this clock."""
        ...


class MonotonicClock:
    """The host's ``time.monotonic_ns`` and ``time.sleep``."""

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def __repr__(self) -> str:
        return "MonotonicClock()"


class VirtualClock:
    """A single simulated timeline: ``sleep(s)`` advances it by ``s`` immediately.

    Thread-safe. Every thread shares the one timeline, so two threads sleeping 1 s each
    advance it by 2 s: enough for simulators, which only compare ``now_ns`` with deadlines.

    Parameters
    ----------
    start_ns : int
        Initial time, ns.
    """

    def __init__(self, start_ns: int = 0):
        self._now_ns = int(start_ns)
        self._lock = threading.Lock()

    def now_ns(self) -> int:
        with self._lock:
            return self._now_ns

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"cannot sleep a negative time ({seconds} s)")
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        """Move the time forward by ``seconds`` (>= 0)."""
        if seconds < 0:
            raise ValueError(f"time only moves forward, got {seconds} s")
        with self._lock:
            self._now_ns += round(seconds * 1e9)

    def __repr__(self) -> str:
        return f"VirtualClock(now_ns={self.now_ns()})"
