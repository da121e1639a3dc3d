"""The Cornerstone 130B as a simulator: its ranges, error codes and state machine.

The command set, the echo, the status byte and the *OPC/*ESR? handshake follow the manual
sections cited in :mod:`hyplex.devices.monochromator` (Cornerstone 130B manual, Appendix I,
15.3-15.9); the driver there imports the ranges and error codes from here.
"""

from __future__ import annotations

from hyplex.devices.clock import Clock
from hyplex.devices.instrument_sim import InstrumentSimulator, TimedMove

WAVELENGTH_RANGE_NM = (200.0, 1100.0)
SLIT_RANGE_UM = (10.0, 3000.0)
STATUS_ERROR = 32  # status byte after any error (section 15.9)
#: Error codes of section 15.9 (``ERROR?``; 7 from the CS260 manual, 16.7)
# fmt: off
ERROR_CODES = {
    0: "no error", 1: "command not understood", 2: "bad parameter used in command",
    3: "destination position for wavelength motion not allowed",
    6: "accessory not present (usually filter wheel)",
    7: "accessory already in specified position", 8: "could not home wavelength drive",
    9: "label too long", 10: "system error",
}
# fmt: on
#: gratings of the simulated turret: number -> (lines per mm, label)
GRATINGS = {1: (1200, "VIS"), 2: (600, "NIR"), 3: (2400, "UV")}


class MonochromatorSimulator(InstrumentSimulator):
    """Cornerstone 130B state machine: grating, shutter, slit, status byte and error code.

    Parameters
    ----------
    clock : Clock, optional
    wavelength_nm, slit_um : float
        Initial state.
    slew_nm_per_s, settle_s : float
        A move of d nm takes ``settle_s + d / slew_nm_per_s`` seconds.
    dispersion_nm_per_mm : float
        Reciprocal linear dispersion (bandwidth = slit mm x this).
    echo : bool
        Echo statements (RS-232 factory setting, section 15.1); False models the USB port.
    """

    kind = "monochromator"
    command_terminator = b"\n"  # CR LF or LF (sections 15.1, 16.2); the CR is stripped
    reply_terminator = b"\r\n"

    def __init__(
        self,
        clock: Clock | None = None,
        wavelength_nm: float = 500.0,
        slit_um: float = 500.0,
        slew_nm_per_s: float = 200.0,
        settle_s: float = 0.05,
        dispersion_nm_per_mm: float = 6.6,
        echo: bool = True,
    ):
        super().__init__(clock)
        self._grating = TimedMove(self.clock, float(wavelength_nm))
        self.slit_um = float(slit_um)
        self.shutter_open = False
        self.units = "NM"
        self.grating_number = 1
        self.slew_nm_per_s, self.settle_s = slew_nm_per_s, settle_s
        self.dispersion_nm_per_mm = dispersion_nm_per_mm
        self.echo = bool(echo)
        self.status_byte = 0
        self.error_code = 0
        self._opc_armed = False

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

    def _error(self, code: int) -> None:
        self.status_byte, self.error_code = STATUS_ERROR, code

    def handle(self, line: str) -> str | None:
        command, _, argument = line.strip().partition(" ")
        command, argument = command.upper(), argument.strip()
        query = _QUERIES.get(command)
        if query is not None:
            return query(self)
        setter = _COMMANDS.get(command)
        if setter is None:
            self._error(1)
            return None
        code = setter(self, argument)
        if code:
            self._error(code)
        return None

    # -- statements (each returns an error code, 0 when accepted) -------------------------
    def _gowave(self, argument: str) -> int:
        value = _number(argument)
        if value is None:
            return 2
        if not WAVELENGTH_RANGE_NM[0] <= value <= WAVELENGTH_RANGE_NM[1]:
            return 3
        distance = abs(value - self.wavelength_nm)
        self._grating.go(value, self.settle_s + distance / self.slew_nm_per_s)
        return 0

    def _shutter(self, argument: str) -> int:
        if argument.upper() not in ("O", "C"):
            return 2
        self.shutter_open = argument.upper() == "O"
        return 0

    def _slit(self, argument: str) -> int:
        value = _number(argument)
        if value is None or not SLIT_RANGE_UM[0] <= value <= SLIT_RANGE_UM[1]:
            return 2
        self.slit_um = value
        return 0

    def _units(self, argument: str) -> int:
        if argument.upper() != "NM":
            return 2  # UM and WN exist on the instrument; only NM is simulated
        return 0

    def _grat(self, argument: str) -> int:
        value = _number(argument)
        if value is None or int(value) not in GRATINGS:
            return 2
        if int(value) != self.grating_number:
            self.grating_number = int(value)
            self._grating.go(self.wavelength_nm, self.settle_s + 2.0)  # turret turns
        return 0

    def _echo_switch(self, argument: str) -> int:
        if argument not in ("0", "1"):
            return 2
        self.echo = argument == "1"
        return 0

    def _opc(self, argument: str) -> int:
        self._opc_armed = True
        return 0

    # -- queries ------------------------------------------------------------------------
    def _read_status(self) -> str:
        value, self.status_byte = self.status_byte, 0
        return str(value)

    def _read_error(self) -> str:
        value, self.error_code = self.error_code, 0
        return str(value)

    def _read_event_status(self) -> str:
        complete = self._opc_armed and not self.busy
        if complete:
            self._opc_armed = False
        return "1" if complete else "0"

    def _read_grating(self) -> str:
        lines, label = GRATINGS[self.grating_number]
        return f"{self.grating_number},{lines},{label}"


_COMMANDS = {
    "GOWAVE": MonochromatorSimulator._gowave,
    "SHUTTER": MonochromatorSimulator._shutter,
    "SLIT1MICRONS": MonochromatorSimulator._slit,
    "UNITS": MonochromatorSimulator._units,
    "GRAT": MonochromatorSimulator._grat,
    "ECHO": MonochromatorSimulator._echo_switch,
    "HANDSHAKE": lambda sim, argument: 0 if argument == "0" else 2,  # Standard mode only
    "*OPC": MonochromatorSimulator._opc,
}
_QUERIES = {
    "WAVE?": lambda sim: f"{sim.wavelength_nm:.3f}",
    "SHUTTER?": lambda sim: "O" if sim.shutter_open else "C",
    "SLIT1MICRONS?": lambda sim: f"{sim.slit_um:.0f}",
    "UNITS?": lambda sim: sim.units,
    "GRAT?": MonochromatorSimulator._read_grating,
    "STB?": MonochromatorSimulator._read_status,
    "ERROR?": MonochromatorSimulator._read_error,
    "*ESR?": MonochromatorSimulator._read_event_status,
    "INFO?": lambda sim: "Newport Cornerstone 130 (hyplex simulator)",
}


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
