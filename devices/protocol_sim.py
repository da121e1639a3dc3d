"""pyserial URL handler ``sim://<kind>[?id=N]``: a serial port onto an instrument simulator.

pyserial finds it because ``serial_transport`` appends ``"hyplex.devices"`` to
``serial.protocol_handler_packages``; ``serial.serial_for_url("sim://monochromator")`` then
imports this module and instantiates :class:`Serial` (the pattern of pyserial's
``protocol_loop.py``). Writes go through ``simulator.feed``; replies wait in an input buffer.
Reads honour the port timeout on the simulator's clock, so with a VirtualClock a timeout
costs no wall time.
"""

from __future__ import annotations

import threading
import urllib.parse

from hyplex.devices.instrument_sim import InstrumentSimulator, resolve
from hyplex.optics.extras import require

_serialutil = require("serial.serialutil", feature="the simulated serial instruments")
PortNotOpenError = _serialutil.PortNotOpenError
SerialBase = _serialutil.SerialBase
SerialException = _serialutil.SerialException


class Serial(SerialBase):
    """A pyserial port whose far end is an :class:`InstrumentSimulator`."""

    def __init__(self, *args, **kwargs):
        self.simulator: InstrumentSimulator | None = None
        self._input = bytearray()
        self._input_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def open(self) -> None:
        if self.is_open:
            raise SerialException("port is already open")
        if self._port is None:
            raise SerialException("port must be configured before it can be used")
        self.simulator = self.from_url(self._port)
        self.is_open = True
        self.reset_input_buffer()

    def close(self) -> None:
        self.is_open = False
        super().close()

    def from_url(self, url: str) -> InstrumentSimulator:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "sim":
            raise SerialException(f"expected sim://<kind>[?id=N], got {url!r}")
        options = urllib.parse.parse_qs(parts.query)
        unknown = set(options) - {"id"}
        if unknown:
            raise SerialException(f"unknown option(s) {sorted(unknown)} in {url!r}")
        try:
            number = int(options["id"][0]) if "id" in options else None
            return resolve(parts.netloc, number)
        except ValueError as error:
            raise SerialException(f"{url!r}: {error}") from None

    def _reconfigure_port(self, *args, **kwargs) -> None:
        """Line settings mean nothing to a simulator."""

    @property
    def in_waiting(self) -> int:
        if not self.is_open:
            raise PortNotOpenError()
        with self._input_lock:
            return len(self._input)

    def read(self, size: int = 1) -> bytes:
        if not self.is_open:
            raise PortNotOpenError()
        with self._input_lock:
            data = bytes(self._input[:size])
            del self._input[:size]
        if len(data) < size and self._timeout:  # what the device never sent: wait it out
            self.simulator.clock.sleep(self._timeout)
        return data

    def write(self, data) -> int:
        if not self.is_open:
            raise PortNotOpenError()
        reply = self.simulator.feed(bytes(data))
        with self._input_lock:
            self._input += reply
        return len(data)

    def reset_input_buffer(self) -> None:
        if not self.is_open:
            raise PortNotOpenError()
        with self._input_lock:
            self._input.clear()

    def reset_output_buffer(self) -> None:
        if not self.is_open:
            raise PortNotOpenError()

    @property
    def out_waiting(self) -> int:
        return 0

    def _update_break_state(self) -> None: ...

    def _update_rts_state(self) -> None: ...

    def _update_dtr_state(self) -> None: ...

    @property
    def cts(self) -> bool:
        return True

    @property
    def dsr(self) -> bool:
        return True

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return True
