"""Monochromator: driver and simulator, modelled on the Newport/Oriel Cornerstone 130/260.

Command set (ASCII over RS-232, 9600 8N1, commands and replies end in CR LF), as in the
Cornerstone manuals to the best of our knowledge (written from memory, without the manual at
hand; items marked * are this model's choices, not confirmed against a real unit):

==========================  =================  ==============================================
command                     reply              effect
==========================  =================  ==============================================
``UNITS NM``                echo               wavelength units nanometres
``GOWAVE 550.000``          echo               start moving the grating; busy until there
``WAVE?``                   ``550.000``        current wavelength (moving: where it is now)
``SHUTTER O`` / ``C``       echo               open / close the shutter
``SHUTTER?``                ``O`` or ``C``
``SLIT1MICRONS 500``        echo               entrance (= exit*) slit width, um
``SLIT1MICRONS?``           ``500``
``STB?``                    ``0`` / ``1``      status byte; bit 0 = grating moving*
``INFO?``                   model string
anything malformed          ``ERR <why>``*     nothing changes
==========================  =================  ==============================================

The real Cornerstone echoes every command before its reply; this model sends one line per
command (the echo for set commands, the value for queries). Bandwidth (FWHM of the
triangular slit function, equal slits) = slit width (mm) x reciprocal dispersion (6.6 nm/mm
for the Cornerstone 130 with a 1200 l/mm grating).
"""

from __future__ import annotations

from hyplex.devices.clock import Clock
from hyplex.devices.errors import InstrumentError
from hyplex.devices.instrument_sim import InstrumentSimulator, TimedMove
from hyplex.devices.serial_transport import (
    SerialInstrument,
    expect_echo,
    refusing,
    wait_until,
)

WAVELENGTH_RANGE_NM = (200.0, 1100.0)
SLIT_RANGE_UM = (10.0, 3000.0)


class MonochromatorSimulator(InstrumentSimulator):
    """Cornerstone-like state machine: grating position, shutter, slit, move time.

    Parameters
    ----------
    clock : Clock, optional
    wavelength_nm, slit_um : float
        Initial state.
    slew_nm_per_s, settle_s : float
        A move of d nm takes ``settle_s + d / slew_nm_per_s`` seconds*.
    dispersion_nm_per_mm : float
        Reciprocal linear dispersion (bandwidth = slit mm x this).
    """

    kind = "monochromator"

    def __init__(
        self,
        clock: Clock | None = None,
        wavelength_nm: float = 500.0,
        slit_um: float = 500.0,
        slew_nm_per_s: float = 200.0,
        settle_s: float = 0.05,
        dispersion_nm_per_mm: float = 6.6,
    ):
        super().__init__(clock)
        self._grating = TimedMove(self.clock, float(wavelength_nm))
        self.slit_um = float(slit_um)
        self.shutter_open = False
        self.units = "NM"
        self.slew_nm_per_s, self.settle_s = slew_nm_per_s, settle_s
        self.dispersion_nm_per_mm = dispersion_nm_per_mm

    @property
    def busy(self) -> bool:
        return self._grating.busy

    @property
    def wavelength_nm(self) -> float:
        """Where the grating points now (linear in time during a move)."""
        return self._grating.value

    @property
    def bandwidth_nm(self) -> float:
        return self.slit_um * 1e-3 * self.dispersion_nm_per_mm

    def handle(self, line: str) -> str | None:
        command, _, argument = line.strip().partition(" ")
        command, argument = command.upper(), argument.strip()
        if command == "GOWAVE":
            value = _number(argument)
            if value is None or not WAVELENGTH_RANGE_NM[0] <= value <= WAVELENGTH_RANGE_NM[1]:
                return f"ERR wavelength out of range {WAVELENGTH_RANGE_NM}: {argument!r}"
            distance = abs(value - self.wavelength_nm)
            self._grating.go(value, self.settle_s + distance / self.slew_nm_per_s)
            return line
        if command == "WAVE?":
            return f"{self.wavelength_nm:.3f}"
        if command == "SHUTTER":
            if argument.upper() not in ("O", "C"):
                return f"ERR shutter takes O or C, got {argument!r}"
            self.shutter_open = argument.upper() == "O"
            return line
        if command == "SHUTTER?":
            return "O" if self.shutter_open else "C"
        if command == "SLIT1MICRONS":
            value = _number(argument)
            if value is None or not SLIT_RANGE_UM[0] <= value <= SLIT_RANGE_UM[1]:
                return f"ERR slit out of range {SLIT_RANGE_UM}: {argument!r}"
            self.slit_um = value
            return line
        if command == "SLIT1MICRONS?":
            return f"{self.slit_um:.0f}"
        if command == "UNITS":
            if argument.upper() != "NM":
                return f"ERR only UNITS NM is simulated, got {argument!r}"
            return line
        if command == "STB?":
            return "1" if self.busy else "0"
        if command == "INFO?":
            return "Newport Cornerstone 130 (hyplex simulator)"
        return f"ERR unknown command {line!r}"


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


class Monochromator(SerialInstrument):
    """Driver of a Cornerstone-class monochromator (see the module doc for the commands).

    Parameters
    ----------
    port : str or SerialTransport
        A ``serial_for_url`` URL (``/dev/ttyUSB0``, ``sim://monochromator``) or a transport.
    timeout_s, retries : float, int
        Per reply line, and extra attempts (see ``SerialTransport``).
    clock : Clock, optional
        Used to wait for moves (pass the simulator's VirtualClock in tests).
    poll_s : float
        Status polling period while waiting for a move, s.
    """

    KIND = "monochromator"
    BAUD = 9600
    WRITE_EOL = b"\r\n"
    READ_EOL = b"\r\n"
    POLL_S = 0.02

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._set("UNITS NM")

    def _set(self, command: str) -> None:
        self.transport.query(command, refusing(expect_echo(command), "monochromator"))

    def _ask(self, command: str, parse=float):
        return self.transport.query(command, refusing(parse, "monochromator"))

    def identify(self) -> str:
        return self._ask("INFO?", str)

    @property
    def wavelength_nm(self) -> float:
        """Current wavelength, nm (read from the device)."""
        return self._ask("WAVE?")

    def go_to(self, wavelength_nm: float, wait: bool = True, timeout_s: float = 30.0) -> float:
        """Move the grating; with ``wait``, block until it arrives. Returns the read-back nm."""
        low, high = WAVELENGTH_RANGE_NM
        if not low <= float(wavelength_nm) <= high:
            raise ValueError(f"wavelength_nm must lie in [{low}, {high}], got {wavelength_nm}")
        self._set(f"GOWAVE {float(wavelength_nm):.3f}")
        if wait:
            self.wait_until_idle(timeout_s)
        return self.wavelength_nm

    @property
    def busy(self) -> bool:
        """True while the grating moves (status byte bit 0)."""
        return bool(self._ask("STB?", int) & 1)

    def wait_until_idle(self, timeout_s: float = 30.0) -> None:
        wait_until(lambda: not self.busy, self.clock, timeout_s, self.poll_s, "monochromator move")

    @property
    def shutter_open(self) -> bool:
        reply = self._ask("SHUTTER?", str).upper()
        if reply not in ("O", "C"):
            raise InstrumentError(f"monochromator: unexpected shutter state {reply!r}")
        return reply == "O"

    def open_shutter(self) -> None:
        self._set("SHUTTER O")

    def close_shutter(self) -> None:
        self._set("SHUTTER C")

    @property
    def slit_um(self) -> float:
        return self._ask("SLIT1MICRONS?")

    def set_slit_um(self, slit_um: float) -> float:
        """Set both slits (um); returns the read-back width."""
        low, high = SLIT_RANGE_UM
        if not low <= float(slit_um) <= high:
            raise ValueError(f"slit_um must lie in [{low}, {high}], got {slit_um}")
        self._set(f"SLIT1MICRONS {float(slit_um):.0f}")
        return self.slit_um

    def bandwidth_nm(self, dispersion_nm_per_mm: float = 6.6) -> float:
        """FWHM bandwidth, nm, from the slit and the grating's reciprocal dispersion."""
        return self.slit_um * 1e-3 * dispersion_nm_per_mm
