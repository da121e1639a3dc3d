"""Optical power meter (the reference detector): driver and simulator of the Thorlabs
PM100USB / PM100D with a photodiode head (S120C-like), over USB-TMC (VISA) or a line.

Sources:

- Thorlabs, *PM100D Compact Power and Energy Meter Console* operation manual (doc.
  17654-D02), section 6.4 "PM100D SCPI Commands": 6.4.1 the SCPI syntax (upper-case letters
  are the short form, ``[...]`` nodes optional, ``CURR`` and ``CURRENT`` both accepted, other
  abbreviations an error; MIN/MAX parameters; commands end in LF, CR LF accepted), the
  ``[SENSe:]CORRection`` tree (``:WAVelength {MINimum|MAXimum|<nm>}``, ``:WAVelength?
  [{MINimum|MAXimum}]``), 6.4.2.2 the common commands (``*IDN?`` ->
  ``THORLABS,<model>,<serial>,<firmware>``, ``*OPC?``, ``*RST``) and the sensor query
  ``SYSTem:SENSor:IDN?`` -> ``<name>,<sn>,<cal_msg>,<type>,<subtype>,<flags>`` (flags: 1
  power sensor, 2 energy sensor, 16 response settable, 32 wavelength settable, 64 tau
  settable, 256 temperature sensor; manual p. 49).
- Thorlabs, *PM100USB* operation manual (2020), p. 20: ``CORR:WAVE 1550`` /
  ``CORR:WAVE?`` / ``CORR:WAVE? MIN|MAX``; "do not send a query command without reading the
  response ... send a device clear before sending the second query command" (what
  :class:`~hyplex.devices.visa_transport.VisaTransport` does before a retry).
- pymeasure's ``ThorlabsPM100USB`` (``pymeasure/instruments/thorlabs/thorlabspm100usb.py``):
  ``MEAS:POW?`` (W), ``SENS:CORR:WAV? MIN|MAX``, ``SYST:SENSOR:IDN?`` and its flags.

The PM100USB and PM100D are USB-TMC devices with no serial port: reach them with a VISA URL
(``USB0::0x1313::0x8072::<serial>::INSTR``). The serial settings below (115200 baud, LF)
serve the simulator on a pty and line-based adapters.

=================================  =================================  ========================
command                            reply                              effect
=================================  =================================  ========================
``*IDN?``                          ``Thorlabs,PM100USB,P1000000,...``
``SYST:SENS:IDN?``                 ``S120C,...,1,18,49``              the head and its flags
``CONF:POW``                       (none)                             measure power
``SENS:CORR:WAV 550``              (none)                             responsivity wavelength
``SENS:CORR:WAV?`` [``MIN|MAX``]   ``5.500000E+02``                   nm
``SENS:AVER:COUN 10``              (none)                             samples per reading
``SENS:POW:RANG:AUTO 1``           (none)                             auto ranging on
``SENS:POW:RANG:UPP?``             ``5.000000E-02``                   current range top, W
``MEAS:POW?``                      ``1.234567E-06``                   power, W
``SYST:ERR?``                      ``+0,"No error"``                  error queue (SCPI-99)
=================================  =================================  ========================

Not confirmed from the manual pages we could read: the exact spellings of the range commands
(``[SENSe]:POWer[:DC]:RANGe:AUTO`` and ``[:UPPer]``, and ``[SENSe]:AVERage[:COUNt]``,
written after the manual's tree notation and the Thorlabs SCPI examples), and what
``MEAS:POW?`` returns past the top of the range. The simulator answers the SCPI-99 overrange
value ``9.9E37`` there; the driver treats that, a reading above the range top, and a non-finite
reading as saturated (:class:`PowerReadingOutOfRange`).

SCPI set commands send nothing back, so the driver confirms each by reading it back
(:class:`~hyplex.devices.scpi.Setting`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from hyplex.devices.clock import Clock
from hyplex.devices.errors import InstrumentError
from hyplex.devices.instrument_driver import Instrument
from hyplex.devices.instrument_sim import InstrumentSimulator
from hyplex.devices.scpi import Setting, boolean, header_pattern, in_range, integer_in, scpi_bool

CORRECTION_RANGE_NM = (400.0, 1100.0)  # an S120C-like silicon photodiode head
HEAD_MAX_POWER_W = 0.05  # S120C: 50 mW
#: ranges of the simulated head, W (decades up to the head's maximum)
POWER_RANGES_W = tuple(HEAD_MAX_POWER_W * 10.0**-k for k in range(7, -1, -1))
#: SCPI-99 "infinity": what an overrange measurement reports
SCPI_OVERRANGE = 9.9e37


class PowerReadingOutOfRange(InstrumentError, ValueError):
    """A power reading that cannot be used: saturated (past the range or the head), not
    finite, or no light where light was expected."""


class PowerMeterSimulator(InstrumentSimulator):
    """PM100-like meter reading ``power_W()`` with relative noise ``noise``.

    Parameters
    ----------
    clock : Clock, optional
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
    command_terminator = b"\n"  # LF; CR LF accepted (the CR is stripped)
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
        self.auto_range = True
        self.range_W = POWER_RANGES_W[-1]
        self.errors: list[str] = []
        self._rng = np.random.default_rng(seed)

    def reading_W(self) -> float:
        sigma = self.noise / np.sqrt(self.average_count)
        power = float(self.power_W() * (1 + sigma * self._rng.standard_normal()) + self.dark_W)
        if self.auto_range:
            self.range_W = next((r for r in POWER_RANGES_W if r >= power), POWER_RANGES_W[-1])
        if power > self.range_W:
            return SCPI_OVERRANGE
        return power

    def handle(self, line: str) -> str | None:
        header, _, argument = line.strip().partition(" ")
        argument = argument.strip().upper()
        for pattern, method in _HANDLERS:
            if pattern.match(header):
                return method(self, argument)
        self.errors.append('-113,"Undefined header"')
        return None

    def _error(self, entry: str) -> None:
        self.errors.append(entry)

    # -- handlers: (self, argument) -> reply or None -----------------------------------
    def _idn(self, argument):
        return "Thorlabs,PM100USB,P1000000,1.7.0 (hyplex simulator)"

    def _sensor_idn(self, argument):
        return "S120C,00000000,01-Jan-2026,1,18,49"

    def _measure(self, argument):
        return f"{self.reading_W():.6E}"

    def _configure(self, argument):
        return None

    def _set_wavelength(self, argument):
        value = _number(argument, CORRECTION_RANGE_NM)
        if value is None:
            self._error('-104,"Data type error"')
        elif CORRECTION_RANGE_NM[0] <= value <= CORRECTION_RANGE_NM[1]:
            self.correction_nm = value
        else:
            self._error('-222,"Data out of range"')
        return None

    def _get_wavelength(self, argument):
        value = {"MIN": CORRECTION_RANGE_NM[0], "MAX": CORRECTION_RANGE_NM[1]}.get(
            argument[:3], self.correction_nm
        )
        return f"{value:.6E}"

    def _set_average(self, argument):
        value = _number(argument, (1, 10000))
        if value is None or value != int(value) or not 1 <= value <= 10000:
            self._error('-222,"Data out of range"')
        else:
            self.average_count = int(value)
        return None

    def _get_average(self, argument):
        return str(self.average_count)

    def _set_auto_range(self, argument):
        if argument not in ("1", "0", "ON", "OFF"):
            self._error('-104,"Data type error"')
        else:
            self.auto_range = argument in ("1", "ON")
        return None

    def _get_auto_range(self, argument):
        return "1" if self.auto_range else "0"

    def _set_range(self, argument):
        value = _number(argument, (POWER_RANGES_W[0], POWER_RANGES_W[-1]))
        if value is None or value <= 0:
            self._error('-222,"Data out of range"')
            return None
        self.auto_range = False
        self.range_W = next((r for r in POWER_RANGES_W if r >= value), POWER_RANGES_W[-1])
        return None

    def _get_range(self, argument):
        return f"{self.range_W:.6E}"

    def _error_query(self, argument):
        return self.errors.pop(0) if self.errors else '+0,"No error"'

    def _opc_query(self, argument):
        return "1"

    def _reset(self, argument):
        self.correction_nm, self.average_count, self.auto_range = 633.0, 1, True
        return None

    def _clear(self, argument):
        self.errors.clear()
        return None


def _number(text: str, limits) -> float | None:
    special = {"MIN": limits[0], "MINIMUM": limits[0], "MAX": limits[1], "MAXIMUM": limits[1]}
    if text in special:
        return float(special[text])
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


_HANDLERS = [
    (header_pattern(notation), method)
    for notation, method in [
        ("*IDN?", PowerMeterSimulator._idn),
        ("*OPC?", PowerMeterSimulator._opc_query),
        ("*RST", PowerMeterSimulator._reset),
        ("*CLS", PowerMeterSimulator._clear),
        ("SYSTem:SENSor:IDN?", PowerMeterSimulator._sensor_idn),
        ("SYSTem:ERRor[:NEXT]?", PowerMeterSimulator._error_query),
        ("MEASure[:SCALar]:POWer?", PowerMeterSimulator._measure),
        ("READ?", PowerMeterSimulator._measure),
        ("CONFigure[:SCALar]:POWer", PowerMeterSimulator._configure),
        ("[SENSe]:CORRection:WAVelength", PowerMeterSimulator._set_wavelength),
        ("[SENSe]:CORRection:WAVelength?", PowerMeterSimulator._get_wavelength),
        ("[SENSe]:AVERage[:COUNt]", PowerMeterSimulator._set_average),
        ("[SENSe]:AVERage[:COUNt]?", PowerMeterSimulator._get_average),
        ("[SENSe]:POWer[:DC]:RANGe:AUTO", PowerMeterSimulator._set_auto_range),
        ("[SENSe]:POWer[:DC]:RANGe:AUTO?", PowerMeterSimulator._get_auto_range),
        ("[SENSe]:POWer[:DC]:RANGe[:UPPer]", PowerMeterSimulator._set_range),
        ("[SENSe]:POWer[:DC]:RANGe[:UPPer]?", PowerMeterSimulator._get_range),
    ]
]


class PowerMeter(Instrument):
    """Driver of a PM100-class power meter (see the module doc for the commands).

    Parameters
    ----------
    port : str or LineTransport
        ``USB0::0x1313::0x8072::<serial>::INSTR`` (USB-TMC through VISA), an ``ASRL`` or
        serial line, ``sim://powermeter`` or a transport.
    timeout_s, retries, clock, poll_s, echo, visa_backend
        As for :class:`~hyplex.devices.transport.Instrument`.

    Attributes (settings, each read from the instrument; assigning validates, writes and
    reads back): ``wavelength_nm`` (responsivity wavelength, nm), ``average_count``
    (samples averaged per reading), ``auto_range`` (bool), ``range_W`` (top of the current
    range, W, read-only).
    """

    KIND = "power meter"
    BAUD = 115200
    WRITE_EOL = b"\n"
    READ_EOL = b"\n"
    POLL_S = 0.05
    ERROR_QUERY = "SYST:ERR?"

    wavelength_nm = Setting(
        "SENS:CORR:WAV?",
        "SENS:CORR:WAV {:g}",
        "Responsivity correction wavelength, nm (the head's range, 400-1100 nm).",
        validate=in_range(*CORRECTION_RANGE_NM, "wavelength_nm", "nm"),
    )
    average_count = Setting(
        "SENS:AVER:COUN?",
        "SENS:AVER:COUN {:d}",
        "Samples averaged per reading (1-10000).",
        parse=int,
        validate=integer_in(1, 10000, "average_count"),
    )
    auto_range = Setting(
        "SENS:POW:RANG:AUTO?",
        "SENS:POW:RANG:AUTO {:d}",
        "Auto ranging of the power range (bool).",
        parse=scpi_bool,
        validate=boolean("auto_range"),
    )
    range_W = Setting("SENS:POW:RANG:UPP?", None, "Top of the current power range, W (read-only).")

    def identify(self) -> str:
        return self.transport.query("*IDN?")

    def sensor(self) -> str:
        """The head: ``name,serial,calibration,type,subtype,flags`` (``SYST:SENS:IDN?``)."""
        return self.transport.query("SYST:SENS:IDN?")

    def power_W(self, expect_light: bool = False, floor_W: float = 0.0) -> float:
        """One reading, W (``MEAS:POW?``).

        Parameters
        ----------
        expect_light : bool
            The beam is on the head (shutter open): a reading at or below ``floor_W`` is an
            error, not a measurement (the meter is disconnected from the beam, or the source
            is off).
        floor_W : float
            Smallest reading accepted as light, W (>= 0).

        Raises
        ------
        PowerReadingOutOfRange
            A saturated reading (the SCPI overrange value 9.9E37, or not finite), or, with
            ``expect_light``, a reading <= ``floor_W``; the message names the value and the
            range.
        """
        if not floor_W >= 0:
            raise ValueError(f"floor_W must be >= 0 W, got {floor_W}")
        reading = self.transport.query("MEAS:POW?", float)
        if not math.isfinite(reading) or reading >= SCPI_OVERRANGE * 0.99:
            raise PowerReadingOutOfRange(
                f"power meter saturated: reading {reading!r} W is the overrange value; the "
                f"current range tops at {self._range_text()} (head maximum "
                f"{HEAD_MAX_POWER_W:g} W): attenuate the beam (filter wheel, narrower slit)"
            )
        if expect_light and reading <= floor_W:
            raise PowerReadingOutOfRange(
                f"power meter reads {reading:.3e} W with the beam expected on the head; "
                f"expected more than {floor_W:.3e} W (range {self._range_text()}): check "
                "the shutter, the lamp and the meter's position"
            )
        return reading

    def _range_text(self) -> str:
        try:
            return f"{self.range_W:.3g} W"
        except InstrumentError:
            return "(range unreadable)"

    def set_wavelength_nm(self, wavelength_nm: float) -> float:
        """Set the responsivity correction wavelength; verified by read-back (nm)."""
        return type(self).wavelength_nm.set(self, wavelength_nm)

    def set_average_count(self, count: int) -> int:
        """Samples averaged per reading; verified by read-back."""
        return type(self).average_count.set(self, count)

    def set_auto_range(self, enabled: bool = True) -> bool:
        """Switch auto ranging; verified by read-back."""
        return type(self).auto_range.set(self, enabled)

    def configure_power(self) -> None:
        """Put the meter in power measurement mode (``CONF:POW``), auto ranging on."""
        self.transport.write("CONF:POW")
        self.set_auto_range(True)
