"""``TokenBucket``: hold a writer to a byte rate, to emulate a slower disk on any machine.

A token bucket (Turner, "New directions in communications (or which way to the information
age?)", IEEE Commun. Mag. 24(10), 1986; the shaper of RFC 2697/2698) fills at ``rate``
bytes per second up to ``burst`` bytes. A write of ``n`` bytes takes ``n`` tokens; when the
bucket holds fewer, the writer sleeps until the bucket has refilled the difference. Tokens
may go negative by one write (a frame of 24 MB larger than the burst is allowed at once and
paid for before the next write), so over any long run the bytes written never exceed
``burst + rate * t`` and the writer is not held back further than that:

    tokens(t) = min(burst, tokens(t0) + rate * (t - t0)),   wait = max(0, -tokens) / rate

The recorder calls :meth:`TokenBucket.consume` on its writer thread before every chunk it
writes (``Recorder(..., throttle_MBps=400)``; ``benchmarks/stream.py --throttle-mbps 400``),
so a throttled recording runs the real write path at a slow disk's pace.
"""

from __future__ import annotations

import math
import threading

from hyplex.devices.clock import Clock, MonotonicClock

__all__ = ["TokenBucket"]


class TokenBucket:
    """Rate limiter for bytes (see the module doc).

    Parameters
    ----------
    rate_bytes_per_s : float
        Sustained rate, bytes/s (> 0).
    burst_bytes : float, optional
        Bucket size, bytes (default: 0.05 s of ``rate``).
    clock : Clock, optional
        Time and sleep (default: monotonic; a ``VirtualClock`` makes tests instant).
    """

    def __init__(self, rate_bytes_per_s: float, burst_bytes: float | None = None, clock=None):
        rate = float(rate_bytes_per_s)
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate_bytes_per_s must be finite and > 0, got {rate_bytes_per_s!r}")
        burst = 0.05 * rate if burst_bytes is None else float(burst_bytes)
        if not (math.isfinite(burst) and burst >= 0):
            raise ValueError(f"burst_bytes must be finite and >= 0, got {burst_bytes!r}")
        self.rate, self.burst = rate, burst
        self.clock: Clock = clock or MonotonicClock()
        self._tokens = burst
        self._last_ns = self.clock.now_ns()
        self._lock = threading.Lock()
        self.waited_s = 0.0
        self.bytes = 0

    def consume(self, n_bytes: int) -> float:
        """Take ``n_bytes`` tokens, sleeping until the bucket can pay for them; returns the
        seconds slept."""
        if n_bytes < 0:
            raise ValueError(f"n_bytes must be >= 0, got {n_bytes}")
        with self._lock:
            now = self.clock.now_ns()
            self._tokens = min(self.burst, self._tokens + self.rate * (now - self._last_ns) * 1e-9)
            self._last_ns = now
            wait = max(0.0, n_bytes - self._tokens) / self.rate
            self._tokens -= n_bytes  # may go negative: the sleep below pays for it
            self.bytes += int(n_bytes)
            if wait > 0:
                self.clock.sleep(wait)
                self.waited_s += wait
        return wait
