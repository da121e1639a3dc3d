"""Motorised linear stage: driver and simulator, modelled on GRBL (G-code over serial).

Command set (ASCII, 115200 8N1, commands end in LF, replies in CR LF), after GRBL 1.1:

=================  ===========================================  ===============================
command            reply                                        effect
=================  ===========================================  ===============================
``G90``            ``ok``                                       absolute positioning
``G0 X12.500``     ``ok``                                       rapid move to X = 12.5 mm
``?``              ``<Idle|MPos:12.500,0.000,0.000>``           status (``Run`` while moving)
``$H``             ``ok``                                       home (to X = 0)
malformed          ``error:N``                                  nothing changes
=================  ===========================================  ===============================

In real GRBL ``?`` is a real-time command that needs no newline and the status report also
carries feed and buffer fields; this model takes it as a line and reports position only. The
driver issues absolute moves only, so a retried command is harmless (a relative move sent
twice would move twice).
"""

from __future__ import annotations

import re

from hyplex.devices.clock import Clock
from hyplex.devices.errors import InstrumentError
from hyplex.devices.instrument_sim import InstrumentSimulator, TimedMove
from hyplex.devices.serial_transport import (
    SerialInstrument,
    refusing,
    wait_until,
)

TRAVEL_MM = (0.0, 50.0)
_STATUS = re.compile(r"^<(Idle|Run|Home|Alarm)\|MPos:(-?[\d.]+),(-?[\d.]+),(-?[\d.]+)>$")


class StageSimulator(InstrumentSimulator):
    """One-axis GRBL-like stage on X with ``speed_mm_per_s``."""

    kind = "stage"
    command_terminator = b"\n"
    reply_terminator = b"\r\n"

    def __init__(self, clock: Clock | None = None, speed_mm_per_s: float = 5.0):
        super().__init__(clock)
        self.speed_mm_per_s = float(speed_mm_per_s)
        self.absolute = True
        self._axis = TimedMove(self.clock, 0.0)

    @property
    def busy(self) -> bool:
        return self._axis.busy

    @property
    def position_mm(self) -> float:
        return self._axis.value

    def _move(self, target: float) -> None:
        self._axis.go(target, abs(target - self.position_mm) / self.speed_mm_per_s)

    def handle(self, line: str) -> str | None:
        text = line.strip().upper()
        if text == "?":
            state = "Run" if self.busy else "Idle"
            return f"<{state}|MPos:{self.position_mm:.3f},0.000,0.000>"
        if text in ("G90", "G91"):
            self.absolute = text == "G90"
            return "ok"
        if text == "$H":
            self._move(0.0)
            return "ok"
        match = re.fullmatch(r"G0\s*X(-?[\d.]+)", text)
        if match:
            value = float(match.group(1))
            target = value if self.absolute else self.position_mm + value
            if not TRAVEL_MM[0] <= target <= TRAVEL_MM[1]:
                return "error:15"  # GRBL: travel exceeded
            self._move(target)
            return "ok"
        return "error:1"  # GRBL: expected command letter


def _ok(reply: str) -> str:
    if reply != "ok":
        raise ValueError(f"expected 'ok', got {reply!r}")
    return reply


class Stage(SerialInstrument):
    """Driver of a GRBL-class one-axis stage (X, mm). Parameters as for the monochromator."""

    KIND = "stage"
    BAUD = 115200
    WRITE_EOL = b"\n"
    READ_EOL = b"\r\n"
    POLL_S = 0.05

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._command("G90")

    def _command(self, command: str) -> None:
        self.transport.query(command, refusing(_ok, "stage", ("error",)))

    def status(self) -> tuple[str, float]:
        """(state, X mm): state is Idle, Run, Home or Alarm."""

        def parse(reply: str):
            match = _STATUS.match(reply)
            if not match:
                raise ValueError(f"not a GRBL status report: {reply!r}")
            return match.group(1), float(match.group(2))

        return self.transport.query("?", parse)

    @property
    def position_mm(self) -> float:
        return self.status()[1]

    @property
    def busy(self) -> bool:
        return self.status()[0] != "Idle"

    def move_to(self, x_mm: float, wait: bool = True, timeout_s: float = 60.0) -> float:
        """Absolute move to ``x_mm``; with ``wait``, until idle. Returns the read-back mm."""
        low, high = TRAVEL_MM
        if not low <= float(x_mm) <= high:
            raise ValueError(f"x_mm must lie in [{low}, {high}], got {x_mm}")
        self._command(f"G0 X{float(x_mm):.3f}")
        if wait:
            wait_until(lambda: not self.busy, self.clock, timeout_s, self.poll_s, "stage move")
        return self.position_mm

    def home(self, timeout_s: float = 60.0) -> None:
        self._command("$H")
        wait_until(lambda: not self.busy, self.clock, timeout_s, self.poll_s, "stage homing")
        if self.status()[0] == "Alarm":
            raise InstrumentError("stage: homing ended in alarm")
