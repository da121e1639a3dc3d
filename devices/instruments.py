"""Serial instruments of the calibration bench: drivers and their simulators.

===================  ===================  ============================  ========================
instrument           driver               simulator                     modelled on
===================  ===================  ============================  ========================
monochromator        ``Monochromator``    ``MonochromatorSimulator``    Newport Cornerstone 130
filter wheel         ``FilterWheel``      ``FilterWheelSimulator``      Thorlabs FW102C
motorised stage      ``Stage``            ``StageSimulator``            GRBL 1.1 (G-code)
optical power meter  ``PowerMeter``       ``PowerMeterSimulator``       Thorlabs PM100 (SCPI)
===================  ===================  ============================  ========================

Drivers hold a line transport (lock, terminators, timeouts and retries, echo, clear
errors) that the instrument's URL picks (:func:`hyplex.devices.transport.open_transport`):
``/dev/ttyUSB0`` or ``COM3`` (pyserial), ``ASRL/dev/ttyUSB0::INSTR``, ``USB0::...::INSTR``,
``TCPIP::host::INSTR`` (VISA, pyvisa-py), ``sim://<kind>`` (a simulator). Open a driver by
kind and URL with :func:`open_instrument`::

    with open_instrument("monochromator", "/dev/ttyUSB0", clock=clock) as mono:
        mono.go_to(550.0)
    meter = open_instrument("power_meter", "USB0::0x1313::0x8072::P2000000::INSTR")

Simulators are reachable as ``sim://<kind>`` ports (:func:`attach`), through a
pseudo-terminal (:class:`PtyBridge`), on a local TCP port (:class:`SocketBridge`, for the
``TCPIP::...::SOCKET`` and ``socket://`` paths) and from ``hyplex sim-device``.
:class:`SimulatedBench` wires them to a light source the simulated camera sees.
"""

from __future__ import annotations

from hyplex.devices.filter_wheel import FilterWheel, FilterWheelSimulator
from hyplex.devices.instrument_driver import Instrument
from hyplex.devices.instrument_sim import (
    SIMULATOR_CLASSES,
    InstrumentSimulator,
    LineFaults,
    attach,
    simulator_class,
)
from hyplex.devices.monochromator import Monochromator, MonochromatorSimulator
from hyplex.devices.power_meter import PowerMeter, PowerMeterSimulator
from hyplex.devices.pty_bridge import PtyBridge
from hyplex.devices.serial_transport import SerialTransport
from hyplex.devices.sim_bench import SimulatedBench
from hyplex.devices.socket_bridge import SocketBridge
from hyplex.devices.stage import Stage, StageSimulator
from hyplex.devices.transport import LineTransport, open_transport

#: kind (as in ``sim://<kind>`` and ``hyplex sim-device``) -> driver class
DRIVER_CLASSES: dict[str, type[Instrument]] = {
    "monochromator": Monochromator,
    "filterwheel": FilterWheel,
    "stage": Stage,
    "powermeter": PowerMeter,
}


#: What each bench instrument must support, for help texts (``hyplex calibrate --help``)
INSTRUMENT_REQUIREMENTS = {
    "monochromator": (
        "Cornerstone 130B/260B command set (RS-232 9600 8N1 with echo, or USB-TMC): UNITS NM, "
        "GOWAVE/WAVE? (200-1100 nm), SHUTTER O|C / SHUTTER?, SLIT1MICRONS, INFO?, STB?/ERROR?, "
        "*OPC/*ESR?"
    ),
    "power_meter": (
        "Thorlabs PM100-class SCPI (USB-TMC via VISA, or a line): *IDN?, MEAS:POW? in W, "
        "SENS:CORR:WAV (400-1100 nm), SENS:AVER:COUN, SENS:POW:RANG:AUTO, SENS:POW:RANG:UPP?, "
        "SYST:ERR?"
    ),
    "filter_wheel": "Thorlabs FW102C (115200 8N1, CR): pos=n, pos?, pcount?, *idn?",
}


def requirements_text() -> str:
    """One line per instrument: what it must support, and the URLs that reach it."""
    urls = (
        "URLs: /dev/ttyUSB0 or COM3 (pyserial); ASRL/dev/ttyUSB0::INSTR, USB0::...::INSTR, "
        "TCPIP::host::INSTR (VISA, pyvisa-py); sim://<kind> (simulator)."
    )
    lines = [f"{kind}: {text}." for kind, text in INSTRUMENT_REQUIREMENTS.items()]
    return "\n".join([*lines, urls])


def _normalised_kind(kind: str) -> str:
    return str(kind).lower().replace("_", "").replace("-", "").replace(" ", "")


def open_instrument(kind: str, url: str, **options) -> Instrument:
    """The driver of ``kind`` connected at ``url``, whatever the transport.

    Parameters
    ----------
    kind : str
        ``"monochromator"``, ``"power_meter"``, ``"filter_wheel"`` or ``"stage"`` (case,
        ``_``, ``-`` and blanks ignored: ``"powermeter"`` and ``"power meter"`` work too).
    url : str
        ``/dev/ttyUSB0``, ``COM3``, ``socket://host:port`` (pyserial);
        ``ASRL/dev/ttyUSB0::INSTR``, ``USB0::...::INSTR``, ``TCPIP::host::INSTR`` (VISA);
        ``sim://<kind>[?id=N]`` (a simulator, see :func:`attach`).
    **options
        Passed to the driver: ``timeout_s``, ``retries``, ``clock``, ``poll_s``, ``echo``,
        ``visa_backend``.

    Raises
    ------
    ValueError
        An unknown kind (the message lists the known ones) or an empty URL.
    InstrumentError
        The instrument cannot be opened or does not answer its first command.
    """
    key = _normalised_kind(kind)
    if key not in DRIVER_CLASSES:
        known = sorted(DRIVER_CLASSES)
        raise ValueError(f"unknown instrument kind {kind!r}; expected one of {known}")
    return DRIVER_CLASSES[key](url, **options)


__all__ = [
    "DRIVER_CLASSES",
    "INSTRUMENT_REQUIREMENTS",
    "SIMULATOR_CLASSES",
    "FilterWheel",
    "FilterWheelSimulator",
    "Instrument",
    "InstrumentSimulator",
    "LineFaults",
    "LineTransport",
    "Monochromator",
    "MonochromatorSimulator",
    "PowerMeter",
    "PowerMeterSimulator",
    "PtyBridge",
    "SerialTransport",
    "SimulatedBench",
    "SocketBridge",
    "Stage",
    "StageSimulator",
    "attach",
    "open_instrument",
    "open_transport",
    "requirements_text",
    "simulator_class",
]
