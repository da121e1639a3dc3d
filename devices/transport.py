"""Line transports of the instrument drivers, and the opener that picks one from a URL.

A driver (monochromator, power meter, ...) speaks its command set through a
:class:`LineTransport`; the transport underneath is swapped without touching the commands
(the split of pymeasure's ``Instrument`` over its ``Adapter``):

=======================================  ==================================================
URL                                      transport
=======================================  ==================================================
``/dev/ttyUSB0``, ``COM3``,              :class:`~hyplex.devices.serial_transport.
``socket://host:port``, ``loop://``      SerialTransport` (pyserial)
``sim://monochromator[?id=N]``           SerialTransport onto the instrument simulator
                                         (``protocol_sim.py``)
``ASRL/dev/ttyUSB0::INSTR``,             :class:`~hyplex.devices.visa_transport.
``ASRL3::INSTR``, ``USB0::0x1313::       VisaTransport` (pyvisa, pure-Python ``pyvisa-py``
0x8072::P2000000::INSTR``,               backend by default: nothing from a vendor to
``TCPIP::host::INSTR``, ``GPIB0::5::     install)
INSTR``
=======================================  ==================================================

Every transport has the same behaviour, written once here:

- a per-device lock (one command/reply exchange at a time, across threads);
- the terminators of the instrument (command and reply may differ);
- a timeout per attempt and a number of retries; before every attempt stale input is
  discarded, so a late or partial reply cannot be taken for the answer to the next command;
- an optional **command echo** (the Newport Cornerstone echoes every statement on RS-232
  before its response, Cornerstone 130B manual, Appendix I, section 15.4): with
  ``echo=True`` each exchange first reads the echo line and checks it;
- clear errors: :class:`~hyplex.devices.errors.InstrumentTimeout` (no complete line) and
  :class:`~hyplex.devices.errors.GarbledReply` (lines that do not parse, or a wrong echo),
  naming the instrument, its URL, the command, the attempts and the last bytes received. A
  parser raising :class:`~hyplex.devices.errors.InstrumentError` (the device refused the
  command) is not retried.

Retrying re-sends the command, so drivers only use idempotent commands (absolute positions,
not relative moves) and verify set commands by reading back. The driver base class is
:class:`~hyplex.devices.instrument_driver.Instrument`.
"""

from __future__ import annotations

import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TypeVar

from hyplex.devices.errors import GarbledReply, InstrumentError, InstrumentTimeout

T = TypeVar("T")

#: VISA resource names: interface type (+ board), ``::``-separated fields, a resource class
VISA_RESOURCE = re.compile(
    r"^(ASRL|USB|TCPIP|GPIB|VXI|PXI|VICP)[^:]*(::[^:]+)*::(INSTR|SOCKET|RAW|INTFC|BACKPLANE)$",
    re.IGNORECASE,
)


def is_visa_resource(url: str) -> bool:
    """True for a VISA resource name (``ASRL...::INSTR``, ``USB0::...::INSTR``, ``TCPIP::...``)."""
    return bool(VISA_RESOURCE.match(url.strip()))


def transport_kind(url: str) -> str:
    """``"visa"``, ``"sim"`` or ``"serial"``: which transport :func:`open_transport` builds."""
    text = url.strip()
    if is_visa_resource(text):
        return "visa"
    if text.lower().startswith("sim://"):
        return "sim"
    return "serial"


def is_serial_line(url: str) -> bool:
    """True when ``url`` reaches the instrument over an RS-232 line (a serial port, a VISA
    ``ASRL`` resource or a simulator): the links on which the Cornerstone echoes commands.
    USB-TMC, TCPIP and GPIB links carry no echo."""
    kind = transport_kind(url)
    return kind != "visa" or url.strip().upper().startswith("ASRL")


class LineTransport(ABC):
    """Command/reply lines to one instrument: lock, terminators, timeouts, retries, echo.

    Subclasses provide the byte-level primitives (:meth:`_discard_input`, :meth:`_send_bytes`,
    :meth:`_read_line`, :meth:`close`).

    Parameters
    ----------
    url : str
        Where the instrument is (for messages, and for the subclass to open).
    name : str
        Instrument name for error messages.
    command_terminator, reply_terminator : bytes
        Appended to every command; ends every reply line (non-empty).
    timeout_s : float
        Longest wait for one complete reply line, s (> 0).
    retries : int
        Extra attempts after a timeout or an unparsable reply (>= 0).
    encoding : str
        Of commands and replies (ASCII for every instrument here).
    echo : bool
        The instrument echoes every command as a line before its reply (if any).
    """

    def __init__(
        self,
        url: str,
        name: str = "instrument",
        command_terminator: bytes = b"\r\n",
        reply_terminator: bytes = b"\r\n",
        timeout_s: float = 1.0,
        retries: int = 2,
        encoding: str = "ascii",
        echo: bool = False,
    ):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if int(retries) != retries or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        if not command_terminator or not reply_terminator:
            raise ValueError("terminators must be non-empty bytes")
        self.url, self.name = url, name
        self.command_terminator, self.reply_terminator = command_terminator, reply_terminator
        self.timeout_s, self.retries, self.encoding = float(timeout_s), int(retries), encoding
        self.echo = bool(echo)
        self.lock = threading.RLock()

    # -- byte level, per transport ------------------------------------------------------
    #: after a failed attempt, input must stay quiet this long before the retry, s (real
    #: time): a slow instrument may still be sending the rest of the failed reply
    QUIET_S = 0.02

    def _drain(self, pending: Callable[[], int], discard: Callable[[], None]) -> None:
        """Discard input until none arrives for ``QUIET_S`` (at most ``timeout_s``)."""
        deadline = time.monotonic() + self.timeout_s
        discard()
        while time.monotonic() < deadline:
            time.sleep(self.QUIET_S)
            if not pending():
                return
            discard()

    @abstractmethod
    def _discard_input(self, after_failure: bool) -> None:
        """Drop whatever the instrument sent and nobody read (``after_failure``: the last
        attempt timed out or was garbled, so a transport may also clear the device)."""

    @abstractmethod
    def _send_bytes(self, data: bytes) -> None:
        """Write ``data`` (terminator included) and flush it to the instrument."""

    @abstractmethod
    def _read_line(self) -> bytes:
        """Bytes up to and including ``reply_terminator``; fewer (without it) on timeout."""

    @abstractmethod
    def close(self) -> None:
        """Release the port or VISA session (idempotent)."""

    # -- shared behaviour ---------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write(self, command: str) -> None:
        """Send a command that has no reply. With ``echo``, read and check its echo (retried
        as :meth:`query`); without, nothing comes back to retry on."""
        if self.echo:
            self._exchange(command, None)
            return
        with self.lock:
            self._discard_input(after_failure=False)
            self._send(command)

    def query(self, command: str, parse: Callable[[str], T] = str) -> T:
        """Send ``command`` and return ``parse(reply line)``, retrying as the class says.

        ``parse`` gets the reply without terminator or surrounding blanks; ValueError means
        garbled (retried), InstrumentError means refused (raised at once). With ``echo``
        the echo line is read and checked first.
        """
        return self._exchange(command, parse)

    def _exchange(self, command: str, parse: Callable[[str], T] | None) -> T | None:
        attempts = self.retries + 1
        with self.lock:
            last, reason = b"", ""
            for attempt in range(attempts):
                self._discard_input(after_failure=attempt > 0)
                self._send(command)
                try:
                    if self.echo:
                        last = self._complete(self._read_line())
                        expect_echo(command)(self._decode(last))
                    if parse is None:
                        return None
                    last = self._complete(self._read_line())
                    return parse(self._decode(last))
                except InstrumentError:
                    raise
                except _Incomplete as partial:
                    last, reason = partial.args[0], "timeout"
                except (UnicodeDecodeError, ValueError) as error:
                    reason = f"garbled ({error})"
            what = "echo of" if parse is None else "reply to"
            message = (
                f"{self.name} at {self.url}: {reason} {what} {command!r} after {attempts} "
                f"attempt(s) of {self.timeout_s:g} s; last bytes received: {last!r}"
            )
            if reason == "timeout":
                raise InstrumentTimeout(message)
            raise GarbledReply(message)

    def _complete(self, line: bytes) -> bytes:
        if not line.endswith(self.reply_terminator):
            raise _Incomplete(line)
        return line

    def _decode(self, line: bytes) -> str:
        return line[: -len(self.reply_terminator)].decode(self.encoding).strip()

    def _send(self, command: str) -> None:
        self._send_bytes(command.encode(self.encoding) + self.command_terminator)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, name={self.name!r})"


class _Incomplete(Exception):
    """No complete line within the timeout (internal to the retry loop)."""


def expect_echo(command: str) -> Callable[[str], str]:
    """Parser accepting only the echo of ``command`` (case-insensitive, blanks collapsed)."""

    def parse(reply: str) -> str:
        if " ".join(reply.upper().split()) != " ".join(command.upper().split()):
            raise ValueError(f"expected the echo {command!r}, got {reply!r}")
        return reply

    return parse


def open_transport(
    url: str,
    name: str = "instrument",
    baudrate: int = 9600,
    command_terminator: bytes = b"\r\n",
    reply_terminator: bytes = b"\r\n",
    timeout_s: float = 1.0,
    retries: int = 2,
    encoding: str = "ascii",
    echo: bool = False,
    visa_backend: str | None = None,
) -> LineTransport:
    """The transport ``url`` asks for (see the module table), opened.

    Parameters
    ----------
    url : str
        A VISA resource name (``ASRL/dev/ttyUSB0::INSTR``, ``USB0::...::INSTR``,
        ``TCPIP::host::INSTR``), a pyserial URL (``/dev/ttyUSB0``, ``COM3``, ``socket://``)
        or a simulator (``sim://<kind>[?id=N]``).
    name, baudrate, command_terminator, reply_terminator, timeout_s, retries, encoding, echo
        As for :class:`LineTransport`; ``baudrate`` (bit/s) applies to serial lines only.
    visa_backend : str, optional
        pyvisa backend for VISA URLs (default ``"@py"``, pyvisa-py; ``"path.yaml@sim"`` for
        pyvisa-sim).
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"instrument URL must be a non-empty string, got {url!r}")
    common = dict(
        name=name,
        baudrate=baudrate,
        command_terminator=command_terminator,
        reply_terminator=reply_terminator,
        timeout_s=timeout_s,
        retries=retries,
        encoding=encoding,
        echo=echo,
    )
    if transport_kind(url) == "visa":
        from hyplex.devices.visa_transport import VisaTransport

        return VisaTransport(url.strip(), backend=visa_backend, **common)
    from hyplex.devices.serial_transport import SerialTransport

    return SerialTransport(url.strip(), **common)
