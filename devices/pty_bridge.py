"""``PtyBridge``: serve an instrument simulator on a pseudo-terminal (``os.openpty``).

    driver --serial_for_url("/dev/pts/N")--> slave tty (termios, raw) == master fd <-- bridge
                                                                           thread: feed(sim)

The driver opens the slave side like any serial port, so the real pyserial termios path is
exercised. ``chunk_bytes`` splits each reply into pieces written ``chunk_delay_s`` apart: the
driver then sees partial reads, as from a slow instrument. POSIX only.
"""

from __future__ import annotations

import os
import select
import threading
import tty

from hyplex.devices.instrument_sim import InstrumentSimulator


class PtyBridge:
    """Run ``simulator`` behind a pseudo-terminal until :meth:`stop`.

    Parameters
    ----------
    simulator : InstrumentSimulator
    chunk_bytes : int
        Write replies in pieces of this many bytes (0: whole replies).
    chunk_delay_s : float
        Pause between pieces, s (real time).
    """

    def __init__(self, simulator: InstrumentSimulator, chunk_bytes: int = 0, chunk_delay_s=0.0):
        if chunk_bytes < 0 or chunk_delay_s < 0:
            raise ValueError("chunk_bytes and chunk_delay_s must be >= 0")
        self.simulator = simulator
        self.chunk_bytes, self.chunk_delay_s = int(chunk_bytes), float(chunk_delay_s)
        self.port: str | None = None
        self._master = self._slave = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Open the pty and start serving; returns the device path to open (``/dev/pts/N``)."""
        if self._thread is not None:
            raise RuntimeError("the bridge is already running")
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line editing, before any client opens it
        self.port = os.ttyname(self._slave)
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="hyplex-pty", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    def __enter__(self) -> PtyBridge:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:  # the fds were closed
                return
            reply = self.simulator.feed(data)
            step = self.chunk_bytes or max(len(reply), 1)
            for start in range(0, len(reply), step):
                if start and self.chunk_delay_s:
                    self._stop.wait(self.chunk_delay_s)
                os.write(self._master, reply[start : start + step])
