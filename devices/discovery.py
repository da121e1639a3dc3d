"""Finding devices and opening a camera from a short spec (what the CLI takes).

Camera specs: ``sim`` (the twin), ``opencv:0`` (device index), ``opencv:<file or
pattern>``, ``genicam`` (first device of the first producer), ``genicam:<N>``,
``genicam:<path.cti>`` or ``genicam:<path.cti>#<N>``.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass

from hyplex.devices.instrument_sim import SIMULATOR_CLASSES
from hyplex.optics.extras import require


@dataclass(frozen=True)
class DeviceInfo:
    """One device found: kind ("camera" or "instrument"), backend, the address to open it
    with (a camera spec or a serial URL) and a description."""

    kind: str
    backend: str
    address: str
    description: str


def list_devices(genicam: bool = True) -> list[DeviceInfo]:
    """Cameras and serial instruments reachable from this host, simulators included."""
    found = [DeviceInfo("camera", "sim", "sim", "camera digital twin (SimulatedCamera)")]
    for path in sorted(glob.glob("/dev/video*")):
        match = re.fullmatch(r"/dev/video(\d+)", path)
        if match:
            found.append(DeviceInfo("camera", "opencv", f"opencv:{match.group(1)}", path))
    if genicam:
        found += _genicam_devices()
    try:
        list_ports = require("serial.tools.list_ports", feature="serial port listing")
        for port in list_ports.comports():
            found.append(DeviceInfo("instrument", "serial", port.device, port.description))
    except Exception:  # no serial enumeration on this platform
        pass
    for kind in SIMULATOR_CLASSES:
        found.append(DeviceInfo("instrument", "sim", f"sim://{kind}", f"simulated {kind}"))
    return found


def _genicam_devices() -> list[DeviceInfo]:
    from hyplex.devices.genicam_camera import find_producers

    found = []
    for producer in find_producers():
        try:
            harvester = require("harvesters.core", feature="GenICam cameras").Harvester()
            harvester.add_file(str(producer))
            harvester.update()
            for index, info in enumerate(harvester.device_info_list):
                description = f"{info.vendor} {info.model} ({info.id_}) via {producer.name}"
                found.append(
                    DeviceInfo("camera", "genicam", f"genicam:{producer}#{index}", description)
                )
            harvester.reset()
        except Exception as error:  # a broken producer must not hide the others
            found.append(DeviceInfo("camera", "genicam", str(producer), f"error: {error}"))
    return found


def open_camera(spec: str, clock=None, **sim_options):
    """A camera (not yet opened) for ``spec`` (see the module doc); ``sim_options`` go to
    :class:`~hyplex.devices.sim_camera.SimulatedCamera`."""
    backend, _, rest = spec.partition(":")
    if backend == "sim":
        from hyplex.devices.sim_camera import SimulatedCamera

        return SimulatedCamera(clock=clock, **sim_options)
    if backend == "opencv":
        from hyplex.devices.opencv_camera import OpenCVCamera

        return OpenCVCamera(rest or 0, clock=clock)
    if backend == "genicam":
        from hyplex.devices.genicam_camera import GenICamCamera

        producer, device = None, 0
        if rest.isdigit():
            device = int(rest)
        elif rest:
            producer, _, index = rest.partition("#")
            device = int(index) if index else 0
        return GenICamCamera(producer, device, clock=clock)
    raise ValueError(
        f"unknown camera {spec!r}: use sim, opencv:<index|file|pattern> or genicam[:<N>|<cti>]"
    )
