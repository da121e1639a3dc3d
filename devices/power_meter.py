"""Optical power meter (the reference detector): driver and simulator, modelled on the
Thorlabs PM100 series (SCPI; PM100USB / PM100D).

Command set (ASCII SCPI, commands and replies end in LF), after the PM100 manual as we
remember it (written without the manual at hand):

==========================  ================================  ================================
command                     reply                             effect
==========================  ================================  ================================
``*IDN?``                   ``Thorlabs,PM100USB,...``
``SENS:CORR:WAV 550``       (none)                            wavelength for the responsivity
``SENS:CORR:WAV?``          ``5.500000E+02``
``SENS:AVER:COUN 10``       (none)                            samples averaged per reading
``SENS:AVER:COUN?``         ``10``
``MEAS:POW?``               ``1.234567E-06``                  power, W
``SYST:ERR?``               ``+0,"No error"``                 error queue
==========================  ================================  ================================

SCPI set commands send nothing back, so the driver confirms each by reading it back.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hyplex.devices.clock import Clock
from hyplex.devices.errors import InstrumentError
from hyplex.devices.instrument_sim import InstrumentSimulator
from hyplex.devices.serial_transport import SerialInstrument

CORRECTION_RANGE_NM = (400.0, 1100.0)  # an S120C-like silicon photodiode head


class PowerMeterSimulator(InstrumentSimulator):
    """PM100-like meter reading ``power_W()`` with relative noise ``noise``.

    Parameters
    ----------
    power_W : callable, optional
        Optical power on the detector, W (default: 0, a dark meter). ``SimulatedBench`` wires
        it to the monochromator's output.
    noise : float
        Relative rms noise of one sample (averaging divides it by sqrt(count)).
    dark_W : float
        Dark reading, W.
    seed : int
    """

    kind = "powermeter"
    command_terminator = b"\n"
    reply_terminator = b"\n"

    def __init__(
        self,
        clock: Clock | None = None,
        power_W: Callable[[], float] | None = None,
        noise: float = 1e-3,
        dark_W: float = 1e-10,
        seed: int = 0,
    ):
        super().__init__(clock)
        self.power_W = power_W or (lambda: 0.0)
        self.noise, self.dark_W = float(noise), float(dark_W)
        self.correction_nm = 633.0
        self.average_count = 1
        self.errors: list[str] = []
        self._rng = np.random.default_rng(seed)

    def reading_W(self) -> float:
        sigma = self.noise / np.sqrt(self.average_count)
        return float(self.power_W() * (1 + sigma * self._rng.standard_normal()) + self.dark_W)

    def handle(self, line: str) -> str | None:
        text = " ".join(line.strip().upper().split())
        header, _, argument = text.partition(" ")
        if header == "*IDN?":
            return "Thorlabs,PM100USB,P1000000,1.7.0 (hyplex simulator)"
        if header in ("MEAS:POW?", "MEASURE:POWER?", "READ?"):
            return f"{self.reading_W():.6E}"
        if header in ("SENS:CORR:WAV", "SENSE:CORRECTION:WAVELENGTH"):
            try:
                value = float(argument)
            except ValueError:
                value = -1.0
            if CORRECTION_RANGE_NM[0] <= value <= CORRECTION_RANGE_NM[1]:
                self.correction_nm = value
            else:
                self.errors.append('-222,"Data out of range"')
            return None
        if header == "SENS:CORR:WAV?":
            return f"{self.correction_nm:.6E}"
        if header == "SENS:AVER:COUN":
            try:
                self.average_count = max(1, int(argument))
            except ValueError:
                self.errors.append('-104,"Data type error"')
            return None
        if header == "SENS:AVER:COUN?":
            return str(self.average_count)
        if header == "SYST:ERR?":
            return self.errors.pop(0) if self.errors else '+0,"No error"'
        self.errors.append('-113,"Undefined header"')
        return None


class PowerMeter(SerialInstrument):
    """Driver of a PM100-class power meter. Parameters as for the monochromator."""

    KIND = "power meter"
    BAUD = 115200
    WRITE_EOL = b"\n"
    READ_EOL = b"\n"
    POLL_S = 0.05

    def identify(self) -> str:
        return self.transport.query("*IDN?")

    def power_W(self) -> float:
        """One reading, W."""
        return self.transport.query("MEAS:POW?", float)

    @property
    def wavelength_nm(self) -> float:
        return self.transport.query("SENS:CORR:WAV?", float)

    def set_wavelength_nm(self, wavelength_nm: float) -> float:
        """Set the responsivity correction wavelength; verified by read-back (nm)."""
        low, high = CORRECTION_RANGE_NM
        if not low <= float(wavelength_nm) <= high:
            raise ValueError(f"wavelength_nm must lie in [{low}, {high}], got {wavelength_nm}")
        return self._set_verified("SENS:CORR:WAV", float(wavelength_nm), float)

    def set_average_count(self, count: int) -> int:
        if int(count) != count or count < 1:
            raise ValueError(f"count must be an integer >= 1, got {count}")
        return self._set_verified("SENS:AVER:COUN", int(count), int)

    def _set_verified(self, header: str, value, parse):
        """Write ``header value`` and read it back, re-writing up to ``retries`` times."""
        transport = self.transport
        for _ in range(transport.retries + 1):
            transport.write(f"{header} {value}")
            readback = transport.query(f"{header}?", parse)
            if abs(readback - value) <= 1e-6 * max(abs(value), 1):
                return readback
        error = transport.query("SYST:ERR?")
        raise InstrumentError(
            f"power meter: {header} {value} not applied (reads back {readback}); "
            f"device error: {error}"
        )
