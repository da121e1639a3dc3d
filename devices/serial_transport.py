"""``SerialTransport``: command/reply lines over a pyserial port.

The port comes from ``serial.serial_for_url`` (a device path, ``COM3``, ``socket://``,
``sim://`` for the instrument simulators). The retry loop, the lock, the echo and the errors
are shared with the VISA transport (:class:`~hyplex.devices.transport.LineTransport`); this
module adds the pyserial byte level. ``SerialInstrument``, ``connect``, ``expect_echo``,
``refusing`` and ``wait_until`` are the transport-agnostic helpers of
:mod:`hyplex.devices.transport`, importable from here as before.
"""

from __future__ import annotations

from hyplex.devices.instrument_driver import Instrument, connect, refusing, wait_until
from hyplex.devices.transport import LineTransport, expect_echo
from hyplex.optics.extras import require

serial = require("serial", feature="the serial instruments")

if "hyplex.devices" not in serial.protocol_handler_packages:
    serial.protocol_handler_packages.append("hyplex.devices")  # sim:// (protocol_sim.py)

#: the driver base class under its former name (drivers are transport-agnostic now)
SerialInstrument = Instrument

__all__ = [
    "SerialInstrument",
    "SerialTransport",
    "connect",
    "expect_echo",
    "refusing",
    "wait_until",
]


class SerialTransport(LineTransport):
    """Command/reply lines over a serial port.

    Parameters
    ----------
    url : str
        Anything ``serial.serial_for_url`` opens: ``/dev/ttyUSB0``, ``sim://monochromator``.
    name : str
        Instrument name for error messages.
    baudrate : int
        Bit/s (8N1).
    command_terminator, reply_terminator, timeout_s, retries, encoding, echo
        As for :class:`~hyplex.devices.transport.LineTransport`.
    """

    def __init__(
        self,
        url: str,
        name: str = "instrument",
        baudrate: int = 9600,
        command_terminator: bytes = b"\r\n",
        reply_terminator: bytes = b"\r\n",
        timeout_s: float = 1.0,
        retries: int = 2,
        encoding: str = "ascii",
        echo: bool = False,
    ):
        super().__init__(
            url, name, command_terminator, reply_terminator, timeout_s, retries, encoding, echo
        )
        self.port = serial.serial_for_url(url, baudrate=baudrate, timeout=self.timeout_s)

    def _discard_input(self, after_failure: bool) -> None:
        if after_failure:
            self._drain(lambda: self.port.in_waiting, self.port.reset_input_buffer)
        else:
            self.port.reset_input_buffer()

    def _send_bytes(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def _read_line(self) -> bytes:
        return self.port.read_until(self.reply_terminator)

    def close(self) -> None:
        with self.lock:
            if self.port.is_open:
                self.port.close()
