"""hyplex.devices: cameras, frame ring buffer, recorder and serial instruments.

==========================  =============================================================
module                      what
==========================  =============================================================
``camera``                  the ``Camera`` protocol, ``CameraCapabilities``, ``CameraStats``
``frame``                   ``Frame``, ``PixelFormat``, ``ROI``, the metadata schema
``ring``                    ``FrameRing`` and its ``OverflowPolicy``
``streaming``               ``StreamingCamera``: acquisition thread shared by the backends
``sim_camera``              ``SimulatedCamera``: the camera twin as a camera, with faults
``opencv_camera``           ``OpenCVCamera``: devices, video files, image sequences
``genicam_camera``          ``GenICamCamera``: GenTL producers via harvesters (viky in CI)
``discovery``               ``list_devices``, ``open_camera("sim" | "opencv:0" | ...)``
``recorder``, ``recording``  HDF5 recording (crash-safe, SWMR) and its reader; the format
                            is ``recording_layout``'s, the target/disk checks
                            ``recording_target``'s, ``record()`` ``record_camera``'s
``writer_lock``             one writer per file: ``flock`` on a sidecar ``<file>.lock``
``swmr``                    SWMR reads that fail fast on a truncated file (no hang, no zeros)
``clock``                   monotonic and virtual clocks
``instruments``             serial drivers and simulators (monochromator, filter wheel,
                            stage, power meter), ``SerialTransport``, ``PtyBridge``,
                            ``SimulatedBench``
``errors``                  the exception hierarchy
==========================  =============================================================

Names below are importable from ``hyplex.devices`` directly; modules load on first use.
This wing imports ``hyplex.simulation`` and ``hyplex.optics`` only.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Camera": "camera",
    "CameraCapabilities": "camera",
    "CameraStats": "camera",
    "Frame": "frame",
    "FrameStatus": "frame",
    "PixelFormat": "frame",
    "ROI": "frame",
    "FRAME_METADATA_DTYPE": "frame",
    "FrameRing": "ring",
    "OverflowPolicy": "ring",
    "StreamingCamera": "streaming",
    "SimulatedCamera": "sim_camera",
    "SimulatedFaults": "sim_camera",
    "OpenCVCamera": "opencv_camera",
    "GenICamCamera": "genicam_camera",
    "find_producers": "genicam_camera",
    "list_devices": "discovery",
    "open_camera": "discovery",
    "Recorder": "recorder",
    "StreamSpec": "recorder",
    "record": "recorder",
    "RecordingDiskFull": "recorder",
    "Compression": "compression",
    "TokenBucket": "throttle",
    "Recording": "recording",
    "export_frames": "recording",
    "MonotonicClock": "clock",
    "VirtualClock": "clock",
    "SerialTransport": "serial_transport",
    "VisaTransport": "visa_transport",
    "open_instrument": "instruments",
    "SocketBridge": "socket_bridge",
    "Monochromator": "monochromator",
    "MonochromatorSimulator": "monochromator",
    "FilterWheel": "filter_wheel",
    "FilterWheelSimulator": "filter_wheel",
    "Stage": "stage",
    "StageSimulator": "stage",
    "PowerMeter": "power_meter",
    "PowerMeterSimulator": "power_meter",
    "PtyBridge": "pty_bridge",
    "SimulatedBench": "sim_bench",
    "DeviceError": "errors",
    "CameraError": "errors",
    "CameraTimeout": "errors",
    "CameraDisconnected": "errors",
    "CameraBusy": "errors",
    "SettingUnavailable": "errors",
    "StreamEnded": "errors",
    "RecordingError": "errors",
    "RecordingExists": "errors",
    "RecordingInUse": "errors",
    "RecordingTruncated": "errors",
    "InstrumentError": "errors",
    "InstrumentTimeout": "errors",
    "GarbledReply": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
