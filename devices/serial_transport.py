"""``SerialTransport``: line-based command/reply over a pyserial port, shared by the drivers.

Drivers hold a transport (composition: a driver is not a serial port). The transport owns

- the port, from ``serial.serial_for_url`` (a device path, ``socket://``, ``sim://``...);
- a per-device lock: one command/reply exchange at a time, across threads;
- the terminators of the instrument (command and reply may differ);
- a timeout per attempt and a number of retries. Before every attempt the input buffer is
  flushed, so a late or partial reply cannot be taken for the answer to the next command;
- clear errors: :class:`~hyplex.devices.errors.InstrumentTimeout` (no complete line) and
  :class:`~hyplex.devices.errors.GarbledReply` (lines that do not parse), naming the
  instrument, the command, the attempts and the last bytes received. A parser raising
  :class:`~hyplex.devices.errors.InstrumentError` (the device refused the command) is not
  retried.

Retrying re-sends the command, so drivers only use idempotent commands (absolute positions,
not relative moves) and verify set commands by reading back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from hyplex.devices.errors import GarbledReply, InstrumentError, InstrumentTimeout
from hyplex.optics.extras import require

serial = require("serial", feature="the serial instruments")

if "hyplex.devices" not in serial.protocol_handler_packages:
    serial.protocol_handler_packages.append("hyplex.devices")  # sim:// (protocol_sim.py)

T = TypeVar("T")


class SerialTransport:
    """Command/reply lines over a serial port.

    Parameters
    ----------
    url : str
        Anything ``serial.serial_for_url`` opens: ``/dev/ttyUSB0``, ``sim://monochromator``.
    name : str
        Instrument name for error messages.
    baudrate : int
    command_terminator, reply_terminator : bytes
        Appended to every command; ends every reply line.
    timeout_s : float
        Longest wait for one complete reply line, s (> 0).
    retries : int
        Extra attempts after a timeout or an unparsable reply (>= 0).
    encoding : str
        Of commands and replies (ASCII for every instrument here).
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
        self.lock = threading.RLock()
        self.port = serial.serial_for_url(url, baudrate=baudrate, timeout=self.timeout_s)

    def close(self) -> None:
        with self.lock:
            if self.port.is_open:
                self.port.close()

    def __enter__(self) -> SerialTransport:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write(self, command: str) -> None:
        """Send a command that has no reply."""
        with self.lock:
            self.port.reset_input_buffer()
            self._send(command)

    def query(self, command: str, parse: Callable[[str], T] = str) -> T:
        """Send ``command`` and return ``parse(reply line)``, retrying as the class says.

        ``parse`` gets the reply without terminator or surrounding blanks; ValueError means
        garbled (retried), InstrumentError means refused (raised at once).
        """
        attempts = self.retries + 1
        with self.lock:
            last, reason = b"", ""
            for _ in range(attempts):
                self.port.reset_input_buffer()
                self._send(command)
                last = self.port.read_until(self.reply_terminator)
                if not last.endswith(self.reply_terminator):
                    reason = "timeout"
                    continue
                try:
                    text = last[: -len(self.reply_terminator)].decode(self.encoding)
                    return parse(text.strip())
                except InstrumentError:
                    raise
                except (UnicodeDecodeError, ValueError) as error:
                    reason = f"garbled ({error})"
            message = (
                f"{self.name} at {self.url}: {reason} reply to {command!r} after {attempts} "
                f"attempt(s) of {self.timeout_s:g} s; last bytes received: {last!r}"
            )
            if reason == "timeout":
                raise InstrumentTimeout(message)
            raise GarbledReply(message)

    def _send(self, command: str) -> None:
        self.port.write(command.encode(self.encoding) + self.command_terminator)
        self.port.flush()

    def __repr__(self) -> str:
        return f"SerialTransport({self.url!r}, name={self.name!r})"


def expect_echo(command: str) -> Callable[[str], str]:
    """Parser accepting only the echo of ``command`` (case-insensitive, blanks collapsed)."""

    def parse(reply: str) -> str:
        if " ".join(reply.upper().split()) != " ".join(command.upper().split()):
            raise ValueError(f"expected the echo {command!r}, got {reply!r}")
        return reply

    return parse


def refusing(parse: Callable[[str], T], name: str, prefixes=("ERR",)) -> Callable[[str], T]:
    """Wrap ``parse`` so a reply starting with one of ``prefixes`` raises InstrumentError
    (the device understood and refused: retrying would not help)."""

    def checked(reply: str) -> T:
        if reply.upper().startswith(tuple(p.upper() for p in prefixes)):
            raise InstrumentError(f"{name} refused the command: {reply!r}")
        return parse(reply)

    return checked


def wait_until(condition: Callable[[], bool], clock, timeout_s: float, poll_s: float, what: str):
    """Poll ``condition`` every ``poll_s`` on ``clock`` until true; InstrumentTimeout after
    ``timeout_s`` (clock time)."""
    deadline = clock.now_ns() + round(timeout_s * 1e9)
    while not condition():
        if clock.now_ns() >= deadline:
            raise InstrumentTimeout(f"{what} did not finish within {timeout_s:g} s")
        clock.sleep(poll_s)


def connect(port: str | SerialTransport, *args, **kwargs) -> SerialTransport:
    """``port`` itself if it is already a transport, else ``SerialTransport(port, *args)``.

    Every instrument driver accepts either a URL (``sim://...``, ``/dev/ttyUSB0``) or a shared
    transport; this is the one place that decides.
    """
    return port if isinstance(port, SerialTransport) else SerialTransport(port, *args, **kwargs)


class SerialInstrument:
    """Base of the instrument drivers: one serial connection, a clock, a context manager.

    Subclasses set the line settings as class attributes (``KIND``, ``BAUD``, ``WRITE_EOL``,
    ``READ_EOL``, ``POLL_S``) and extend ``__init__`` with their own first command.

    Parameters
    ----------
    port : str or SerialTransport
        URL (``sim://...``, ``/dev/ttyUSB0``) or a transport shared with other drivers.
    timeout_s, retries : float, int
        Per reply line, and extra attempts (see :class:`SerialTransport`).
    clock : Clock, optional
        Used to wait for moves (pass the simulator's VirtualClock in tests).
    poll_s : float, optional
        Status polling period while waiting for a move, s (default ``POLL_S``).
    """

    KIND = "instrument"
    BAUD = 9600
    WRITE_EOL = b"\r\n"
    READ_EOL = b"\r\n"
    POLL_S = 0.05

    def __init__(
        self,
        port: str | SerialTransport,
        timeout_s: float = 1.0,
        retries: int = 2,
        clock=None,
        poll_s: float | None = None,
    ):
        from hyplex.devices.clock import MonotonicClock

        self.transport = connect(
            port, self.KIND, self.BAUD, self.WRITE_EOL, self.READ_EOL, timeout_s, retries
        )
        self.clock = clock or MonotonicClock()
        self.poll_s = self.POLL_S if poll_s is None else float(poll_s)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
