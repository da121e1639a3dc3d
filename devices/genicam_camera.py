"""``GenICamCamera``: a GenTL producer through harvesters, behind the :class:`Camera` protocol.

A GenTL producer (a ``.cti`` file from the camera vendor) is found on
``GENICAM_GENTL64_PATH`` (the standard variable), in explicit paths, or, for tests and CI,
as the ``viky.cti`` simulator shipped inside the ``genicam`` wheel (:func:`find_producers`).

Settings map to SFNC nodes: ``ExposureTime`` (us), ``Gain`` (dB), ``PixelFormat`` (Mono*
only), ``Width``/``Height``/``OffsetX``/``OffsetY`` and ``AcquisitionFrameRate`` (with
``AcquisitionFrameRateEnable`` where present). Producers differ: :meth:`capabilities`
lists what this one has, and a missing node raises
:class:`~hyplex.devices.errors.SettingUnavailable` (viky has no exposure, gain or offsets;
it offers Mono8 and RGBa8, and Mono8 is selected on open). ``frame_id`` and the device
timestamp come from the GenTL buffer (None where the producer reports none). harvesters
requeues incomplete buffers itself, so on GenICam they appear as frame-id gaps.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from hyplex.devices.camera import CameraCapabilities
from hyplex.devices.clock import Clock
from hyplex.devices.errors import (
    CameraDisconnected,
    CameraError,
    CameraTimeout,
    SettingUnavailable,
)
from hyplex.devices.frame import ROI, FrameStatus, PixelFormat
from hyplex.devices.streaming import Grab, StreamingCamera, check_range
from hyplex.optics.extras import require


def find_producers(extra_paths=(), include_simulator: bool = True) -> list[Path]:
    """GenTL producers (``.cti``): ``extra_paths`` (files or folders), then the folders of
    ``GENICAM_GENTL64_PATH``, then the genicam wheel's ``viky.cti`` simulator."""
    found: list[Path] = []
    folders = [Path(p) for p in extra_paths]
    folders += [Path(p) for p in os.environ.get("GENICAM_GENTL64_PATH", "").split(os.pathsep) if p]
    for entry in folders:
        candidates = [entry] if entry.is_file() else sorted(entry.glob("*.cti"))
        found += [c.resolve() for c in candidates if c.suffix == ".cti" and c.is_file()]
    if include_simulator:
        simulator = simulator_producer()
        if simulator is not None:
            found.append(simulator)
    unique = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def simulator_producer() -> Path | None:
    """The ``viky.cti`` GenTL simulator inside the genicam wheel, if installed."""
    try:
        genicam = require("genicam", feature="the GenICam simulator producer")
    except ImportError:
        return None
    path = Path(genicam.__file__).resolve().parent / "viky.cti"
    return path if path.is_file() else None


class GenICamCamera(StreamingCamera):
    """A GenICam (GenTL) camera.

    Parameters
    ----------
    producer : str or Path, optional
        The ``.cti`` to load (default: the first of :func:`find_producers`).
    device : int or str
        Index in the producer's device list, or a device id / serial number.
    clock : Clock, optional
        Host timestamps.
    """

    backend = "genicam"

    def __init__(
        self, producer=None, device: int | str = 0, clock: Clock | None = None, poll_s: float = 0.1
    ):
        super().__init__(clock, poll_s)
        if producer is None:
            producers = find_producers()
            if not producers:
                raise CameraError(
                    "no GenTL producer (.cti) found: set GENICAM_GENTL64_PATH or pass producer="
                )
            producer = producers[0]
        self.producer = Path(producer)
        if not self.producer.is_file():
            raise ValueError(f"GenTL producer {self.producer} does not exist")
        self.device = device
        self._harvester = self._acquirer = None

    # device hooks -------------------------------------------------------------------------

    def _open_device(self) -> None:
        harvester = require("harvesters.core", feature="the GenICam camera").Harvester()
        harvester.add_file(str(self.producer))
        harvester.update()
        infos = harvester.device_info_list
        if not infos:
            harvester.reset()
            raise CameraError(f"producer {self.producer.name} lists no device")
        if isinstance(self.device, int):
            if not 0 <= self.device < len(infos):
                harvester.reset()
                raise CameraError(f"device {self.device} outside 0..{len(infos) - 1}")
            acquirer = harvester.create(self.device)
        else:
            acquirer = harvester.create({"serial_number": self.device})
        self._harvester, self._acquirer = harvester, acquirer
        self._model = f"{infos[0].vendor} {infos[0].model}"
        if not self._node("PixelFormat").value.startswith("Mono"):
            self.pixel_format = self._mono_formats()[0]

    def _close_device(self) -> None:
        if self._acquirer is not None:
            self._acquirer.destroy()
        if self._harvester is not None:
            self._harvester.reset()
        self._harvester = self._acquirer = None

    def _start_device(self) -> None:
        self._acquirer.start()

    def _stop_device(self) -> None:
        if self._acquirer is not None and self._acquirer.is_acquiring():
            self._acquirer.stop()

    def _grab_into(self, out: np.ndarray, timeout_s: float) -> Grab:
        try:
            buffer = self._acquirer.try_fetch(timeout=max(timeout_s, 1e-3))
        except Exception as error:  # the producer lost the device
            raise CameraDisconnected(f"GenICam fetch failed: {error}") from error
        if buffer is None:
            raise CameraTimeout(f"no buffer within {timeout_s} s")
        with buffer:
            component = buffer.payload.components[0]
            data = component.data
            status = FrameStatus.COMPLETE
            if data.size != out.size:
                status = FrameStatus.INCOMPLETE
                out[...] = 0
            else:
                np.copyto(out, data.reshape(out.shape), casting="unsafe")
            module = buffer.module
            try:
                timestamp = int(module.timestamp_ns)
            except Exception:  # NotAvailableException: no device timestamps
                timestamp = None
            frame_id = int(module.frame_id)
        return Grab(
            frame_id=frame_id,
            device_timestamp_ns=timestamp,
            status=status,
            exposure_us=self._float_or_nan("ExposureTime"),
            gain_db=self._float_or_nan("Gain"),
        )

    # nodes --------------------------------------------------------------------------------

    def _node(self, name: str):
        if self._acquirer is None:
            raise CameraError("the genicam camera is not open: call open() first")
        node_map = self._acquirer.remote_device.node_map
        if not node_map.has_node(name):
            raise SettingUnavailable(f"{self.producer.name} has no {name} node")
        return node_map.get_node(name)

    def _has(self, name: str) -> bool:
        return self._acquirer.remote_device.node_map.has_node(name)

    def _float_or_nan(self, name: str) -> float:
        """A float node's value, NaN where the producer lacks the node (reading an absent
        setting gives NaN, setting it raises SettingUnavailable)."""
        return float(self._node(name).value) if self._has(name) else math.nan

    def _range(self, name: str):
        if not self._has(name):
            return None
        node = self._node(name)
        return (float(node.min), float(node.max))

    def _mono_formats(self) -> list[PixelFormat]:
        formats = []
        for symbol in self._node("PixelFormat").symbolics:
            try:
                formats.append(PixelFormat.parse(symbol))
            except ValueError:
                continue
        if not formats:
            raise CameraError(f"{self.producer.name} offers no monochrome pixel format")
        return formats

    def capabilities(self) -> CameraCapabilities:
        self._node("PixelFormat")  # raises when closed
        notes = [
            f"{self.producer.name} has no {name} node"
            for name in ("ExposureTime", "Gain", "OffsetX", "AcquisitionFrameRate")
            if not self._has(name)
        ]
        if not self.clock_supported():
            notes.append("buffers carry no device timestamp")
        return CameraCapabilities(
            backend="genicam",
            model=self._model,
            sensor_shape=(int(self._node("Height").max), int(self._node("Width").max)),
            pixel_formats=tuple(self._mono_formats()),
            exposure_us=self._range("ExposureTime"),
            gain_db=self._range("Gain"),
            frame_rate_hz=self._range("AcquisitionFrameRate"),
            roi=self._has("Width") and self._has("Height"),
            device_timestamps=self.clock_supported(),
            notes=tuple(notes),
        )

    def clock_supported(self) -> bool:
        """Whether the device reports a timestamp (``GevTimestampTickFrequency`` or
        ``TimestampLatch``); producers that have neither, like viky, report none."""
        return any(self._has(n) for n in ("GevTimestampTickFrequency", "TimestampLatch"))

    def _set_float(self, name: str, value: float, unit: str) -> None:
        node = self._node(name)
        value = check_range(name, value, (float(node.min), float(node.max)), unit)
        with self._device_lock:
            node.value = value

    @property
    def exposure_us(self) -> float:
        return self._float_or_nan("ExposureTime")

    @exposure_us.setter
    def exposure_us(self, value: float) -> None:
        self._set_float("ExposureTime", value, " us")

    @property
    def gain_db(self) -> float:
        return self._float_or_nan("Gain")

    @gain_db.setter
    def gain_db(self, value: float) -> None:
        self._set_float("Gain", value, " dB")

    @property
    def frame_rate_hz(self) -> float:
        return self._float_or_nan("AcquisitionFrameRate")

    @frame_rate_hz.setter
    def frame_rate_hz(self, value: float) -> None:
        if self._has("AcquisitionFrameRateEnable"):
            self._node("AcquisitionFrameRateEnable").value = True
        self._set_float("AcquisitionFrameRate", value, " Hz")

    @property
    def pixel_format(self) -> PixelFormat:
        return PixelFormat.parse(self._node("PixelFormat").value)

    @pixel_format.setter
    def pixel_format(self, value: PixelFormat | str) -> None:
        self._require_stopped("the pixel format")
        value = PixelFormat.parse(value)
        if value not in self._mono_formats():
            raise ValueError(f"{self.producer.name} does not offer {value.value}")
        self._node("PixelFormat").value = value.value

    @property
    def roi(self) -> ROI:
        offset_x = int(self._node("OffsetX").value) if self._has("OffsetX") else 0
        offset_y = int(self._node("OffsetY").value) if self._has("OffsetY") else 0
        return ROI(
            offset_x, offset_y, int(self._node("Width").value), int(self._node("Height").value)
        )

    @roi.setter
    def roi(self, value: ROI | None) -> None:
        self._require_stopped("the ROI")
        width, height = self._node("Width"), self._node("Height")
        value = value or ROI(0, 0, int(width.max), int(height.max))
        if (value.offset_x or value.offset_y) and not self._has("OffsetX"):
            raise SettingUnavailable(f"{self.producer.name} has no OffsetX/OffsetY: no offsets")
        for name, node, size in (("Width", width, value.width), ("Height", height, value.height)):
            step = max(int(getattr(node, "inc", 1)), 1)
            if not node.min <= size <= node.max or (size - node.min) % step:
                raise ValueError(
                    f"ROI size {size} not allowed: {name} takes {node.min}..{node.max} "
                    f"in steps of {step}"
                )
        with self._device_lock:
            if self._has("OffsetX"):
                self._node("OffsetX").value = 0
                self._node("OffsetY").value = 0
            width.value, height.value = value.width, value.height
            if self._has("OffsetX"):
                self._node("OffsetX").value = value.offset_x
                self._node("OffsetY").value = value.offset_y
