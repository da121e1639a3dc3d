"""Serial instruments of the calibration bench: drivers and their simulators.

===================  ===================  ============================  ========================
instrument           driver               simulator                     modelled on
===================  ===================  ============================  ========================
monochromator        ``Monochromator``    ``MonochromatorSimulator``    Newport Cornerstone 130
filter wheel         ``FilterWheel``      ``FilterWheelSimulator``      Thorlabs FW102C
motorised stage      ``Stage``            ``StageSimulator``            GRBL 1.1 (G-code)
optical power meter  ``PowerMeter``       ``PowerMeterSimulator``       Thorlabs PM100 (SCPI)
===================  ===================  ============================  ========================

Drivers hold a :class:`SerialTransport` (lock, terminators, timeouts and retries, clear
errors). Simulators are reachable as ``sim://<kind>`` ports (:func:`attach`), through a
pseudo-terminal (:class:`PtyBridge`) and from ``hyplex sim-device``.
:class:`SimulatedBench` wires them to a light source the simulated camera sees.
"""

from __future__ import annotations

from hyplex.devices.filter_wheel import FilterWheel, FilterWheelSimulator
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
from hyplex.devices.stage import Stage, StageSimulator

__all__ = [
    "SIMULATOR_CLASSES",
    "FilterWheel",
    "FilterWheelSimulator",
    "InstrumentSimulator",
    "LineFaults",
    "Monochromator",
    "MonochromatorSimulator",
    "PowerMeter",
    "PowerMeterSimulator",
    "PtyBridge",
    "SerialTransport",
    "SimulatedBench",
    "Stage",
    "StageSimulator",
    "attach",
    "simulator_class",
]
