"""``VisaTransport``: command/reply lines over a VISA session (pyvisa), beside the serial one.

Thorlabs PM100USB / PM100D power meters connect over USB with the USB Test & Measurement
Class (USB-TMC) and have no serial port; the Cornerstone 130B/260B has USB-TMC as well as
RS-232 (Cornerstone 260B manual, Appendix I, section 15.1). VISA reaches all of them through
one resource-name syntax, and the pure-Python ``pyvisa-py`` backend (the default here,
``"@py"``) needs no vendor library:

======================================  ==========================  =====================
resource name                           link                        pyvisa-py needs
======================================  ==========================  =====================
``ASRL/dev/ttyUSB0::INSTR``, ``ASRL3``  RS-232 (baud rate applies)  pyserial
``USB0::0x1313::0x8072::P20...::INSTR``  USB-TMC                     pyusb + libusb
``TCPIP::host::INSTR``                  VXI-11 / LXI over Ethernet  (nothing)
======================================  ==========================  =====================

The transport keeps the behaviour of :class:`~hyplex.devices.transport.LineTransport`
(lock, terminators, timeouts and retries, echo, clear errors). Reads stop at the last byte of
the reply terminator (VISA's termination character) or at a USB-TMC end-of-message; a read
that times out returns nothing (VISA drops the partial bytes). Before a retry, stale input is
discarded: an ``ASRL`` session flushes its receive buffer, a message-based USB/TCPIP session
sends a device clear (IEEE 488.2 *Device Clear*, which empties the instrument's output
queue).

Tests reach it two ways: pyvisa-sim with the YAML description of a PM100
(``tests/data/visa_instruments.yaml``), and pyvisa-py's ``ASRL`` path to a simulator served
on a pseudo-terminal (:class:`~hyplex.devices.pty_bridge.PtyBridge`).
"""

from __future__ import annotations

from hyplex.devices.errors import InstrumentError
from hyplex.devices.transport import LineTransport
from hyplex.optics.extras import require

#: pyvisa backend used unless one is named: the pure-Python pyvisa-py
DEFAULT_BACKEND = "@py"


def _pyvisa():
    return require("pyvisa", extra="devices", feature="VISA instruments (USB-TMC, TCPIP, ASRL)")


class VisaTransport(LineTransport):
    """Command/reply lines over a VISA message-based session.

    Parameters
    ----------
    url : str
        VISA resource name (``ASRL/dev/ttyUSB0::INSTR``, ``USB0::...::INSTR``,
        ``TCPIP::host::INSTR``).
    name, command_terminator, reply_terminator, timeout_s, retries, encoding, echo
        As for :class:`~hyplex.devices.transport.LineTransport`.
    baudrate : int
        Bit/s, for ``ASRL`` resources only.
    backend : str, optional
        pyvisa backend: ``"@py"`` (default, pyvisa-py), ``"file.yaml@sim"`` (pyvisa-sim),
        ``"@ivi"`` (a vendor VISA).
    resource_manager : pyvisa.ResourceManager, optional
        Shared manager (the backend is then ignored); by default the transport opens and
        closes its own.
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
        backend: str | None = None,
        resource_manager=None,
    ):
        super().__init__(
            url, name, command_terminator, reply_terminator, timeout_s, retries, encoding, echo
        )
        pyvisa = _pyvisa()
        self._errors = pyvisa.errors
        self._constants = pyvisa.constants
        self._own_manager = resource_manager is None
        try:
            self.manager = resource_manager or pyvisa.ResourceManager(backend or DEFAULT_BACKEND)
            self.resource = self.manager.open_resource(url)
        except (self._errors.Error, ValueError, OSError) as error:
            if self._own_manager and hasattr(self, "manager"):
                self.manager.close()
            raise InstrumentError(
                f"{name}: cannot open VISA resource {url!r} ({error}); expected e.g. "
                "ASRL/dev/ttyUSB0::INSTR, USB0::<vendor>::<product>::<serial>::INSTR or "
                "TCPIP::<host>::INSTR"
            ) from error
        resource = self.resource
        resource.timeout = max(round(self.timeout_s * 1000), 1)  # ms
        resource.write_termination = ""  # the transport appends its own
        resource.read_termination = reply_terminator.decode(encoding)  # the termchar
        self.is_serial = str(url).upper().startswith("ASRL")
        if self.is_serial:
            resource.baud_rate = int(baudrate)

    def _discard_input(self, after_failure: bool) -> None:
        constants = self._constants
        try:
            if self.is_serial:
                resource = self.resource

                def discard():
                    resource.flush(constants.BufferOperation.discard_read_buffer)

                if after_failure:
                    self._drain(lambda: resource.bytes_in_buffer, discard)
                else:
                    discard()
            elif after_failure:
                self.resource.clear()  # device clear: the output queue is emptied
        except (self._errors.Error, NotImplementedError):
            pass  # a backend without flush/clear (pyvisa-sim): nothing is buffered there

    def _send_bytes(self, data: bytes) -> None:
        try:
            self.resource.write_raw(data)
        except self._errors.VisaIOError as error:
            raise InstrumentError(f"{self.name} at {self.url}: write failed ({error})") from error

    def _read_line(self) -> bytes:
        try:
            data = bytes(self.resource.read_raw())
        except self._errors.VisaIOError as error:
            if error.error_code == self._constants.StatusCode.error_timeout:
                return b""
            raise InstrumentError(f"{self.name} at {self.url}: read failed ({error})") from error
        if data.endswith(self.reply_terminator):
            return data
        if data.endswith(self.reply_terminator[-1:]):  # the termchar alone (LF for CR LF)
            return data[:-1] + self.reply_terminator
        if data and not self.is_serial:  # a USB-TMC/TCPIP message ends with END
            return data + self.reply_terminator
        return data

    def close(self) -> None:
        with self.lock:
            try:
                self.resource.close()
            except (self._errors.Error, AttributeError):
                pass
            if self._own_manager:
                try:
                    self.manager.close()
                except self._errors.Error:
                    pass
