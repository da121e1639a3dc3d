"""Filter wheel: driver and simulator of the Thorlabs FW102C.

Sources: Thorlabs, *FW102C Motorized Filter Wheel* manual, Rev H (2 October 2014), chapter 5
"Software Control", section 5.2.3 "Keywords (commands and queries)": ``*idn?``, ``pos=n`` /
``pos?``, ``pcount=n`` / ``pcount?`` (6 or 12 positions), ``trig``, ``speed``, ``sensors``,
``baud``, ``save``; "all commands and queries are in lower case letters"; "if the keyword,
format, or argument are incorrect or out of range, the unit will return an error string".
Line settings (115.2 kbaud, 8 data bits, 1 stop bit, no parity, no flow control; carriage
return terminators) as in the ISIS/IBEX developer notes on the FW102C, which restate the
manual's table.

==================  =========================================  ==============================
command             reply                                      effect
==================  =========================================  ==============================
``pos=3``           echo                                       turn to position 3 (1-based)
``pos?``            ``3``                                      position (the old one while
                                                               the wheel turns*)
``pcount?``         ``6``                                      number of positions
``*idn?``           ``THORLABS FW102C/FW212C Filter Wheel...``
malformed           ``Command error CMD_ARG_INVALID``          nothing changes
==================  =========================================  ==============================

Not confirmed from the manual pages we could read (* above): the wording of the error string,
whether ``pos?`` reports the old or the new slot while turning, and the exact echo/prompt
behaviour (the unit is commonly described as echoing each command and printing a ``>``
prompt; this model sends one reply line per command and no prompt, and the driver only
relies on it through ``pos=`` being answered and ``pos?`` being polled). Turning takes
``step_s`` per position, the shorter way round.
"""

from __future__ import annotations

from hyplex.devices.clock import Clock
from hyplex.devices.instrument_driver import Instrument, refusing, wait_until
from hyplex.devices.instrument_sim import InstrumentSimulator, TimedMove
from hyplex.devices.transport import expect_echo

ERROR_PREFIX = "Command error"


class FilterWheelSimulator(InstrumentSimulator):
    """FW102C-like wheel of ``positions`` slots with per-slot ``transmissions`` (0-1)."""

    kind = "filterwheel"
    command_terminator = b"\r"
    reply_terminator = b"\r"

    def __init__(
        self,
        clock: Clock | None = None,
        positions: int = 6,
        step_s: float = 0.25,
        transmissions=(1.0, 0.5, 0.1, 0.01, 0.001, 0.0),
    ):
        super().__init__(clock)
        if len(transmissions) != positions:
            raise ValueError(f"give one transmission per position ({positions})")
        self.positions, self.step_s = int(positions), float(step_s)
        self.transmissions = tuple(float(t) for t in transmissions)
        self._wheel = TimedMove(self.clock, 1)

    @property
    def busy(self) -> bool:
        return self._wheel.busy

    @property
    def position(self) -> int:
        return self._wheel.origin if self.busy else self._wheel.target

    @property
    def transmission(self) -> float:
        """Transmission of the filter in the beam (0 while turning*)."""
        return 0.0 if self.busy else self.transmissions[self._wheel.target - 1]

    def handle(self, line: str) -> str | None:
        text = line.strip().lower()
        if text.startswith("pos="):
            try:
                target = int(text[4:])
            except ValueError:
                return f"{ERROR_PREFIX} CMD_ARG_INVALID"
            if not 1 <= target <= self.positions:
                return f"{ERROR_PREFIX} CMD_ARG_INVALID"
            current = self.position
            steps = abs(target - current)
            steps = min(steps, self.positions - steps)
            self._wheel.go(target, steps * self.step_s, origin=current)
            return line
        if text == "pos?":
            return str(self.position)
        if text == "pcount?":
            return str(self.positions)
        if text == "*idn?":
            return "THORLABS FW102C/FW212C Filter Wheel version 1.07 (hyplex simulator)"
        return f"{ERROR_PREFIX} CMD_NOT_DEFINED"


class FilterWheel(Instrument):
    """Driver of an FW102C-class filter wheel (positions are 1-based).

    Parameters as for :class:`~hyplex.devices.monochromator.Monochromator`.
    """

    KIND = "filter wheel"
    BAUD = 115200
    WRITE_EOL = b"\r"
    READ_EOL = b"\r"
    POLL_S = 0.05

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.positions = self.transport.query("pcount?", self._parser(int))

    def _parser(self, parse):
        return refusing(parse, "filter wheel", (ERROR_PREFIX,))

    def identify(self) -> str:
        return self.transport.query("*idn?", self._parser(str))

    @property
    def position(self) -> int:
        return self.transport.query("pos?", self._parser(int))

    def move_to(self, position: int, wait: bool = True, timeout_s: float = 10.0) -> int:
        """Turn to ``position`` (1..positions); with ``wait``, until it is there."""
        if int(position) != position or not 1 <= position <= self.positions:
            raise ValueError(f"position must be an integer in 1..{self.positions}, got {position}")
        command = f"pos={int(position)}"
        self.transport.query(command, self._parser(expect_echo(command)))
        if wait:
            wait_until(
                lambda: self.position == position, self.clock, timeout_s, self.poll_s, "filter move"
            )
        return self.position
