"""The figures of a :class:`~hyplex.devices.recorder.Recorder`: drops, losses, seconds per
stage, compression ratio and throughput.

:class:`RecorderStats` is a mixin: the class it is mixed into keeps the counters and states
it reads (listed in its doc); the recorder updates them as it writes.
"""

from __future__ import annotations

__all__ = ["RecorderStats"]


class RecorderStats:
    """Read-only figures of a recorder, from the attributes it keeps:

    - ``bytes_written``, ``raw_bytes_written``: stored and frame bytes of the frames written;
    - ``write_seconds``: seconds in the chunk/row writes; ``_sync_encode_seconds``: seconds
      encoding in the caller's thread;
    - ``throttle``: its :class:`~hyplex.devices.throttle.TokenBucket`, or None;
    - ``_queue``: its :class:`~hyplex.devices.write_queue.WriteQueue`, or None;
    - ``_streams``: name -> the stream's state (``n_dropped``: frames dropped).
    """

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
    def _writer_seconds(self) -> float:
        """Seconds of the writer stage: chunk/row writes plus throttle waits."""
        return self.write_seconds + self.throttle_seconds

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
        writer = self._writer_seconds
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
        return self.bytes_written / max(self._writer_seconds, 1e-12) / 1e6

    @property
    def thread_ids(self) -> list[int]:
        """Native ids of the encoder and writer threads (empty when synchronous)."""
        return list(self._queue.thread_ids) if self._queue is not None else []
