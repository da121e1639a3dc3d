"""``Instrument``: the base of the instrument drivers, and the helpers they share.

A driver holds one line transport (:mod:`hyplex.devices.transport`: serial, VISA or a
simulator, picked from the URL), a clock to wait on, and speaks its instrument's command
set; it never touches bytes. :func:`wait_until` polls a condition on the clock (a move),
:func:`refusing` turns an instrument's error reply into
:class:`~hyplex.devices.errors.InstrumentError` (not retried), :func:`connect` accepts a URL
or an open transport.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from hyplex.devices.errors import InstrumentError, InstrumentTimeout
from hyplex.devices.transport import LineTransport, open_transport

T = TypeVar("T")


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


def connect(port, *args, **kwargs) -> LineTransport:
    """``port`` itself if it is already a transport, else ``open_transport(port, *args)``.

    Every instrument driver accepts either a URL (``sim://...``, ``/dev/ttyUSB0``,
    ``USB0::...::INSTR``) or a shared transport; this is the one place that decides.
    """
    return port if isinstance(port, LineTransport) else open_transport(port, *args, **kwargs)


class Instrument:
    """Base of the instrument drivers: one line transport, a clock, a context manager.

    Subclasses set the line settings as class attributes (``KIND``, ``BAUD``, ``WRITE_EOL``,
    ``READ_EOL``, ``POLL_S``), say on which links the instrument echoes commands
    (:meth:`echoes_on`), and extend ``__init__`` with their own first command.

    Parameters
    ----------
    port : str or LineTransport
        URL (``sim://...``, ``/dev/ttyUSB0``, ``ASRL/dev/ttyUSB0::INSTR``,
        ``USB0::...::INSTR``, ``TCPIP::host::INSTR``) or a transport shared with other
        drivers.
    timeout_s, retries : float, int
        Per reply line, s, and extra attempts (see :class:`LineTransport`).
    clock : Clock, optional
        Used to wait for moves (pass the simulator's VirtualClock in tests).
    poll_s : float, optional
        Status polling period while waiting for a move, s (default ``POLL_S``).
    echo : bool, optional
        Whether the instrument echoes commands (default: :meth:`echoes_on` the URL).
    visa_backend : str, optional
        pyvisa backend for VISA URLs (default pyvisa-py, ``"@py"``).
    """

    KIND = "instrument"
    BAUD = 9600
    WRITE_EOL = b"\r\n"
    READ_EOL = b"\r\n"
    POLL_S = 0.05

    def __init__(
        self,
        port,
        timeout_s: float = 1.0,
        retries: int = 2,
        clock=None,
        poll_s: float | None = None,
        echo: bool | None = None,
        visa_backend: str | None = None,
    ):
        from hyplex.devices.clock import MonotonicClock

        if isinstance(port, LineTransport):
            self.transport = port
        else:
            self.transport = open_transport(
                port,
                self.KIND,
                self.BAUD,
                self.WRITE_EOL,
                self.READ_EOL,
                timeout_s,
                retries,
                echo=self.echoes_on(port) if echo is None else bool(echo),
                visa_backend=visa_backend,
            )
        self.clock = clock or MonotonicClock()
        self.poll_s = self.POLL_S if poll_s is None else float(poll_s)
        if not self.poll_s > 0:
            self.close()
            raise ValueError(f"poll_s must be > 0 s, got {poll_s!r}")

    @classmethod
    def echoes_on(cls, url: str) -> bool:
        """Whether the instrument echoes commands when reached at ``url`` (default: never)."""
        return False

    @classmethod
    def from_url(cls, url: str, **options):
        """The driver on ``url`` (any transport, see :func:`open_transport`)."""
        return cls(url, **options)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
